//! The typed events of one call, whatever carrier sent them.
//!
//! Carrier dialects ([`crate::dialect`]) turn inbound frames into [`Event`]s and
//! [`Outbound`] messages back into frames; everything between works on these types only.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::codec::AudioFormat;

/// One WebSocket data frame from a carrier, before decoding.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A text frame (already checked to be UTF-8 by the WebSocket layer).
    Text(Bytes),
    /// A binary frame.
    Binary(Bytes),
    /// Not from the wire: the socket just opened. Sent only to dialects without a `start`
    /// event ([`crate::dialect::Dialect::starts_on_open`]: raw audio), which begin the call
    /// here from what the upgrade request said (the decoder's [`crate::dialect::Hints`]).
    Opened,
}

impl Frame {
    /// A text frame from a string (tests and tools).
    pub fn text(s: impl Into<String>) -> Self {
        Self::Text(Bytes::from(s.into()))
    }
}

/// An inbound carrier event, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The carrier's `connected` greeting: accepted and ignored.
    Connected,
    /// A carrier acknowledgement that needs no action (Plivo `clearedAudio`, socket open).
    Ack(&'static str),
    /// The call's metadata; always the first event that matters.
    Start(Start),
    /// A chunk of caller audio.
    Media(Media),
    /// A key press.
    Dtmf(Dtmf),
    /// The echo of a mark we sent: the audio before it has played (or was cleared).
    Mark(Mark),
    /// The stream ended.
    Stop(Stop),
    /// An event name this dialect does not know: logged, counted, not fatal.
    Unknown(String),
}

impl Event {
    /// The event's name, for logs and metric labels (bounded set).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Ack(_) => "ack",
            Self::Start(_) => "start",
            Self::Media(_) => "media",
            Self::Dtmf(_) => "dtmf",
            Self::Mark(_) => "mark",
            Self::Stop(_) => "stop",
            Self::Unknown(_) => "unknown",
        }
    }
}

/// `start`: who is calling and in which format.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    /// The stream id every outbound message must carry.
    pub stream_sid: String,
    /// The carrier's call id.
    pub call_sid: String,
    /// The carrier account, when sent.
    pub account_sid: Option<String>,
    /// Caller number (Smartflo).
    pub from: Option<String>,
    /// Called number (Smartflo).
    pub to: Option<String>,
    /// Tracks the carrier streams (`inbound`, ...).
    pub tracks: Vec<String>,
    /// Format of the caller's audio.
    pub media_format: AudioFormat,
    /// Format of the audio we send back (the same except where the carrier sets them
    /// apart: Telnyx).
    pub outbound_format: AudioFormat,
    /// Per-call parameters (`<Parameter>` in TwiML, Smartflo custom parameters).
    pub custom_parameters: BTreeMap<String, String>,
}

/// Caller audio as it came off the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// Base64 text from a JSON field (checked by the media handler before use).
    Base64(String),
    /// Raw bytes from a binary frame.
    Raw(Bytes),
}

/// `media`: audio in the call's media format.
#[derive(Debug, Clone, PartialEq)]
pub struct Media {
    /// Stream the frame belongs to (absent in dialects that carry none).
    pub stream_sid: Option<String>,
    /// The audio.
    pub payload: Payload,
    /// The message's sequence number, when sent (Telnyx frames are reordered by it).
    pub sequence: Option<u64>,
    /// The carrier's media counter, when sent.
    pub chunk: Option<u64>,
    /// Presentation time in ms from stream start, when sent.
    pub timestamp: Option<u64>,
}

/// `dtmf`: one key.
#[derive(Debug, Clone, PartialEq)]
pub struct Dtmf {
    /// Stream the event belongs to.
    pub stream_sid: Option<String>,
    /// `0`-`9`, `*`, `#` or `A`-`D`.
    pub digit: char,
}

/// `mark`: the echo of a mark we sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    /// Stream the event belongs to.
    pub stream_sid: Option<String>,
    /// The name we gave the mark.
    pub name: String,
}

/// `stop`: the carrier ended the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Stop {
    /// Stream the event belongs to.
    pub stream_sid: Option<String>,
    /// Free-text reason (Smartflo).
    pub reason: Option<String>,
}

/// A message to the carrier; the dialect's writer frames and encodes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    /// Audio for the caller, in the call's media format. Raw bytes: the writer base64-encodes
    /// them once, into the carrier's framing.
    Media {
        /// The audio.
        audio: Bytes,
    },
    /// Ask the carrier to echo `name` once everything before it has played.
    Mark {
        /// Mark name of our choosing.
        name: String,
    },
    /// Drop every bit of audio the carrier has buffered (barge-in).
    Clear,
}
