//! The per-call upstream task: connect, configure, then relay until stop or failure.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::wire::{self, ServerEvent, ServerKind};
use super::{
    AudioQueue, BridgeConfig, BridgeError, Control, Downstream, RealtimeDialect, UpstreamAuth,
};
use crate::codec::{decode_base64_into, Transcoder, BASE64};
use crate::event::Outbound;
use crate::session::Session;
use base64::Engine as _;

type Upstream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Responses whose late deltas are dropped after a barge-in; a handful is plenty.
const CANCELLED_MEMORY: usize = 8;

pub(crate) async fn run(
    config: Arc<BridgeConfig>,
    session: Arc<Session>,
    outbox: mpsc::Sender<Downstream>,
    audio: Arc<AudioQueue>,
    mut control: mpsc::Receiver<Control>,
) {
    let mut relay = match Relay::new(&config, session, outbox.clone(), audio) {
        Ok(relay) => relay,
        Err(err) => return report(&outbox, err).await,
    };
    if let Err(err) = relay.drive(&config, &mut control).await {
        report(&outbox, err).await;
    }
}

async fn report(outbox: &mpsc::Sender<Downstream>, err: BridgeError) {
    let reason = match &err {
        BridgeError::Connect(_) | BridgeError::ConnectTimeout => "connect",
        BridgeError::NotReady => "not_ready",
        BridgeError::Closed(_) => "closed",
        BridgeError::Fatal { .. } => "fatal_error",
        BridgeError::Audio(_) => "audio",
    };
    metrics::counter!("callgate_upstream_failures_total", "reason" => reason).increment(1);
    tracing::warn!(error = %err, "upstream failed, ending the call");
    let _ = outbox.send(Downstream::End(err)).await;
}

async fn connect(config: &BridgeConfig) -> Result<Upstream, BridgeError> {
    let mut request = config
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| BridgeError::Connect(e.to_string()))?;
    let headers = request.headers_mut();
    let header = |value: String| {
        http::HeaderValue::from_str(&value)
            .map_err(|_| BridgeError::Connect("credential is not a valid header value".into()))
    };
    match &config.auth {
        UpstreamAuth::None => {}
        UpstreamAuth::Bearer(key) => {
            let mut value = header(format!("Bearer {}", key.expose()))?;
            value.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, value);
        }
        UpstreamAuth::ApiKey(key) => {
            let mut value = header(key.expose().to_owned())?;
            value.set_sensitive(true);
            headers.insert("api-key", value);
        }
    }
    if config.dialect == RealtimeDialect::Beta {
        headers.insert("OpenAI-Beta", http::HeaderValue::from_static("realtime=v1"));
    }
    // Small read buffer: tungstenite zero-fills it before every read (ARCHITECTURE.md).
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_message_size(Some(16 * 1024 * 1024));
    let connecting = tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true);
    match tokio::time::timeout(config.connect_timeout, connecting).await {
        Err(_) => Err(BridgeError::ConnectTimeout),
        Ok(Err(e)) => Err(BridgeError::Connect(e.to_string())),
        Ok(Ok((ws, _response))) => Ok(ws),
    }
}

struct Relay {
    session: Arc<Session>,
    outbox: mpsc::Sender<Downstream>,
    audio: Arc<AudioQueue>,
    session_update: String,
    ready: bool,
    /// Bumped at every barge-in; part of every mark name.
    generation: u64,
    /// Audio went to the carrier since the last barge-in (so a `clear` means something).
    speaking: bool,
    current_response: Option<String>,
    cancelled: VecDeque<String>,
    /// Upstream → carrier format, when they differ.
    transcoder: Option<Transcoder>,
    raw: Vec<u8>,
    converted: Vec<u8>,
    batch: Vec<String>,
}

impl Relay {
    fn new(
        config: &BridgeConfig,
        session: Arc<Session>,
        outbox: mpsc::Sender<Downstream>,
        audio: Arc<AudioQueue>,
    ) -> Result<Self, BridgeError> {
        let upstream = session.upstream_audio.format();
        let transcoder = if upstream == session.media_format {
            None
        } else {
            Some(
                Transcoder::new(upstream, session.media_format)
                    .map_err(|e| BridgeError::Audio(e.to_string()))?,
            )
        };
        Ok(Self {
            session_update: wire::session_update(
                config.dialect,
                session.upstream_audio,
                &config.session,
            ),
            session,
            outbox,
            audio,
            ready: false,
            generation: 0,
            speaking: false,
            current_response: None,
            cancelled: VecDeque::new(),
            transcoder,
            raw: Vec::new(),
            converted: Vec::new(),
            batch: Vec::new(),
        })
    }

