//! Dialect detection for the catch-all `/stream` route: the carrier is recognised from its
//! first message(s). Explicit routes remain the recommended setup: detection costs a look
//! at the first frames, and the in-house `vendor-stream` clients (which wait for our
//! greeting before speaking) cannot be detected at all.

use serde_json::Value;

use super::Dialect;
use crate::event::Frame;

/// Frames looked at before giving up.
pub const MAX_FRAMES: usize = 3;

/// What the frames so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detection {
    /// This carrier.
    Found(Dialect),
    /// Not decided yet (a bare `connected`): look at the next frame.
    NeedMore,
    /// Not a carrier we know; the reason names what was seen (for the 1008 close).
    Unknown(String),
}

/// Looks at one more frame.
pub fn detect(frame: &Frame) -> Detection {
    let bytes = match frame {
        Frame::Text(bytes) => bytes,
        Frame::Binary(_) => {
            return Detection::Unknown("binary frame; raw audio needs /ws/audio/{call_id}".into())
        }
        Frame::Opened => return Detection::NeedMore,
    };
    let Ok(message) = serde_json::from_slice::<Value>(bytes) else {
        return Detection::Unknown("first message is not JSON".into());
    };
    let event = message["event"].as_str().unwrap_or_default();
    let has = |pointer: &str| message.pointer(pointer).is_some_and(|v| !v.is_null());
    match event {
        "connected" => {
            let protocol = message["protocol"].as_str().unwrap_or_default();
            if protocol == "Call" {
                Detection::Found(Dialect::Twilio)
            } else if protocol.contains("Exotel") {
                Detection::Found(Dialect::Exotel)
            } else if has("/version") {
                Detection::Found(Dialect::Telnyx)
            } else {
                Detection::NeedMore
            }
        }
        "start" => {
            let encoding = message
                .pointer("/start/mediaFormat/encoding")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if has("/stream_id") || has("/start/call_control_id") {
                Detection::Found(Dialect::Telnyx)
            } else if has("/streamId") || has("/start/streamId") || has("/start/callId") {
                Detection::Found(Dialect::Plivo)
            } else if has("/stream_sid")
                || has("/sequence_number")
                || has("/start/stream_sid")
                || has("/start/call_sid")
                || has("/start/media_format")
            {
                Detection::Found(Dialect::Exotel)
            } else if !encoding.is_empty()
                && encoding
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                // VoxEngine's constants: ULAW, ALAW, PCM8, PCM16, ...
                Detection::Found(Dialect::Voximplant)
            } else if has("/start/mediaFormat/bitRate")
                || has("/start/mediaFormat/bitDepth")
                || has("/start/from")
            {
                Detection::Found(Dialect::Smartflo)
            } else if has("/start/callSid")
                && has("/start/accountSid")
                && message
                    .pointer("/start/tracks")
                    .is_some_and(Value::is_array)
            {
                Detection::Found(Dialect::Twilio)
            } else if has("/start/callSid") {
                Detection::Found(Dialect::VendorStream)
            } else {
                Detection::Unknown("start event of no known carrier".into())
            }
        }
        "" => Detection::Unknown("message has no event field".into()),
        other => Detection::Unknown(format!(
            "{} before start",
            other.chars().take(32).collect::<String>()
        )),
    }
}
