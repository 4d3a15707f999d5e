//! What was said: transcript lines published to the call's feed and kept (the last few) to
//! re-seed a new upstream session; digit runs redacted in PCI mode.

use super::*;

/// The last lines of the conversation, (role, text), oldest first: what a new session is
/// given so that it knows what was said.
#[derive(Debug)]
pub(super) struct Conversation {
    lines: VecDeque<(&'static str, String)>,
    capacity: usize,
}

impl Conversation {
    /// Keeps the last `capacity` lines.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            lines: VecDeque::with_capacity(capacity.min(64)),
            capacity: capacity.max(1),
        }
    }

    /// Keeps a line (the oldest goes when full).
    pub(super) fn keep(&mut self, role: &'static str, text: String) {
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back((role, text));
    }

    /// The lines kept, oldest first.
    pub(super) fn lines(&self) -> impl ExactSizeIterator<Item = &(&'static str, String)> {
        self.lines.iter()
    }
}

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
        self.conversation.keep(role, text);
    }

    /// Gives a new session the conversation so far, as text items.
    pub(super) async fn reseed_conversation(
        &mut self,
        ws: &mut Upstream,
        config: &BridgeConfig,
    ) -> Result<(), BridgeError> {
        // Protocols that take history only at the start have been given it there.
        for (role, text) in self.conversation.lines() {
            if let Some(line) = self.protocol.history_text(role, text) {
                send_text(ws, line, config).await?;
            }
        }
        metrics::counter!("callgate_upstream_reseeds_total").increment(1);
        tracing::info!(
            items = self.conversation.lines().len(),
            "new upstream session re-seeded with the conversation so far"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_lines_are_kept_in_order() {
        let mut conversation = Conversation::new(2);
        conversation.keep("user", "Hi.".into());
        conversation.keep("assistant", "Hello!".into());
        conversation.keep("user", "A table for two.".into());
        let lines: Vec<_> = conversation.lines().cloned().collect();
        assert_eq!(
            lines,
            [
                ("assistant", "Hello!".to_owned()),
                ("user", "A table for two.".to_owned())
            ]
        );
    }
}
