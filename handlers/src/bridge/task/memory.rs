//! What was said: transcript lines published to the call's feed and kept (the last few) to
//! re-seed a new upstream session; digit runs redacted in PCI mode.

use super::*;

/// A transcript as it may be shown: digit runs redacted in PCI mode.
pub(super) fn shown<'a>(text: &'a str, config: &BridgeConfig) -> std::borrow::Cow<'a, str> {
    if config.dtmf.pci {
        crate::pci::redact_digits(text)
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

impl Relay {
    /// A whole utterance of `role`: published, and kept to re-seed (blank ones are not).
    pub(super) fn remember(&mut self, role: &'static str, text: String) {
        if text.trim().is_empty() {
            return;
        }
        self.call.publish(FeedEvent::Transcript {
            role,
            text: text.clone(),
            is_final: true,
            at_ms: self.call.at_ms(),
        });
        if self.transcript.len() == TRANSCRIPT_MEMORY {
            self.transcript.pop_front();
        }
        self.transcript.push_back((role, text));
    }

    /// Gives a new session the conversation so far, as text items.
    pub(super) async fn reseed_conversation(
        &mut self,
        ws: &mut Upstream,
        config: &BridgeConfig,
    ) -> Result<(), BridgeError> {
        for (role, text) in &self.transcript {
            send_text(ws, self.protocol.text(role, text), config).await?;
        }
        metrics::counter!("callgate_upstream_reseeds_total").increment(1);
        tracing::info!(
            items = self.transcript.len(),
            "new upstream session re-seeded with the conversation so far"
        );
        Ok(())
    }
}
