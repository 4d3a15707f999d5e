//! Serde models shared by the JSON carrier dialects: tolerant by design (PROTOCOLS.md §1).
//!
//! Counters accept strings or numbers, unknown fields are ignored, field names accept both
//! camelCase and snake_case, and strings borrow from the frame where JSON escaping allows.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// The envelope every JSON carrier message shares.
#[derive(Debug, Deserialize)]
pub(crate) struct Envelope<'a> {
    #[serde(borrow)]
    pub event: Cow<'a, str>,
    #[serde(
        default,
        borrow,
        rename = "streamSid",
        alias = "stream_sid",
        alias = "streamId",
        alias = "stream_id"
    )]
    pub stream_sid: Option<Cow<'a, str>>,
    #[serde(
        default,
        rename = "sequenceNumber",
        alias = "sequence_number",
        deserialize_with = "counter"
    )]
    pub sequence_number: Option<u64>,
    #[serde(default, borrow)]
    pub start: Option<StartBody<'a>>,
    #[serde(default, borrow)]
    pub media: Option<MediaBody<'a>>,
    #[serde(default)]
    pub dtmf: Option<DtmfBody>,
    #[serde(default)]
    pub mark: Option<MarkBody>,
    #[serde(default)]
    pub stop: Option<StopBody>,
    /// Smartflo's table lists `from`/`to` at the top level; its example nests them.
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    /// Plivo's `playedStream` carries the checkpoint name at the top level.
    #[serde(default)]
    pub name: Option<String>,
    /// Our Voximplant convention: `{"event":"gw.dtmf","digit":"5"}`.
    #[serde(default)]
    pub digit: Option<String>,
    /// Plivo's `<Stream extraHeaders>`, `k=v;k=v`, beside `start` (PROTOCOLS.md §6.1).
    #[serde(default, alias = "extraHeaders")]
    pub extra_headers: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct StartBody<'a> {
    #[serde(
        default,
        borrow,
        rename = "streamSid",
        alias = "stream_sid",
        alias = "streamId",
        alias = "stream_id"
    )]
    pub stream_sid: Option<Cow<'a, str>>,
    #[serde(
        default,
        rename = "callSid",
        alias = "call_sid",
        alias = "callId",
        alias = "call_control_id"
    )]
    pub call_sid: Option<String>,
    #[serde(
        default,
        rename = "accountSid",
        alias = "account_sid",
        alias = "accountId"
    )]
    pub account_sid: Option<String>,
    /// Voximplant's stream tag.
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub tracks: Vec<String>,
    #[serde(default, rename = "mediaFormat", alias = "media_format")]
    pub media_format: Option<MediaFormatBody>,
    #[serde(default, rename = "customParameters", alias = "custom_parameters")]
    pub custom_parameters: Option<BTreeMap<String, serde_json::Value>>,
    /// Telnyx's `client_state`: base64 of whatever the dialing application put there.
    #[serde(default)]
    pub client_state: Option<String>,
    /// Plivo may put its extra headers inside `start` too.
    #[serde(default, alias = "extraHeaders")]
    pub extra_headers: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct MediaFormatBody {
    #[serde(default)]
    pub encoding: Option<String>,
    /// A number, or a string that may carry a unit (Exotel: `"8000Hz"`).
    #[serde(
        default,
        rename = "sampleRate",
        alias = "sample_rate",
        deserialize_with = "rate"
    )]
    pub sample_rate: Option<u64>,
    /// Exotel's simulators: `"bit_rate": "128kbps"` beside `"encoding": "base64"`;
    /// Smartflo: `"bitRate": 64`. Kilobits per second either way.
    #[serde(
        default,
        rename = "bitRate",
        alias = "bit_rate",
        deserialize_with = "kbps"
    )]
    pub bit_rate_kbps: Option<u64>,
    #[serde(default, deserialize_with = "counter")]
    pub channels: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct MediaBody<'a> {
    #[serde(default, borrow)]
    pub payload: Option<Cow<'a, str>>,
    /// `inbound` (the caller) or `outbound` (what the caller hears), when both are streamed.
    #[serde(default, borrow)]
    pub track: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "counter")]
    pub chunk: Option<u64>,
    #[serde(default, deserialize_with = "counter")]
    pub timestamp: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct DtmfBody {
    #[serde(default)]
    pub digit: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct MarkBody {
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct StopBody {
    #[serde(default)]
    pub reason: Option<String>,
}

/// A counter sent as a JSON string (`"1"`) or number (`1`). A hand-written visitor rather
/// than an untagged enum: untagged enums buffer their input, and this runs on every frame.
pub(crate) fn counter<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct Counter;

    impl<'de> de::Visitor<'de> for Counter {
        type Value = Option<u64>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a counter as a string or a number")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom(format!("counter {v} is negative")))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            if v >= 0.0 && v.fract() == 0.0 && v < u64::MAX as f64 {
                Ok(Some(v as u64))
            } else {
                Err(E::custom(format!("counter {v} is not a whole number")))
            }
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            v.trim()
                .parse()
                .map(Some)
                .map_err(|_| E::custom(format!("counter {v:?} is not a number")))
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    d.deserialize_any(Counter)
}

/// A sample rate as a number or a string, with an optional unit: `8000`, `"8000"`,
/// `"8000Hz"`, `"8 kHz"`. Anything else is no rate (the dialect's default applies).
fn rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(match value {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => parse_rate(&s),
        _ => None,
    })
}

/// A bit rate in kbit/s: `64` or `"128kbps"`.
fn kbps<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(match value {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => {
            let s = s.trim().to_ascii_lowercase();
            s.strip_suffix("kbps").unwrap_or(&s).trim().parse().ok()
        }
        _ => None,
    })
}

/// See [`rate`].
pub(crate) fn parse_rate(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let (number, scale) = match text.strip_suffix("khz") {
        Some(n) => (n, 1000.0),
        None => (text.strip_suffix("hz").unwrap_or(&text), 1.0),
    };
    let value: f64 = number.trim().parse().ok()?;
    (value > 0.0).then(|| (value * scale).round() as u64)
}

/// `tracks` as an array (`["inbound"]`, Twilio) or a single string (`"inbound"`, the
/// in-house Smartflo integration).
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
        Null(()),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::One(s) => vec![s],
        Raw::Many(v) => v,
        Raw::Null(()) => Vec::new(),
    })
}
