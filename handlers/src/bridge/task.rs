//! The per-call upstream task: connect, configure, relay; on failure reconnect within a
//! budget and re-seed the conversation; roll the session over before it expires.
//!
//! ```text
//! loop {
//!     connect ─► session.created ─► session.update ─► session.updated ─► re-seed (reconnects)
//!       └─► relay until: stop (close 1000, done) · rollover due (close 1000, connect again)
//!                        · failure (retryable: backoff and connect again; else end the call)
//! }
//! ```
//!
//! This is the call core: it acts on provider-neutral [`ModelEvent`]s and asks the call's
//! [`Protocol`] adapter for every message it sends. Its jobs, one file each under `task/`:
//! `reconnect` (connect, relay, reconnect within the budget), `socket` (connect, send,
//! close), `events` (what the model says), `caller_audio` (the caller's audio to the model,
//! silence over gaps where the protocol wants it), `playback` (the outbound audio path and
//! the ledger of what the caller heard: marks, barge-in), `responses` (one at a time, those
//! a barge-in cut off), `keypad` (DTMF), `functions` (tools and `end_call`), `control`
//! (transfer, DTMF out, hang-up), `memory` (transcripts kept to re-seed), `rollover` (fresh
//! sessions before expiry, fallback audio), `profile` (per-call settings). This file holds
//! the relay's state and the loop of one session.

use callgate_layers::util::sleep_until;
use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::model::ModelEvent;
use super::protocol::Protocol;
use super::tools;
use super::{
    AudioQueue, BridgeConfig, BridgeError, Control, Downstream, RealtimeDialect, UpstreamAuth,
    WarmPool,
};
use crate::call_state::CallState;
use crate::codec::{decode_base64_into, Transcoder};
use crate::event::Outbound;
use crate::feed::FeedEvent;

/// How long a protocol's own close (GPT-Live `session.close`) may take to be answered.
const SESSION_CLOSE_WAIT: Duration = Duration::from_secs(1);
/// Protocols without an end-of-audio event: a pause this long in the model's audio ends
/// its utterance.
const AUDIO_PAUSE: Duration = Duration::from_millis(300);
/// Protocols that want an unbroken input stream: a gap in the caller's audio longer than
/// this is filled with silence.
const INPUT_GAP: Duration = Duration::from_millis(100);
/// Transcript lines kept to re-seed a new session (oldest dropped).
const TRANSCRIPT_MEMORY: usize = 24;

pub(crate) async fn run(
    config: Arc<BridgeConfig>,
    call: Arc<CallState>,
    outbox: mpsc::Sender<Downstream>,
    audio: Arc<AudioQueue>,
    mut control: mpsc::Receiver<Control>,
) {
    let mut relay = match Relay::new(&config, call, outbox.clone(), audio) {
        Ok(relay) => relay,
        Err(err) => return report(&outbox, err).await,
    };
    // A panic here must end this call (1011), never leave it without an upstream.
    let driven = std::panic::AssertUnwindSafe(relay.drive(&config, &mut control))
        .catch_unwind()
        .await;
    let error = match driven {
        Ok(Ok(())) => return,
        Ok(Err(err)) => err,
        Err(_) => {
            metrics::counter!("callgate_panics_total").increment(1);
            BridgeError::Panicked
        }
    };
    if let Some(fallback) = relay.fallback(&config) {
        let _ = outbox.send(fallback).await;
    }
    report(&outbox, error).await;
}

async fn report(outbox: &mpsc::Sender<Downstream>, err: BridgeError) {
    metrics::counter!("callgate_upstream_failures_total", "reason" => err.reason()).increment(1);
    tracing::warn!(error = %err, "upstream failed, ending the call");
    let _ = outbox.send(Downstream::End(err)).await;
}

mod caller_audio;
mod control;
mod events;
mod functions;
mod keypad;
mod memory;
mod playback;
mod profile;
mod reconnect;
mod responses;
mod rollover;
pub(super) mod socket;

use memory::shown;
use playback::Playback;
use profile::per_call;
use socket::{close, closed, connect, error_code_label, send, send_text, Upstream};

/// How one upstream session ended.
enum SessionEnd {
    /// The call ended: the upstream was closed with 1000.
    Stopped,
    /// The session is near its limit: connect a fresh one now.
    Rollover,
}

