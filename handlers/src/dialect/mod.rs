//! Carrier dialects: inbound JSON → [`Event`], [`Outbound`] → JSON, with each carrier's
//! framing rules (PROTOCOLS.md §2, §3).
//!
//! | dialect        | inbound                               | outbound                              |
//! |----------------|---------------------------------------|---------------------------------------|
//! | `twilio`       | Twilio Media Streams, strict `start`  | `media`/`mark`/`clear`, any size      |
//! | `smartflo`     | Smartflo v.8 document                 | adds numeric `media.chunk`; 160-byte multiples |
//! | `vendor-stream`| the in-house Smartflo integration: minimal `start`, `tracks` as a string | as `smartflo`, plus numeric `sequenceNumber` |

mod wire;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::codec::{AudioFormat, BASE64};
use crate::event::{Dtmf, Event, Frame, Mark, Media, Outbound, Start, Stop};
use base64::Engine as _;

/// The greeting the in-house Smartflo integration sent as soon as a socket opened; its
/// clients wait for it (a per-route setting, never sent to real carriers).
pub const CONNECTED_GREETING: &str = r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#;

/// Which carrier protocol a route speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dialect {
    /// Twilio Media Streams (`<Connect><Stream>`).
    Twilio,
    /// Tata Smartflo bi-directional streaming, as its integration document describes it.
    Smartflo,
    /// Smartflo as the original in-house integration served it on `/vendor-stream`.
    VendorStream,
}

impl Dialect {
    /// Name for logs, spans and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Twilio => "twilio",
            Self::Smartflo => "smartflo",
            Self::VendorStream => "vendor-stream",
        }
    }

    /// Decodes and validates one inbound frame.
    pub fn decode(self, frame: &Frame) -> Result<Event, DecodeError> {
        let bytes = match frame {
            Frame::Text(bytes) => bytes,
            Frame::Binary(_) => return Err(DecodeError::Binary),
        };
        let envelope: wire::Envelope<'_> = serde_json::from_slice(bytes)?;
        let top_sid = envelope.stream_sid.as_deref();
        let stream_sid = || {
            top_sid
                .map(str::to_owned)
                .ok_or(DecodeError::Missing("streamSid"))
        };
        Ok(match &*envelope.event {
            "connected" => Event::Connected,
            "start" => Event::Start(self.decode_start(&envelope)?),
            "media" => {
                let media = envelope
                    .media
                    .as_ref()
                    .ok_or(DecodeError::Missing("media"))?;
                let payload = media
                    .payload
                    .as_deref()
                    .ok_or(DecodeError::Missing("media.payload"))?;
                Event::Media(Media {
                    stream_sid: stream_sid()?,
                    payload: payload.to_owned(),
                    chunk: media.chunk,
                    timestamp: media.timestamp,
                })
            }
            "dtmf" => {
                let digit = envelope
                    .dtmf
                    .as_ref()
                    .and_then(|d| d.digit.as_deref())
                    .ok_or(DecodeError::Missing("dtmf.digit"))?;
                let mut chars = digit.chars();
                let digit = match (chars.next(), chars.next()) {
                    (Some(c), None) if c.is_ascii_digit() || "*#ABCDabcd".contains(c) => {
                        c.to_ascii_uppercase()
                    }
                    _ => return Err(DecodeError::InvalidDigit),
                };
                Event::Dtmf(Dtmf {
                    stream_sid: stream_sid()?,
                    digit,
                })
            }
            "mark" => Event::Mark(Mark {
                stream_sid: stream_sid()?,
                name: envelope
                    .mark
                    .and_then(|m| m.name)
                    .ok_or(DecodeError::Missing("mark.name"))?,
            }),
            "stop" => Event::Stop(Stop {
                stream_sid: stream_sid()?,
                reason: envelope.stop.and_then(|s| s.reason),
            }),
            other => Event::Unknown(other.chars().take(64).collect()),
        })
    }

    fn decode_start(self, envelope: &wire::Envelope<'_>) -> Result<Start, DecodeError> {
        let body = envelope
            .start
            .as_ref()
            .ok_or(DecodeError::Missing("start"))?;
        let stream_sid = body
            .stream_sid
            .as_deref()
            .or(envelope.stream_sid.as_deref())
            .ok_or(DecodeError::Missing("start.streamSid"))?;
        if let (Some(top), Some(inner)) =
            (envelope.stream_sid.as_deref(), body.stream_sid.as_deref())
        {
            if top != inner {
                return Err(DecodeError::StreamSidMismatch);
            }
        }
        let call_sid = body
            .call_sid
            .clone()
            .ok_or(DecodeError::Missing("start.callSid"))?;
        // The in-house integration's own test client sends only callSid and streamSid.
        let strict = self != Self::VendorStream;
        if strict && body.account_sid.is_none() {
            return Err(DecodeError::Missing("start.accountSid"));
        }
        let media_format = match &body.media_format {
            Some(format) => parse_media_format(format)?,
            None if strict => return Err(DecodeError::Missing("start.mediaFormat")),
            None => AudioFormat::Mulaw,
        };
        let custom_parameters = body
            .custom_parameters
            .iter()
            .flatten()
            .map(|(k, v)| {
                let value = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), value)
            })
            .collect::<BTreeMap<_, _>>();
        Ok(Start {
            stream_sid: stream_sid.to_owned(),
            call_sid,
            account_sid: body.account_sid.clone(),
            from: body.from.clone().or_else(|| envelope.from.clone()),
            to: body.to.clone().or_else(|| envelope.to.clone()),
            tracks: body.tracks.clone(),
            media_format,
            custom_parameters,
        })
    }

    /// Outbound payloads must be a multiple of this many bytes (1: any size).
    fn outbound_multiple(self) -> usize {
        match self {
            Self::Twilio => 1,
            // 20 ms of μ-law (PROTOCOLS.md §3.2).
            Self::Smartflo | Self::VendorStream => 160,
        }
    }
}

