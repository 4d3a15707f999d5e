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
mod wire;
mod writer;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::codec::AudioFormat;
use crate::event::{Dtmf, Event, Frame, Mark, Media, Payload, Start, Stop};

pub use writer::{OutFrame, Writer};

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

    fn decode_start(
        self,
        envelope: &wire::Envelope<'_>,
        hints: &Hints,
    ) -> Result<Start, DecodeError> {
        let body = envelope
            .start
            .as_ref()
            .ok_or(DecodeError::Missing("start"))?;
        let top = envelope.stream_sid.as_deref();
        let inner = body.stream_sid.as_deref();
        if let (Some(top), Some(inner)) = (top, inner) {
            if top != inner {
                return Err(DecodeError::StreamSidMismatch);
            }
        }
        let mut custom_parameters = body
            .custom_parameters
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), parameter_text(v)))
            .collect::<BTreeMap<_, _>>();
        // Per-call data the way each carrier carries it (Twilio's `customParameters` above):
        // Plivo's `extraHeaders` (`k=v;k=v`) and Telnyx's `client_state` (base64 of a JSON
        // object or of `k=v` pairs). Explicit custom parameters win over both.
        let extra = body
            .extra_headers
            .as_deref()
            .or(envelope.extra_headers.as_deref());
        let state = body.client_state.as_deref().map(decode_client_state);
        for (k, v) in extra.map(key_values).into_iter().chain(state).flatten() {
            custom_parameters.entry(k).or_insert(v);
        }
        // What each carrier must send; the in-house integrations are the most lenient.
        let (needs_account, needs_format) = match self {
            Self::Twilio | Self::Smartflo => (true, true),
            Self::Telnyx | Self::Voximplant => (false, true),
            _ => (false, false),
        };
        let stream_sid = match (top.or(inner), self) {
            (Some(sid), _) => sid.to_owned(),
            // Voximplant streams carry no id: the call id (path or parameters), else the tag.
            (None, Self::Voximplant) => hints
                .call_id
                .as_ref()
                .or(custom_parameters.get("callId"))
                .or(body.tag.as_ref())
                .cloned()
                .unwrap_or_else(|| "voximplant".to_owned()),
            // Exotel's own examples sometimes leave it out; the call id stands in.
            (None, Self::Exotel) => body
                .call_sid
                .clone()
                .ok_or(DecodeError::Missing("start.stream_sid"))?,
            (None, _) => return Err(DecodeError::Missing("start.streamSid")),
        };
        let call_sid = match (&body.call_sid, self) {
            (Some(call), _) => call.clone(),
            (None, Self::Voximplant) => stream_sid.clone(),
            (None, _) => return Err(DecodeError::Missing("start.callSid")),
        };
        if needs_account && body.account_sid.is_none() {
            return Err(DecodeError::Missing("start.accountSid"));
        }
        let media_format = match &body.media_format {
            Some(format) => match parse_media_format(self, format) {
                Ok(format) => format,
                // Exotel's documents and simulators disagree on the labels; never refuse an
                // Exotel call over one: its default (PCM16, 8 kHz or the URL's rate) it is.
                Err(DecodeError::UnsupportedFormat(label)) if self == Self::Exotel => {
                    let rate = hints
                        .sample_rate
                        .filter(|r| matches!(r, 8000 | 16000 | 24000))
                        .unwrap_or(8000);
                    metrics::counter!("callgate_format_fallbacks_total", "carrier" => self.name())
                        .increment(1);
                    tracing::warn!(media_format = ?label, rate, "unknown Exotel media format: assuming 16-bit PCM");
                    AudioFormat::Pcm16 { rate }
                }
                Err(error) => return Err(error),
            },
            None if needs_format => return Err(DecodeError::Missing("start.mediaFormat")),
            None => match (self, hints.sample_rate) {
                // Exotel announces the rate in the URL (?sample-rate=) when not in `start`.
                (Self::Exotel, Some(rate @ (8000 | 16000 | 24000))) => AudioFormat::Pcm16 { rate },
                _ => self.default_format(),
            },
        };
        // Telnyx sets the codec it plays back separately from the one it streams
        // (`stream_bidirectional_codec`, default PCMU); everyone else plays what they send.
        let outbound_format = match self {
            Self::Telnyx => hints.outbound_format.unwrap_or(AudioFormat::Mulaw),
            _ => media_format,
        };
        Ok(Start {
            outbound_format,
            stream_sid,
            call_sid,
            account_sid: body.account_sid.clone(),
            from: body.from.clone().or_else(|| envelope.from.clone()),
            to: body.to.clone().or_else(|| envelope.to.clone()),
            tracks: body.tracks.clone(),
            media_format,
            custom_parameters,
        })
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
fn parameter_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `k=v;k=v` (or `,`-separated) pairs; pieces without `=` are skipped.
fn key_values(text: &str) -> Vec<(String, String)> {
    text.split([';', ','])
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (k.to_owned(), v.trim().to_owned()))
        })
        .collect()
}