struct Relay {
    call: Arc<CallState>,
    outbox: mpsc::Sender<Downstream>,
    audio: Arc<AudioQueue>,
    /// The protocol's side: decodes what the model says, writes what the core asks for.
    protocol: Protocol,
    ready: bool,
    /// This is not the call's first upstream session: re-seed it once configured.
    reseed: bool,
    /// Bumped at every barge-in; part of every mark name.
    generation: u64,
    /// Audio went to the carrier since the last barge-in.
    speaking: bool,
    /// The response in progress, one wanted after it, and those a barge-in cut off.
    responses: responses::Responses,
    /// What was said so far, to re-seed a new session.
    conversation: memory::Conversation,
    /// Protocols without an end-of-audio event: when a pause in the model's audio ends the
    /// utterance (its tail and end mark go out).
    audio_pause: Option<tokio::time::Instant>,
    /// When the model's audio last arrived.
    last_model_audio: Option<Instant>,
    /// When caller audio (or silence in its place) last went upstream.
    last_append: Instant,
    /// When the current session is to be replaced (from its `expires_at`).
    rollover: rollover::Rollover,
    last_heard: Instant,
    /// Upstream → carrier format, when they differ.
    transcoder: Option<Transcoder>,
    raw: Vec<u8>,
    converted: Vec<u8>,
    batch: Vec<(Instant, String, Duration)>,
    /// When the upstream message being handled arrived.
    received: Instant,
    /// Caller stopped speaking → first reply audio: the turn's start and span.
    turn: Option<(Instant, tracing::Span)>,
    /// `session.update` sent → `session.updated`.
    configuring: Option<(Instant, tracing::Span)>,
    /// Carrier frame accepted → upstream append written (handle cached: this runs per frame).
    latency_inbound: metrics::Histogram,
    /// What the carrier has been sent and has played of the current assistant item.
    playback: Playback,
    /// Carrier-format audio waiting to fill the next piece.
    piece: BytesMut,
    /// Bytes per piece (≤ 100 ms, or the carrier's minimum chunk).
    piece_bytes: usize,
    /// How the carrier wants its audio cut (what may go out early).
    framing: crate::dialect::Framing,
    /// The key-press sequence being typed.
    keypad: keypad::Keypad,
    /// What the assistant says first ("" = nothing).
    greeting: String,
    /// Tool webhooks report here: (call id, tool name, output or error).
    tool_results: mpsc::Receiver<(String, String, Result<String, String>)>,
    tool_results_tx: mpsc::Sender<(String, String, Result<String, String>)>,
    /// `end_call` was called: hang up once the goodbye has played.
    hangup_requested: Option<Instant>,
    /// Upstream connections opened so far (numbers them on the tape).
    connections: u32,
    /// When the current session began to be opened (taken from the pool, or connected), until
    /// it is ready: `callgate_upstream_connect_seconds`.
    opening_since: Option<Instant>,
    /// `transfer_call` was called: where to, once the handoff sentence has played.
    transfer: Option<control::PendingTransfer>,
}

impl Relay {
    fn new(
        config: &BridgeConfig,
        call: Arc<CallState>,
        outbox: mpsc::Sender<Downstream>,
        audio: Arc<AudioQueue>,
    ) -> Result<Self, BridgeError> {
        let upstream = call.upstream_audio.output_format();
        // Model audio goes out in the carrier's outbound format (Telnyx may differ from what
        // it streams in).
        let transcoder = if upstream == call.outbound_format {
            None
        } else {
            Some(
                Transcoder::new(upstream, call.outbound_format)
                    .map_err(|e| BridgeError::Audio(e.to_string()))?,
            )
        };
        // Pieces of at most 100 ms, each with its own mark, so barge-in truncation is accurate
        // to 100 ms; Exotel's minimum chunk (3200 bytes at 8 kHz) makes its pieces longer.
        let (settings, greeting) = per_call(&config.session, &config.conversation, &call);
        let (tool_results_tx, tool_results) = mpsc::channel(16);
        let format = call.outbound_format;
        let framing = call.dialect.framing(format);
        // 100 ms, or the carrier's smallest payload when that is longer (Exotel).
        let piece_bytes = (format.bytes_per_ms() * 100).max(framing.min);
        Ok(Self {
            protocol: Protocol::for_call(config, call.upstream_audio, &settings, &greeting),
            greeting,
            tool_results,
            tool_results_tx,
            hangup_requested: None,
            connections: 0,
            opening_since: None,
            transfer: None,
            call,
            outbox,
            audio,
            ready: false,
            reseed: false,
            generation: 0,
            speaking: false,
            responses: responses::Responses::default(),
            conversation: memory::Conversation::new(TRANSCRIPT_MEMORY),
            rollover: rollover::Rollover::default(),
            audio_pause: None,
            last_model_audio: None,
            last_append: Instant::now(),
            last_heard: Instant::now(),
            transcoder,
            raw: Vec::new(),
            converted: Vec::new(),
            batch: Vec::new(),
            received: Instant::now(),
            turn: None,
            configuring: None,
            latency_inbound: metrics::histogram!("callgate_gateway_latency_seconds", "direction" => "inbound"),
            playback: Playback::default(),
            piece: BytesMut::new(),
            piece_bytes,
            framing,
            keypad: keypad::Keypad::default(),
        })
    }

