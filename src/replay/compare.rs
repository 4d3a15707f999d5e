//! Comparing what a replay heard with what the tape recorded, side by side: the carrier's
//! messages in order, and each upstream connection's events in order.
//!
//! Audio is compared as runs: consecutive media messages (or `input_audio_buffer.append`s)
//! are joined and compared by length and content, because how audio is cut into messages
//! depends on when it arrived. `audio_end_ms` (a truncate point, measured partly by the
//! clock) may differ by [`TRUNCATE_TOLERANCE_MS`]. Everything else must be equal.

use std::hash::{Hash, Hasher};

use base64::Engine as _;
use callgate_handlers::codec::BASE64;
use callgate_handlers::tape::{fingerprinted_len, redact, Dir, Redaction};
use serde_json::{json, Value};

/// How far a replayed truncate point may be from the taped one.
pub const TRUNCATE_TOLERANCE_MS: i64 = 30;

/// One message as compared: when it was (µs since the socket opened) and what it said.
#[derive(Debug, Clone)]
pub struct Item {
    /// Microseconds since the socket opened.
    pub t: u64,
    /// The message (a JSON value; binary frames as `{"binary": {"bytes", "hash"}}`).
    pub value: Value,
}

/// Where a replay first went another way than the tape.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// `carrier_out`, `upstream_out[N]` or `close`.
    pub side: String,
    /// Position in that side's sequence (after audio runs are joined).
    pub index: usize,
    /// When, on the tape (ms since the socket opened).
    pub t_ms: f64,
    /// The message's `event` or `type`.
    pub event: String,
    /// The first field that differs (a JSON path; empty: the whole message).
    pub field: String,
    /// What the tape has.
    pub tape: String,
    /// What the replay produced.
    pub replay: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} #{} at {:.3} s: event {:?}, field {:?}: tape {} / replay {}",
            self.side,
            self.index,
            self.t_ms / 1000.0,
            self.event,
            self.field,
            self.tape,
            self.replay
        )
    }
}

/// A text or binary frame as compared.
pub fn item(
    t: u64,
    text: Option<&str>,
    binary: Option<&[u8]>,
    dir: Dir,
    redaction: Redaction,
) -> Item {
    let value = match (text, binary) {
        (Some(text), _) => match serde_json::from_str::<Value>(text) {
            Ok(mut value) => {
                redact(dir, &mut value, redaction);
                value
            }
            Err(_) => Value::String(text.to_owned()),
        },
        (None, Some(bytes)) => json!({"binary": audio_of(bytes, redaction)}),
        (None, None) => Value::Null,
    };
    Item { t, value }
}

/// A taped binary frame (base64, or a `len:N:hash` fingerprint).
pub fn taped_binary(t: u64, data: &str) -> Item {
    let value = match fingerprinted_len(data) {
        Some(bytes) => json!({"binary": {"bytes": bytes}}),
        None => {
            json!({"binary": audio_of(&BASE64.decode(data).unwrap_or_default(), Redaction { audio: true, pci: false })})
        }
    };
    Item { t, value }
}

fn audio_of(bytes: &[u8], redaction: Redaction) -> Value {
    match redaction.audio {
        true => json!({"bytes": bytes.len(), "hash": hash(bytes)}),
        false => json!({"bytes": bytes.len()}),
    }
}

/// A taped audio payload: its bytes, or for a fingerprint only its length.
fn audio_in(text: &str) -> (Vec<u8>, u64) {
    match fingerprinted_len(text) {
        Some(len) => (Vec::new(), len as u64),
        None => (BASE64.decode(text).unwrap_or_default(), 0),
    }
}

fn hash(bytes: &[u8]) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Whether a message is audio (a carrier media message, an `input_audio_buffer.append`).
pub fn is_audio(value: &Value) -> bool {
    payload(value).is_some() || value.get("binary").is_some()
}

/// The audio payload of a message, when it carries one.
fn payload(value: &Value) -> Option<&str> {
    if let Some(payload) = value.get("media").and_then(|m| m.get("payload")) {
        return payload.as_str();
    }
    match value["type"].as_str() {
        Some("input_audio_buffer.append") => value["audio"].as_str(),
        _ => None,
    }
}

/// Joins consecutive audio messages into runs, so that the cut does not matter.
pub fn join_audio(items: Vec<Item>, audio: bool) -> Vec<Item> {
    let mut out: Vec<Item> = Vec::new();
    let mut run: Option<(Item, Vec<u8>, u64)> = None;
    let close = |run: Option<(Item, Vec<u8>, u64)>, out: &mut Vec<Item>| {
        if let Some((mut first, bytes, fingerprinted)) = run {
            let kind = first
                .value
                .get("event")
                .or(first.value.get("type"))
                .cloned();
            let data = match audio {
                true => json!({"bytes": bytes.len(), "hash": hash(&bytes)}),
                false => json!({"bytes": bytes.len() as u64 + fingerprinted}),
            };
            first.value = json!({"event": kind, "audio": data});
            out.push(first);
        }
    };
    for item in items {
        match payload(&item.value) {
            Some(text) => {
                let (decoded, fingerprinted) = audio_in(text);
                match &mut run {
                    Some((_, bytes, n)) => {
                        bytes.extend(decoded);
                        *n += fingerprinted;
                    }
                    None => run = Some((item, decoded, fingerprinted)),
                }
            }
            None => {
                close(run.take(), &mut out);
                out.push(item);
            }
        }
    }
    close(run, &mut out);
    out
}

