//! Call control through each carrier's REST API: hang up, transfer to a human, send DTMF.
//!
//! Closing the media socket does not end a phone call everywhere: on Twilio it runs the
//! next TwiML verb, on Telnyx and Plivo the call stays up. So `end_call` and
//! `transfer_call` act on the call itself:
//!
//! | carrier | hang up | transfer | send DTMF |
//! |---|---|---|---|
//! | Twilio | `POST …/Calls/{CallSid}.json` `Status=completed` | same, `Twiml=<Dial>` | — |
//! | Telnyx | `POST /v2/calls/{id}/actions/hangup` | `…/actions/transfer` | `…/actions/send_dtmf` |
//! | Plivo | `DELETE /v1/Account/{id}/Call/{uuid}/` | A leg to `<Dial>` XML we serve | `sendDTMF` on the stream |
//! | Voximplant | `gw.hangup` | `gw.transfer` (the scenario dials) | `gw.send_dtmf` |
//! | Exotel, Smartflo | close the stream (the flow goes on) | Exotel: close, next applet | — |
//!
//! Every request is retried with backoff inside one deadline; secrets never reach a log.

use callgate_layers::util::lock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use super::tools::HttpsClient;
use super::Secret;
use crate::dialect::Dialect;

/// How long a Plivo transfer document stays fetchable.
const PLIVO_XML_TTL: Duration = Duration::from_secs(300);

/// What to do to the phone call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallAction<'a> {
    /// End it.
    Hangup,
    /// Connect the caller to this number instead of the assistant.
    Transfer(&'a str),
    /// Play these DTMF digits to the far end (IVR navigation).
    SendDtmf(&'a str),
}

/// How an action is carried out for a carrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A REST request to the carrier's API (configured).
    Api,
    /// A message on the media socket (Voximplant's scenario, Plivo's `sendDTMF`).
    Stream,
    /// Closing the media socket hands the call back to the carrier's flow.
    CloseStream,
    /// This carrier cannot do it (or its API is not configured).
    Unsupported,
}

/// Twilio REST credentials: the account, and an API key pair or the auth token.
#[derive(Debug, Clone)]
pub struct TwilioApi {
    /// `AC…`.
    pub account_sid: String,
    /// Basic-auth user: an API key SID (`SK…`) or the account SID.
    pub user: String,
    /// Basic-auth password: the API key secret or the auth token.
    pub password: Secret,
    /// `https://api.twilio.com` (tests: a fake on loopback).
    pub api_base: String,
}

/// Telnyx Call Control credentials.
#[derive(Debug, Clone)]
pub struct TelnyxApi {
    /// `Authorization: Bearer`.
    pub api_key: Secret,
    /// `https://api.telnyx.com`.
    pub api_base: String,
}

/// Plivo REST credentials, and where callgate serves transfer documents.
#[derive(Debug, Clone)]
pub struct PlivoApi {
    /// `MA…` / `SA…`.
    pub auth_id: String,
    /// Basic-auth password.
    pub auth_token: Secret,
    /// `https://api.plivo.com`.
    pub api_base: String,
    /// Public `https://` base of this gateway (Plivo fetches the `<Dial>` document there).
    pub public_base_url: String,
}

/// The carriers' APIs, their retry deadline, and the Plivo transfer documents on offer.
#[derive(Clone, Default)]
pub struct CarrierApis {
    /// Twilio, when configured.
    pub twilio: Option<TwilioApi>,
    /// Telnyx, when configured.
    pub telnyx: Option<TelnyxApi>,
    /// Plivo, when configured.
    pub plivo: Option<PlivoApi>,
    /// All attempts of one action finish within this.
    pub deadline: Duration,
    client: Option<HttpsClient>,
    plivo_documents: Arc<Mutex<HashMap<String, (String, Instant)>>>,
}

