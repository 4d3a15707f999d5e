//! What the bridge is configured with, shared by every call: the upstream (URL, credentials,
//! protocol shape, audio format), the session, the conversation, DTMF, and the limits and
//! policies of the relay. The sections a configuration file holds deserialize straight
//! into these types.

use std::time::Duration;

use super::{call_control, tools};
use crate::codec::AudioFormat;

/// A secret string whose `Debug` never shows it.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// True when no secret was given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The secret itself; call only where it is sent.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Which speech-to-speech protocol the upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    /// The OpenAI Realtime API (OpenAI and Azure; GA or beta, see [`RealtimeDialect`]).
    #[default]
    OpenaiRealtime,
    /// OpenAI GPT-Live (`/v1/live/sessions`).
    OpenaiLive,
    /// Google Gemini Live (BidiGenerateContent).
    GeminiLive,
}

impl Provider {
    /// The URL used when `upstream.url` is empty.
    pub fn default_url(self, model: &str) -> String {
        match self {
            Self::OpenaiRealtime => format!("wss://api.openai.com/v1/realtime?model={model}"),
            Self::OpenaiLive => "wss://api.openai.com/v1/live/sessions".into(),
            Self::GeminiLive => "wss://generativelanguage.googleapis.com/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent".into(),
        }
    }

    /// The model used when `upstream.model` is empty.
    pub fn default_model(self) -> &'static str {
        match self {
            Self::OpenaiRealtime => "gpt-realtime",
            Self::OpenaiLive => "gpt-live-1",
            Self::GeminiLive => "gemini-3.1-flash-live-preview",
        }
    }

    /// Whether the provider bills a session for the time it is connected, idle included:
    /// the Realtime API bills tokens (an idle warm session costs nothing), GPT-Live bills
    /// every connected minute, silence included.
    pub fn bills_connected_time(self) -> bool {
        matches!(self, Self::OpenaiLive)
    }

    /// The name in configuration and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::OpenaiRealtime => "openai-realtime",
            Self::OpenaiLive => "openai-live",
            Self::GeminiLive => "gemini-live",
        }
    }
}

/// Which shape of the Realtime protocol the upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RealtimeDialect {
    /// The GA protocol (the default; OpenAI turned beta off in 2026).
    #[default]
    Ga,
    /// The beta protocol (`OpenAI-Beta: realtime=v1`; old Azure preview deployments).
    Beta,
}

/// The audio format on the upstream socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamAudio {
    /// G.711 μ-law both ways: μ-law carriers pass through without decoding.
    #[default]
    Pcmu,
    /// 16-bit PCM at 24 kHz (decode, resample, encode both ways for μ-law carriers).
    Pcm24k,
    /// G.711 A-law both ways (chosen automatically for A-law carriers).
    Pcma,
    /// 16-bit PCM at 16 kHz in and 24 kHz out (Gemini Live; not a configuration value).
    #[serde(skip)]
    Pcm16kIn24kOut,
}

impl UpstreamAudio {
    /// As a codec format.
    pub fn format(self) -> AudioFormat {
        self.output_format()
    }

    /// What the caller's audio is sent upstream as.
    pub fn input_format(self) -> AudioFormat {
        match self {
            Self::Pcm16kIn24kOut => AudioFormat::Pcm16 { rate: 16000 },
            other => other.output_format(),
        }
    }

    /// What the model's audio arrives as.
    pub fn output_format(self) -> AudioFormat {
        match self {
            Self::Pcmu => AudioFormat::Mulaw,
            Self::Pcma => AudioFormat::Alaw,
            Self::Pcm24k | Self::Pcm16kIn24kOut => AudioFormat::Pcm16 { rate: 24000 },
        }
    }

    /// The upstream audio of a call on `provider` whose carrier speaks `carrier`: Gemini
    /// takes 16 kHz PCM and answers in 24 kHz PCM whatever the carrier; the OpenAI
    /// providers as [`UpstreamAudio::for_carrier`].
    pub fn for_provider(provider: Provider, preference: Self, carrier: AudioFormat) -> Self {
        match provider {
            Provider::GeminiLive => Self::Pcm16kIn24kOut,
            _ => Self::for_carrier(preference, carrier),
        }
    }

    /// The upstream format for a call whose carrier speaks `carrier`, given the configured
    /// preference: whatever needs the least work. G.711 passes through; 24 kHz PCM passes
    /// through; 8 kHz PCM is μ-law encoded (no resampling); 16 kHz PCM goes up to 24 kHz
    /// (keeping its band). `pcm24k` forces 24 kHz PCM for every call.
    pub fn for_carrier(preference: Self, carrier: AudioFormat) -> Self {
        match (preference, carrier) {
            (Self::Pcm24k, _) => Self::Pcm24k,
            (_, AudioFormat::Mulaw) => Self::Pcmu,
            (_, AudioFormat::Alaw) => Self::Pcma,
            (_, AudioFormat::Pcm16 { rate: 8000 }) => Self::Pcmu,
            (_, AudioFormat::Pcm16 { .. }) => Self::Pcm24k,
        }
    }
}

