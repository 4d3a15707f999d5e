//! One [`Config`] from a TOML file plus environment variables; every error at once.
//!
//! Precedence: built-in defaults < the TOML file (`--config`) < environment. Any key can be
//! set as `CALLGATE_<SECTION>__<KEY>` (for example `CALLGATE_CALLS__EVENT_TIMEOUT_MS=500`);
//! the common ones also have short names, listed in [`ENV_ALIASES`]. `deploy/callgate.toml`
//! documents every key with its default (a test keeps the two in step).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use callgate_handlers::bridge::{
    BridgeConfig, RealtimeDialect, Secret, SessionSettings, UpstreamAudio, UpstreamAuth,
};
use callgate_handlers::dialect::Dialect;
use serde::Deserialize;

/// Short environment names and the key each sets.
pub const ENV_ALIASES: &[(&str, &str)] = &[
    ("CALLGATE_LISTEN", "listen"),
    ("CALLGATE_UPSTREAM_URL", "upstream.url"),
    ("CALLGATE_REALTIME_DIALECT", "upstream.dialect"),
    ("CALLGATE_MODEL", "upstream.model"),
    ("CALLGATE_UPSTREAM_AUDIO", "upstream.audio"),
    ("OPENAI_API_KEY", "upstream.openai_api_key"),
    ("AZURE_OPENAI_API_KEY", "upstream.azure_api_key"),
    ("CALLGATE_VOICE", "session.voice"),
    ("CALLGATE_INSTRUCTIONS", "session.instructions"),
    ("TWILIO_AUTH_TOKEN", "security.twilio.auth_token"),
    (
        "TWILIO_AUTH_TOKEN_SECONDARY",
        "security.twilio.secondary_auth_token",
    ),
    ("CALLGATE_ADMIN_TOKEN", "security.admin_token"),
    ("TWILIO_ACCOUNT_SID", "carriers.twilio.account_sid"),
    ("TWILIO_API_KEY_SID", "carriers.twilio.api_key_sid"),
    ("TWILIO_API_KEY_SECRET", "carriers.twilio.api_key_secret"),
    ("TELNYX_API_KEY", "carriers.telnyx.api_key"),
    ("PLIVO_AUTH_ID", "carriers.plivo.auth_id"),
    ("PLIVO_AUTH_TOKEN", "carriers.plivo.auth_token"),
];

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Address and port to serve on.
    pub listen: String,
    /// The Realtime upstream.
    pub upstream: UpstreamConfig,
    /// What every session is told.
    pub session: SessionConfig,
    /// Per-call limits.
    pub calls: CallsConfig,
    /// Authentication, rate limits, caps and socket hardening.
    pub security: SecurityConfig,
    /// How key presses reach the model.
    pub dtmf: DtmfConfig,
    /// Call records.
    pub records: RecordsConfig,
    /// Per-call settings, greeting and the built-in `end_call` tool.
    pub conversation: ConversationConfig,
    /// Function tools run as webhooks.
    pub tools: Vec<ToolConfig>,
    /// Extra carrier routes (added to, or replacing by path, the built-in ones).
    pub routes: Vec<RouteConfig>,
    /// Carriers' REST APIs (call control).
    pub carriers: crate::carriers::CarriersConfig,
}

/// `[conversation]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ConversationConfig {
    /// Greeting the assistant speaks first ("" = wait for the caller).
    pub greeting: String,
    /// Custom parameter naming a profile (when absent, a profile named like the tenant).
    pub profile_parameter: String,
    /// Voices a `voice` custom parameter may choose.
    pub voices: Vec<String>,
    /// Languages a `language` custom parameter may choose.
    pub languages: Vec<String>,
    /// Offer the model the built-in `end_call` tool.
    pub end_call: bool,
    /// `transfer_call` destinations by name, e.g. `sales = "+15550100"` (empty: no tool).
    pub transfer_targets: std::collections::BTreeMap<String, String>,
    /// Offer the model `send_dtmf` (for assistants that navigate phone menus).
    pub send_dtmf: bool,
    /// Named profiles.
    pub profiles: std::collections::BTreeMap<String, ProfileConfig>,
}

impl Default for ConversationConfig {
    fn default() -> Self {
        Self {
            greeting: String::new(),
            profile_parameter: "profile".into(),
            voices: Vec::new(),
            languages: Vec::new(),
            end_call: true,
            transfer_targets: Default::default(),
            send_dtmf: false,
            profiles: Default::default(),
        }
    }
}

/// `[conversation.profiles.NAME]`: empty fields keep the defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ProfileConfig {
    /// System prompt.
    pub instructions: String,
    /// Voice.
    pub voice: String,
    /// Language code.
    pub language: String,
    /// Greeting the assistant speaks first.
    pub greeting: String,
}

/// `[[tools]]`: a function the model may call, run as a webhook.
#[derive(Debug, Clone, Deserialize)]
pub struct ToolConfig {
    /// Function name.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON schema of the arguments (a TOML table).
    #[serde(default = "empty_schema")]
    pub parameters: toml::Value,
    /// `http://` or `https://` URL receiving a POST of `{name, arguments, call}`.
    pub url: String,
    /// Time limit; past it the model hears that the tool timed out.
    #[serde(default = "default_tool_timeout")]
    pub timeout_ms: u64,
}

