//! Carrier dialects: inbound frames → [`Event`], [`Outbound`](crate::event::Outbound) → frames, with each carrier's
//! framing rules (PROTOCOLS.md §2–§6).
//!
//! | dialect         | route (default)          | audio            | outbound |
//! |-----------------|--------------------------|------------------|----------|
//! | `twilio`        | `/twilio`                | μ-law 8k         | `media`/`mark`/`clear`, any size |
//! | `smartflo`      | `/smartflo`              | μ-law 8k         | numeric `media.chunk`, 160-byte multiples |
//! | `vendor-stream` | `/vendor-stream`         | μ-law 8k         | as `smartflo`, numbered `sequenceNumber` |
//! | `exotel`        | `/exotel`                | PCM16 8/16/24k   | `stream_sid`, ≥100 ms chunks in 20 ms multiples, zero-padded |
//! | `voximplant`    | `/voximplant[/{call_id}]`| μ-law, A-law, PCM | our own `start` per playback stream, `gw.clear`, `gw.hangup` |
//! | `raw-audio`     | `/ws/audio/{call_id}`    | binary PCM16 24k | binary PCM16 24k |
//! | `plivo`         | `/plivo`                 | μ-law 8k, L16    | `playAudio`, `checkpoint`, `clearAudio` |
//! | `telnyx`        | `/telnyx`                | PCMU/PCMA/L16    | `media`/`mark`/`clear`; inbound reordered by `sequence_number` |
//!
//! Decoding is deliberately tolerant (one serde model accepts camelCase and snake_case and
//! counters as strings or numbers); what each carrier *requires* is checked per dialect.

pub mod detect;
pub mod messages;
mod start;
mod wire;
mod writer;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::codec::AudioFormat;
use crate::event::{Dtmf, Event, Frame, Mark, Media, Payload, Start, Stop};

pub use writer::{Framing, OutFrame, Writer};

/// The greeting the in-house Smartflo integration sent as soon as a socket opened; its
/// clients wait for it (a per-route setting, never sent to real carriers).
pub const CONNECTED_GREETING: &str = r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#;

/// What the upgrade request and the route told us that messages may omit, given to the
/// decoder when a connection's stack is built.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hints {
    /// The `{call_id}` path segment.
    pub call_id: Option<String>,
    /// Exotel's `?sample-rate=`.
    pub sample_rate: Option<u32>,
    /// The route's `outbound_encoding` (Telnyx: what `stream_bidirectional_codec` is set
    /// to; default PCMU, whatever the inbound codec).
    pub outbound_format: Option<AudioFormat>,
}

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
    /// Exotel AgentStream (Voicebot applet, Connect Voice AI).
    Exotel,
    /// Voximplant VoxEngine WebSocket media, driven by our scenario.
    Voximplant,
    /// The original Voximplant integration: binary PCM16 24 kHz both ways, call id in the path.
    RawAudio,
    /// Plivo Audio Streams.
    Plivo,
    /// Telnyx media streaming.
    Telnyx,
}

impl Dialect {
    /// Every dialect.
    pub const ALL: [Dialect; 8] = [
        Self::Twilio,
        Self::Smartflo,
        Self::VendorStream,
        Self::Exotel,
        Self::Voximplant,
        Self::RawAudio,
        Self::Plivo,
        Self::Telnyx,
    ];