fn parse_media_format(format: &wire::MediaFormatBody) -> Result<AudioFormat, DecodeError> {
    let encoding = format.encoding.as_deref().unwrap_or("audio/x-mulaw");
    let rate = format.sample_rate.unwrap_or(8000);
    if format.channels.is_some_and(|c| c != 1) {
        return Err(DecodeError::UnsupportedFormat(format!(
            "{} channels",
            format.channels.unwrap_or_default()
        )));
    }
    match (encoding.to_ascii_lowercase().as_str(), rate) {
        ("audio/x-mulaw" | "audio/pcmu" | "mulaw" | "ulaw", 8000) => Ok(AudioFormat::Mulaw),
        ("audio/x-alaw" | "audio/pcma" | "alaw", 8000) => Ok(AudioFormat::Alaw),
        (other, rate) => Err(DecodeError::UnsupportedFormat(format!(
            "{} at {rate} Hz",
            other.chars().take(32).collect::<String>()
        ))),
    }
}

/// Why an inbound frame was rejected. Every variant is the carrier's fault (bad input).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Binary frames are not part of any JSON carrier protocol.
    #[error("binary frames are not supported")]
    Binary,
    /// Not JSON, or a field of the wrong type.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A required field is absent.
    #[error("missing field {0}")]
    Missing(&'static str),
    /// `start.streamSid` and the top-level `streamSid` differ.
    #[error("streamSid does not match start.streamSid")]
    StreamSidMismatch,
    /// A media format callgate cannot handle.
    #[error("unsupported media format: {0}")]
    UnsupportedFormat(String),
    /// A DTMF digit outside 0-9, *, #, A-D.
    #[error("invalid DTMF digit")]
    InvalidDigit,
}

impl DecodeError {
    /// A short, bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Binary => "binary_frame",
            Self::Json(_) => "invalid_json",
            Self::Missing(_) => "missing_field",
            Self::StreamSidMismatch => "stream_sid_mismatch",
            Self::UnsupportedFormat(_) => "unsupported_format",
            Self::InvalidDigit => "invalid_digit",
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutMessage<'a> {
    event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sequence_number: Option<u64>,
    stream_sid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    media: Option<OutMedia<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mark: Option<OutMark<'a>>,
}