impl std::fmt::Debug for CarrierApis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CarrierApis")
            .field("twilio", &self.twilio)
            .field("telnyx", &self.telnyx)
            .field("plivo", &self.plivo)
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl CarrierApis {
    /// The APIs configured, retrying within `deadline`.
    pub fn new(
        twilio: Option<TwilioApi>,
        telnyx: Option<TelnyxApi>,
        plivo: Option<PlivoApi>,
        deadline: Duration,
    ) -> Self {
        Self {
            twilio,
            telnyx,
            plivo,
            deadline,
            client: Some(super::tools::https_client()),
            plivo_documents: Arc::default(),
        }
    }

    /// How `action` is done on `dialect`'s calls here.
    pub fn route(&self, dialect: Dialect, action: CallAction<'_>) -> Route {
        use CallAction::*;
        match (dialect, action) {
            (Dialect::Twilio, Hangup | Transfer(_)) if self.twilio.is_some() => Route::Api,
            (Dialect::Telnyx, _) if self.telnyx.is_some() => Route::Api,
            (Dialect::Plivo, Hangup | Transfer(_)) if self.plivo.is_some() => Route::Api,
            (Dialect::Plivo | Dialect::Voximplant, SendDtmf(_)) => Route::Stream,
            (Dialect::Voximplant, Hangup | Transfer(_)) => Route::Stream,
            (Dialect::Exotel, Hangup | Transfer(_)) => Route::CloseStream,
            (_, Hangup) => Route::CloseStream,
            _ => Route::Unsupported,
        }
    }

    /// The `<Dial>` document behind `token` (Plivo fetches it to transfer the A leg).
    pub fn plivo_document(&self, token: &str) -> Option<String> {
        let mut documents = lock(&self.plivo_documents);
        documents.retain(|_, (_, at)| at.elapsed() < PLIVO_XML_TTL);
        documents.get(token).map(|(xml, _)| xml.clone())
    }

    /// Carries out `action` on call `call_id` (Twilio CallSid, Telnyx call_control_id,
    /// Plivo CallUUID) through the carrier's API, retrying with backoff within the deadline.
    pub async fn perform(
        &self,
        dialect: Dialect,
        call_id: &str,
        action: CallAction<'_>,
    ) -> Result<(), String> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(100);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let left = self.deadline.saturating_sub(started.elapsed());
            let error = match tokio::time::timeout(left, self.attempt(dialect, call_id, action))
                .await
            {
                Ok(Ok(())) => {
                    metrics::counter!("callgate_carrier_api_requests_total", "carrier" => dialect.name(), "outcome" => "ok").increment(1);
                    return Ok(());
                }
                Ok(Err(Failure::Permanent(error))) => {
                    metrics::counter!("callgate_carrier_api_requests_total", "carrier" => dialect.name(), "outcome" => "refused").increment(1);
                    return Err(error);
                }
                Ok(Err(Failure::Retry(error))) => error,
                Err(_) => "timed out".to_owned(),
            };
            metrics::counter!("callgate_carrier_api_requests_total", "carrier" => dialect.name(), "outcome" => "retry").increment(1);
            tracing::warn!(carrier = dialect.name(), attempt, %error, "carrier API request failed");
            if started.elapsed() + delay >= self.deadline {
                return Err(format!("the carrier's API failed {attempt} times: {error}"));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    async fn attempt(
        &self,
        dialect: Dialect,
        call_id: &str,
        action: CallAction<'_>,
    ) -> Result<(), Failure> {
        let call = encode_path(call_id);
        let request = match (dialect, action) {
            (Dialect::Twilio, action) => {
                let api = self.twilio.as_ref().ok_or_else(unconfigured)?;
                let url = format!(
                    "{}/2010-04-01/Accounts/{}/Calls/{call}.json",
                    api.api_base.trim_end_matches('/'),
                    encode_path(&api.account_sid)
                );
                let form = match action {
                    CallAction::Hangup => form(&[("Status", "completed")]),
                    CallAction::Transfer(number) => form(&[("Twiml", &dial_twiml(number))]),
                    CallAction::SendDtmf(_) => return Err(unsupported()),
                };
                http::Request::post(url)
                    .header(http::header::AUTHORIZATION, basic(&api.user, api.password.expose()))
                    .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Full::new(Bytes::from(form)))
            }
            (Dialect::Telnyx, action) => {
                let api = self.telnyx.as_ref().ok_or_else(unconfigured)?;
                let (verb, body) = match action {
                    CallAction::Hangup => ("hangup", serde_json::json!({})),
                    CallAction::Transfer(number) => ("transfer", serde_json::json!({"to": number})),
                    CallAction::SendDtmf(digits) => {
                        ("send_dtmf", serde_json::json!({"digits": digits}))
                    }
                };
                let url = format!(
                    "{}/v2/calls/{call}/actions/{verb}",
                    api.api_base.trim_end_matches('/')
                );
                http::Request::post(url)
                    .header(
                        http::header::AUTHORIZATION,
                        format!("Bearer {}", api.api_key.expose()),
                    )
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(body.to_string())))
            }
            (Dialect::Plivo, action) => {
                let api = self.plivo.as_ref().ok_or_else(unconfigured)?;
                let url = format!(
                    "{}/v1/Account/{}/Call/{call}/",
                    api.api_base.trim_end_matches('/'),
                    encode_path(&api.auth_id)
                );
                let auth = basic(&api.auth_id, api.auth_token.expose());
                match action {
                    CallAction::Hangup => http::Request::delete(url)
                        .header(http::header::AUTHORIZATION, auth)
                        .body(Full::new(Bytes::new())),
                    CallAction::Transfer(number) => {
                        let token = self.offer_plivo_document(number);
                        let document = format!(
                            "{}/carriers/plivo/transfer/{token}",
                            api.public_base_url.trim_end_matches('/')
                        );
                        let body = serde_json::json!({"legs": "aleg", "aleg_url": document, "aleg_method": "GET"});
                        http::Request::post(url)
                            .header(http::header::AUTHORIZATION, auth)
                            .header(http::header::CONTENT_TYPE, "application/json")
                            .body(Full::new(Bytes::from(body.to_string())))
                    }
                    CallAction::SendDtmf(_) => return Err(unsupported()),
                }
            }
            _ => return Err(unsupported()),
        }
        .map_err(|e| Failure::Permanent(format!("bad carrier API request: {e}")))?;
        let client = self.client.as_ref().ok_or_else(unconfigured)?;
        let response = client
            .request(request)
            .await
            .map_err(|e| Failure::Retry(format!("unreachable: {e}")))?;
        let status = response.status();
        // Drain the body so the connection can be reused; its content is not needed.
        let _ = response.into_body().collect().await;
        match status.as_u16() {
            200..=299 => Ok(()),
            // The carrier is overloaded or failing: worth another try.
            408 | 429 | 500..=599 => Err(Failure::Retry(format!("HTTP {}", status.as_u16()))),
            // Bad credentials, an unknown or finished call: retrying will not help.
            code => Err(Failure::Permanent(format!(
                "the carrier's API answered HTTP {code}"
            ))),
        }
    }

    /// Registers the `<Dial>` document for `number` under a fresh unguessable token.
    fn offer_plivo_document(&self, number: &str) -> String {
        let token: String = {
            use rand::Rng as _;
            let bytes: [u8; 24] = rand::rng().random();
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        };
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Dial><Number>{}</Number></Dial></Response>\n",
            xml_escape(number)
        );
        lock(&self.plivo_documents).insert(token.clone(), (xml, Instant::now()));
        token
    }
}

