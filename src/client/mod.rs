//! `callgate call`: plays a WAV file into a gateway as a carrier would, answers marks as a
//! carrier does, records the reply. Also the integration tests' carrier, for every dialect.

pub mod echo;
pub mod scrape;
pub mod stamped;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine as _;
use callgate_handlers::codec::{AudioFormat, BASE64};
use callgate_handlers::dialect::messages::CarrierMessages;
use callgate_handlers::dialect::Dialect;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// What to play and how.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// Gateway URL, e.g. `ws://127.0.0.1:8080/twilio`.
    pub url: String,
    /// Which carrier to play.
    pub carrier: Dialect,
    /// The carrier's audio format (μ-law for most; PCM16 for Exotel and raw audio).
    pub format: AudioFormat,
    /// Caller audio in `format`.
    pub audio: Vec<u8>,
    /// Playback speed: 1.0 is real time, 10.0 ten times faster.
    pub pace: f64,
    /// After the file, keep the line open (sending silence) at most this long for the reply.
    pub linger: Duration,
    /// `start.customParameters`.
    pub custom_parameters: BTreeMap<String, String>,
    /// Call id to announce.
    pub call_sid: String,
    /// Stream id to announce.
    pub stream_sid: String,
    /// Keep the reply audio and every message in the summary (off for load runs, where
    /// only the counts matter and keeping everything would grow with call length).
    pub record: bool,
}

impl CallOptions {
    /// Options with generated ids, real-time pace and a 6 s linger; `audio` is in the
    /// carrier's usual format ([`CallOptions::format_for`]).
    pub fn new(url: impl Into<String>, carrier: Dialect, audio: Vec<u8>) -> Self {
        let mut options = Self {
            url: url.into(),
            carrier,
            format: Self::format_for(carrier),
            audio,
            pace: 1.0,
            linger: Duration::from_secs(6),
            custom_parameters: BTreeMap::new(),
            call_sid: String::new(),
            stream_sid: String::new(),
            record: true,
        };
        options.fresh_ids();
        options
    }

    /// New random call and stream ids (`CA…`, `MZ…`).
    pub fn fresh_ids(&mut self) {
        let n: u64 = rand::random();
        self.call_sid = format!("CA{n:032x}");
        self.stream_sid = format!("MZ{n:032x}");
    }

    /// Repeats `file` (in this call's format) with a second of silence between repeats, the
    /// way a caller takes turns, until the call lasts `duration`.
    pub fn repeat_for(&mut self, file: &[u8], duration: Duration) {
        let wanted = self.format.bytes_per_ms() * duration.as_millis() as usize;
        let pause = vec![self.format.silence_byte(); self.format.bytes_per_ms() * 1000];
        self.audio.clear();
        while self.audio.len() < wanted && !file.is_empty() {
            self.audio.extend_from_slice(file);
            self.audio.extend_from_slice(&pause);
        }
        self.audio.truncate(wanted);
    }

    /// The format a carrier streams by default (see [`CarrierMessages::usual_format`]).
    pub fn format_for(carrier: Dialect) -> AudioFormat {
        CarrierMessages::usual_format(carrier)
    }

    /// The messages this call's carrier sends.
    pub fn messages(&self) -> CarrierMessages {
        let params = self
            .custom_parameters
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        CarrierMessages {
            dialect: self.carrier,
            stream_sid: self.stream_sid.clone(),
            call_sid: self.call_sid.clone(),
            format: self.format,
            custom_parameters: Value::Object(params),
        }
    }
}

/// What happened on the call.
#[derive(Debug, Default, Clone)]
pub struct CallSummary {
    /// Media frames sent.
    pub frames_sent: u64,
    /// Media messages received.
    pub frames_received: u64,
    /// Reply audio, in the call's format.
    pub received_audio: Vec<u8>,
    /// Sizes of the media payloads received, in bytes.
    pub received_sizes: Vec<usize>,
    /// Marks received (and echoed once played).
    pub marks: Vec<String>,
    /// Barge-ins (`clear`, `clearAudio`, `gw.clear`) received.
    pub clears: u64,
    /// From `start` to the first reply audio.
    pub first_reply: Option<Duration>,
    /// The gateway's close code and reason.
    pub close: Option<(u16, String)>,
    /// Every JSON message received, in order.
    pub events: Vec<Value>,
}

