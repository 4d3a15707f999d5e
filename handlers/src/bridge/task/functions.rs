//! Function calls inside the relay: `end_call`, call control, and webhook tools run in tasks
//! of their own whose results come back to the model.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use serde_json::json;

use super::socket::{send_text, Upstream};
use super::{tools, BridgeConfig, BridgeError, Relay};

impl Relay {
    /// A function call: `end_call` ends the call once the goodbye has played; other tools
    /// run as webhooks in their own task and report back through `tool_results`.
    pub(super) fn on_function_call(
        &mut self,
        call_id: String,
        name: String,
        arguments: String,
        config: &BridgeConfig,
    ) {
        metrics::counter!("callgate_tool_calls_total", "tool" => if name == tools::END_CALL { "end_call" } else { "webhook" }).increment(1);
        self.call.counters.tool_calls.fetch_add(1, Relaxed);
        if name == tools::END_CALL && config.tools.end_call {
            tracing::info!("end_call requested");
            self.hangup_requested = Some(Instant::now());
            return;
        }
        if name == tools::TRANSFER_CALL || name == tools::SEND_DTMF {
            self.on_call_control(call_id, name, &arguments, config);
            return;
        }
        let tools = config.tools.clone();
        let results = self.tool_results_tx.clone();
        let s = &self.call;
        let context = json!({
            "call_sid": s.call_sid,
            "stream_sid": s.stream_sid,
            "carrier": s.dialect.name(),
            "tenant": s.identity.tenant,
            "custom_parameters": s.custom_parameters,
        });
        let span = tracing::info_span!("tool", name = %name, outcome = tracing::field::Empty);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let result = tools.call(&name, &arguments, context).await;
                tracing::Span::current()
                    .record("outcome", if result.is_ok() { "ok" } else { "error" });
                let _ = results.send((call_id, name, result)).await;
            },
            span,
        ));
    }

    /// Hands a tool's result (or its error, for the model to speak about) back, then asks
    /// for a response once the current one is done.
    pub(super) async fn tool_output(
        &mut self,
        ws: &mut Upstream,
        config: &BridgeConfig,
        call_id: &str,
        name: &str,
        result: Result<String, String>,
    ) -> Result<(), BridgeError> {
        let output = match result {
            Ok(output) => output,
            Err(error) => {
                metrics::counter!("callgate_tool_errors_total").increment(1);
                tracing::warn!(tool = name, %error, "tool failed");
                json!({"error": error}).to_string()
            }
        };
        if let Some(tape) = self.call.tape.get() {
            tape.tool(name, &output);
        }
        let (item, respond) = self.protocol.tool_output(call_id, name, &output);
        send_text(ws, item, config).await?;
        match respond {
            true => self.request_response(ws, config).await,
            false => Ok(()),
        }
    }

    /// Asks for a response now, or once the current one is done (only one may run).
    pub(super) async fn request_response(
        &mut self,
        ws: &mut Upstream,
        config: &BridgeConfig,
    ) -> Result<(), BridgeError> {
        let Some(request) = self.protocol.request_response() else {
            return Ok(());
        };
        match self.responses.want() {
            true => send_text(ws, request.to_owned(), config).await,
            false => Ok(()),
        }
    }

    /// After `end_call`: the response is done and its audio has played (from marks, or
    /// from time without them), or 30 s have passed.
    pub(super) fn goodbye_played(&self) -> bool {
        let waited = self
            .hangup_requested
            .is_some_and(|t| t.elapsed() >= Duration::from_secs(30));
        // Without response events (GPT-Live) the goodbye is over once it has played and the
        // model has been silent for a second since it asked to hang up or last spoke.
        let last_word = self.last_model_audio.max(self.hangup_requested);
        let quiet = self.protocol.reports_turns()
            || last_word.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        let done = !self.responses.in_progress() && !self.audible() && quiet;
        done || waited
    }
}
