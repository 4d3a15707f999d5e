//! A call tape: every carrier frame in and out and every upstream event in and out, with a
//! monotonic timestamp, so that `callgate replay` can play the call again and compare.
//!
//! One JSON object per line (format version [`VERSION`], documented in the README):
//!
//! ```text
//! {"callgate_tape":1, "path":"/twilio", "dialect":"twilio", "audio":true, "pci":true, "config":{..}}
//! {"t":1200,"dir":"carrier_in","text":"{\"event\":\"start\",..}"}
//! {"t":1900,"dir":"upstream_open","conn":0}
//! {"t":2300,"dir":"upstream_out","conn":0,"text":"{\"type\":\"session.update\",..}"}
//! {"t":2600,"dir":"upstream_in","conn":0,"text":"{\"type\":\"session.updated\",..}"}
//! {"t":9100,"dir":"upstream_close","conn":0,"code":1011}
//! {"t":9500,"dir":"tool","name":"lookup","output":"{..}"}
//! {"t":9900,"dir":"carrier_out","text":"{\"event\":\"media\",..}"}
//! ```
//!
//! `t` is microseconds since the socket opened. Secrets never reach a tape (a `token`
//! custom parameter is replaced); in PCI mode key presses become `0` and digit runs in
//! transcripts and in text for the model are redacted; with `audio = false` audio payloads
//! are replaced by their length and a hash. Lines go through a bounded queue to a writer; a
//! tape that falls behind loses lines (counted), never the call's memory.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use serde_json::{json, Value};
use tokio::sync::mpsc;

/// The tape format's version.
pub const VERSION: u64 = 1;
/// What a redacted value becomes.
pub const REDACTED: &str = "[redacted]";

/// Which way a frame went, seen from the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Carrier → gateway.
    CarrierIn,
    /// Gateway → carrier.
    CarrierOut,
    /// Model → gateway.
    UpstreamIn,
    /// Gateway → model.
    UpstreamOut,
}

impl Dir {
    /// The name on the tape.
    pub fn name(self) -> &'static str {
        match self {
            Self::CarrierIn => "carrier_in",
            Self::CarrierOut => "carrier_out",
            Self::UpstreamIn => "upstream_in",
            Self::UpstreamOut => "upstream_out",
        }
    }
}

/// How a tape hides what must not be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redaction {
    /// Keep audio payloads (else their length and a hash).
    pub audio: bool,
    /// PCI: key presses and digit runs redacted.
    pub pci: bool,
}

/// One call's tape.
#[derive(Debug)]
pub struct Tape {
    opened: Instant,
    redaction: Redaction,
    lines: mpsc::Sender<String>,
    dropped: AtomicU64,
}

impl Tape {
    /// A tape whose lines go to `lines`; `header` is written first.
    pub fn new(header: Value, redaction: Redaction, lines: mpsc::Sender<String>) -> Self {
        let tape = Self {
            opened: Instant::now(),
            redaction,
            lines,
            dropped: AtomicU64::new(0),
        };
        tape.line(header.to_string());
        tape
    }

    fn t(&self) -> u64 {
        self.opened.elapsed().as_micros() as u64
    }

    fn line(&self, line: String) {
        if self.lines.try_send(line).is_ok() {
            return;
        }
        metrics::counter!("callgate_tape_lines_dropped_total").increment(1);
        if self.dropped.fetch_add(1, Relaxed) == 0 {
            tracing::warn!("call tape fell behind: lines lost");
        }
    }

    /// A text frame (`conn`: the upstream connection, for upstream frames).
    pub fn text(&self, dir: Dir, conn: Option<u32>, text: &str) {
        let text = redact_text(dir, text, self.redaction);
        let mut line = json!({"t": self.t(), "dir": dir.name(), "text": text});
        if let Some(conn) = conn {
            line["conn"] = conn.into();
        }
        self.line(line.to_string());
    }

    /// A binary frame (raw audio carriers).
    pub fn binary(&self, dir: Dir, bytes: &[u8]) {
        use base64::Engine as _;
        let data = match self.redaction.audio {
            true => crate::codec::BASE64.encode(bytes),
            false => fingerprint(bytes.len(), bytes),
        };
        let line = json!({"t": self.t(), "dir": dir.name(), "binary": data});
        self.line(line.to_string());
    }

    /// The gateway opened upstream connection `conn`.
    pub fn upstream_open(&self, conn: u32) {
        let line = json!({"t": self.t(), "dir": "upstream_open", "conn": conn});
        self.line(line.to_string());
    }