fn empty_schema() -> toml::Value {
    let mut table = toml::Table::new();
    table.insert("type".into(), toml::Value::String("object".into()));
    table.insert("properties".into(), toml::Value::Table(toml::Table::new()));
    toml::Value::Table(table)
}

fn default_tool_timeout() -> u64 {
    5_000
}

/// `[records]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RecordsConfig {
    /// Write call records and transcripts.
    pub enabled: bool,
    /// SQLite database file.
    pub path: String,
    /// Also POST each finished record (JSON) here ("" = no).
    pub webhook_url: String,
    /// Retries of a failed webhook POST (with backoff).
    pub webhook_retries: u32,
}

impl Default for RecordsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "callgate.db".into(),
            webhook_url: String::new(),
            webhook_retries: 3,
        }
    }
}

/// `[dtmf]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DtmfConfig {
    /// Key that ends a sequence at once ("" = none: only the timeout ends it).
    pub terminator: String,
    /// Silence after a key that ends the sequence.
    pub inter_digit_timeout_ms: u64,
    /// PCI mode: digits never reach logs, spans, metrics or stored transcripts.
    pub pci: bool,
}

impl Default for DtmfConfig {
    fn default() -> Self {
        Self {
            terminator: "#".into(),
            inter_digit_timeout_ms: 2_000,
            pci: true,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            upstream: UpstreamConfig::default(),
            session: SessionConfig::default(),
            calls: CallsConfig::default(),
            security: SecurityConfig::default(),
            dtmf: DtmfConfig::default(),
            records: RecordsConfig::default(),
            conversation: ConversationConfig::default(),
            tools: Vec::new(),
            routes: Vec::new(),
            carriers: Default::default(),
        }
    }
}

/// `[upstream]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct UpstreamConfig {
    /// `ws://` or `wss://` Realtime URL; empty: OpenAI when a key is set, else the embedded
    /// loopback.
    pub url: String,
    /// `ga` or `beta`.
    pub dialect: RealtimeDialect,
    /// Model (used to build the OpenAI URL when `url` is empty).
    pub model: String,
    /// `pcmu` (μ-law both ways, passthrough for μ-law carriers) or `pcm24k`.
    pub audio: UpstreamAudio,
    /// OpenAI key, sent as `Authorization: Bearer`.
    pub openai_api_key: Secret,
    /// Azure OpenAI key, sent as `api-key`.
    pub azure_api_key: Secret,
    /// How keys are sent: `auto` (Azure hosts get `api-key`, others `Authorization: Bearer`),
    /// `bearer` or `api-key`.
    pub auth: AuthStyle,
    /// Handshake time limit.
    pub connect_timeout_ms: u64,
    /// Time from connect to `session.updated`.
    pub ready_timeout_ms: u64,
    /// Caller audio held while the upstream is not ready, reconnecting or slow (oldest
    /// dropped beyond).
    pub queue_ms: u64,
    /// Reconnect attempts after an upstream failure (0: end the call at once).
    pub reconnect_attempts: u32,
    /// Time from a failure to a working session before giving up.
    pub reconnect_budget_ms: u64,
    /// First reconnect delay (doubled per attempt, jittered, at most 2 s).
    pub reconnect_base_delay_ms: u64,
    /// Upstream ping interval.
    pub ping_interval_ms: u64,
    /// Nothing heard (not even a pong) or a write blocked this long: reconnect.
    pub stall_timeout_ms: u64,
    /// Move to a fresh upstream session this long before `expires_at`.
    pub rollover_margin_s: u64,
    /// Rollovers one call may make; past it the call ends like a lost upstream.
    pub max_rollovers: u32,
    /// WAV file played to the caller when the upstream is gone for good ("" = none).
    pub fallback_audio: String,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            dialect: RealtimeDialect::Ga,
            model: "gpt-realtime".into(),
            audio: UpstreamAudio::Pcmu,
            openai_api_key: Secret::default(),
            azure_api_key: Secret::default(),
            auth: AuthStyle::Auto,
            connect_timeout_ms: 10_000,
            ready_timeout_ms: 10_000,
            queue_ms: 1_000,
            reconnect_attempts: 3,
            reconnect_budget_ms: 5_000,
            reconnect_base_delay_ms: 200,
            ping_interval_ms: 5_000,
            stall_timeout_ms: 10_000,
            rollover_margin_s: 60,
            max_rollovers: 24,
            fallback_audio: String::new(),
        }
    }
}

/// How the upstream key is presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthStyle {
    /// `api-key` for `*.azure.com` / `*.azure.us` hosts, `Authorization: Bearer` otherwise.
    Auto,
    /// `Authorization: Bearer <key>` (OpenAI; Azure with Entra ID tokens).
    Bearer,
    /// `api-key: <key>` (Azure OpenAI keys).
    ApiKey,
}

/// `[session]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SessionConfig {
    /// System prompt.
    pub instructions: String,
    /// Output voice.
    pub voice: String,
    /// Input transcription model; empty turns transcription off.
    pub transcription_model: String,
    /// Server VAD threshold (0..1).
    pub vad_threshold: f64,
    /// Audio kept before detected speech.
    pub prefix_padding_ms: u32,
    /// Silence that ends the caller's turn.
    pub silence_duration_ms: u32,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            instructions: "You are a helpful, concise phone assistant. Keep answers short.".into(),
            voice: "marin".into(),
            transcription_model: "gpt-4o-mini-transcribe".into(),
            vad_threshold: 0.5,
            prefix_padding_ms: 300,
            silence_duration_ms: 500,
        }
    }
}

