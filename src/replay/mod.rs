//! `callgate replay TAPE`: plays a call tape's carrier side into a fresh gateway in this
//! process, answers as the tape's upstream did (the same events at the same times after
//! each connection opened, closes included, and the same tool results), then compares what
//! the gateway sent to both sides with the tape ([`compare`]).

pub mod compare;
mod fakes;
pub mod settings;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use callgate_handlers::codec::BASE64;
use callgate_handlers::tape::{Dir, Redaction, VERSION};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::config::{RouteConfig, RouteDialect};
use compare::{
    caller_audio_whole, first_difference, is_audio, item, join_audio, taped_binary, Difference,
    Item,
};
use fakes::{fake_tools, fake_upstream};

/// A tape's first line.
#[derive(Debug, Clone, Deserialize)]
pub struct Header {
    /// The format version.
    pub callgate_tape: u64,
    /// The route the call came in on.
    pub path: String,
    /// Its dialect (or `detect`).
    pub dialect: String,
    /// Audio payloads kept.
    pub audio: bool,
    /// PCI redaction on.
    pub pci: bool,
    /// See [`settings`].
    #[serde(default)]
    pub settings: Value,
}

/// One taped line after the header.
#[derive(Debug, Clone, Deserialize)]
pub struct Entry {
    /// Microseconds since the socket opened.
    pub t: u64,
    /// `carrier_in`, `carrier_out`, `upstream_in`, `upstream_out`, `upstream_open`,
    /// `upstream_close`, `tool` or `carrier_close`.
    pub dir: String,
    /// The upstream connection.
    #[serde(default)]
    pub conn: Option<u32>,
    /// A text frame.
    #[serde(default)]
    pub text: Option<String>,
    /// A binary frame (base64 or a fingerprint).
    #[serde(default)]
    pub binary: Option<String>,
    /// A close code.
    #[serde(default)]
    pub code: Option<u16>,
    /// Who closed an upstream connection (`upstream` or `gateway`).
    #[serde(default)]
    pub by: Option<String>,
    /// A tool's name.
    #[serde(default)]
    pub name: Option<String>,
    /// A tool's output.
    #[serde(default)]
    pub output: Option<String>,
}

/// A parsed tape.
#[derive(Debug, Clone)]
pub struct Tape {
    /// The header.
    pub header: Header,
    /// Everything after it, in order.
    pub entries: Vec<Entry>,
}

impl Tape {
    /// Parses a tape (JSON Lines).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header: Header =
            serde_json::from_str(lines.next().context("empty tape")?).context("tape header")?;
        anyhow::ensure!(
            header.callgate_tape == VERSION,
            "tape format {} (this callgate reads {VERSION})",
            header.callgate_tape
        );
        let entries = lines
            .enumerate()
            .map(|(i, line)| {
                serde_json::from_str(line).with_context(|| format!("tape line {}", i + 2))
            })
            .collect::<anyhow::Result<Vec<Entry>>>()?;
        Ok(Self { header, entries })
    }

    fn redaction(&self) -> Redaction {
        Redaction {
            audio: self.header.audio,
            pci: self.header.pci,
        }
    }
}

/// What a replay found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The first difference on each side that has one (carrier first).
    pub differences: Vec<Difference>,
    /// Messages compared, over all sides.
    pub compared: usize,
}

impl Report {
    /// The first difference, if any.
    pub fn first(&self) -> Option<&Difference> {
        self.differences.first()
    }
}

/// What the gateway sent during the replay.
#[derive(Default)]
struct Heard {
    carrier: Vec<Item>,
    close: Option<u16>,
    upstream: HashMap<u32, Vec<Item>>,
}

