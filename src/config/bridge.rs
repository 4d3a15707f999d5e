//! The configuration as the bridge takes it ([`BridgeConfig`]): the upstream's URL and
//! credentials resolved, durations from their `*_ms` keys, and the bridge's own sections
//! (`[session]`, `[conversation]`, `[[tools]]`, `[dtmf]`) as they were read.

use super::*;
use callgate_handlers::bridge::token::TokenSource;
use callgate_handlers::bridge::tools::Tools;

impl UpstreamConfig {
    /// The Gemini key: `gemini_api_key`, else `google_api_key`.
    pub fn gemini_key(&self) -> &Secret {
        match self.gemini_api_key.is_empty() {
            true => &self.google_api_key,
            false => &self.gemini_api_key,
        }
    }

    /// Where a bearer token that expires comes from (`azure_token_file` or
    /// `azure_token_command`), if configured.
    pub fn token_source(&self) -> Option<TokenSource> {
        if !self.azure_token_file.is_empty() {
            return Some(TokenSource::File(self.azure_token_file.clone().into()));
        }
        if !self.azure_token_command.is_empty() {
            return Some(TokenSource::command(
                self.azure_token_command.clone(),
                Duration::from_secs(self.azure_token_cache_s),
            ));
        }
        None
    }
}

impl Config {
    /// The bridge settings; `loopback_url` is the embedded simulator's URL when it runs.
    pub fn bridge_config(&self, loopback_url: Option<&str>) -> BridgeConfig {
        let up = &self.upstream;
        let url = match (loopback_url, up.url.is_empty()) {
            (Some(loopback), _) => loopback.to_owned(),
            (None, false) => up.url.clone(),
            (None, true) => up.provider.default_url(up.model_name()),
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
        let auth = match (loopback_url, up.token_source(), key.is_empty(), api_key) {
            (Some(_), _, _, _) => UpstreamAuth::None,
            (None, _, _, _) if up.provider == Provider::GeminiLive => {
                match up.gemini_key().is_empty() {
                    true => UpstreamAuth::None,
                    false => UpstreamAuth::GoogApiKey(up.gemini_key().clone()),
                }
            }
            // A token that expires, read at each connect, before any static key.
            (None, Some(source), _, _) => UpstreamAuth::BearerFrom(std::sync::Arc::new(source)),
            (None, None, true, _) => UpstreamAuth::None,
            (None, None, false, true) => UpstreamAuth::ApiKey(key.clone()),
            (None, None, false, false) => UpstreamAuth::Bearer(key.clone()),
        };
        BridgeConfig {
            // The loopback speaks the Realtime API.
            provider: match loopback_url {
                Some(_) => Provider::OpenaiRealtime,
                None => up.provider,
            },
            // The loopback's URL counts as configured: a profile's provider keeps it.
            url_configured: loopback_url.is_some() || !up.url.is_empty(),
            model: up.model_name().to_owned(),
            delegation_model: up.delegation_model.clone(),
            url,
            auth,
            dialect: up.dialect,
            audio: up.audio,
            session: self.session.clone(),
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
            tools: Tools::new(self.tools.clone(), self.conversation.end_call).with_call_control(
                self.conversation.transfer_targets.clone(),
                self.conversation.send_dtmf,
            ),
            carrier_apis: self.carriers.apis(&self.security.twilio.auth_token),
            conversation: self.conversation.clone(),
            // Started by `run` (it spawns a task).
            warm: None,
            dtmf: self.dtmf.clone(),
        }
    }
}