/// `[calls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CallsConfig {
    /// Consecutive invalid frames that close the socket with 1007.
    pub max_consecutive_bad_frames: u32,
    /// Deprecated, no effect: every event handler finishes without waiting (the slow work,
    /// the upstream, runs in the bridge task with deadlines of its own), so a time limit
    /// around them could never fire. Accepted so existing files still load, with a warning.
    pub event_timeout_ms: Option<u64>,
    /// How long `stop` waits for the upstream to close.
    pub upstream_close_wait_ms: u64,
    /// Sessions idle this long are reaped (a safety net; calls remove their own).
    pub idle_session_timeout_s: u64,
    /// No frame from the carrier for this long closes the call and its upstream (1001).
    pub idle_timeout_s: u64,
    /// A socket that has not begun its call with a valid `start` this long after the
    /// upgrade is closed 1008 (its call slot freed); other frames do not extend it.
    pub start_deadline_ms: u64,
    /// On SIGTERM, how long live calls may continue before they are closed with 1001.
    pub drain_deadline_s: u64,
    /// A carrier that leaves our writes unread this long (its buffer full) is dropped.
    pub carrier_write_timeout_ms: u64,
}

impl Default for CallsConfig {
    fn default() -> Self {
        Self {
            max_consecutive_bad_frames: 10,
            event_timeout_ms: None,
            upstream_close_wait_ms: 2_000,
            idle_session_timeout_s: 300,
            idle_timeout_s: 30,
            start_deadline_ms: 5_000,
            drain_deadline_s: 30,
            carrier_write_timeout_ms: 5_000,
        }
    }
}

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
        }
    }
}

/// How a route authenticates upgrades.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// Nothing (refused on a non-loopback address unless `security.allow_unauthenticated`).
    None,
    /// A JWT (see `[security.jwt]`).
    Jwt,
    /// `X-Twilio-Signature` (see `[security.twilio]`).
    TwilioSignature,
    /// HTTP Basic (see `[security.basic]`; Exotel).
    Basic,
    /// Client address in `security.allowed_ips`.
    IpAllowlist,
}

/// `[security]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SecurityConfig {
    /// Auth for routes that set none.
    pub default_auth: AuthKind,
    /// Allow `none` on a non-loopback listen address (logged as a warning).
    pub allow_unauthenticated: bool,
    /// Proxies whose forwarding header is believed (CIDRs).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The one header those proxies set: `x-forwarded-for` (default) or `forwarded`.
    pub forwarded_header: callgate_layers::http::client_ip::ForwardedHeader,
    /// Allowed `Origin` values (requests without `Origin`, as carriers send, always pass).
    pub allowed_origins: Vec<String>,
    /// Networks for `ip_allowlist` routes.
    pub allowed_ips: Vec<ipnet::IpNet>,
    /// Concurrent HTTP connections not yet upgraded (beyond: 503 and close).
    pub max_connections: usize,
    /// Of those, from one host (IPv6: one /64); trusted proxies are exempt.
    pub max_connections_per_ip: usize,
    /// Time a client has to send its request headers.
    pub header_read_timeout_ms: u64,
    /// Largest WebSocket message or frame from a carrier (beyond: close 1009).
    pub max_message_bytes: usize,
    /// Per-socket frame rate, every WebSocket frame counted (beyond the burst: close 1008).
    pub messages_per_second: u32,
    /// Per-socket frame burst.
    pub message_burst: u32,
    /// Most audio one media message may carry (beyond: rejected as an invalid frame).
    pub max_media_ms: u64,
    /// How far a call's audio may run ahead of the clock (beyond: dropped and counted).
    pub audio_burst_ms: u64,
    /// Upgrade attempts per client IP per second (beyond: 429).
    pub upgrades_per_ip_per_second: u32,
    /// Burst of upgrade attempts per client IP.
    pub upgrade_burst_per_ip: u32,
    /// Upgrade attempts per second for the whole gateway (beyond: 503).
    pub upgrades_per_second: u32,
    /// Burst of upgrade attempts for the whole gateway.
    pub upgrade_burst: u32,
    /// Failed authentications per client IP per minute before it is blocked.
    pub failed_auth_per_ip_per_minute: u32,
    /// Burst of failed authentications per client IP.
    pub failed_auth_burst: u32,
    /// How long an IP stays blocked after exceeding its failure quota.
    pub failed_auth_block_s: u64,
    /// Attempts a blocked IP may still make per minute (burst: a twelfth, at least 1);
    /// those that authenticate pass, the rest answer 429.
    pub blocked_attempts_per_minute: u32,
    /// Most client IPs tracked by each limiter (memory bound).
    pub max_tracked_ips: usize,
    /// Concurrent calls for the whole gateway (beyond: 503).
    pub max_calls: usize,
    /// Concurrent calls per tenant unless `[security.tenants.NAME]` says otherwise.
    pub max_calls_per_tenant: usize,
    /// Per-tenant overrides.
    pub tenants: std::collections::BTreeMap<String, TenantConfig>,
    /// Time a `token_in_start` call has to present a valid `start`.
    pub start_token_deadline_ms: u64,
    /// Bearer token for the admin API (`/v1/calls`); empty turns it off.
    pub admin_token: Secret,
    /// `/client` (the original Exotel integration's transcript feed) without a token, for
    /// its unchanged clients on a private network.
    pub client_feed_open: bool,
    /// JWT settings.
    pub jwt: JwtConfig,
    /// Twilio signature settings.
    pub twilio: TwilioConfig,
    /// HTTP Basic settings.
    pub basic: BasicConfig,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            default_auth: AuthKind::None,
            allow_unauthenticated: false,
            trusted_proxies: Vec::new(),
            forwarded_header: Default::default(),
            allowed_origins: Vec::new(),
            allowed_ips: Vec::new(),
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            header_read_timeout_ms: 5_000,
            max_message_bytes: 64 * 1024,
            messages_per_second: 100,
            message_burst: 200,
            max_media_ms: 1_000,
            audio_burst_ms: 2_000,
            upgrades_per_ip_per_second: 50,
            upgrade_burst_per_ip: 100,
            upgrades_per_second: 500,
            upgrade_burst: 1_000,
            failed_auth_per_ip_per_minute: 10,
            failed_auth_burst: 20,
            failed_auth_block_s: 60,
            blocked_attempts_per_minute: 60,
            max_tracked_ips: 100_000,
            max_calls: 1_000,
            max_calls_per_tenant: 1_000,
            tenants: Default::default(),
            start_token_deadline_ms: 5_000,
            admin_token: Secret::default(),
            client_feed_open: false,
            jwt: JwtConfig::default(),
            twilio: TwilioConfig::default(),
            basic: BasicConfig::default(),
        }
    }
}

