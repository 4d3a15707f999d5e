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
    #[serde(default, borrow, rename = "streamSid", alias = "stream_sid")]
    pub stream_sid: Option<Cow<'a, str>>,
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
}

#[derive(Debug, Deserialize)]
pub(crate) struct StartBody<'a> {
    #[serde(default, borrow, rename = "streamSid", alias = "stream_sid")]
    pub stream_sid: Option<Cow<'a, str>>,
    #[serde(default, rename = "callSid", alias = "call_sid")]
    pub call_sid: Option<String>,
    #[serde(default, rename = "accountSid", alias = "account_sid")]
    pub account_sid: Option<String>,
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
}

#[derive(Debug, Deserialize)]
pub(crate) struct MediaFormatBody {
    #[serde(default)]
    pub encoding: Option<String>,
    #[serde(default, rename = "sampleRate", alias = "sample_rate", deserialize_with = "counter")]
    pub sample_rate: Option<u64>,
    #[serde(default, deserialize_with = "counter")]
    pub channels: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct MediaBody<'a> {
    #[serde(default, borrow)]
    pub payload: Option<Cow<'a, str>>,
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

/// A counter sent as a JSON string (`"1"`) or number (`1`).
pub(crate) fn counter<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw<'a> {
        Number(u64),
        Float(f64),
        Text(#[serde(borrow)] Cow<'a, str>),
        Null(()),
    }
    match Option::<Raw>::deserialize(d)? {
        None | Some(Raw::Null(())) => Ok(None),
        Some(Raw::Number(n)) => Ok(Some(n)),
        Some(Raw::Float(f)) if f >= 0.0 && f.fract() == 0.0 => Ok(Some(f as u64)),
        Some(Raw::Float(f)) => Err(de::Error::custom(format!("counter {f} is not a whole number"))),
        Some(Raw::Text(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| de::Error::custom(format!("counter {s:?} is not a number"))),
    }
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