/// Plays one call to the end.
pub async fn run(options: CallOptions) -> anyhow::Result<CallSummary> {
    let (ws, _) = tokio_tungstenite::connect_async(options.url.as_str())
        .await
        .with_context(|| format!("connecting to {}", options.url))?;
    let (mut sink, mut stream) = ws.split();
    let mut summary = CallSummary::default();
    let scale = |d: Duration| {
        if options.pace > 0.0 {
            d.div_f64(options.pace)
        } else {
            Duration::ZERO
        }
    };
    let carrier = options.carrier;
    let text = |v: Value| Message::Text(v.to_string().into());

    if carrier == Dialect::VendorStream {
        // Clients of the in-house integration wait for its greeting before anything else.
        let greeting = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .context("no connected greeting")?;
        if let Some(Ok(Message::Text(t))) = greeting {
            summary
                .events
                .push(serde_json::from_str(&t).unwrap_or(Value::Null));
        }
    }
    let messages = options.messages();
    if let Some(connected) = messages.connected() {
        sink.send(text(connected)).await?;
    }
    let mut sequence = 1u64;
    if let Some(start) = messages.start() {
        sink.send(text(start)).await?;
    }
    let started = Instant::now();

    // Marks are echoed once the audio before them has "played" (at `pace`), as carriers do.
    let (played_tx, mut played_rx) = mpsc::unbounded_channel::<String>();
    let mut playhead = Instant::now();
    let mut pending_marks: Vec<(Instant, String)> = Vec::new();
    let frame_bytes = options.format.bytes_per_ms() * 20;
    let mut next_frame = Instant::now();
    let mut frames = options
        .audio
        .chunks(frame_bytes)
        .map(<[u8]>::to_vec)
        .collect::<Vec<_>>()
        .into_iter();
    let mut file_done_at: Option<Instant> = None;
    let mut last_audio_at: Option<Instant> = None;
    let mut replies_played = 0u32;
    let silence = vec![options.format.silence_byte(); frame_bytes];

    let close = loop {
        let now = Instant::now();
        pending_marks.retain(|(due, name)| {
            if *due <= now {
                let _ = played_tx.send(name.clone());
                false
            } else {
                true
            }
        });
        let finished = match file_done_at {
            None => false,
            Some(done) => {
                // A second of silence, scaled with the pace but never under 300 ms: a busy
                // machine can pause a fast reply for tens of ms without it being over.
                let quiet_for = scale(Duration::from_secs(1)).max(Duration::from_millis(300));
                let quiet = last_audio_at.is_some_and(|t| t.elapsed() >= quiet_for);
                // Carriers without marks: a reply that went quiet has been heard.
                let replied = if carrier.has_marks() {
                    replies_played > 0 && pending_marks.is_empty()
                } else {
                    summary.frames_received > 0
                };
                (replied && quiet) || done.elapsed() >= options.linger
            }
        };
        if finished {
            sequence += 1;
            match messages.stop(sequence) {
                Some(stop) => sink.send(text(stop)).await?,
                // The raw-audio protocol has no stop: hanging up is closing the socket.
                None => sink.send(Message::Close(None)).await?,
            }
            break wait_close(&mut stream, &mut summary).await;
        }
        let next_mark = pending_marks.iter().map(|(due, _)| *due).min();
        let wake = next_mark.map_or(next_frame, |m| m.min(next_frame));
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {
                if Instant::now() >= next_frame {
                    let payload = match frames.next() {
                        Some(frame) => frame,
                        None => {
                            file_done_at.get_or_insert_with(Instant::now);
                            silence.clone()
                        }
                    };
                    sequence += 1;
                    summary.frames_sent += 1;
                    let message = match messages.media(sequence, summary.frames_sent, &payload) {
                        Some(media) => text(media),
                        None => Message::Binary(payload.into()),
                    };
                    sink.send(message).await?;
                    next_frame += scale(Duration::from_millis(20));
                }
            }
            Some(name) = played_rx.recv() => {
                if name.ends_with("/end") {
                    replies_played += 1;
                }
                sequence += 1;
                sink.send(text(messages.mark(sequence, &name))).await?;
            }
            message = stream.next() => {
                let audio = match message {
                    Some(Ok(Message::Text(t))) => {
                        let event: Value = serde_json::from_str(&t).context("gateway sent invalid JSON")?;
                        let kind = event["event"].as_str().unwrap_or("").to_owned();
                        let audio = match kind.as_str() {
                            "media" | "playAudio" => {
                                Some(BASE64.decode(event["media"]["payload"].as_str().unwrap_or("")).context("bad media payload")?)
                            }
                            "mark" | "checkpoint" => {
                                let name = event["mark"]["name"].as_str().or(event["name"].as_str()).unwrap_or("").to_owned();
                                summary.marks.push(name.clone());
                                pending_marks.push((playhead.max(Instant::now()), name));
                                None
                            }
                            "clear" | "clearAudio" | "gw.clear" => {
                                summary.clears += 1;
                                playhead = Instant::now();
                                // A carrier echoes every pending mark on clear.
                                for (_, name) in pending_marks.drain(..) {
                                    let _ = played_tx.send(name);
                                }
                                None
                            }
                            _ => None,
                        };
                        if options.record {
                            summary.events.push(event);
                        }
                        audio
                    }
                    Some(Ok(Message::Binary(bytes))) => Some(bytes.to_vec()),
                    Some(Ok(Message::Close(frame))) => break frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                    Some(Ok(_)) => None,
                    Some(Err(e)) => return Err(e).context("gateway socket failed"),
                    None => break None,
                };
                if let Some(audio) = audio {
                    summary.frames_received += 1;
                    summary.first_reply.get_or_insert_with(|| started.elapsed());
                    let now = Instant::now();
                    playhead = playhead.max(now) + scale(Duration::from_millis(options.format.duration_ms(audio.len())));
                    last_audio_at = Some(now);
                    if options.record {
                        summary.received_sizes.push(audio.len());
                        summary.received_audio.extend_from_slice(&audio);
                    }
                }
            }
        }
    };
    summary.close = close.or(summary.close.take());
    Ok(summary)
}