/// `[security.tenants.NAME]`.
#[derive(Debug, Clone, Deserialize)]
pub struct TenantConfig {
    /// Concurrent calls of this tenant.
    pub max_calls: usize,
}

/// `[security.jwt]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct JwtConfig {
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
    /// Clock skew allowed on `exp`/`nbf`, seconds.
    pub leeway_s: u64,
    /// Query parameter for routes with `query_token = true`.
    pub query_param: String,
    /// `start.customParameters` key for routes with `token_in_start` or `require_call_token`.
    pub start_parameter: String,
    /// Current and previous keys; `kid` selects one.
    pub keys: Vec<JwtKeyConfig>,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            issuer: "callgate".into(),
            audience: "callgate".into(),
            leeway_s: 10,
            query_param: "token".into(),
            start_parameter: "token".into(),
            keys: Vec::new(),
        }
    }
}

/// `[[security.jwt.keys]]`: one key. HS* keys need a secret (inline, or the name of an env
/// variable); RS*/ES*/EdDSA keys need a public key PEM file (and a private one to mint).
#[derive(Debug, Clone, Deserialize)]
pub struct JwtKeyConfig {
    /// Key id (the token header's `kid`).
    pub kid: String,
    /// `HS256`, `HS384`, `HS512`, `RS256`, `RS384`, `RS512`, `PS256`, `ES256`, `ES384` or
    /// `EdDSA`; pinned: tokens with any other `alg` are refused.
    pub algorithm: String,
    /// HMAC secret.
    #[serde(default)]
    pub secret: Secret,
    /// Name of an env variable holding the HMAC secret.
    #[serde(default)]
    pub secret_env: String,
    /// PEM public key (asymmetric algorithms).
    #[serde(default)]
    pub public_key_file: String,
    /// PEM private key, only for `callgate token`.
    #[serde(default)]
    pub private_key_file: String,
}

/// `[security.twilio]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TwilioConfig {
    /// Primary auth token.
    pub auth_token: Secret,
    /// Secondary auth token, accepted during rotation.
    pub secondary_auth_token: Secret,
    /// The public base URL Twilio connects to (e.g. `wss://gw.example.com`); the route path
    /// is appended. Never taken from `Host` or `X-Forwarded-*`.
    pub public_base_url: String,
}

/// `[security.basic]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct BasicConfig {
    /// User name.
    pub username: String,
    /// Password.
    pub password: Secret,
}

/// Paths the gateway serves itself.
const RESERVED: &[&str] = &[
    "/healthz",
    "/health",
    "/readyz",
    "/metrics",
    "/v1/calls",
    "/client",
];

