//! `[security]`: authentication, limits and caps.

use super::*;

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