/// An upstream connection's events with its caller audio taken out and summed into one
/// last item: which event a 20 ms frame lands before depends on the clock, not on the
/// gateway, so the caller's audio is compared whole.
pub fn caller_audio_whole(items: Vec<Item>, audio: bool) -> Vec<Item> {
    let (appends, mut others): (Vec<Item>, Vec<Item>) = items
        .into_iter()
        .partition(|i| i.value["type"] == "input_audio_buffer.append");
    let Some(last) = appends.last().map(|i| i.t) else {
        return others;
    };
    let mut bytes = Vec::new();
    let mut fingerprinted = 0;
    for item in &appends {
        let text = item.value["audio"].as_str().unwrap_or_default();
        let (decoded, len) = audio_in(text);
        bytes.extend(decoded);
        fingerprinted += len;
    }
    let data = match audio {
        true => json!({"bytes": bytes.len(), "hash": hash(&bytes)}),
        false => json!({"bytes": bytes.len() as u64 + fingerprinted}),
    };
    others.push(Item {
        t: last,
        value: json!({"type": "input_audio_buffer.append (all)", "audio": data}),
    });
    others
}

/// The first difference between the taped and the replayed sequence of one side.
pub fn first_difference(side: &str, tape: &[Item], replay: &[Item]) -> Option<Difference> {
    for index in 0..tape.len().max(replay.len()) {
        let (expected, actual) = (tape.get(index), replay.get(index));
        let event = |item: Option<&Item>| {
            item.and_then(|i| i.value.get("event").or(i.value.get("type")))
                .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned))
                .unwrap_or_default()
        };
        let t_ms = expected.or(actual).map_or(0.0, |i| i.t as f64 / 1000.0);
        let field = match (expected, actual) {
            (Some(e), Some(a)) => match differs(&e.value, &a.value, "") {
                None => continue,
                Some(field) => field,
            },
            _ => String::new(),
        };
        let show = |item: Option<&Item>, field: &str| match item {
            None => "(nothing)".to_owned(),
            Some(item) => {
                at(&item.value, field).map_or_else(|| "(absent)".into(), |v| v.to_string())
            }
        };
        return Some(Difference {
            side: side.to_owned(),
            index,
            t_ms,
            event: event(expected.or(actual)),
            tape: show(expected, &field),
            replay: show(actual, &field),
            field,
        });
    }
    None
}

/// The path of the first field where `a` and `b` differ.
fn differs(a: &Value, b: &Value, path: &str) -> Option<String> {
    let join = |key: &str| match path {
        "" => key.to_owned(),
        _ => format!("{path}.{key}"),
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(p), Some(q)) => differs(p, q, &join(k)),
                _ => Some(join(k)),
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| differs(p, q, &join(&i.to_string()))),
        (Value::Number(x), Value::Number(y)) if path.ends_with("audio_end_ms") => {
            let (x, y) = (x.as_i64().unwrap_or(0), y.as_i64().unwrap_or(0));
            ((x - y).abs() > TRUNCATE_TOLERANCE_MS).then(|| path.to_owned())
        }
        (x, y) if x == y => None,
        _ => Some(path.to_owned()),
    }
}

fn at<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(value);
    }
    path.split('.').try_fold(value, |v, key| match v {
        Value::Array(items) => items.get(key.parse::<usize>().ok()?),
        v => v.get(key),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(values: &[Value]) -> Vec<Item> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| Item {
                t: i as u64 * 1000,
                value: v.clone(),
            })
            .collect()
    }

    #[test]
    fn audio_runs_are_joined_and_truncates_have_a_tolerance() {
        let a = items(&[
            json!({"event": "media", "media": {"payload": BASE64.encode([1u8; 300])}}),
            json!({"event": "mark", "mark": {"name": "a"}}),
        ]);
        let b = items(&[
            json!({"event": "media", "media": {"payload": BASE64.encode([1u8; 100])}}),
            json!({"event": "media", "media": {"payload": BASE64.encode([1u8; 200])}}),
            json!({"event": "mark", "mark": {"name": "a"}}),
        ]);
        let (a, b) = (join_audio(a, true), join_audio(b, true));
        assert_eq!(first_difference("carrier_out", &a, &b), None);
        let t1 = items(&[json!({"type": "conversation.item.truncate", "audio_end_ms": 400})]);
        let t2 = items(&[json!({"type": "conversation.item.truncate", "audio_end_ms": 420})]);
        let t3 = items(&[json!({"type": "conversation.item.truncate", "audio_end_ms": 500})]);
        assert_eq!(first_difference("up", &t1, &t2), None);
        let d = first_difference("up", &t1, &t3).unwrap();
        assert_eq!(
            (d.field.as_str(), d.tape.as_str(), d.replay.as_str()),
            ("audio_end_ms", "400", "500")
        );
        let missing = first_difference("up", &t1, &[]).unwrap();
        assert_eq!(missing.replay, "(nothing)");
    }
}
