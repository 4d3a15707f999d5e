//! The stamped load: many calls at real time whose 20 ms frames each carry their call and
//! number, so that an upstream that echoes audio (the relay benchmark's echo, a test rig)
//! lets every frame's round trip be timed: frame sent → the same audio back at the carrier.
//! `callgate loadtest --stamped` and `benches/relay.rs` both run it.
//!
//! Marks are echoed at once, as a carrier echoes them once what precedes them has played.
//! Frames are μ-law and the call is Twilio's, so a gateway with `upstream.audio = "pcmu"`
//! passes the bytes through untouched (any transcoding would erase the stamps).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use callgate_handlers::codec::BASE64;
use callgate_handlers::dialect::Dialect;
use callgate_layers::util::lock;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::CallOptions;

/// What a stamped run measured.
#[derive(Debug, Default)]
pub struct StampedReport {
    /// (frame number within its call, round trip in ms) for every frame that came back.
    pub round_trips: Vec<(u32, f64)>,
    /// Frames sent in all.
    pub frames_sent: u64,
    /// Calls that failed, by reason (`HTTP 429`, `close 1011 upstream failed`, `connect: …`,
    /// `N frames of another call`).
    pub failures: BTreeMap<String, u64>,
    /// Calls run.
    pub calls: u32,
}

impl StampedReport {
    /// How many frames came back, and the p50 and p99 (ms) of their round trips, counting
    /// frames numbered `from` and later.
    pub fn percentiles(&self, from: u32) -> (usize, f64, f64) {
        self.percentiles_of(|n| n >= from)
    }

    /// The first frame's round trip per call, p50 and p99 (ms): `start` → upstream ready →
    /// first echo, which is where a cold upstream connection shows.
    pub fn first_frame(&self) -> (f64, f64) {
        let (_, p50, p99) = self.percentiles_of(|n| n == 0);
        (p50, p99)
    }

    fn percentiles_of(&self, keep: impl Fn(u32) -> bool) -> (usize, f64, f64) {
        let mut times: Vec<f64> = self
            .round_trips
            .iter()
            .filter(|(n, _)| keep(*n))
            .map(|(_, t)| *t)
            .collect();
        times.sort_by(f64::total_cmp);
        let at = |p: f64| {
            let i = ((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1));
            times.get(i).copied().unwrap_or(f64::NAN)
        };
        (times.len(), at(0.50), at(0.99))
    }

    /// Failed calls in all.
    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    /// The one-line summary both the CLI and the benchmark print.
    pub fn summary(&self, seconds: u64) -> String {
        let (n, p50, p99) = self.percentiles(0);
        let (_, s50, s99) = self.percentiles(50);
        let (f50, f99) = self.first_frame();
        let expected = u64::from(self.calls) * seconds * 50;
        let mut line = format!(
            "frames {n} of {expected} came back; round trip p50 {p50:.2} ms, p99 {p99:.2} ms \
             (after the first second: p50 {s50:.2}, p99 {s99:.2}; first frame p50 {f50:.2}, p99 {f99:.2}); failed calls {}",
            self.failed()
        );
        for (reason, count) in &self.failures {
            line.push_str(&format!("; {count} × {reason}"));
        }
        line
    }
}

/// A 20 ms μ-law frame carrying its call and number (μ-law bytes pass through untouched).
fn frame(call: u32, n: u32) -> [u8; 160] {
    let mut bytes = [0x7fu8; 160];
    bytes[..4].copy_from_slice(&call.to_be_bytes());
    bytes[4..8].copy_from_slice(&n.to_be_bytes());
    bytes
}

/// The call and frame number a frame carries (at least 8 bytes of it).
fn stamp(chunk: &[u8]) -> (u32, u32) {
    let word =
        |at: usize| u32::from_be_bytes([chunk[at], chunk[at + 1], chunk[at + 2], chunk[at + 3]]);
    (word(0), word(4))
}