/// Every problem found while loading.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} configuration error(s):", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Loads the file (if any) and the environment, reporting every error together.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        let mut table = match path {
            None => toml::Table::new(),
            Some(path) => match std::fs::read_to_string(path) {
                Err(e) => return Err(ConfigErrors(vec![format!("{}: {e}", path.display())])),
                Ok(text) => match text.parse::<toml::Table>() {
                    Ok(t) => t,
                    Err(e) => return Err(ConfigErrors(vec![format!("{}: {e}", path.display())])),
                },
            },
        };
        for (name, value) in env {
            if let Some((_, key)) = ENV_ALIASES.iter().find(|(alias, _)| *alias == name) {
                set_path(&mut table, key, toml::Value::String(value));
            } else if let Some(rest) = name.strip_prefix("CALLGATE_") {
                if !rest.contains("__") {
                    continue;
                }
                let key = rest.to_ascii_lowercase().replace("__", ".");
                set_path(&mut table, &key, parse_env_value(&value));
            }
        }
        let config = deserialize_all(table, &mut errors);
        config.validate(&mut errors);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    fn validate(&self, errors: &mut Vec<String>) {
        if self.listen.parse::<SocketAddr>().is_err() {
            errors.push(format!("listen: {:?} is not an address:port", self.listen));
        }
        let url = &self.upstream.url;
        if !(url.is_empty() || url.starts_with("ws://") || url.starts_with("wss://")) {
            errors.push("upstream.url: must start with ws:// or wss://".into());
        }
        if url.is_empty()
            && !self.upstream.azure_api_key.is_empty()
            && self.upstream.openai_api_key.is_empty()
        {
            errors.push("upstream.url: AZURE_OPENAI_API_KEY needs the deployment's URL in CALLGATE_UPSTREAM_URL".into());
        }
        if !(0.0..=1.0).contains(&self.session.vad_threshold) {
            errors.push("session.vad_threshold: must be between 0 and 1".into());
        }
        if self.calls.max_consecutive_bad_frames == 0 {
            errors.push("calls.max_consecutive_bad_frames: must be at least 1".into());
        }
        for (name, value) in [
            (
                "upstream.connect_timeout_ms",
                self.upstream.connect_timeout_ms,
            ),
            ("upstream.ready_timeout_ms", self.upstream.ready_timeout_ms),
            ("upstream.queue_ms", self.upstream.queue_ms),
        ] {
            if value == 0 {
                errors.push(format!("{name}: must be greater than 0"));
            }
        }
        self.validate_security(errors);
        if self.dtmf.terminator.chars().count() > 1
            || !self
                .dtmf
                .terminator
                .chars()
                .all(|c| c.is_ascii_digit() || "*#ABCD".contains(c))
        {
            errors.push("dtmf.terminator: one of 0-9, *, #, A-D, or empty".into());
        }
        for (i, tool) in self.tools.iter().enumerate() {
            if !(tool.url.starts_with("http://") || tool.url.starts_with("https://")) {
                errors.push(format!(
                    "tools[{i}].url: must be an http:// or https:// URL"
                ));
            }
            if tool.name == "end_call"
                || tool.name.is_empty()
                || self.tools.iter().filter(|t| t.name == tool.name).count() > 1
            {
                errors.push(format!(
                    "tools[{i}].name: {:?} is empty, reserved or listed twice",
                    tool.name
                ));
            }
        }
        if !self.upstream.fallback_audio.is_empty()
            && !Path::new(&self.upstream.fallback_audio).is_file()
        {
            errors.push(format!(
                "upstream.fallback_audio: {} is not a file",
                self.upstream.fallback_audio
            ));
        }
        let mut seen = Vec::new();
        for (i, route) in self.routes.iter().enumerate() {
            let plain = route.path.strip_suffix("/{call_id}").unwrap_or(&route.path);
            if !route.path.starts_with('/') || plain.contains(['?', '#', '{', '}', '*']) {
                errors.push(format!(
                    "routes[{i}].path: {:?} must be a plain path starting with /",
                    route.path
                ));
            }
            if RESERVED.contains(&route.path.as_str()) {
                errors.push(format!(
                    "routes[{i}].path: {} is served by the gateway itself",
                    route.path
                ));
            }
            if seen.contains(&&route.path) {
                errors.push(format!("routes[{i}].path: {} is listed twice", route.path));
            }
            seen.push(&route.path);
        }
    }

    fn validate_security(&self, errors: &mut Vec<String>) {
        let sec = &self.security;
        let loopback = self
            .listen
            .parse::<SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback());
        for route in self.effective_routes() {
            let kind = route.auth.unwrap_or(sec.default_auth);
            let path = &route.path;
            match kind {
                AuthKind::None if !loopback && !sec.allow_unauthenticated => errors.push(format!(
                    "route {path}: no authentication on the non-loopback address {}; configure \
                     security.default_auth (or the route's auth), or set security.allow_unauthenticated = true",
                    self.listen
                )),
                AuthKind::Jwt if sec.jwt.keys.is_empty() => {
                    errors.push(format!("route {path}: auth = \"jwt\" needs [[security.jwt.keys]]"))
                }
                AuthKind::TwilioSignature if sec.twilio.auth_token.is_empty() || sec.twilio.public_base_url.is_empty() => errors.push(format!(
                    "route {path}: auth = \"twilio_signature\" needs security.twilio.auth_token (TWILIO_AUTH_TOKEN) and security.twilio.public_base_url"
                )),
                AuthKind::Basic if sec.basic.username.is_empty() || sec.basic.password.is_empty() => {
                    errors.push(format!("route {path}: auth = \"basic\" needs security.basic.username and password"))
                }
                AuthKind::IpAllowlist if sec.allowed_ips.is_empty() => {
                    errors.push(format!("route {path}: auth = \"ip_allowlist\" needs security.allowed_ips"))
                }
                _ => {}
            }
            if (route.token_in_start || route.query_token) && kind != AuthKind::Jwt {
                errors.push(format!(
                    "route {path}: token_in_start and query_token apply to auth = \"jwt\" only"
                ));
            }
            if route.require_call_token
                && (kind != AuthKind::TwilioSignature || sec.jwt.keys.is_empty())
            {
                errors.push(format!("route {path}: require_call_token needs auth = \"twilio_signature\" and [[security.jwt.keys]]"));
            }
            if route.outbound_encoding.is_some()
                && route.dialect != RouteDialect::Fixed(Dialect::Telnyx)
            {
                errors.push(format!(
                    "route {path}: outbound_encoding applies to dialect = \"telnyx\" only"
                ));
            }
        }
        let url = &sec.twilio.public_base_url;
        if !(url.is_empty() || url.starts_with("wss://") || url.starts_with("ws://")) {
            errors.push(
                "security.twilio.public_base_url: must be the wss:// URL Twilio connects to".into(),
            );
        }
        for (i, key) in sec.jwt.keys.iter().enumerate() {
            if key.algorithm.parse::<jsonwebtoken::Algorithm>().is_err() {
                errors.push(format!(
                    "security.jwt.keys[{i}].algorithm: unknown algorithm {:?}",
                    key.algorithm
                ));
            }
        }
        for (name, value) in [
            ("security.max_connections", sec.max_connections),
            ("security.max_message_bytes", sec.max_message_bytes),
            ("security.max_calls", sec.max_calls),
            ("security.max_tracked_ips", sec.max_tracked_ips),
        ] {
            if value == 0 {
                errors.push(format!("{name}: must be greater than 0"));
            }
        }
    }

    /// The address to serve on (validated by [`Config::load`]).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080)))
    }

    /// Paths of `twilio_signature` routes without `require_call_token` (a signature alone
    /// is constant per URL: seen once, it can be replayed).
    pub fn signature_only_routes(&self) -> Vec<String> {
        self.effective_routes()
            .into_iter()
            .filter(|r| {
                r.auth.unwrap_or(self.security.default_auth) == AuthKind::TwilioSignature
                    && !r.require_call_token
            })
            .map(|r| r.path)
            .collect()
    }

    /// The built-in routes, with configured routes added or replacing them by path.
    pub fn effective_routes(&self) -> Vec<RouteConfig> {
        let mut routes = vec![
            RouteConfig::new("/twilio", Dialect::Twilio, false),
            RouteConfig::new("/smartflo", Dialect::Smartflo, false),
            RouteConfig::new("/vendor-stream", Dialect::VendorStream, true),
            RouteConfig::new("/exotel", Dialect::Exotel, false),
            RouteConfig::new("/voximplant", Dialect::Voximplant, false),
            RouteConfig::new("/voximplant/{call_id}", Dialect::Voximplant, false),
            RouteConfig::new("/ws/audio/{call_id}", Dialect::RawAudio, false),
            RouteConfig::new("/plivo", Dialect::Plivo, false),
            RouteConfig::new("/telnyx", Dialect::Telnyx, false),
            RouteConfig::with("/stream", RouteDialect::Detect, false),
        ];
        for configured in &self.routes {
            routes.retain(|r| r.path != configured.path);
            routes.push(configured.clone());
        }
        routes
    }

    /// True when no upstream is configured, so the embedded loopback must serve.
    pub fn uses_loopback(&self) -> bool {
        self.upstream.url.is_empty()
            && self.upstream.openai_api_key.is_empty()
            && self.upstream.azure_api_key.is_empty()
    }

    /// The bridge settings; `loopback_url` is the embedded simulator's URL when it runs.
    pub fn bridge_config(&self, loopback_url: Option<&str>) -> BridgeConfig {
        let up = &self.upstream;
        let url = match (loopback_url, up.url.is_empty()) {
            (Some(loopback), _) => loopback.to_owned(),
            (None, false) => up.url.clone(),
            (None, true) => format!("wss://api.openai.com/v1/realtime?model={}", up.model),
        };
        let api_key = match up.auth {
            AuthStyle::Auto => is_azure(&url),
            AuthStyle::Bearer => false,
            AuthStyle::ApiKey => true,
        };
        // Each style prefers its own key and falls back to the other.
        let (first, second) = if api_key {
            (&up.azure_api_key, &up.openai_api_key)
        } else {
            (&up.openai_api_key, &up.azure_api_key)
        };
        let key = if first.is_empty() { second } else { first };
        let auth = match (loopback_url, key.is_empty(), api_key) {
            (Some(_), _, _) | (None, true, _) => UpstreamAuth::None,
            (None, false, true) => UpstreamAuth::ApiKey(key.clone()),
            (None, false, false) => UpstreamAuth::Bearer(key.clone()),
        };
        let s = &self.session;
        BridgeConfig {
            url,
            auth,
            dialect: up.dialect,
            audio: up.audio,
            session: SessionSettings {
                instructions: s.instructions.clone(),
                voice: s.voice.clone(),
                transcription_model: (!s.transcription_model.is_empty())
                    .then(|| s.transcription_model.clone()),
                vad_threshold: s.vad_threshold,
                prefix_padding_ms: s.prefix_padding_ms,
                silence_duration_ms: s.silence_duration_ms,
                language: None,
            },
            connect_timeout: Duration::from_millis(up.connect_timeout_ms),
            ready_timeout: Duration::from_millis(up.ready_timeout_ms),
            // Bounded in time of audio: carriers choose their message sizes.
            queue: Duration::from_millis(up.queue_ms.max(20)),
            max_media: Duration::from_millis(self.security.max_media_ms.max(20)),
            audio_burst: Duration::from_millis(self.security.audio_burst_ms),
            reconnect: callgate_handlers::bridge::ReconnectPolicy {
                max_attempts: up.reconnect_attempts,
                budget: Duration::from_millis(up.reconnect_budget_ms),
                base_delay: Duration::from_millis(up.reconnect_base_delay_ms),
                max_delay: Duration::from_secs(2),
            },
            ping_interval: Duration::from_millis(up.ping_interval_ms.max(10)),
            stall_timeout: Duration::from_millis(up.stall_timeout_ms.max(10)),
            rollover_margin: Duration::from_secs(up.rollover_margin_s),
            max_rollovers: up.max_rollovers,
            // Loaded by `run` (it reads a file).
            fallback_audio: None,
            tools: callgate_handlers::bridge::tools::Tools::new(
                self.tools
                    .iter()
                    .map(|t| callgate_handlers::bridge::tools::ToolSpec {
                        name: t.name.clone(),
                        description: t.description.clone(),
                        parameters: serde_json::to_value(&t.parameters).unwrap_or_default(),
                        url: t.url.clone(),
                        timeout: Duration::from_millis(t.timeout_ms.max(1)),
                    })
                    .collect(),
                self.conversation.end_call,
            )
            .with_call_control(
                self.conversation.transfer_targets.clone(),
                self.conversation.send_dtmf,
            ),
            carrier_apis: self.carriers.apis(&self.security.twilio.auth_token),
            conversation: callgate_handlers::bridge::ConversationSettings {
                profiles: self
                    .conversation
                    .profiles
                    .iter()
                    .map(|(name, p)| {
                        let profile = callgate_handlers::bridge::Profile {
                            instructions: p.instructions.clone(),
                            voice: p.voice.clone(),
                            language: p.language.clone(),
                            greeting: p.greeting.clone(),
                        };
                        (name.clone(), profile)
                    })
                    .collect(),
                profile_parameter: self.conversation.profile_parameter.clone(),
                voices: self.conversation.voices.clone(),
                languages: self.conversation.languages.clone(),
                greeting: self.conversation.greeting.clone(),
            },
            dtmf: callgate_handlers::bridge::DtmfSettings {
                terminator: self.dtmf.terminator.chars().next(),
                inter_digit_timeout: Duration::from_millis(self.dtmf.inter_digit_timeout_ms.max(1)),
                pci: self.dtmf.pci,
            },
        }
    }
}

