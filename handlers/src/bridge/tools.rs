//! Function tools: declared in `session.update`, run by POSTing the arguments and the call's
//! context to a webhook, answered with `function_call_output` (PROTOCOLS.md §7.10). The
//! built-in `end_call` hangs up once the goodbye has played.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use serde_json::{json, Value};

/// An HTTP/1.1 client for `http://` and `https://` webhooks (rustls, webpki roots).
pub type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A new [`HttpsClient`] (webhook tools, the records webhook).
pub fn https_client() -> HttpsClient {
    super::install_tls();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(hyper_util::rt::TokioExecutor::new()).build(https)
}

/// The built-in tool that ends the call.
pub const END_CALL: &str = "end_call";
/// The built-in tool that hands the caller to a configured destination.
pub const TRANSFER_CALL: &str = "transfer_call";
/// The built-in tool that plays DTMF digits to the far end (IVR navigation).
pub const SEND_DTMF: &str = "send_dtmf";

/// Largest tool response passed to the model.
const MAX_OUTPUT: usize = 64 * 1024;

/// One webhook tool (`[[tools]]` in the configuration file).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ToolSpec {
    /// Function name the model calls.
    pub name: String,
    /// What it does (for the model).
    pub description: String,
    /// JSON schema of the arguments (default: an object with no properties).
    #[serde(default = "empty_schema")]
    pub parameters: Value,
    /// `http://` or `https://` URL that receives a POST of `{name, arguments, call}`.
    pub url: String,
    /// Time limit for the webhook; past it the model hears that the tool timed out.
    #[serde(
        rename = "timeout_ms",
        deserialize_with = "crate::settings::millis",
        default = "default_timeout"
    )]
    pub timeout: Duration,
}

fn empty_schema() -> Value {
    serde_json::json!({"type": "object", "properties": {}})
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

/// The tools of every call, and the HTTP client that runs them.
#[derive(Clone)]
pub struct Tools {
    /// Webhook tools.
    pub specs: Vec<ToolSpec>,
    /// Offer the built-in `end_call`.
    pub end_call: bool,
    /// `transfer_call` destinations by name (`[conversation.transfer_targets]`): the model
    /// names one, never a number. Empty: the tool is not offered.
    pub transfer_targets: std::collections::BTreeMap<String, String>,
    /// Offer the built-in `send_dtmf`.
    pub send_dtmf: bool,
    client: HttpsClient,
}

impl std::fmt::Debug for Tools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tools")
            .field("specs", &self.specs)
            .field("end_call", &self.end_call)
            .field(
                "transfer_targets",
                &self.transfer_targets.keys().collect::<Vec<_>>(),
            )
            .field("send_dtmf", &self.send_dtmf)
            .finish()
    }
}

impl Default for Tools {
    fn default() -> Self {
        Self::new(Vec::new(), false)
    }
}

impl Tools {
    /// Tools with a shared HTTPS-capable client.
    pub fn new(specs: Vec<ToolSpec>, end_call: bool) -> Self {
        Self {
            specs,
            end_call,
            transfer_targets: Default::default(),
            send_dtmf: false,
            client: https_client(),
        }
    }

    /// These tools plus `transfer_call` (to `targets`, when any) and `send_dtmf`.
    pub fn with_call_control(
        mut self,
        targets: std::collections::BTreeMap<String, String>,
        send_dtmf: bool,
    ) -> Self {
        self.transfer_targets = targets;
        self.send_dtmf = send_dtmf;
        self
    }

    /// The `tools` array for `session.update` (empty: none).
    pub fn declarations(&self) -> Vec<Value> {
        let mut tools: Vec<Value> = self
            .specs
            .iter()
            .map(|t| json!({"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters}))
            .collect();
        if self.end_call {
            tools.push(json!({
                "type": "function",
                "name": END_CALL,
                "description": "End the phone call. Say goodbye first; the call ends once the goodbye has played.",
                "parameters": {"type": "object", "properties": {}, "additionalProperties": false},
            }));
        }
        if !self.transfer_targets.is_empty() {
            let names: Vec<&String> = self.transfer_targets.keys().collect();
            tools.push(json!({
                "type": "function",
                "name": TRANSFER_CALL,
                "description": "Transfer the caller to a person. Tell the caller first; the transfer happens once that sentence has played.",
                "parameters": {"type": "object", "properties": {"target": {"type": "string", "enum": names, "description": "Who to transfer to."}}, "required": ["target"], "additionalProperties": false},
            }));
        }
        if self.send_dtmf {
            tools.push(json!({
                "type": "function",
                "name": SEND_DTMF,
                "description": "Press keys on the phone keypad (to navigate a phone menu).",
                "parameters": {"type": "object", "properties": {"digits": {"type": "string", "pattern": "^[0-9*#A-Dw]{1,32}$", "description": "Keys to press; w pauses half a second."}}, "required": ["digits"], "additionalProperties": false},
            }));
        }
        tools
    }

    /// Runs tool `name`: the output for the model, or an error the model can speak about.
    pub async fn call(
        &self,
        name: &str,
        arguments: &str,
        context: Value,
    ) -> Result<String, String> {
        let Some(spec) = self.specs.iter().find(|t| t.name == name) else {
            return Err(format!("unknown tool {name}"));
        };
        let arguments: Value =
            serde_json::from_str(arguments).unwrap_or_else(|_| Value::String(arguments.to_owned()));
        let body = json!({"name": name, "arguments": arguments, "call": context}).to_string();
        let request = http::Request::post(&spec.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("bad tool URL: {e}"))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("tool {name} unreachable: {e}"))?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("tool {name} failed: {e}"))?
                .to_bytes();
            if !status.is_success() {
                return Err(format!("tool {name} answered HTTP {}", status.as_u16()));
            }
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_OUTPUT)]).into_owned();
            Ok(text)
        };
        match tokio::time::timeout(spec.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "tool {name} timed out after {} ms",
                spec.timeout.as_millis()
            )),
        }
    }
}
