//! The sections about one call that this crate owns: `[upstream]`, `[calls]`, `[records]`.
//! `[session]`, `[conversation]`, `[[tools]]` and `[dtmf]` are the bridge's own settings
//! (`callgate_handlers::bridge`), composed into [`Config`] as they are.

use super::*;
use callgate_handlers::settings::{millis, secs};

/// `[records]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RecordsConfig {
    /// Write call records and transcripts.
    pub enabled: bool,
    /// SQLite database file (when `url` is empty).
    pub path: String,
    /// PostgreSQL URL (`postgres://user:password@host:5432/db`); "" = SQLite at `path`.
    pub url: String,
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
            url: String::new(),
            webhook_url: String::new(),
            webhook_retries: 3,
        }
    }
}

/// `[upstream]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct UpstreamConfig {
    /// The protocol: `openai-realtime` (the default) or `openai-live`.
    pub provider: Provider,
    /// `ws://` or `wss://` URL; empty: the provider's OpenAI URL when a key is set, else the
    /// embedded loopback.
    pub url: String,
    /// `ga` or `beta` (Realtime API).
    pub dialect: RealtimeDialect,
    /// Model ("" = the provider's default: `gpt-realtime`, `gpt-live-1`).
    pub model: String,
    /// GPT-Live: the Responses model that runs the tools the live model delegates to.
    pub delegation_model: String,
    /// `pcmu` (μ-law both ways, passthrough for μ-law carriers) or `pcm24k`.
    pub audio: UpstreamAudio,
    /// OpenAI key, sent as `Authorization: Bearer`.
    pub openai_api_key: Secret,
    /// Azure OpenAI key, sent as `api-key`.
    pub azure_api_key: Secret,
    /// Gemini API key (`gemini-live`), sent as `x-goog-api-key`.
    pub gemini_api_key: Secret,
    /// The same, under Google's other name for it (used when `gemini_api_key` is empty).
    pub google_api_key: Secret,
    /// How keys are sent: `auto` (Azure hosts get `api-key`, others `Authorization: Bearer`),
    /// `bearer` or `api-key`.
    pub auth: AuthStyle,
    /// A file holding a bearer token (Azure Entra ID), read at every connect ("" = none).
    pub azure_token_file: String,
    /// A shell command printing a bearer token (Azure Entra ID) ("" = none).
    pub azure_token_command: String,
    /// How long a token printed by `azure_token_command` is used before it runs again.
    pub azure_token_cache_s: u64,
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
    /// Warm sessions kept connected and configured for calls to take at `start` (0 = off).
    pub prewarm: usize,
    /// A warm session not taken within this long is closed and replaced.
    pub prewarm_max_age_s: u64,
    /// Keep warm sessions even where the provider bills connected time (idle included).
    pub prewarm_billed_idle: bool,
}

impl UpstreamConfig {
    /// The model: `model`, or the provider's default.
    pub fn model_name(&self) -> &str {
        match self.model.is_empty() {
            true => self.provider.default_model(),
            false => &self.model,
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            provider: Provider::OpenaiRealtime,
            url: String::new(),
            dialect: RealtimeDialect::Ga,
            model: String::new(),
            delegation_model: "gpt-5-mini".into(),
            audio: UpstreamAudio::Pcmu,
            openai_api_key: Secret::default(),
            azure_api_key: Secret::default(),
            gemini_api_key: Secret::default(),
            google_api_key: Secret::default(),
            auth: AuthStyle::Auto,
            azure_token_file: String::new(),
            azure_token_command: String::new(),
            azure_token_cache_s: 300,
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
            prewarm: 0,
            prewarm_max_age_s: 600,
            prewarm_billed_idle: false,
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

/// `[calls]`: the limits on one call's socket.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CallsConfig {
    /// Consecutive invalid frames that close the socket with 1007.
    pub max_consecutive_bad_frames: u32,
    /// Deprecated, no effect: every event handler finishes without waiting (the slow work,
    /// the upstream, runs in the bridge task with deadlines of its own), so a time limit
    /// around them could never fire. Accepted so existing files still load, with a warning.
    pub event_timeout_ms: Option<u64>,
    /// How long `stop` waits for the upstream to close (`upstream_close_wait_ms`).
    #[serde(rename = "upstream_close_wait_ms", deserialize_with = "millis")]
    pub upstream_close_wait: Duration,
    /// Call state idle this long is reaped, a safety net: calls remove their own
    /// (`idle_session_timeout_s`).
    #[serde(rename = "idle_session_timeout_s", deserialize_with = "secs")]
    pub idle_state_timeout: Duration,
    /// No frame from the carrier for this long closes the call and its upstream (1001)
    /// (`idle_timeout_s`).
    #[serde(rename = "idle_timeout_s", deserialize_with = "secs")]
    pub idle_timeout: Duration,
    /// A socket that has not begun its call with a valid `start` this long after the
    /// upgrade is closed 1008 (its call slot freed); other frames do not extend it
    /// (`start_deadline_ms`).
    #[serde(rename = "start_deadline_ms", deserialize_with = "millis")]
    pub start_deadline: Duration,
    /// On SIGTERM, how long live calls may continue before they are closed with 1001
    /// (`drain_deadline_s`).
    #[serde(rename = "drain_deadline_s", deserialize_with = "secs")]
    pub drain_deadline: Duration,
    /// A carrier that leaves our writes unread this long (its buffer full) is dropped
    /// (`carrier_write_timeout_ms`).
    #[serde(rename = "carrier_write_timeout_ms", deserialize_with = "millis")]
    pub carrier_write_timeout: Duration,
}

impl Default for CallsConfig {
    fn default() -> Self {
        Self {
            max_consecutive_bad_frames: 10,
            event_timeout_ms: None,
            upstream_close_wait: Duration::from_secs(2),
            idle_state_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(30),
            start_deadline: Duration::from_secs(5),
            drain_deadline: Duration::from_secs(30),
            carrier_write_timeout: Duration::from_secs(5),
        }
    }
}