    /// One upstream session, until the call stops, a rollover is due, or it fails.
    async fn relay(
        &mut self,
        ws: &mut Upstream,
        config: &BridgeConfig,
        control: &mut mpsc::Receiver<Control>,
        warm: Option<(serde_json::Value, Arc<str>)>,
    ) -> Result<SessionEnd, BridgeError> {
        self.last_heard = Instant::now();
        self.rollover = rollover::Rollover::default();
        // Keys pressed while we were reconnecting: finish the sequence on this session.
        self.keypad
            .resume(tokio::time::Instant::now(), &config.dtmf);
        if let Some((created, configured)) = warm {
            // Configured with the defaults already: send the call's own settings when they
            // differ and go on at once. The server takes events in order, so the update
            // applies before the greeting and the first caller audio.
            self.plan_rollover(Some(&created), config);
            if let Some(update) = self.protocol.configure().filter(|u| **u != *configured) {
                send_text(ws, update.to_owned(), config).await?;
            }
            self.become_ready(ws, config).await?;
        } else if let Some(opening) = self.protocol.opening(self.conversation.lines()) {
            // Protocols where the client speaks first (GPT-Live), history included.
            let span = tracing::info_span!("session.start", audio = ?self.call.upstream_audio, ready_ms = tracing::field::Empty);
            self.configuring = Some((Instant::now(), span));
            send_text(ws, opening, config).await?;
        }
        let ready_deadline = tokio::time::sleep(config.ready_timeout);
        tokio::pin!(ready_deadline);
        let mut ping = tokio::time::interval(config.ping_interval);
        ping.reset();
        // After `end_call`, how often to ask whether the goodbye has played. An interval, not
        // a sleep made inside the loop: caller audio wakes the loop every 20 ms, and a fresh
        // 100 ms sleep each time would never fire while the caller's audio flows.
        let mut silence_check = tokio::time::interval(Duration::from_millis(100));
        silence_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let continuous_input = self.protocol.wants_continuous_input();
        let mut goodbye_poll = tokio::time::interval(Duration::from_millis(50));
        goodbye_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                message = control.recv() => match message {
                    None | Some(Control::Stop) => {
                        self.close_session(ws, config).await;
                        return Ok(SessionEnd::Stopped);
                    }
                    Some(Control::MarkPlayed(name)) => self.on_mark_played(&name),
                    Some(Control::Dtmf(digit)) => {
                        if self.keypad.press(digit, tokio::time::Instant::now(), &config.dtmf) {
                            self.flush_digits(ws, config).await?;
                        }
                    }
                },
                _ = sleep_until(self.keypad.deadline()) => {
                    self.flush_digits(ws, config).await?;
                }
                Some((call_id, name, result)) = self.tool_results.recv() => {
                    self.tool_output(ws, config, &call_id, &name, result).await?;
                }
                _ = goodbye_poll.tick(), if self.hangup_requested.is_some() => {
                    if self.goodbye_played() {
                        match self.transfer.take() {
                            None => {
                                tracing::info!("end_call: the goodbye has played; hanging up");
                                self.hang_up(config).await;
                                self.close_session(ws, config).await;
                                return Ok(SessionEnd::Stopped);
                            }
                            Some(transfer) => match self.carry_out(&transfer, config).await {
                                Ok(()) => {
                                    self.close_session(ws, config).await;
                                    return Ok(SessionEnd::Stopped);
                                }
                                // The call stays up: the model hears why and tells the caller.
                                Err(error) => {
                                    self.hangup_requested = None;
                                    self.tool_output(ws, config, &transfer.call_id, tools::TRANSFER_CALL, Err(error)).await?;
                                }
                            },
                        }
                    }
                }
                message = ws.next() => {
                    self.last_heard = Instant::now();
                    self.received = self.last_heard;
                    match message {
                        Some(Ok(Message::Text(text))) => self.on_event(&text, ws, config).await?,
                        Some(Ok(Message::Close(frame))) => {
                            let why = frame.map_or_else(|| "no close frame".to_owned(), |f| format!("{} {}", u16::from(f.code), f.reason));
                            return Err(BridgeError::Closed(why));
                        }
                        Some(Ok(Message::Binary(data))) if self.protocol.binary_json() => {
                            match std::str::from_utf8(&data) {
                                Ok(text) => self.on_event(text, ws, config).await?,
                                Err(_) => {
                                    metrics::counter!("callgate_upstream_events_ignored_total", "reason" => "binary").increment(1);
                                }
                            }
                        }
                        Some(Ok(Message::Binary(_))) => {
                            metrics::counter!("callgate_upstream_events_ignored_total", "reason" => "binary").increment(1);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(BridgeError::Closed(e.to_string())),
                        None => return Err(BridgeError::Closed("socket ended".into())),
                    }
                }
                _ = self.audio.notified(), if self.ready => self.flush_audio(ws, config).await?,
                _ = silence_check.tick(), if self.ready && continuous_input => {
                    self.fill_silence(ws, config).await?;
                }
                // Protocols that do not mark where an utterance ends: a pause does.
                _ = sleep_until(self.audio_pause) => {
                    self.audio_pause = None;
                    self.on_audio_done(None).await;
                }
                _ = &mut ready_deadline, if !self.ready => return Err(BridgeError::NotReady),
                _ = ping.tick() => {
                    // A peer that stopped reading answers no ping: that is a stall.
                    if self.last_heard.elapsed() >= config.stall_timeout {
                        return Err(BridgeError::Stalled);
                    }
                    send(ws, Message::Ping(Default::default()), config).await?;
                }
                _ = sleep_until(self.rollover.due_at()) => {
                    let now = tokio::time::Instant::now();
                    match self.rollover.due(now, self.responses.in_progress()) {
                        rollover::Due::Fault(fault) => {
                            self.close_session(ws, config).await;
                            return Err(fault);
                        }
                        rollover::Due::RollOver => {
                            self.close_session(ws, config).await;
                            return Ok(SessionEnd::Rollover);
                        }
                        // Mid-response: try again between turns.
                        rollover::Due::Later => {}
                    }
                }
            }
        }
    }

    /// Ends the session: the protocol's own close first where it has one (GPT-Live
    /// `session.close`, then its `session.closed`, for at most [`SESSION_CLOSE_WAIT`]; the
    /// line being spoken is kept), then the socket's close handshake.
    async fn close_session(&mut self, ws: &mut Upstream, config: &BridgeConfig) {
        if let Some(closing) = self.protocol.closing() {
            if send_text(ws, closing.to_owned(), config).await.is_ok() {
                let closed = async {
                    while let Some(Ok(message)) = ws.next().await {
                        let Message::Text(text) = message else {
                            continue;
                        };
                        if let Ok(decoded) = self.protocol.decode(&text) {
                            if matches!(decoded.event, ModelEvent::SessionClosed) {
                                return decoded.before;
                            }
                        }
                    }
                    Vec::new()
                };
                let lines = tokio::time::timeout(SESSION_CLOSE_WAIT, closed).await;
                for line in lines.unwrap_or_default() {
                    self.keep_line(line, config);
                }
            }
        }
        self.keep_open_line(config);
        close(ws).await;
    }

    /// A session ended: the transcript line it was still building is kept (and so given to
    /// the next session).
    fn keep_open_line(&mut self, config: &BridgeConfig) {
        if let Some(line) = self.protocol.finish_lines() {
            self.keep_line(line, config);
        }
    }

    /// A whole transcript line, redacted as shown, published and kept.
    fn keep_line(&mut self, line: ModelEvent<'_>, config: &BridgeConfig) {
        if let ModelEvent::Transcript { role, text, .. } = line {
            let text = memory::shown(&text, config).into_owned();
            self.remember(role, text);
        }
    }

    /// Runs `future` to completion unless the call stops first (`None`); control messages
    /// that arrive meanwhile are handled without a socket.
    async fn until_stop<F: std::future::Future>(
        &mut self,
        future: F,
        control: &mut mpsc::Receiver<Control>,
    ) -> Option<F::Output> {
        tokio::pin!(future);
        loop {
            tokio::select! {
                output = &mut future => return Some(output),
                message = control.recv() => match message {
                    None | Some(Control::Stop) => return None,
                    // Playback is moot without a session; keys wait for the next one.
                    Some(Control::MarkPlayed(_)) => {}
                    Some(Control::Dtmf(digit)) => self.keypad.hold(digit),
                },
            }
        }
    }

    async fn emit(&self, message: Outbound) {
        // The connection loop owns the carrier socket; if it is gone the call is ending and
        // the control channel will stop us.
        let _ = self
            .outbox
            .send(Downstream::Out(message, self.received))
            .await;
    }
}
