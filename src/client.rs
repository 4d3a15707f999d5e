//! `callgate call`: plays a WAV file into a gateway as a carrier would, answers marks as a
//! carrier does, records the reply. Also the integration tests' carrier.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine as _;
use callgate_handlers::codec::BASE64;
use callgate_handlers::dialect::Dialect;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// μ-law bytes per 20 ms frame.
const FRAME: usize = 160;

/// What to play and how.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// Gateway URL, e.g. `ws://127.0.0.1:8080/twilio`.
    pub url: String,
    /// Which carrier to play.
    pub carrier: Dialect,
    /// Caller audio, μ-law 8 kHz.
    pub audio: Vec<u8>,
    /// Playback speed: 1.0 is real time, 10.0 ten times faster.
    pub pace: f64,
    /// After the file, keep the line open (sending silence) at most this long for the reply.
    pub linger: Duration,
    /// `start.customParameters`.
    pub custom_parameters: BTreeMap<String, String>,
    /// `callSid` / `streamSid` to announce.
    pub call_sid: String,
    /// `streamSid`.
    pub stream_sid: String,
}

impl CallOptions {
    /// Options with generated ids, real-time pace and a 6 s linger.
    pub fn new(url: impl Into<String>, carrier: Dialect, audio: Vec<u8>) -> Self {
        let n: u64 = rand::random();
        Self {
            url: url.into(),
            carrier,
            audio,
            pace: 1.0,
            linger: Duration::from_secs(6),
            custom_parameters: BTreeMap::new(),
            call_sid: format!("CA{n:032x}"),
            stream_sid: format!("MZ{n:032x}"),
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
    /// Reply audio (μ-law).
    pub received_audio: Vec<u8>,
    /// Marks received (and echoed once played).
    pub marks: Vec<String>,
    /// `clear` messages received.
    pub clears: u64,
    /// From `start` to the first reply audio.
    pub first_reply: Option<Duration>,
    /// The gateway's close code and reason.
    pub close: Option<(u16, String)>,
    /// Every message received, in order.
    pub events: Vec<Value>,
}

enum Played {
    Mark(String),
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

    if options.carrier == Dialect::VendorStream {
        // Clients of the in-house integration wait for its greeting before anything else.
        let greeting = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .context("no connected greeting")?;
        if let Some(Ok(Message::Text(text))) = greeting {
            summary
                .events
                .push(serde_json::from_str(&text).unwrap_or(Value::Null));
        }
    } else {
        let connected = match options.carrier {
            Dialect::Twilio => {
                json!({"event": "connected", "protocol": "Call", "version": "1.0.0"})
            }
            _ => json!({"event": "connected"}),
        };
        sink.send(Message::Text(connected.to_string().into()))
            .await?;
    }
    let mut sequence = 1u64;
    sink.send(Message::Text(
        start_message(&options, sequence).to_string().into(),
    ))
    .await?;
    let started = Instant::now();

    // Marks are echoed once the audio before them has "played" (at `pace`), as carriers do.
    let (played_tx, mut played_rx) = mpsc::unbounded_channel::<Played>();
    let mut playhead = Instant::now();
    let mut pending_marks: Vec<(Instant, String)> = Vec::new();
    let frame_time = Duration::from_millis(20);
    let mut next_frame = Instant::now();
    let mut frames = options
        .audio
        .chunks(FRAME)
        .map(<[u8]>::to_vec)
        .collect::<Vec<_>>()
        .into_iter();
    let mut file_done_at: Option<Instant> = None;
    let mut last_audio_at: Option<Instant> = None;
    let mut replies_played = 0u32;
    let silence = vec![0xFFu8; FRAME];

    let close = loop {
        let now = Instant::now();
        // Echo marks whose audio has played.
        pending_marks.retain(|(due, name)| {
            if *due <= now {
                let _ = played_tx.send(Played::Mark(name.clone()));
                false
            } else {
                true
            }
        });
        let finished = match file_done_at {
            None => false,
            Some(done) => {
                let quiet =
                    last_audio_at.is_none_or(|t| t.elapsed() >= scale(Duration::from_secs(1)));
                (replies_played > 0 && quiet && pending_marks.is_empty())
                    || done.elapsed() >= options.linger
            }
        };
        if finished {
            sequence += 1;
            let stop = json!({"event": "stop", "sequenceNumber": sequence.to_string(), "streamSid": options.stream_sid,
                "stop": {"accountSid": "ACcallgate", "callSid": options.call_sid}});
            sink.send(Message::Text(stop.to_string().into())).await?;
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
                    let media = json!({"event": "media", "sequenceNumber": sequence.to_string(), "streamSid": options.stream_sid,
                        "media": {"track": "inbound", "chunk": summary.frames_sent.to_string(),
                                  "timestamp": (summary.frames_sent * 20).to_string(), "payload": BASE64.encode(&payload)}});
                    sink.send(Message::Text(media.to_string().into())).await?;
                    next_frame += scale(frame_time);
                }
            }
            Some(Played::Mark(name)) = played_rx.recv() => {
                if name.ends_with("/end") {
                    replies_played += 1;
                }
                sequence += 1;
                let mark = json!({"event": "mark", "sequenceNumber": sequence.to_string(), "streamSid": options.stream_sid, "mark": {"name": name}});
                sink.send(Message::Text(mark.to_string().into())).await?;
            }
            message = stream.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let event: Value = serde_json::from_str(&text).context("gateway sent invalid JSON")?;
                    match event["event"].as_str().unwrap_or("") {
                        "media" => {
                            let audio = BASE64.decode(event["media"]["payload"].as_str().unwrap_or("")).context("bad media payload")?;
                            summary.frames_received += 1;
                            summary.first_reply.get_or_insert_with(|| started.elapsed());
                            let now = Instant::now();
                            playhead = playhead.max(now) + scale(Duration::from_millis(audio.len() as u64 / 8));
                            last_audio_at = Some(now);
                            summary.received_audio.extend_from_slice(&audio);
                        }
                        "mark" => {
                            let name = event["mark"]["name"].as_str().unwrap_or("").to_owned();
                            summary.marks.push(name.clone());
                            pending_marks.push((playhead.max(Instant::now()), name));
                        }
                        "clear" => {
                            summary.clears += 1;
                            playhead = Instant::now();
                            // A carrier echoes every pending mark on clear.
                            for (_, name) in pending_marks.drain(..) {
                                let _ = played_tx.send(Played::Mark(name));
                            }
                        }
                        _ => {}
                    }
                    summary.events.push(event);
                }
                Some(Ok(Message::Close(frame))) => break frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e).context("gateway socket failed"),
                None => break None,
            },
        }
    };
    summary.close = close.or(summary.close.take());
    Ok(summary)
}

fn start_message(options: &CallOptions, sequence: u64) -> Value {
    let mut start = json!({
        "accountSid": "ACcallgate",
        "streamSid": options.stream_sid,
        "callSid": options.call_sid,
        "customParameters": options.custom_parameters,
    });
    match options.carrier {
        Dialect::Twilio => {
            start["tracks"] = json!(["inbound"]);
            start["mediaFormat"] =
                json!({"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1});
        }
        Dialect::Smartflo => {
            start["from"] = json!("0000000000");
            start["to"] = json!("1111111111");
            start["mediaFormat"] = json!({"encoding": "audio/x-mulaw", "sampleRate": 8000, "bitRate": 64, "bitDepth": 8});
        }
        Dialect::VendorStream => {
            start["tracks"] = json!("inbound");
            start["mediaFormat"] =
                json!({"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1});
        }
    }
    json!({"event": "start", "sequenceNumber": sequence.to_string(), "streamSid": options.stream_sid, "start": start})
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