    async fn drive(
        &mut self,
        config: &BridgeConfig,
        control: &mut mpsc::Receiver<Control>,
    ) -> Result<(), BridgeError> {
        let started = std::time::Instant::now();
        let mut ws = tokio::select! {
            ws = connect(config) => ws?,
            // The call ended while we were still connecting: nothing to close.
            _ = control.recv() => return Ok(()),
        };
        metrics::histogram!("callgate_upstream_connect_seconds")
            .record(started.elapsed().as_secs_f64());
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "upstream connected"
        );
        let ready_deadline = tokio::time::sleep(config.ready_timeout);
        tokio::pin!(ready_deadline);
        loop {
            tokio::select! {
                biased;
                _ = control.recv() => {
                    close(&mut ws).await;
                    return Ok(());
                }
                message = ws.next() => match message {
                    Some(Ok(Message::Text(text))) => self.on_event(&text, &mut ws).await?,
                    Some(Ok(Message::Close(frame))) => {
                        let why = frame.map_or_else(|| "no close frame".to_owned(), |f| format!("{} {}", u16::from(f.code), f.reason));
                        return Err(BridgeError::Closed(why));
                    }
                    Some(Ok(Message::Binary(_))) => {
                        metrics::counter!("callgate_upstream_events_ignored_total", "reason" => "binary").increment(1);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(BridgeError::Closed(e.to_string())),
                    None => return Err(BridgeError::Closed("socket ended".into())),
                },
                _ = self.audio.notified(), if self.ready => self.flush_audio(&mut ws).await?,
                _ = &mut ready_deadline, if !self.ready => return Err(BridgeError::NotReady),
            }
        }
    }

    /// Sends every queued caller chunk, in order, with one flush.
    async fn flush_audio(&mut self, ws: &mut Upstream) -> Result<(), BridgeError> {
        self.batch.clear();
        self.audio.drain_into(&mut self.batch);
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for chunk in self.batch.drain(..) {
            wire::append(&chunk, &mut text);
            ws.feed(Message::Text(std::mem::take(&mut text).into()))
                .await
                .map_err(closed)?;
        }
        ws.flush().await.map_err(closed)
    }