/// Replays `tape` `speed` times faster than it was recorded and compares.
pub async fn replay(tape: &Tape, speed: f64) -> anyhow::Result<Report> {
    let speed = if speed > 0.0 { speed } else { 1.0 };
    let scale = |t_us: u64| Duration::from_micros(t_us).div_f64(speed);
    let heard = Arc::new(Mutex::new(Heard::default()));
    let redaction = tape.redaction();

    let upstream_url = fake_upstream(tape, heard.clone(), speed).await?;
    let tool_url = fake_tools(tape).await?;
    let mut config =
        settings::config(&tape.header.settings, &tool_url).map_err(|e| anyhow::anyhow!("{e}"))?;
    config.listen = "127.0.0.1:0".into();
    config.upstream.url = upstream_url;
    config.records.enabled = false;
    config.recording.enabled = false;
    config.tape.enabled = false;
    config.security.messages_per_second = 1_000_000;
    config.security.message_burst = 1_000_000;
    config.security.audio_burst_ms = 1_000_000_000;
    config.upstream.queue_ms = 60_000;
    if !config
        .effective_routes()
        .iter()
        .any(|r| r.path == tape.header.path)
    {
        let dialect = match tape.header.dialect.as_str() {
            "detect" => RouteDialect::Detect,
            name => RouteDialect::Fixed(
                callgate_handlers::dialect::Dialect::from_name(name)
                    .with_context(|| format!("tape dialect {name}"))?,
            ),
        };
        config
            .routes
            .push(RouteConfig::with(&tape.header.path, dialect, false));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let gateway = tokio::spawn(crate::run(listener, config, shutdown.clone()));

    // The carrier: the taped frames at their times; everything the gateway says, heard.
    let url = format!("ws://{addr}{}", tape.header.path);
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let opened = Instant::now();
    let (mut sink, mut stream) = ws.split();
    let listening = {
        let heard = heard.clone();
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let t = (opened.elapsed().as_secs_f64() * speed * 1e6) as u64;
                let mut heard = heard.lock().unwrap_or_else(|p| p.into_inner());
                match message {
                    Message::Text(text) => {
                        heard
                            .carrier
                            .push(item(t, Some(&text), None, Dir::CarrierOut, redaction))
                    }
                    Message::Binary(bytes) => {
                        heard
                            .carrier
                            .push(item(t, None, Some(&bytes), Dir::CarrierOut, redaction))
                    }
                    Message::Close(frame) => {
                        heard.close = frame.map(|f| u16::from(f.code));
                        break;
                    }
                    _ => {}
                }
            }
        })
    };
    let carrier_said = said_times(tape, "carrier_out", None);
    let mut last = 0;
    for entry in tape.entries.iter().filter(|e| e.dir == "carrier_in") {
        tokio::time::sleep_until(opened + scale(entry.t)).await;
        // Cause before effect: a frame the carrier sent after hearing something (a mark
        // echo after a clear) waits until the gateway has said it here too.
        let needed = said_before(&carrier_said, entry.t);
        let heard_enough = || {
            let heard = heard.lock().unwrap_or_else(|p| p.into_inner());
            heard.carrier.iter().filter(|i| !is_audio(&i.value)).count() >= needed
        };
        wait_for(heard_enough).await;
        last = entry.t;
        let message = match (&entry.text, &entry.binary) {
            (Some(text), _) => Message::Text(text.clone().into()),
            (None, Some(data)) => Message::Binary(audio_bytes(data).into()),
            (None, None) => continue,
        };
        if sink.send(message).await.is_err() {
            break;
        }
    }
    // The call goes on as long as it did on the tape, then the carrier hangs up if the
    // gateway has not closed first.
    let end = tape.entries.last().map_or(last, |e| e.t).max(last);
    let closed = tokio::time::timeout_at(opened + scale(end) + Duration::from_secs(2), async {
        while !listening.is_finished() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    if closed.is_err() {
        let _ = sink.send(Message::Close(None)).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), listening).await;
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), gateway).await;

    let heard = std::mem::take(&mut *heard.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(compare(tape, heard))
}

/// When the tape's non-audio messages on `dir` (connection `conn`) were said, in order.
fn said_times(tape: &Tape, dir: &str, conn: Option<u32>) -> Vec<u64> {
    tape.entries
        .iter()
        .filter(|e| e.dir == dir && (conn.is_none() || e.conn == conn))
        .filter(|e| {
            let value = e
                .text
                .as_deref()
                .and_then(|text| serde_json::from_str::<Value>(text).ok())
                .unwrap_or(Value::Null);
            e.binary.is_none() && !is_audio(&value)
        })
        .map(|e| e.t)
        .collect()
}

