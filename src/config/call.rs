//! The sections about one call: `[upstream]`, `[session]`, `[calls]`, `[conversation]`,
//! `[[tools]]`, `[records]`, `[dtmf]`.

use super::*;

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