    /// Name for logs, spans and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Twilio => "twilio",
            Self::Smartflo => "smartflo",
            Self::VendorStream => "vendor-stream",
            Self::Exotel => "exotel",
            Self::Voximplant => "voximplant",
            Self::RawAudio => "raw-audio",
            Self::Plivo => "plivo",
            Self::Telnyx => "telnyx",
        }
    }

    /// The dialect called `name` (its [`Dialect::name`], as in configuration).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Whether the carrier echoes marks (otherwise playback is estimated from time).
    pub fn has_marks(self) -> bool {
        !matches!(self, Self::Voximplant | Self::RawAudio)
    }

    /// Whether the call begins when the socket opens (no `start` event): raw audio.
    pub fn starts_on_open(self) -> bool {
        self == Self::RawAudio
    }

    /// Whether inbound media may arrive out of order and is reordered by sequence number.
    pub fn reorders_media(self) -> bool {
        self == Self::Telnyx
    }

    /// Whether every event must carry the call's stream id.
    fn requires_stream_id(self) -> bool {
        matches!(self, Self::Twilio | Self::Smartflo | Self::VendorStream)
    }

    /// Decodes and validates one inbound frame (no hints from the upgrade request).
    pub fn decode(self, frame: &Frame) -> Result<Event, DecodeError> {
        self.decode_with(frame, &Hints::default())
    }

    /// Decodes one frame, using `hints` where the carrier's messages leave something out.
    pub fn decode_with(self, frame: &Frame, hints: &Hints) -> Result<Event, DecodeError> {
        let bytes = match frame {
            Frame::Text(bytes) => bytes,
            Frame::Binary(bytes) if self == Self::RawAudio => {
                return Ok(Event::Media(Media {
                    stream_sid: None,
                    payload: Payload::Raw(bytes.clone()),
                    sequence: None,
                    chunk: None,
                    timestamp: None,
                }));
            }
            Frame::Binary(_) => return Err(DecodeError::Binary),
            Frame::Opened => return Ok(self.opened(hints.call_id.as_deref())),
        };
        let envelope: wire::Envelope<'_> = serde_json::from_slice(bytes)?;
        let stream_sid = || -> Result<Option<String>, DecodeError> {
            match envelope.stream_sid.as_deref() {
                Some(sid) => Ok(Some(sid.to_owned())),
                None if self.requires_stream_id() => Err(DecodeError::Missing("streamSid")),
                None => Ok(None),
            }
        };
        Ok(match (self, &*envelope.event) {
            (_, "connected") => Event::Connected,
            (_, "start") => Event::Start(self.decode_start(&envelope, hints)?),
            (_, "media") => {
                let media = envelope
                    .media
                    .as_ref()
                    .ok_or(DecodeError::Missing("media"))?;
                // With both tracks streamed, only the inbound one is the caller: what the
                // caller hears must never reach the model or the reorder window.
                if media
                    .track
                    .as_deref()
                    .is_some_and(|t| t.starts_with("outbound"))
                {
                    return Ok(Event::Ack("outbound track"));
                }
                let payload = media
                    .payload
                    .as_deref()
                    .ok_or(DecodeError::Missing("media.payload"))?;
                Event::Media(Media {
                    stream_sid: stream_sid()?,
                    payload: Payload::Base64(payload.to_owned()),
                    sequence: envelope.sequence_number,
                    chunk: media.chunk,
                    timestamp: media.timestamp,
                })
            }
            (_, "dtmf") | (Self::Voximplant | Self::RawAudio, "gw.dtmf") => {
                let digit = envelope
                    .dtmf
                    .as_ref()
                    .and_then(|d| d.digit.as_deref())
                    .or(envelope.digit.as_deref())
                    .ok_or(DecodeError::Missing("dtmf.digit"))?;
                Event::Dtmf(Dtmf {
                    stream_sid: stream_sid()?,
                    digit: parse_digit(digit)?,
                })
            }
            (_, "mark") => Event::Mark(Mark {
                stream_sid: stream_sid()?,
                name: envelope
                    .mark
                    .as_ref()
                    .and_then(|m| m.name.clone())
                    .ok_or(DecodeError::Missing("mark.name"))?,
            }),
            (Self::Plivo, "playedStream") => Event::Mark(Mark {
                stream_sid: stream_sid()?,
                name: envelope.name.clone().ok_or(DecodeError::Missing("name"))?,
            }),
            (Self::Plivo, "clearedAudio") => Event::Ack("clearedAudio"),
            (_, "stop") | (Self::Voximplant | Self::RawAudio, "gw.hangup") => Event::Stop(Stop {
                stream_sid: stream_sid()?,
                reason: envelope.stop.as_ref().and_then(|s| s.reason.clone()),
            }),
            (_, other) => Event::Unknown(other.chars().take(64).collect()),
        })
    }

    /// The socket opened: raw audio starts its call here (it has no `start` event).
    fn opened(self, call_id: Option<&str>) -> Event {
        match (self, call_id) {
            (Self::RawAudio, Some(call_id)) => Event::Start(Start {
                stream_sid: call_id.to_owned(),
                call_sid: call_id.to_owned(),
                account_sid: None,
                from: None,
                to: None,
                tracks: vec!["inbound".into()],
                media_format: AudioFormat::Pcm16 { rate: 24000 },
                outbound_format: AudioFormat::Pcm16 { rate: 24000 },
                custom_parameters: BTreeMap::new(),
            }),
            _ => Event::Ack("opened"),
        }
    }

    /// The carrier's own name for the setting that chooses the streamed codec, for errors
    /// that tell the operator what to change.
    pub fn format_setting(self) -> &'static str {
        match self {
            Self::Telnyx => "stream_codec (PCMU, PCMA or L16)",
            Self::Plivo => "contentType on <Stream>",
            Self::Voximplant => "the scenario's encoding",
            Self::Exotel => "the stream's sample rate",
            _ => "the stream's media format",
        }
    }

    /// The format when `start` names none.
    fn default_format(self) -> AudioFormat {
        match self {
            // Exotel's default stream is 16-bit PCM at 8 kHz; Plivo's default content type
            // is L16 at 8 kHz.
            Self::Exotel | Self::Plivo => AudioFormat::Pcm16 { rate: 8000 },
            Self::RawAudio => AudioFormat::Pcm16 { rate: 24000 },
            _ => AudioFormat::Mulaw,
        }
    }
}

/// A custom parameter's value as text.
fn parse_digit(digit: &str) -> Result<char, DecodeError> {
    let mut chars = digit.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii_digit() || "*#ABCDabcd".contains(c) => {
            Ok(c.to_ascii_uppercase())
        }
        _ => Err(DecodeError::InvalidDigit),
    }
}

/// Why an inbound frame was rejected. Every variant is the carrier's fault (bad input).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Binary frames are not part of this dialect.
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

#[cfg(test)]
mod tests;