/// Why one attempt failed.
enum Failure {
    /// Try again (network, 429, 5xx).
    Retry(String),
    /// Do not (4xx, not configured, not supported).
    Permanent(String),
}

fn unconfigured() -> Failure {
    Failure::Permanent("the carrier's API is not configured".into())
}

fn unsupported() -> Failure {
    Failure::Permanent("the carrier cannot do that".into())
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// A path segment: ids are carrier-made, but never trusted to be URL-safe. Unreserved
/// characters and `:`/`@` (Telnyx ids are `v2:…`) stay as they are.
fn encode_path(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:@".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// TwiML that connects the caller to `number`.
pub fn dial_twiml(number: &str) -> String {
    format!("<Response><Dial>{}</Dial></Response>", xml_escape(number))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_per_carrier_and_configuration() {
        let none = CarrierApis::default();
        assert_eq!(
            none.route(Dialect::Twilio, CallAction::Hangup),
            Route::CloseStream
        );
        assert_eq!(
            none.route(Dialect::Twilio, CallAction::Transfer("+1")),
            Route::Unsupported
        );
        assert_eq!(
            none.route(Dialect::Plivo, CallAction::SendDtmf("1")),
            Route::Stream
        );
        assert_eq!(
            none.route(Dialect::Voximplant, CallAction::Transfer("+1")),
            Route::Stream
        );
        assert_eq!(
            none.route(Dialect::Exotel, CallAction::Transfer("+1")),
            Route::CloseStream
        );
        assert_eq!(
            none.route(Dialect::Smartflo, CallAction::Transfer("+1")),
            Route::Unsupported
        );
        assert_eq!(
            none.route(Dialect::Twilio, CallAction::SendDtmf("1")),
            Route::Unsupported
        );
        let telnyx = CarrierApis {
            telnyx: Some(TelnyxApi {
                api_key: Secret::new("k"),
                api_base: "http://127.0.0.1:1".into(),
            }),
            ..Default::default()
        };
        assert_eq!(
            telnyx.route(Dialect::Telnyx, CallAction::SendDtmf("1")),
            Route::Api
        );
    }

    #[test]
    fn documents_escape_what_they_embed() {
        assert_eq!(
            dial_twiml("+1555<0100>"),
            "<Response><Dial>+1555&lt;0100&gt;</Dial></Response>"
        );
        assert_eq!(form(&[("Twiml", "<a b>")]), "Twiml=%3Ca+b%3E");
        assert_eq!(encode_path("v2:abc/def ?"), "v2:abc%2Fdef%20%3F");
    }
}