async fn wait_close<S>(stream: &mut S, summary: &mut CallSummary) -> Option<(u16, String)>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let deadline = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return None,
            message = stream.next() => match message {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                Some(Ok(Message::Text(text))) => {
                    if let Ok(event) = serde_json::from_str::<Value>(&text) {
                        summary.events.push(event);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    }
}

/// What a load run did.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// Calls that ended with each close code (`None`: no close frame).
    pub closes: BTreeMap<Option<u16>, u64>,
    /// Calls that could not run, by reason (`HTTP 429`, `connect: …`): refused upgrades
    /// and broken sockets. Calls that ran are in `closes`.
    pub failures: BTreeMap<String, u64>,
    /// Calls that ended with a close other than 1000, by code and reason.
    pub bad_closes: BTreeMap<String, u64>,
    /// Media frames sent and received, over all calls.
    pub frames_sent: u64,
    /// Media messages received.
    pub frames_received: u64,
    /// Time from `start` to first reply audio, per call that had one, sorted.
    pub first_reply_ms: Vec<u64>,
}

/// A short reason for a call that could not run: the HTTP status of a refused upgrade, or
/// the error's first line.
fn failure_reason(error: &anyhow::Error) -> String {
    use tokio_tungstenite::tungstenite::Error;
    match error.chain().find_map(|e| e.downcast_ref::<Error>()) {
        Some(Error::Http(response)) => format!("HTTP {}", response.status().as_u16()),
        Some(other) => format!("socket: {other}"),
        None => error.to_string(),
    }
}

impl LoadReport {
    /// Calls that could not run or closed other than normally.
    pub fn failed(&self) -> u64 {
        (self.failures.values().sum::<u64>()) + self.bad_closes.values().sum::<u64>()
    }

    /// The `p`-th percentile (0–100) of first-reply times.
    pub fn first_reply_percentile(&self, p: f64) -> Option<u64> {
        if self.first_reply_ms.is_empty() {
            return None;
        }
        let index = ((p / 100.0) * (self.first_reply_ms.len() - 1) as f64).round() as usize;
        self.first_reply_ms.get(index).copied()
    }
}

/// Runs `calls` copies of `template` at once (each with fresh ids), started `ramp` apart.
pub async fn load(template: CallOptions, calls: usize, ramp: Duration) -> LoadReport {
    let mut tasks = Vec::with_capacity(calls);
    for i in 0..calls {
        let mut options = template.clone();
        options.record = false;
        options.fresh_ids();
        if options.carrier == Dialect::RawAudio {
            options.url = format!("{}/{}", options.url.trim_end_matches('/'), options.call_sid);
        }
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(ramp * i as u32).await;
            run(options).await
        }));
    }
    let mut report = LoadReport::default();
    for task in tasks {
        match task.await {
            Ok(Ok(summary)) => {
                *report
                    .closes
                    .entry(summary.close.as_ref().map(|c| c.0))
                    .or_default() += 1;
                if let Some((code, reason)) = summary.close.as_ref().filter(|c| c.0 != 1000) {
                    *report
                        .bad_closes
                        .entry(format!("{code} {reason}"))
                        .or_default() += 1;
                }
                report.frames_sent += summary.frames_sent;
                report.frames_received += summary.frames_received;
                if let Some(t) = summary.first_reply {
                    report.first_reply_ms.push(t.as_millis() as u64);
                }
            }
            Ok(Err(error)) => *report.failures.entry(failure_reason(&error)).or_default() += 1,
            Err(_) => *report.failures.entry("panicked".into()).or_default() += 1,
        }
    }
    report.first_reply_ms.sort_unstable();
    report
}