#[derive(Serialize)]
struct OutMedia<'a> {
    payload: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    chunk: Option<u64>,
}

#[derive(Serialize)]
struct OutMark<'a> {
    name: &'a str,
}

/// Encodes one call's outbound messages: its `streamSid`, counters and framing rules.
#[derive(Debug)]
pub struct Writer {
    dialect: Dialect,
    stream_sid: String,
    silence: u8,
    chunk: u64,
    sequence: u64,
    /// Audio waiting to fill a whole multiple (dialects with a framing rule only).
    pending: Vec<u8>,
    scratch: Vec<u8>,
}

impl Writer {
    /// A writer for one call.
    pub fn new(dialect: Dialect, stream_sid: impl Into<String>, format: AudioFormat) -> Self {
        Self {
            dialect,
            stream_sid: stream_sid.into(),
            silence: format.silence_byte(),
            chunk: 0,
            sequence: 0,
            pending: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Appends the text frames for `message` to `frames`. Malformed base64 from upstream is
    /// dropped (and reported as an error) rather than sent to the carrier.
    pub fn write(
        &mut self,
        message: &Outbound,
        frames: &mut Vec<String>,
    ) -> Result<(), base64::DecodeError> {
        let multiple = self.dialect.outbound_multiple();
        match message {
            Outbound::Media { payload } if multiple == 1 => {
                self.media_frame(payload, frames);
            }
            Outbound::Media { payload } => {
                BASE64.decode_vec(payload, &mut self.pending)?;
                let whole = self.pending.len() / multiple * multiple;
                if whole > 0 {
                    self.emit_pending(whole, frames);
                }
            }
            Outbound::Mark { name } => {
                // A mark closes a stretch of audio: pad the tail so it is played before the
                // mark, as the framing rule demands (PROTOCOLS.md §3.2).
                if !self.pending.is_empty() {
                    let padded = self.pending.len().div_ceil(multiple) * multiple;
                    self.pending.resize(padded, self.silence);
                    self.emit_pending(padded, frames);
                }
                self.sequence += 1;
                frames.push(self.json(OutMessage {
                    event: "mark",
                    sequence_number: self.sequence_number(),
                    stream_sid: &self.stream_sid,
                    media: None,
                    mark: Some(OutMark { name }),
                }));
            }
            Outbound::Clear => {
                self.pending.clear();
                frames.push(self.json(OutMessage {
                    event: "clear",
                    sequence_number: None,
                    stream_sid: &self.stream_sid,
                    media: None,
                    mark: None,
                }));
            }
        }
        Ok(())
    }

    fn emit_pending(&mut self, len: usize, frames: &mut Vec<String>) {
        self.scratch.clear();
        self.scratch.extend(self.pending.drain(..len));
        let payload = BASE64.encode(&self.scratch);
        self.media_frame(&payload, frames);
    }

    fn media_frame(&mut self, payload: &str, frames: &mut Vec<String>) {
        self.chunk += 1;
        self.sequence += 1;
        let chunk = match self.dialect {
            Dialect::Twilio => None,
            Dialect::Smartflo | Dialect::VendorStream => Some(self.chunk),
        };
        frames.push(self.json(OutMessage {
            event: "media",
            sequence_number: self.sequence_number(),
            stream_sid: &self.stream_sid,
            media: Some(OutMedia { payload, chunk }),
            mark: None,
        }));
    }

    fn sequence_number(&self) -> Option<u64> {
        // Only the in-house integration numbered its outbound messages; real carriers list
        // no such field and Twilio rejects extra fields (31951).
        (self.dialect == Dialect::VendorStream).then_some(self.sequence)
    }

    fn json(&self, message: OutMessage<'_>) -> String {
        serde_json::to_string(&message).expect("plain structs always serialize")
    }
}

#[cfg(test)]
mod tests;