fn is_azure(url: &str) -> bool {
    url.parse::<http::Uri>()
        .ok()
        .and_then(|uri| {
            uri.host()
                .map(|h| h.ends_with(".azure.com") || h.ends_with(".azure.us"))
        })
        .unwrap_or(false)
}

/// An env value as TOML (numbers, booleans, arrays), falling back to a plain string.
fn parse_env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn set_path(table: &mut toml::Table, dotted: &str, value: toml::Value) {
    let mut parts: Vec<&str> = dotted.split('.').collect();
    let last = parts.pop().unwrap_or_default();
    let mut current = table;
    for part in parts {
        let entry = current
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        current = entry.as_table_mut().expect("made a table above");
    }
    current.insert(last.to_owned(), value);
}

/// Deserializes, and on each type error records it, removes the offending key (so its
/// default applies) and tries again: every bad key is reported, not just the first.
fn deserialize_all(mut table: toml::Table, errors: &mut Vec<String>) -> Config {
    for _ in 0..64 {
        let mut unknown = Vec::new();
        let value = toml::Value::Table(table.clone());
        let mut record = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
        let ignored = serde_ignored::Deserializer::new(value, &mut record);
        match serde_path_to_error::deserialize::<_, Config>(ignored) {
            Ok(config) => {
                errors.extend(unknown.into_iter().map(|k| format!("{k}: unknown key")));
                return config;
            }
            Err(e) => {
                let path = e.path().clone();
                errors.push(format!("{path}: {}", e.inner()));
                if !remove_path(&mut table, &path) {
                    break;
                }
            }
        }
    }
    Config::default()
}

