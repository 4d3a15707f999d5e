//! Call control inside the relay: `transfer_call` and `send_dtmf` as the model asks for
//! them, and carrying out the hang-up or transfer once the last sentence has played
//! (through [`crate::bridge::call_control::CarrierApis`]).

use std::time::Instant;

use super::{tools, BridgeConfig, Downstream, FeedEvent, Relay};

/// A transfer waiting for the model's handoff sentence to play.
#[derive(Debug)]
pub(super) struct PendingTransfer {
    pub(super) call_id: String,
    pub(super) target: String,
    pub(super) number: String,
}

impl Relay {
    /// `transfer_call` (checked against the configured targets, carried out once the handoff
    /// sentence has played) and `send_dtmf` (at once, through the carrier's API or stream).
    pub(super) fn on_call_control(
        &mut self,
        call_id: String,
        name: String,
        arguments: &str,
        config: &BridgeConfig,
    ) {
        use crate::bridge::call_control::{CallAction, Route};
        let args: serde_json::Value = serde_json::from_str(arguments).unwrap_or_default();
        let apis = config.carrier_apis.clone();
        let dialect = self.call.dialect;
        let results = self.tool_results_tx.clone();
        let reply = move |call_id: String, name: String, result: Result<String, String>| {
            tokio::spawn(async move {
                let _ = results.send((call_id, name, result)).await;
            });
        };
        if name == tools::TRANSFER_CALL {
            let target = args["target"].as_str().unwrap_or_default();
            let Some(number) = config.tools.transfer_targets.get(target) else {
                let listed: Vec<&String> = config.tools.transfer_targets.keys().collect();
                tracing::warn!(target, "transfer_call to a target that is not configured");
                return reply(
                    call_id,
                    name,
                    Err(format!(
                        "unknown transfer target {target:?}; the targets are {listed:?}"
                    )),
                );
            };
            if apis.route(dialect, CallAction::Transfer(number)) == Route::Unsupported {
                return reply(
                    call_id,
                    name,
                    Err("this carrier cannot transfer calls".into()),
                );
            }
            tracing::info!(target, "transfer_call requested");
            self.transfer = Some(PendingTransfer {
                call_id,
                target: target.to_owned(),
                number: number.clone(),
            });
            self.hangup_requested = Some(Instant::now());
            return;
        }
        let digits = args["digits"].as_str().unwrap_or_default().to_owned();
        let valid = (1..=32).contains(&digits.len())
            && digits
                .chars()
                .all(|c| c.is_ascii_digit() || "*#ABCDw".contains(c));
        if !valid {
            return reply(
                call_id,
                name,
                Err("digits must be 1 to 32 of 0-9 * # A-D w".into()),
            );
        }
        let shown = if config.dtmf.pci {
            "[redacted]"
        } else {
            digits.as_str()
        };
        tracing::info!(digits = shown, "send_dtmf requested");
        match apis.route(dialect, CallAction::SendDtmf(&digits)) {
            Route::Api => {
                let call = self.call.call_sid.clone();
                tokio::spawn(async move {
                    let result = apis
                        .perform(dialect, &call, CallAction::SendDtmf(&digits))
                        .await;
                    reply(
                        call_id,
                        name,
                        result.map(|()| r#"{"sent":true}"#.to_owned()),
                    );
                });
            }
            Route::Stream => {
                let sent = self.outbox.try_send(Downstream::SendDtmf(digits)).is_ok();
                let result = match sent {
                    true => Ok(r#"{"sent":true}"#.to_owned()),
                    false => Err("the call is busy; try again".to_owned()),
                };
                reply(call_id, name, result);
            }
            Route::CloseStream | Route::Unsupported => {
                reply(call_id, name, Err("this carrier cannot send DTMF".into()))
            }
        }
    }

    /// Ends the phone call itself where the carrier's API can (closing the stream alone
    /// does not on Twilio, Telnyx or Plivo), then the stream.
    pub(super) async fn hang_up(&mut self, config: &BridgeConfig) {
        use crate::bridge::call_control::{CallAction, Route};
        let apis = &config.carrier_apis;
        let dialect = self.call.dialect;
        if apis.route(dialect, CallAction::Hangup) == Route::Api {
            if let Err(error) = apis
                .perform(dialect, &self.call.call_sid, CallAction::Hangup)
                .await
            {
                tracing::warn!(%error, "hang-up through the carrier's API failed; closing the stream");
            }
        }
        let _ = self.outbox.send(Downstream::Hangup).await;
    }

    /// Transfers the call once the handoff sentence has played; `Err` is for the model.
    pub(super) async fn carry_out(
        &mut self,
        transfer: &PendingTransfer,
        config: &BridgeConfig,
    ) -> Result<(), String> {
        use crate::bridge::call_control::{CallAction, Route};
        let apis = &config.carrier_apis;
        let dialect = self.call.dialect;
        let action = CallAction::Transfer(&transfer.number);
        let number = match apis.route(dialect, action) {
            Route::Api => {
                apis.perform(dialect, &self.call.call_sid, action).await?;
                None
            }
            Route::Stream => Some(transfer.number.clone()),
            Route::CloseStream => None,
            Route::Unsupported => return Err("this carrier cannot transfer calls".into()),
        };
        tracing::info!(target = %transfer.target, "call transferred");
        metrics::counter!("callgate_transfers_total", "carrier" => dialect.name()).increment(1);
        self.call.publish(FeedEvent::Transferred {
            target: transfer.target.clone(),
            at_ms: self.call.at_ms(),
        });
        let _ = self
            .outbox
            .send(Downstream::Transferred {
                target: transfer.target.clone(),
                number,
            })
            .await;
        Ok(())
    }
}
