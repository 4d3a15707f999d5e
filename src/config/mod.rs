//! One [`Config`] from a TOML file plus environment variables; every error at once.
//!
//! Precedence: built-in defaults < the TOML file (`--config`) < environment. Any key can be
//! set as `CALLGATE_<SECTION>__<KEY>` (for example `CALLGATE_CALLS__IDLE_TIMEOUT_S=60`);
//! the common ones also have short names, listed in [`ENV_ALIASES`]. `deploy/callgate.toml`
//! documents every key with its default (a test keeps the two in step).
//!
//! Each crate owns the settings it uses: `[session]`, `[conversation]`, `[[tools]]` and
//! `[dtmf]` are the bridge's types, deserialized as they are. Here: `call.rs` (upstream,
//! calls, records), `routes.rs`, `security.rs`, and `bridge.rs` (the upstream's URL and
//! credentials resolved, and the sections put together as the bridge takes them),
//! `validate.rs`; this file holds [`Config`] and loading (file, then environment).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use callgate_handlers::bridge::tools::ToolSpec;
use callgate_handlers::bridge::{
    BridgeConfig, ConversationSettings, DtmfSettings, Provider, RealtimeDialect, Secret,
    SessionSettings, UpstreamAudio, UpstreamAuth,
};
use callgate_handlers::dialect::Dialect;
use serde::Deserialize;

mod bridge;
mod call;
mod cluster;
mod routes;
mod security;
#[cfg(test)]
mod tests;
mod validate;

pub use call::*;
pub use cluster::*;
pub use routes::*;
pub use security::*;

/// Short environment names and the key each sets.
pub const ENV_ALIASES: &[(&str, &str)] = &[
    ("CALLGATE_LISTEN", "listen"),
    ("CALLGATE_UPSTREAM_URL", "upstream.url"),
    ("CALLGATE_UPSTREAM_PROVIDER", "upstream.provider"),
    ("CALLGATE_REALTIME_DIALECT", "upstream.dialect"),
    ("CALLGATE_MODEL", "upstream.model"),
    ("CALLGATE_UPSTREAM_AUDIO", "upstream.audio"),
    ("OPENAI_API_KEY", "upstream.openai_api_key"),
    ("AZURE_OPENAI_API_KEY", "upstream.azure_api_key"),
    ("GEMINI_API_KEY", "upstream.gemini_api_key"),
    ("GOOGLE_API_KEY", "upstream.google_api_key"),
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
    pub session: SessionSettings,
    /// Per-call limits.
    pub calls: CallsConfig,
    /// Authentication, rate limits, caps and socket hardening.
    pub security: SecurityConfig,
    /// How key presses reach the model.
    pub dtmf: DtmfSettings,
    /// Call records.
    pub records: RecordsConfig,
    /// Stereo recordings of what the caller heard.
    pub recording: crate::recording::RecordingConfig,
    /// Call tapes, for `callgate replay`.
    pub tape: crate::tape::TapeConfig,
    /// Per-call settings, greeting and the built-in `end_call` tool.
    pub conversation: ConversationSettings,
    /// Function tools run as webhooks.
    pub tools: Vec<ToolSpec>,
    /// Extra carrier routes (added to, or replacing by path, the built-in ones).
    pub routes: Vec<RouteConfig>,
    /// Carriers' REST APIs (call control).
    pub carriers: crate::carriers::CarriersConfig,
    /// State shared by the replicas (Redis).
    pub cluster: ClusterConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            upstream: UpstreamConfig::default(),
            session: SessionSettings::default(),
            calls: CallsConfig::default(),
            security: SecurityConfig::default(),
            dtmf: DtmfSettings::default(),
            records: RecordsConfig::default(),
            recording: Default::default(),
            tape: Default::default(),
            conversation: ConversationSettings::default(),
            tools: Vec::new(),
            routes: Vec::new(),
            carriers: Default::default(),
            cluster: ClusterConfig::default(),
        }
    }
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

    /// Whether any call may be recorded: `[recording]`, a route or a profile says so.
    pub fn may_record(&self) -> bool {
        self.recording.enabled
            || self.routes.iter().any(|r| r.recording == Some(true))
            || self
                .conversation
                .profiles
                .values()
                .any(|p| p.recording == Some(true))
    }

    /// A configuration from an already parsed table (no environment), validated.
    pub fn from_table(table: toml::Table) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        let config = deserialize_all(table, &mut errors);
        config.validate(&mut errors);
        match errors.is_empty() {
            true => Ok(config),
            false => Err(ConfigErrors(errors)),
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
            && self.upstream.token_source().is_none()
            && self.upstream.gemini_key().is_empty()
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
                // The path says where; the deserializer's own "in `key`" suffix would repeat it.
                let message = e.inner().to_string();
                let message = message.lines().next().unwrap_or_default();
                errors.push(format!("{path}: {message}"));
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