fn remove_path(table: &mut toml::Table, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut current = table;
    let mut parents = parents.iter().peekable();
    while let Some(segment) = parents.next() {
        let Segment::Map { key } = segment else {
            return false;
        };
        match (current.get_mut(key.as_str()), parents.peek()) {
            (Some(toml::Value::Array(items)), Some(Segment::Seq { index })) => {
                // routes[i].key: remove the whole entry; a route with a bad field is unusable.
                let index = *index;
                parents.next();
                if index < items.len() {
                    items.remove(index);
                    return true;
                }
                return false;
            }
            (Some(toml::Value::Table(inner)), _) => current = inner,
            _ => return false,
        }
    }
    match last {
        Segment::Map { key } => current.remove(key.as_str()).is_some(),
        Segment::Seq { .. } | Segment::Enum { .. } | Segment::Unknown => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load(toml_text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let dir = std::env::temp_dir().join(format!("callgate-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{:x}.toml", toml_text.len() * 31 + vars.len()));
        std::fs::write(&path, toml_text).unwrap();
        Config::load(Some(&path), env(vars))
    }

    #[test]
    fn defaults_use_the_loopback() {
        let config = Config::load(None, env(&[])).unwrap();
        assert!(config.uses_loopback());
        assert_eq!(config.listen_addr().port(), 8080);
        assert_eq!(config.effective_routes().len(), 10);
    }

    #[test]
    fn named_env_vars_work_exactly() {
        let config = Config::load(
            None,
            env(&[
                ("CALLGATE_LISTEN", "0.0.0.0:9000"),
                (
                    "CALLGATE_UPSTREAM_URL",
                    "wss://example.openai.azure.com/openai/v1/realtime?model=dep",
                ),
                ("AZURE_OPENAI_API_KEY", "azkey"),
                ("CALLGATE_REALTIME_DIALECT", "beta"),
                ("CALLGATE_MODEL", "gpt-realtime-mini"),
                ("CALLGATE_VOICE", "cedar"),
                ("CALLGATE_INSTRUCTIONS", "Say hi."),
                ("CALLGATE_CALLS__UPSTREAM_CLOSE_WAIT_MS", "750"),
                ("CALLGATE_SECURITY__ALLOW_UNAUTHENTICATED", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(config.listen, "0.0.0.0:9000");
        assert_eq!(config.upstream.dialect, RealtimeDialect::Beta);
        assert_eq!(config.upstream.model, "gpt-realtime-mini");
        assert_eq!(config.calls.upstream_close_wait_ms, 750);
        let admin = Config::load(None, env(&[("CALLGATE_ADMIN_TOKEN", "adm")])).unwrap();
        assert_eq!(
            admin.security.admin_token.expose(),
            "adm",
            "the documented short name"
        );
        let bridge = config.bridge_config(None);
        assert_eq!(bridge.auth, UpstreamAuth::ApiKey(Secret::new("azkey")));
        assert_eq!(bridge.session.voice, "cedar");
        assert_eq!(bridge.session.instructions, "Say hi.");
        assert!(
            !format!("{config:?}").contains("azkey"),
            "secret leaked into Debug"
        );
    }

    #[test]
    fn signature_only_twilio_routes_are_named_for_the_startup_warning() {
        let config = load(
            "[security.twilio]\nauth_token = \"t\"\npublic_base_url = \"wss://gw.example.com\"\n\
             [[routes]]\npath = \"/signed\"\ndialect = \"twilio\"\nauth = \"twilio_signature\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(config.signature_only_routes(), ["/signed"]);
        assert!(Config::load(None, Vec::new())
            .unwrap()
            .signature_only_routes()
            .is_empty());
    }

    #[test]
    fn no_auth_on_a_public_address_refuses_to_start() {
        let err = Config::load(None, env(&[("CALLGATE_LISTEN", "0.0.0.0:8080")])).unwrap_err();
        assert_eq!(err.0.len(), 10, "{err}");
        assert!(err.0[0].contains("allow_unauthenticated"), "{err}");
        // Each auth mode names what it is missing.
        let err = load("[security]\ndefault_auth = \"jwt\"\n[[routes]]\npath = \"/t\"\ndialect = \"twilio\"\nauth = \"twilio_signature\"\nrequire_call_token = true\n", &[]).unwrap_err();
        let text = err.to_string();
        for needle in [
            "needs [[security.jwt.keys]]",
            "TWILIO_AUTH_TOKEN",
            "require_call_token needs",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }

    #[test]
    fn openai_key_alone_targets_openai_with_bearer() {
        let config = Config::load(None, env(&[("OPENAI_API_KEY", "sk-test")])).unwrap();
        assert!(!config.uses_loopback());
        let bridge = config.bridge_config(None);
        assert_eq!(
            bridge.url,
            "wss://api.openai.com/v1/realtime?model=gpt-realtime"
        );
        assert_eq!(bridge.auth, UpstreamAuth::Bearer(Secret::new("sk-test")));
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let err = load(
            r#"
listen = "nowhere"
typo_key = 1
[upstream]
url = "http://x"
connect_timeout_ms = "soon"
dialect = "v2"
[session]
vad_threshold = 3.0
[[routes]]
path = "/healthz"
dialect = "twilio"
"#,
            &[],
        )
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "listen",
            "typo_key",
            "upstream.url",
            "connect_timeout_ms",
            "upstream.dialect",
            "vad_threshold",
            "routes[0].path",
        ] {
            assert!(text.contains(needle), "missing {needle} in:\n{text}");
        }
    }

    #[test]
    fn the_example_file_documents_the_defaults() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/callgate.toml");
        let example = Config::load(Some(&path), env(&[])).unwrap();
        // Every key is spelled out in the example, with its default value.
        assert_eq!(format!("{example:?}"), format!("{:?}", Config::default()));
        let text = std::fs::read_to_string(&path).unwrap();
        for (alias, _) in ENV_ALIASES {
            assert!(
                text.contains(alias),
                "deploy/callgate.toml does not mention {alias}"
            );
        }
    }

    #[test]
    fn routes_map_paths_to_dialects() {
        let config = load(
            "[[routes]]\npath = \"/ws/media\"\ndialect = \"twilio\"\n[[routes]]\npath = \"/vendor-stream\"\ndialect = \"vendor-stream\"\nsend_connected = false\n",
            &[],
        )
        .unwrap();
        let routes = config.effective_routes();
        assert!(routes.contains(&RouteConfig::new("/ws/media", Dialect::Twilio, false)));
        let vendor = routes.iter().find(|r| r.path == "/vendor-stream").unwrap();
        assert!(!vendor.send_connected);
        assert_eq!(routes.len(), 11);
    }
}
