//! Checking a loaded configuration: every problem is reported, by key, before anything runs.

use super::*;

/// The most warm upstream sessions one replica keeps (`upstream.prewarm`).
const MAX_PREWARM: usize = 1000;

impl Config {
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
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
        let up = &self.upstream;
        if self.uses_loopback() {
            // The embedded loopback speaks the Realtime API only.
            if up.provider != Provider::OpenaiRealtime {
                errors.push(format!("upstream.provider: {} needs OPENAI_API_KEY (or upstream.url and its key): without one callgate runs the embedded loopback, which speaks the Realtime API", up.provider.name()));
            }
            for (name, profile) in &self.conversation.profiles {
                if profile
                    .provider
                    .is_some_and(|p| p != Provider::OpenaiRealtime)
                {
                    errors.push(format!("conversation.profiles.{name}.provider: needs OPENAI_API_KEY (or upstream.url and its key): the embedded loopback speaks the Realtime API only"));
                }
            }
        }
        let google = |p: Provider| p == Provider::GeminiLive;
        for (name, profile) in &self.conversation.profiles {
            if profile
                .provider
                .is_some_and(|p| google(p) != google(up.provider))
            {
                errors.push(format!("conversation.profiles.{name}.provider: a profile may move between openai-realtime and openai-live only (the keys and audio formats of OpenAI and Google differ)"));
            }
            let other = profile.provider.is_some_and(|p| p != up.provider);
            if other && !up.url.is_empty() && profile.url.is_empty() {
                errors.push(format!("conversation.profiles.{name}.url: a profile with a provider of its own needs its own url when upstream.url is set"));
            }
            let url = &profile.url;
            if !(url.is_empty() || url.starts_with("ws://") || url.starts_with("wss://")) {
                errors.push(format!(
                    "conversation.profiles.{name}.url: must start with ws:// or wss://"
                ));
            }
        }
        if up.provider != Provider::OpenaiRealtime && up.prewarm > 0 {
            errors
                .push("upstream.prewarm: warm sessions are kept for the Realtime API only".into());
        }
        if !up.azure_token_file.is_empty() && !up.azure_token_command.is_empty() {
            errors.push(
                "upstream.azure_token_file: set azure_token_file or azure_token_command, not both"
                    .into(),
            );
        }
        if up.token_source().is_some() && url.is_empty() {
            errors.push("upstream.url: an Azure token (azure_token_file or azure_token_command) needs the deployment's URL in CALLGATE_UPSTREAM_URL".into());
        }
        if !up.azure_token_command.is_empty() && up.azure_token_cache_s == 0 {
            errors.push("upstream.azure_token_cache_s: must be greater than 0 (the command would run for every call)".into());
        }
        if !(0.0..=1.0).contains(&self.session.vad_threshold) {
            errors.push("session.vad_threshold: must be between 0 and 1".into());
        }
        if self.calls.max_consecutive_bad_frames == 0 {
            errors.push("calls.max_consecutive_bad_frames: must be at least 1".into());
        }
        for (name, value) in [
            ("calls.idle_timeout_s", self.calls.idle_timeout),
            (
                "calls.idle_session_timeout_s",
                self.calls.idle_state_timeout,
            ),
            ("calls.start_deadline_ms", self.calls.start_deadline),
            (
                "calls.carrier_write_timeout_ms",
                self.calls.carrier_write_timeout,
            ),
        ] {
            if value.is_zero() {
                errors.push(format!("{name}: must be greater than 0"));
            }
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
        self.cluster.validate(errors);
        if self.dtmf.inter_digit_timeout.is_zero() {
            errors.push("dtmf.inter_digit_timeout_ms: must be greater than 0".into());
        }
        for (i, tool) in self.tools.iter().enumerate() {
            if !(tool.url.starts_with("http://") || tool.url.starts_with("https://")) {
                errors.push(format!(
                    "tools[{i}].url: must be an http:// or https:// URL"
                ));
            }
            if tool.timeout.is_zero() {
                errors.push(format!("tools[{i}].timeout_ms: must be greater than 0"));
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
        if self.upstream.prewarm > MAX_PREWARM {
            errors.push(format!(
                "upstream.prewarm: {} is more than {MAX_PREWARM} warm sessions",
                self.upstream.prewarm
            ));
        }
        if self.upstream.prewarm > 0 && self.upstream.prewarm_max_age_s == 0 {
            errors.push("upstream.prewarm_max_age_s: must be greater than 0".into());
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
}
