//! `[[routes]]`: paths, dialects and per-route settings.

use super::*;

/// `[[routes]]`: a path served with a dialect.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RouteConfig {
    /// URL path, e.g. `/ws/media`; a final `{call_id}` segment captures the call id.
    pub path: String,
    /// A carrier dialect (`twilio`, `smartflo`, `vendor-stream`, `exotel`, `voximplant`,
    /// `raw-audio`, `plivo`, `telnyx`) or `detect`.
    pub dialect: RouteDialect,
    /// Send `{"event":"connected",...}` as soon as the socket opens.
    #[serde(default)]
    pub send_connected: bool,
    /// Authentication (default: `security.default_auth`).
    #[serde(default)]
    pub auth: Option<AuthKind>,
    /// JWT routes: accept the token in `start.customParameters` (for carriers that cannot
    /// send headers); the call must then start with a valid token within the deadline.
    #[serde(default)]
    pub token_in_start: bool,
    /// JWT routes: accept the token in the query parameter `security.jwt.query_param`
    /// (opt-in: query strings end up in proxy logs).
    #[serde(default)]
    pub query_token: bool,
    /// `twilio_signature` routes: also require a per-call JWT in `start` (a signature is
    /// constant per URL and can be replayed).
    #[serde(default)]
    pub require_call_token: bool,
    /// Telnyx routes: the codec Telnyx plays back, as set by the call's
    /// `stream_bidirectional_codec` (`PCMU`, the default, or `PCMA`); audio is transcoded
    /// when it differs from the streamed codec.
    #[serde(default)]
    pub outbound_encoding: Option<OutboundEncoding>,
    /// Record this route's calls (unset: `recording.enabled`; a profile's choice wins).
    #[serde(default)]
    pub recording: Option<bool>,
}

/// What a carrier plays back, where it is set apart from what it streams (Telnyx).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum OutboundEncoding {
    /// G.711 μ-law, 8 kHz.
    #[serde(rename = "PCMU", alias = "pcmu")]
    Pcmu,
    /// G.711 A-law, 8 kHz.
    #[serde(rename = "PCMA", alias = "pcma")]
    Pcma,
}

impl OutboundEncoding {
    /// The audio format.
    pub fn format(self) -> callgate_handlers::codec::AudioFormat {
        match self {
            Self::Pcmu => callgate_handlers::codec::AudioFormat::Mulaw,
            Self::Pcma => callgate_handlers::codec::AudioFormat::Alaw,
        }
    }
}

/// A route's dialect: fixed, or recognised from the first messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteDialect {
    /// Always this carrier.
    Fixed(Dialect),
    /// Recognised from the first message(s); 1008 when it cannot be.
    Detect,
}

impl<'de> Deserialize<'de> for RouteDialect {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        if name == "detect" {
            return Ok(Self::Detect);
        }
        Dialect::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(&name))
            .map(Self::Fixed)
    }
}

impl RouteConfig {
    /// A route with defaults for everything but path, dialect and greeting.
    pub fn new(path: &str, dialect: Dialect, send_connected: bool) -> Self {
        Self::with(path, RouteDialect::Fixed(dialect), send_connected)
    }

    /// A route with any [`RouteDialect`].
    pub fn with(path: &str, dialect: RouteDialect, send_connected: bool) -> Self {
        Self {
            path: path.into(),
            dialect,
            send_connected,
            auth: None,
            token_in_start: false,
            query_token: false,
            require_call_token: false,
            outbound_encoding: None,
            recording: None,
        }
    }
}