    /// Upstream connection `conn` closed with `code` (by the model unless `by_gateway`).
    pub fn upstream_close(&self, conn: u32, code: u16, by_gateway: bool) {
        let by = if by_gateway { "gateway" } else { "upstream" };
        let line =
            json!({"t": self.t(), "dir": "upstream_close", "conn": conn, "code": code, "by": by});
        self.line(line.to_string());
    }

    /// A tool's webhook answered `output` (replay answers with it).
    pub fn tool(&self, name: &str, output: &str) {
        let output = match self.redaction.pci {
            true => crate::pci::redact_digits(output).into_owned(),
            false => output.to_owned(),
        };
        let line = json!({"t": self.t(), "dir": "tool", "name": name, "output": output});
        self.line(line.to_string());
    }

    /// The gateway closed the carrier socket with `code`.
    pub fn carrier_close(&self, code: u16) {
        let line = json!({"t": self.t(), "dir": "carrier_close", "code": code});
        self.line(line.to_string());
    }
}

/// The length a `len:<n>:<hash>` fingerprint stands for (`None`: not a fingerprint).
pub fn fingerprinted_len(text: &str) -> Option<usize> {
    text.strip_prefix("len:")?.split(':').next()?.parse().ok()
}

/// `len:<n>:<hash>` in place of audio the tape does not keep.
fn fingerprint(len: usize, bytes: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    format!("len:{len}:{:016x}", hasher.finish())
}

/// What the tape keeps of a text frame (unchanged unless something must be hidden).
pub fn redact_text(dir: Dir, text: &str, redaction: Redaction) -> String {
    let needs = text.contains("\"token\"")
        || (redaction.pci
            && (text.contains("dtmf") || text.contains("digit") || dir_has_text(dir)))
        || !redaction.audio;
    if !needs {
        return text.to_owned();
    }
    let Ok(mut value) = serde_json::from_str::<Value>(text) else {
        return text.to_owned();
    };
    redact(dir, &mut value, redaction);
    value.to_string()
}

fn dir_has_text(dir: Dir) -> bool {
    matches!(dir, Dir::UpstreamIn | Dir::UpstreamOut)
}

/// Hides, in a parsed frame, what a tape must not keep (see the module docs).
pub fn redact(dir: Dir, value: &mut Value, redaction: Redaction) {
    // Credentials in a start's custom parameters.
    for params in ["customParameters", "custom_parameters"] {
        if let Some(token) = value
            .get_mut("start")
            .and_then(|s| s.get_mut(params))
            .and_then(|p| p.get_mut("token"))
        {
            *token = REDACTED.into();
        }
    }
    if redaction.pci {
        redact_keys(value);
        if matches!(dir, Dir::UpstreamIn | Dir::UpstreamOut) {
            redact_said(value);
        }
    }
    if !redaction.audio {
        hide_audio(value);
    }
}

/// Key presses in carrier events: each digit becomes `0` (keys like `#` and `*` stay, so a
/// replay still ends its sequences).
fn redact_keys(value: &mut Value) {
    let digit = match value.get_mut("dtmf") {
        Some(dtmf) => dtmf.get_mut("digit"),
        None => value.get_mut("digit"),
    };
    if let Some(Value::String(digit)) = digit {
        *digit = digit
            .chars()
            .map(|c| if c.is_ascii_digit() { '0' } else { c })
            .collect();
    }
}

/// Digit runs in what was said: transcripts, and text given to the model.
fn redact_said(value: &mut Value) {
    let kind = value["type"].as_str().unwrap_or_default().to_owned();
    let fields: &[&str] = if kind.contains("transcript") {
        &["delta", "transcript"]
    } else {
        &[]
    };
    for field in fields {
        if let Some(Value::String(text)) = value.get_mut(*field) {
            *text = crate::pci::redact_digits(text).into_owned();
        }
    }
    // A tool's arguments (from the model) and its output (for the model) are said too.
    if let Some(item) = value.get_mut("item") {
        for field in ["arguments", "output"] {
            if let Some(Value::String(text)) = item.get_mut(field) {
                *text = crate::pci::redact_digits(text).into_owned();
            }
        }
    }
    if let Some(Value::String(text)) = value.get_mut("arguments") {
        *text = crate::pci::redact_digits(text).into_owned();
    }
    if let Some(content) = value
        .get_mut("item")
        .and_then(|i| i.get_mut("content"))
        .and_then(Value::as_array_mut)
    {
        for part in content {
            if let Some(Value::String(text)) = part.get_mut("text") {
                *text = crate::pci::redact_digits(text).into_owned();
            }
        }
    }
}