/// How many of `times` are before `t`.
fn said_before(times: &[u64], t: u64) -> usize {
    times.partition_point(|&said| said < t)
}

/// Waits (up to half a second) for `ready`; past that the replay goes on and the comparison
/// shows what the gateway did not say.
async fn wait_for(ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_millis(500);
    while !ready() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn audio_bytes(data: &str) -> Vec<u8> {
    match callgate_handlers::tape::fingerprinted_len(data) {
        // Audio the tape left out: silence of the same length.
        Some(len) => vec![0; len],
        None => BASE64.decode(data).unwrap_or_default(),
    }
}

fn compare(tape: &Tape, heard: Heard) -> Report {
    let audio = tape.header.audio;
    let taped = |dir: &str, conn: Option<u32>| -> Vec<Item> {
        tape.entries
            .iter()
            .filter(|e| e.dir == dir && (conn.is_none() || e.conn == conn))
            .map(|e| match (&e.text, &e.binary) {
                (Some(text), _) => Item {
                    t: e.t,
                    value: serde_json::from_str(text)
                        .unwrap_or_else(|_| Value::String(text.clone())),
                },
                (None, Some(data)) => taped_binary(e.t, data),
                (None, None) => Item {
                    t: e.t,
                    value: Value::Null,
                },
            })
            .collect()
    };
    let mut differences = Vec::new();
    let carrier = join_audio(taped("carrier_out", None), audio);
    let heard_carrier = join_audio(heard.carrier, audio);
    let mut compared = carrier.len();
    differences.extend(first_difference("carrier_out", &carrier, &heard_carrier));
    let mut conns: Vec<u32> = tape
        .entries
        .iter()
        .filter(|e| e.dir == "upstream_open")
        .filter_map(|e| e.conn)
        .collect();
    conns.extend(heard.upstream.keys().copied());
    conns.sort_unstable();
    conns.dedup();
    for conn in conns {
        let expected = caller_audio_whole(taped("upstream_out", Some(conn)), audio);
        let heard = heard.upstream.get(&conn).cloned().unwrap_or_default();
        let actual = caller_audio_whole(heard, audio);
        compared += expected.len();
        differences.extend(first_difference(
            &format!("upstream_out[{conn}]"),
            &expected,
            &actual,
        ));
    }
    let taped_close = tape
        .entries
        .iter()
        .find(|e| e.dir == "carrier_close")
        .and_then(|e| e.code);
    if taped_close.is_some() && taped_close != heard.close {
        differences.push(Difference {
            side: "close".into(),
            index: 0,
            t_ms: tape.entries.last().map_or(0.0, |e| e.t as f64 / 1000.0),
            event: "close".into(),
            field: "code".into(),
            tape: format!("{taped_close:?}"),
            replay: format!("{:?}", heard.close),
        });
    }
    Report {
        differences,
        compared,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_tape_is_refused_with_the_reason() {
        let error = |text: &str| format!("{:#}", Tape::parse(text).unwrap_err());
        assert!(error("").contains("empty tape"));
        assert!(error("not json").contains("tape header"));
        let future =
            r#"{"callgate_tape":2,"path":"/twilio","dialect":"twilio","audio":true,"pci":true}"#;
        assert!(error(future).contains("tape format 2"));
        let header =
            r#"{"callgate_tape":1,"path":"/twilio","dialect":"twilio","audio":true,"pci":true}"#;
        assert!(error(&format!("{header}\n{{\"t\":1}}")).contains("tape line 2"));
        let tape = Tape::parse(&format!(
            "{header}\n{{\"t\":5,\"dir\":\"carrier_in\",\"text\":\"{{}}\"}}\n"
        ))
        .unwrap();
        assert_eq!((tape.entries.len(), tape.entries[0].t), (1, 5));
    }
}