/// How the bridge authenticates its handshake.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum UpstreamAuth {
    /// No credentials (the embedded loopback, test servers).
    #[default]
    None,
    /// `Authorization: Bearer <key>` (OpenAI, Azure with Entra ID tokens).
    Bearer(Secret),
    /// `api-key: <key>` (Azure OpenAI keys).
    ApiKey(Secret),
    /// `x-goog-api-key: <key>` (Gemini; never in the URL, which ends up in logs).
    GoogApiKey(Secret),
    /// `Authorization: Bearer <token>`, the token read at each connect (Azure Entra ID tokens
    /// expire; see [`super::token`]).
    BearerFrom(std::sync::Arc<super::token::TokenSource>),
}

/// What the session is told in `session.update` (`[session]` in the configuration file).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default)]
pub struct SessionSettings {
    /// System prompt.
    pub instructions: String,
    /// Output voice.
    pub voice: String,
    /// Input transcription model (`""` in the file, `None` here: off).
    #[serde(deserialize_with = "crate::settings::empty_is_none")]
    pub transcription_model: Option<String>,
    /// Server VAD threshold, 0..1.
    pub vad_threshold: f64,
    /// Audio kept before detected speech.
    pub prefix_padding_ms: u32,
    /// Silence that ends a turn.
    pub silence_duration_ms: u32,
    /// Caller language for transcription (set per call, never from the file).
    #[serde(skip)]
    pub language: Option<String>,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            instructions: "You are a helpful, concise phone assistant. Keep answers short.".into(),
            voice: "marin".into(),
            transcription_model: Some("gpt-4o-mini-transcribe".into()),
            vad_threshold: 0.5,
            prefix_padding_ms: 300,
            silence_duration_ms: 500,
            language: None,
        }
    }
}

/// Everything the bridge needs, shared by every call.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The protocol the upstream speaks.
    pub provider: Provider,
    /// `url` was configured (not the provider's default), so a profile's provider keeps it.
    pub url_configured: bool,
    /// The model (GPT-Live names it in `session.start`; the Realtime API in the URL).
    pub model: String,
    /// GPT-Live: the Responses model that runs the tools the live model delegates to.
    pub delegation_model: String,
    /// `ws://` or `wss://` upstream URL.
    pub url: String,
    /// Handshake credentials.
    pub auth: UpstreamAuth,
    /// GA or beta.
    pub dialect: RealtimeDialect,
    /// Upstream audio format.
    pub audio: UpstreamAudio,
    /// Session configuration.
    pub session: SessionSettings,
    /// Limit on TCP+TLS+WebSocket handshake.
    pub connect_timeout: Duration,
    /// Limit from connect to `session.updated`.
    pub ready_timeout: Duration,
    /// Caller audio held while not ready, reconnecting or slow (oldest dropped).
    pub queue: Duration,
    /// Most audio one carrier media message may carry (beyond: rejected as bad input).
    pub max_media: Duration,
    /// How far caller audio may run ahead of the clock (beyond: dropped and counted).
    pub audio_burst: Duration,
    /// Reconnects after an unexpected close or failure.
    pub reconnect: ReconnectPolicy,
    /// How often the upstream is pinged.
    pub ping_interval: Duration,
    /// Nothing heard (not even a pong) or a write blocked this long: the upstream stalled.
    pub stall_timeout: Duration,
    /// Move to a fresh session this long before `expires_at`.
    pub rollover_margin: Duration,
    /// Rollovers one call may make (a bound, whatever the upstream's sessions do).
    pub max_rollovers: u32,
    /// Played to the caller when the upstream is gone for good (format, raw audio).
    pub fallback_audio: Option<(AudioFormat, Vec<u8>)>,
    /// How key presses become model input.
    pub dtmf: DtmfSettings,
    /// Function tools (webhooks and `end_call`).
    pub tools: tools::Tools,
    /// The carriers' APIs for hang-up, transfer and DTMF.
    pub carrier_apis: call_control::CarrierApis,
    /// Per-call settings selected by custom parameters, and the greeting.
    pub conversation: ConversationSettings,
    /// Warm sessions to take before connecting (`upstream.prewarm`), when on.
    pub warm: Option<super::WarmPool>,
}