/// Audio payloads → length and hash.
fn hide_audio(value: &mut Value) {
    use base64::Engine as _;
    let kind = value["type"].as_str().unwrap_or_default();
    let field = if value
        .get("media")
        .is_some_and(|m| m.get("payload").is_some())
    {
        value.get_mut("media").and_then(|m| m.get_mut("payload"))
    } else if kind == "input_audio_buffer.append" {
        value.get_mut("audio")
    } else if kind.ends_with("audio.delta") && !kind.contains("transcript") {
        value.get_mut("delta")
    } else {
        None
    };
    if let Some(Value::String(audio)) = field {
        let bytes = crate::codec::BASE64
            .decode(audio.as_bytes())
            .unwrap_or_default();
        *audio = fingerprint(bytes.len(), &bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP: Redaction = Redaction {
        audio: true,
        pci: true,
    };

    #[test]
    fn secrets_and_digits_never_reach_the_tape() {
        let start = r#"{"event":"start","start":{"customParameters":{"token":"eyJ.secret","tenant":"acme"}}}"#;
        let kept = redact_text(Dir::CarrierIn, start, KEEP);
        assert!(
            !kept.contains("eyJ.secret") && kept.contains("acme"),
            "{kept}"
        );
        let dtmf = r#"{"event":"dtmf","dtmf":{"digit":"7"}}"#;
        assert!(redact_text(Dir::CarrierIn, dtmf, KEEP).contains(r#""digit":"0""#));
        let hash = r##"{"event":"dtmf","dtmf":{"digit":"#"}}"##;
        assert!(redact_text(Dir::CarrierIn, hash, KEEP).contains(r##""digit":"#""##));
        let said = r#"{"type":"conversation.item.input_audio_transcription.completed","transcript":"card 4111 1111"}"#;
        assert!(!redact_text(Dir::UpstreamIn, said, KEEP).contains("4111"));
        let told = r#"{"type":"conversation.item.create","item":{"content":[{"type":"input_text","text":"Caller entered digits: 1234#"}]}}"#;
        assert!(!redact_text(Dir::UpstreamOut, told, KEEP).contains("1234"));
        // Tools: what the model passes and what it is handed back.
        let call = r#"{"type":"response.output_item.done","item":{"type":"function_call","name":"pay","arguments":"{\"card\":\"4111 1111\"}"}}"#;
        let taped = redact_text(Dir::UpstreamIn, call, KEEP);
        assert!(!taped.contains("4111") && taped.contains("pay"), "{taped}");
        let args =
            r#"{"type":"response.function_call_arguments.done","arguments":"{\"pin\":\"9876\"}"}"#;
        assert!(!redact_text(Dir::UpstreamIn, args, KEEP).contains("9876"));
        let output = r#"{"type":"conversation.item.create","item":{"type":"function_call_output","call_id":"c1","output":"balance 1234"}}"#;
        let taped = redact_text(Dir::UpstreamOut, output, KEEP);
        assert!(!taped.contains("1234") && taped.contains("c1"), "{taped}");
        // Audio (base64 is full of digits) is never mistaken for speech.
        let audio = r#"{"type":"response.output_audio.delta","delta":"AAEC1234"}"#;
        assert!(redact_text(Dir::UpstreamIn, audio, KEEP).contains("AAEC1234"));
    }

    #[test]
    fn audio_can_be_left_out() {
        let off = Redaction {
            audio: false,
            pci: false,
        };
        let media = r#"{"event":"media","media":{"payload":"/w=="}}"#;
        let kept = redact_text(Dir::CarrierIn, media, off);
        assert!(kept.contains("len:1:"), "{kept}");
        let payload: Value = serde_json::from_str(&kept).unwrap();
        assert_eq!(
            fingerprinted_len(payload["media"]["payload"].as_str().unwrap()),
            Some(1)
        );
        assert_eq!(
            fingerprinted_len("/w=="),
            None,
            "audio is not a fingerprint"
        );
        let append = r#"{"type":"input_audio_buffer.append","audio":"/w8="}"#;
        assert!(redact_text(Dir::UpstreamOut, append, off).contains("len:2:"));
    }
}
