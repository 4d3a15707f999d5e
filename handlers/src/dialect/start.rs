//! Decoding `start`: the stream and call ids, the audio formats each carrier announces (and
//! the fallbacks where it leaves them out), and custom parameters, including Plivo's
//! `extraHeaders` and Telnyx's `client_state`.

use std::collections::BTreeMap;

use super::{wire, DecodeError, Dialect, Hints};
use crate::codec::AudioFormat;
use crate::event::Start;

impl Dialect {
    pub(super) fn decode_start(
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
}

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