/// The conversation around the model (`[conversation]` in the configuration file): the
/// greeting, the built-in tools, and the per-call choices a call's custom parameters (or its
/// tenant) may make, from allowlists.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default)]
pub struct ConversationSettings {
    /// Greeting the assistant speaks first ("" = wait for the caller).
    pub greeting: String,
    /// The custom parameter naming a profile (when absent, a profile named like the tenant).
    pub profile_parameter: String,
    /// Voices a `voice` custom parameter may pick.
    pub voices: Vec<String>,
    /// Languages a `language` custom parameter may pick.
    pub languages: Vec<String>,
    /// Offer the model the built-in `end_call` tool.
    pub end_call: bool,
    /// `transfer_call` destinations by name, e.g. `sales = "+15550100"` (empty: no tool).
    pub transfer_targets: std::collections::BTreeMap<String, String>,
    /// Offer the model `send_dtmf` (for assistants that navigate phone menus).
    pub send_dtmf: bool,
    /// Named profiles: instructions, voice, language, greeting.
    pub profiles: std::collections::BTreeMap<String, Profile>,
}

impl Default for ConversationSettings {
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

impl ConversationSettings {
    /// The profile of `call`: named by its profile parameter, else named like its tenant.
    pub fn profile_of(&self, call: &crate::call_state::CallState) -> Option<&Profile> {
        call.custom_parameters
            .get(&self.profile_parameter)
            .and_then(|name| self.profiles.get(name))
            .or_else(|| {
                let tenant = call.identity.tenant.as_ref()?;
                self.profiles.get(tenant)
            })
    }
}

impl BridgeConfig {
    /// The settings for a call of `profile` when it names another provider or model than
    /// the deployment's (`None`: the deployment's as they are): that provider's default URL
    /// (unless `upstream.url` is configured, which still wins) and model, and no warm
    /// sessions (they are the deployment's).
    pub fn for_profile(&self, profile: &Profile) -> Option<Self> {
        let provider = profile.provider.unwrap_or(self.provider);
        let same_model = profile.model.is_empty() || profile.model == self.model;
        if provider == self.provider && same_model && profile.url.is_empty() {
            return None;
        }
        let mut config = self.clone();
        config.model = match profile.model.is_empty() {
            true if provider == self.provider => self.model.clone(),
            true => provider.default_model().to_owned(),
            false => profile.model.clone(),
        };
        if !profile.url.is_empty() {
            config.url = profile.url.clone();
        } else if !self.url_configured {
            config.url = provider.default_url(&config.model);
        }
        config.provider = provider;
        config.warm = None;
        Some(config)
    }
}

/// One profile (`[conversation.profiles.NAME]`); empty fields keep the defaults.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct Profile {
    /// System prompt.
    pub instructions: String,
    /// Voice.
    pub voice: String,
    /// Language (BCP 47, e.g. `hi`).
    pub language: String,
    /// Greeting the assistant speaks first.
    pub greeting: String,
    /// Record this profile's calls (unset: the route's or `[recording]`'s choice).
    pub recording: Option<bool>,
    /// The provider for this profile's calls (unset: `upstream.provider`).
    pub provider: Option<Provider>,
    /// The model for this profile's calls ("" = the deployment's, or the profile
    /// provider's default).
    pub model: String,
    /// The upstream URL for this profile's calls ("" = `upstream.url`, or the provider's
    /// default when that is empty).
    pub url: String,
}

/// DTMF collection (PROTOCOLS.md §12.4; `[dtmf]` in the configuration file).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default)]
pub struct DtmfSettings {
    /// Ends a sequence at once (usually `#`); `None` (`""` in the file): only the timeout
    /// ends it.
    #[serde(deserialize_with = "crate::settings::keypad_key")]
    pub terminator: Option<char>,
    /// Silence after a key that ends the sequence.
    #[serde(
        rename = "inter_digit_timeout_ms",
        deserialize_with = "crate::settings::millis"
    )]
    pub inter_digit_timeout: Duration,
    /// PCI mode: digits never reach logs, spans, metrics or stored transcripts.
    pub pci: bool,
}

impl Default for DtmfSettings {
    fn default() -> Self {
        Self {
            terminator: Some('#'),
            inter_digit_timeout: Duration::from_secs(2),
            pci: true,
        }
    }
}

/// Jittered exponential backoff inside a bounded budget.
#[derive(Debug, Clone)]
pub struct ReconnectPolicy {
    /// Attempts after one failure (0: never reconnect).
    pub max_attempts: u32,
    /// Total time allowed from the failure to a working session.
    pub budget: Duration,
    /// First delay; doubled per attempt.
    pub base_delay: Duration,
    /// Longest delay.
    pub max_delay: Duration,
}

impl ReconnectPolicy {
    /// The delay before attempt `n` (1-based): base × 2^(n-1), capped, times a random 0.5–1.5.
    pub fn backoff(&self, n: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1 << n.saturating_sub(1).min(16));
        let jitter = 0.5 + rand::random::<f64>();
        exp.min(self.max_delay).mul_f64(jitter)
    }
}