    async fn on_event(&mut self, text: &str, ws: &mut Upstream) -> Result<(), BridgeError> {
        let event: ServerEvent<'_> = match serde_json::from_str(text) {
            Ok(event) => event,
            Err(error) => {
                metrics::counter!("callgate_upstream_events_ignored_total", "reason" => "invalid")
                    .increment(1);
                tracing::debug!(%error, "unparseable upstream event ignored");
                return Ok(());
            }
        };
        match ServerKind::of(&event.kind) {
            ServerKind::SessionCreated => {
                ws.send(Message::Text(self.session_update.clone().into()))
                    .await
                    .map_err(closed)?;
            }
            ServerKind::SessionUpdated => {
                if let Some(reported) = event.session.as_ref().and_then(wire::session_output_audio)
                {
                    if self
                        .transcoder
                        .as_ref()
                        .map_or(self.session.media_format, |t| t.from_format())
                        != reported.format()
                    {
                        tracing::warn!(
                            ?reported,
                            "upstream reports a different output format than configured"
                        );
                    }
                }
                if !self.ready {
                    self.ready = true;
                    tracing::debug!(held = self.audio.len(), "upstream session ready");
                    self.flush_audio(ws).await?;
                }
            }
            ServerKind::AudioDelta => self.on_audio_delta(&event).await,
            ServerKind::AudioDone => self.on_audio_done(&event).await,
            ServerKind::SpeechStarted => self.on_speech_started().await,
            ServerKind::ResponseCreated => {
                self.current_response = event.response.and_then(|r| r.id);
            }
            ServerKind::ResponseDone => {
                let id = event.response.and_then(|r| r.id);
                if id.is_some() && id == self.current_response {
                    self.current_response = None;
                }
            }
            ServerKind::CallerTranscript => {
                tracing::debug!(
                    item_id = event.item_id.as_deref(),
                    transcript = event.transcript.as_deref(),
                    "caller said"
                );
            }
            ServerKind::AssistantTranscript => {
                tracing::debug!(
                    item_id = event.item_id.as_deref(),
                    transcript = event.transcript.as_deref(),
                    "assistant said"
                );
            }
            ServerKind::Error => {
                let Some(error) = event.error else {
                    return Ok(());
                };
                if error.is_fatal() {
                    return Err(BridgeError::Fatal {
                        code: error.code.unwrap_or_default(),
                        message: error.message.unwrap_or_default(),
                    });
                }
                if error.is_already_shorter() {
                    tracing::debug!("truncate past the end of an item (harmless)");
                } else {
                    metrics::counter!("callgate_upstream_errors_total").increment(1);
                    tracing::warn!(
                        kind = error.kind.as_deref(),
                        code = error.code.as_deref(),
                        message = error.message.as_deref(),
                        "upstream error event"
                    );
                }
            }
            ServerKind::SpeechStopped | ServerKind::Other => {
                tracing::trace!(kind = &*event.kind, "upstream event");
            }
        }
        Ok(())
    }

    async fn on_audio_delta(&mut self, event: &ServerEvent<'_>) {
        let Some(delta) = event.delta.as_deref() else {
            return;
        };
        if event
            .response_id
            .as_ref()
            .is_some_and(|r| self.cancelled.contains(r))
        {
            metrics::counter!("callgate_audio_dropped_total", "direction" => "outbound", "reason" => "cancelled").increment(1);
            return;
        }
        // Hostile-upstream rule: base64 is checked before anything reaches the carrier.
        if decode_base64_into(delta, &mut self.raw).is_err() {
            metrics::counter!("callgate_upstream_events_ignored_total", "reason" => "bad_base64")
                .increment(1);
            return;
        }
        let payload = match &mut self.transcoder {
            None => {
                self.session
                    .counters
                    .bytes_out
                    .fetch_add(self.raw.len() as u64, Relaxed);
                delta.to_owned()
            }
            Some(transcoder) => {
                self.converted.clear();
                transcoder.transcode(&self.raw, &mut self.converted);
                if self.converted.is_empty() {
                    return;
                }
                self.session
                    .counters
                    .bytes_out
                    .fetch_add(self.converted.len() as u64, Relaxed);
                BASE64.encode(&self.converted)
            }
        };
        self.speaking = true;
        self.emit(Outbound::Media { payload }).await;
    }

    async fn on_audio_done(&mut self, event: &ServerEvent<'_>) {
        if event
            .response_id
            .as_ref()
            .is_some_and(|r| self.cancelled.contains(r))
        {
            return;
        }
        if let Some(transcoder) = &mut self.transcoder {
            self.converted.clear();
            transcoder.flush(&mut self.converted);
            if !self.converted.is_empty() {
                let payload = BASE64.encode(&self.converted);
                self.emit(Outbound::Media { payload }).await;
            }
        }
        let item = event.item_id.as_deref().unwrap_or("item");
        let name = format!("g{}/{}/end", self.generation, item);
        self.session.counters.marks_sent.fetch_add(1, Relaxed);
        self.emit(Outbound::Mark { name }).await;
    }

    /// Barge-in: the carrier drops what it buffered; deltas still in flight for the
    /// interrupted response are dropped here (server VAD cancels it upstream).
    async fn on_speech_started(&mut self) {
        if self.speaking {
            self.session.counters.clears.fetch_add(1, Relaxed);
            metrics::counter!("callgate_barge_ins_total").increment(1);
            self.emit(Outbound::Clear).await;
            if let Some(response) = self.current_response.take() {
                if self.cancelled.len() == CANCELLED_MEMORY {
                    self.cancelled.pop_front();
                }
                self.cancelled.push_back(response);
            }
        }
        self.speaking = false;
        self.generation += 1;
    }

    async fn emit(&self, message: Outbound) {
        // The connection loop owns the carrier socket; if it is gone the call is ending and
        // the control channel will stop us.
        let _ = self.outbox.send(Downstream::Out(message)).await;
    }
}

fn closed(e: tokio_tungstenite::tungstenite::Error) -> BridgeError {
    BridgeError::Closed(e.to_string())
}

/// Closes the upstream with 1000 and waits briefly for its reply.
async fn close(ws: &mut Upstream) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "call ended".into(),
    };
    if ws.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let drain = async { while let Some(Ok(_)) = ws.next().await {} };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}
