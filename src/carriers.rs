//! `[carriers]`: credentials and endpoints of the carriers' REST APIs, for call control
//! (hang up, transfer, send DTMF; `callgate_handlers::bridge::call_control`).
//!
//! Each carrier's usual environment variables work (`TWILIO_ACCOUNT_SID`,
//! `TWILIO_AUTH_TOKEN` or `TWILIO_API_KEY_SID`/`TWILIO_API_KEY_SECRET`, `TELNYX_API_KEY`,
//! `PLIVO_AUTH_ID`/`PLIVO_AUTH_TOKEN`); `api_base` points tests at fakes on loopback.

use std::time::Duration;

use callgate_handlers::bridge::call_control::{CarrierApis, PlivoApi, TelnyxApi, TwilioApi};
use callgate_handlers::bridge::Secret;
use serde::Deserialize;

/// `[carriers]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CarriersConfig {
    /// All attempts of one API action (with backoff) finish within this.
    pub api_deadline_ms: u64,
    /// Twilio's REST API.
    pub twilio: TwilioApiConfig,
    /// Telnyx Call Control.
    pub telnyx: TelnyxApiConfig,
    /// Plivo's REST API.
    pub plivo: PlivoApiConfig,
}

impl Default for CarriersConfig {
    fn default() -> Self {
        Self {
            api_deadline_ms: 5_000,
            twilio: TwilioApiConfig::default(),
            telnyx: TelnyxApiConfig::default(),
            plivo: PlivoApiConfig::default(),
        }
    }
}

/// `[carriers.twilio]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TwilioApiConfig {
    /// `AC…` (env `TWILIO_ACCOUNT_SID`). With the auth token
    /// (`security.twilio.auth_token`, env `TWILIO_AUTH_TOKEN`) or an API key pair.
    pub account_sid: String,
    /// `SK…` (env `TWILIO_API_KEY_SID`), used instead of the auth token when set.
    pub api_key_sid: String,
    /// The API key's secret (env `TWILIO_API_KEY_SECRET`).
    pub api_key_secret: Secret,
    /// REST base URL.
    pub api_base: String,
}

impl Default for TwilioApiConfig {
    fn default() -> Self {
        Self {
            account_sid: String::new(),
            api_key_sid: String::new(),
            api_key_secret: Secret::default(),
            api_base: "https://api.twilio.com".into(),
        }
    }
}

/// `[carriers.telnyx]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TelnyxApiConfig {
    /// Bearer key (env `TELNYX_API_KEY`).
    pub api_key: Secret,
    /// REST base URL.
    pub api_base: String,
}

impl Default for TelnyxApiConfig {
    fn default() -> Self {
        Self {
            api_key: Secret::default(),
            api_base: "https://api.telnyx.com".into(),
        }
    }
}

/// `[carriers.plivo]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PlivoApiConfig {
    /// `MA…`/`SA…` (env `PLIVO_AUTH_ID`).
    pub auth_id: String,
    /// Env `PLIVO_AUTH_TOKEN`.
    pub auth_token: Secret,
    /// REST base URL.
    pub api_base: String,
    /// This gateway's public `https://` base: Plivo fetches transfer documents from
    /// `{public_base_url}/carriers/plivo/transfer/{token}`. Needed for transfers only.
    pub public_base_url: String,
}

impl Default for PlivoApiConfig {
    fn default() -> Self {
        Self {
            auth_id: String::new(),
            auth_token: Secret::default(),
            api_base: "https://api.plivo.com".into(),
            public_base_url: String::new(),
        }
    }
}

impl CarriersConfig {
    /// The APIs with credentials configured (`twilio_auth_token`: the signature token,
    /// which is also the account's REST password).
    pub fn apis(&self, twilio_auth_token: &Secret) -> CarrierApis {
        let t = &self.twilio;
        let twilio = (!t.account_sid.is_empty()).then(|| {
            let (user, password) = match t.api_key_sid.is_empty() {
                true => (t.account_sid.clone(), twilio_auth_token.clone()),
                false => (t.api_key_sid.clone(), t.api_key_secret.clone()),
            };
            TwilioApi {
                account_sid: t.account_sid.clone(),
                user,
                password,
                api_base: t.api_base.clone(),
            }
        });
        let telnyx = (!self.telnyx.api_key.is_empty()).then(|| TelnyxApi {
            api_key: self.telnyx.api_key.clone(),
            api_base: self.telnyx.api_base.clone(),
        });
        let p = &self.plivo;
        let plivo = (!p.auth_id.is_empty()).then(|| PlivoApi {
            auth_id: p.auth_id.clone(),
            auth_token: p.auth_token.clone(),
            api_base: p.api_base.clone(),
            public_base_url: p.public_base_url.clone(),
        });
        CarrierApis::new(
            twilio,
            telnyx,
            plivo,
            Duration::from_millis(self.api_deadline_ms.max(100)),
        )
    }
}