/// Runs `calls` stamped Twilio calls against `url` for `seconds` each, their starts spread
/// over `ramp`.
pub async fn run(url: &str, calls: u32, seconds: u64, ramp: Duration) -> StampedReport {
    let report = Arc::new(Mutex::new(StampedReport {
        calls,
        ..StampedReport::default()
    }));
    let mut tasks = Vec::new();
    for call in 0..calls {
        let (url, report) = (url.to_owned(), report.clone());
        let delay = ramp.mul_f64(f64::from(call) / f64::from(calls.max(1)));
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let outcome = one_call(&url, call, seconds, &report).await;
            if let Err(reason) = outcome {
                *lock(&report).failures.entry(reason).or_default() += 1;
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let report = std::mem::take(&mut *lock(&report));
    report
}

/// One call; `Err` says why it failed.
async fn one_call(
    url: &str,
    call: u32,
    seconds: u64,
    report: &Mutex<StampedReport>,
) -> Result<(), String> {
    // Nagle off, as on every real carrier and gateway socket: with it, small frames wait
    // for delayed ACKs (40 ms).
    let connecting = tokio_tungstenite::connect_async_with_config(url, None, true);
    let (ws, _) = connecting.await.map_err(|e| match e {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            format!("HTTP {}", response.status().as_u16())
        }
        other => format!("connect: {other}"),
    })?;
    let (mut sink, mut stream) = ws.split();
    let options = CallOptions::new(url, Dialect::Twilio, Vec::new());
    let messages = options.messages();
    let text = |v: serde_json::Value| Message::Text(v.to_string().into());
    let start = messages.start().expect("twilio has a start");
    sink.send(text(start))
        .await
        .map_err(|e| format!("send: {e}"))?;

    let sent: Arc<Mutex<HashMap<u32, Instant>>> = Arc::default();
    let sent_by_reader = sent.clone();
    // Marks are echoed as a carrier does once the audio before them has played; the echo
    // plays as it arrives, so at once.
    let (marks_tx, mut marks) = tokio::sync::mpsc::unbounded_channel::<String>();
    let reader = async move {
        let mut times = Vec::with_capacity(seconds as usize * 50);
        let mut crossed = 0u64;
        let mut audio = Vec::with_capacity(1024);
        let close = loop {
            let Some(Ok(message)) = stream.next().await else {
                break None;
            };
            let text = match message {
                Message::Text(text) => text,
                Message::Close(frame) => {
                    break frame.map(|f| (u16::from(f.code), f.reason.to_string()))
                }
                _ => continue,
            };
            // Only the payload and mark names matter: find them without parsing.
            let Some(payload) = media_payload(&text) else {
                if let Some(name) = mark_name(&text) {
                    let _ = marks_tx.send(name.to_owned());
                }
                continue;
            };
            audio.clear();
            if BASE64.decode_vec(payload, &mut audio).is_err() {
                continue;
            }
            let now = Instant::now();
            let mut sent = lock(&sent_by_reader);
            for chunk in audio.chunks(160).filter(|c| c.len() >= 8) {
                let (of_call, n) = stamp(chunk);
                // Another call's audio on this socket would be a gateway bug, not a round trip.
                if of_call != call {
                    crossed += 1;
                    continue;
                }
                if let Some(at) = sent.remove(&n) {
                    times.push((n, now.duration_since(at).as_secs_f64() * 1000.0));
                }
            }
        };
        (times, crossed, close)
    };
    let reader = tokio::spawn(reader);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut sent_frames = 0;
    let mut sequence = 1u64;
    let mut failure = None;
    let frames = (seconds * 50) as u32;
    while sent_frames < frames {
        sequence += 1;
        let message = tokio::select! {
            biased;
            Some(name) = marks.recv() => messages.mark(sequence, &name),
            _ = tick.tick() => {
                let n = sent_frames;
                sent_frames += 1;
                lock(&sent).insert(n, Instant::now());
                messages.media(sequence, u64::from(n) + 1, &frame(call, n)).expect("twilio has media")
            }
        };
        if sink.send(text(message)).await.is_err() {
            failure = Some("socket closed mid-call");
            break;
        }
    }
    if failure.is_none() {
        // Let the last frames come back, then hang up as the carrier does.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stop = messages.stop(999_999).expect("twilio has a stop");
        let _ = sink.send(text(stop)).await;
    }
    let joined = tokio::time::timeout(Duration::from_secs(5), reader).await;
    let (times, crossed, close) = match joined {
        Ok(Ok(result)) => result,
        _ => (Vec::new(), 0, None),
    };
    let mut report = lock(report);
    report.frames_sent += u64::from(sent_frames);
    report.round_trips.extend(times);
    match (failure, close) {
        _ if crossed > 0 => Err(format!("{crossed} frames of another call")),
        (_, Some((code, reason))) if code != 1000 => Err(format!("close {code} {reason}")),
        (Some(why), _) => Err(why.to_owned()),
        _ => Ok(()),
    }
}

/// The name in a mark message.
fn mark_name(text: &str) -> Option<&str> {
    text.contains("\"event\":\"mark\"")
        .then(|| string_field(text, "name"))
        .flatten()
}

/// The base64 payload of a media message.
fn media_payload(text: &str) -> Option<&str> {
    string_field(text, "payload")
}

/// The first string value of `key` in compact JSON, found without parsing (the load and the
/// echo upstream share a core with each other, and only this much of a message matters).
/// Values with escapes are not decoded: base64 and mark names have none.
pub fn string_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let quoted = format!("\"{key}\":\"");
    let at = text.find(&quoted)? + quoted.len();
    Some(&text[at..at + text[at..].find('"')?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_found_without_parsing() {
        let message = r#"{"event":"media","streamSid":"MZ1","media":{"payload":"AAEC"}}"#;
        assert_eq!(media_payload(message), Some("AAEC"));
        assert_eq!(media_payload(r#"{"event":"mark"}"#), None);
        let mark = r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"g0/i1/100"}}"#;
        assert_eq!(mark_name(mark), Some("g0/i1/100"));
        assert_eq!(mark_name(message), None);
    }

    #[test]
    fn frames_carry_their_call_and_number() {
        assert_eq!(stamp(&frame(7, 1234)), (7, 1234));
        assert_ne!(
            stamp(&frame(8, 1234)).0,
            7,
            "another call's frame is told apart"
        );
    }

    #[test]
    fn percentiles_skip_the_first_second_when_asked() {
        let report = StampedReport {
            round_trips: (0..100)
                .map(|n| (n, if n < 50 { 100.0 } else { 1.0 }))
                .collect(),
            ..StampedReport::default()
        };
        assert_eq!(report.percentiles(50), (50, 1.0, 1.0));
        assert_eq!(report.first_frame(), (100.0, 100.0));
    }
}
