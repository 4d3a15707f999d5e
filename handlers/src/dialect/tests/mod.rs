//! The dialects' tests: the documents' own example messages decoded verbatim, bad input
//! refused with a reason, the writers' framing per carrier, and detection.

use super::*;
use crate::codec::BASE64;
use crate::event::Outbound;
use base64::Engine as _;
use bytes::Bytes;

const SID: &str = "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX";

fn decode(dialect: Dialect, json: &str) -> Result<Event, DecodeError> {
    dialect.decode(&Frame::text(json))
}

/// `n` bytes of `byte` for the caller.
fn audio(byte: u8, n: usize) -> Outbound {
    Outbound::Media {
        audio: Bytes::from(vec![byte; n]),
    }
}

/// The decoded payloads of the media messages in `out`.
fn payloads(out: &[serde_json::Value]) -> Vec<Vec<u8>> {
    out.iter()
        .filter(|m| m["event"] == "media")
        .map(|m| {
            BASE64
                .decode(m["media"]["payload"].as_str().unwrap())
                .unwrap()
        })
        .collect()
}

fn sizes(out: &[serde_json::Value]) -> Vec<usize> {
    payloads(out).iter().map(Vec::len).collect()
}

fn write_all(writer: &mut Writer, messages: &[Outbound]) -> Vec<serde_json::Value> {
    let mut frames = Vec::new();
    for m in messages {
        writer.write(m, &mut frames);
    }
    frames
        .iter()
        .map(|f| serde_json::from_str(f.as_text().unwrap()).unwrap())
        .collect()
}

mod detection;
mod other_carriers;
mod twilio_family;
