//! Key presses: collected into sequences (terminator, inter-digit timeout) and handed to
//! the model as text, redacted everywhere else in PCI mode.

use super::*;

impl Relay {
    /// Adds a key; true when the sequence is complete (the terminator).
    pub(super) fn collect_digit(&mut self, digit: char, config: &BridgeConfig) -> bool {
        if Some(digit) == config.dtmf.terminator {
            self.digits.push(digit);
            self.dtmf_deadline = None;
            return true;
        }
        self.digits.push(digit);
        self.dtmf_deadline = Some(tokio::time::Instant::now() + config.dtmf.inter_digit_timeout);
        false
    }

    /// Hands the collected digits to the model: barge in if it is speaking, add a user text
    /// item, and ask for a response (after the current one, if any).
    pub(super) async fn flush_digits(
        &mut self,
        ws: &mut Upstream,
        config: &BridgeConfig,
    ) -> Result<(), BridgeError> {
        self.dtmf_deadline = None;
        let digits = std::mem::take(&mut self.digits);
        if digits.is_empty() {
            return Ok(());
        }
        if self.audible() {
            self.barge_in(ws, config).await?;
        }
        let text = format!("Caller entered digits: {digits}");
        send_text(ws, self.protocol.text("user", &text), config).await?;
        // PCI: digits never reach logs, spans, metrics or stored transcripts.
        let shown = if config.dtmf.pci {
            "[redacted]".to_owned()
        } else {
            digits.clone()
        };
        tracing::info!(digits = %shown, count = digits.len(), "dtmf sequence sent to the model");
        self.call.publish(FeedEvent::Dtmf {
            digits: shown.clone(),
            at_ms: self.call.at_ms(),
        });
        self.remember("user", format!("[DTMF {shown}]"));
        self.request_response(ws, config).await
    }
}