/// Telnyx `client_state`: base64 of a JSON object (its fields), of `k=v` pairs, or of
/// anything else (kept whole as `client_state`).
fn decode_client_state(encoded: &str) -> Vec<(String, String)> {
    use base64::Engine as _;
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return vec![("client_state".into(), encoded.to_owned())];
    };
    let text = String::from_utf8_lossy(&bytes);
    if let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(&text) {
        return fields
            .iter()
            .map(|(k, v)| (k.clone(), parameter_text(v)))
            .collect();
    }
    match key_values(&text) {
        pairs if !pairs.is_empty() => pairs,
        _ => vec![("client_state".into(), text.into_owned())],
    }
}

fn parse_digit(digit: &str) -> Result<char, DecodeError> {
    let mut chars = digit.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii_digit() || "*#ABCDabcd".contains(c) => {
            Ok(c.to_ascii_uppercase())
        }
        _ => Err(DecodeError::InvalidDigit),
    }
}

fn parse_media_format(
    dialect: Dialect,
    format: &wire::MediaFormatBody,
) -> Result<AudioFormat, DecodeError> {
    let encoding = format.encoding.as_deref().map(str::to_ascii_lowercase);
    let encoding = encoding.as_deref().unwrap_or(match dialect {
        Dialect::Exotel | Dialect::Plivo => "audio/x-l16",
        _ => "audio/x-mulaw",
    });
    if format.channels.is_some_and(|c| c != 1) {
        return Err(DecodeError::UnsupportedFormat(format!(
            "{} channels",
            format.channels.unwrap_or_default()
        )));
    }
    // Plivo puts the rate into the content type (`audio/x-l16;rate=16000`).
    let (encoding, inline_rate) = match encoding.split_once(";rate=") {
        Some((enc, rate)) => (enc, rate.trim().parse::<u64>().ok()),
        None => (encoding, None),
    };
    // Exotel's simulators: `"encoding": "base64", "bit_rate": "128kbps"` is 16-bit PCM
    // whose rate is the bit rate over 16.
    let bit_rate_rate = format.bit_rate_kbps.map(|kbps| kbps * 1000 / 16);
    // Exotel writes the MIME type's own spelling, `audio/L16`.
    let encoding = match encoding {
        "audio/l16" if dialect == Dialect::Exotel => "audio/x-l16",
        other => other,
    };
    let rate = format.sample_rate.or(inline_rate);
    let format = match (encoding, rate) {
        ("base64", _) if dialect == Dialect::Exotel => match rate.or(bit_rate_rate) {
            Some(rate @ (8000 | 16000 | 24000)) => AudioFormat::Pcm16 { rate: rate as u32 },
            None => AudioFormat::Pcm16 { rate: 8000 },
            Some(other) => {
                return Err(DecodeError::UnsupportedFormat(format!(
                    "base64 at {other} Hz"
                )))
            }
        },
        (
            "audio/x-mulaw" | "audio/pcmu" | "mulaw" | "ulaw" | "pcmu" | "g711_ulaw",
            None | Some(8000),
        ) => AudioFormat::Mulaw,
        ("audio/x-alaw" | "audio/pcma" | "alaw" | "pcma" | "g711_alaw", None | Some(8000)) => {
            AudioFormat::Alaw
        }
        // Voximplant's constants: PCM8 is 8 kHz; PCM16 16 kHz unless told otherwise.
        ("pcm8" | "pcm16_8khz", None | Some(8000)) => AudioFormat::Pcm16 { rate: 8000 },
        ("pcm16_16khz", None | Some(16000)) => AudioFormat::Pcm16 { rate: 16000 },
        ("pcm16", None) => AudioFormat::Pcm16 { rate: 16000 },
        (
            "audio/x-raw" | "linear16" | "audio/x-l16" | "l16" | "slin" | "pcm16" | "audio/pcm",
            Some(rate @ (8000 | 16000 | 24000)),
        ) => AudioFormat::Pcm16 { rate: rate as u32 },
        ("audio/x-raw" | "linear16" | "audio/x-l16" | "l16" | "slin" | "audio/pcm", None) => {
            AudioFormat::Pcm16 { rate: 8000 }
        }
        (other, rate) => {
            return Err(DecodeError::UnsupportedFormat(format!(
                "{} at {} Hz; set {} to one callgate decodes",
                other.chars().take(32).collect::<String>(),
                rate.unwrap_or_default(),
                dialect.format_setting()
            )))
        }
    };
    Ok(format)
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
