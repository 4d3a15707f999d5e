//! Key presses: collected into sequences ([`Keypad`]: terminator, inter-digit timeout) and
//! handed to the model as text, redacted everywhere else in PCI mode.

use super::*;

/// The digits of the sequence being typed, and when it times out.
#[derive(Debug, Default)]
pub(super) struct Keypad {
    digits: String,
    deadline: Option<tokio::time::Instant>,
}

impl Keypad {
    /// Adds a key pressed at `now`; true when it completes the sequence (the terminator).
    pub(super) fn press(
        &mut self,
        digit: char,
        now: tokio::time::Instant,
        dtmf: &crate::bridge::DtmfSettings,
    ) -> bool {
        self.digits.push(digit);
        if Some(digit) == dtmf.terminator {
            self.deadline = None;
            return true;
        }
        self.deadline = Some(now + dtmf.inter_digit_timeout);
        false
    }

    /// A key pressed while there is no session: kept, and timed once one is ready.
    pub(super) fn hold(&mut self, digit: char) {
        self.digits.push(digit);
    }

    /// A new session: keys held meanwhile finish their sequence on it (timed from `now`).
    pub(super) fn resume(&mut self, now: tokio::time::Instant, dtmf: &crate::bridge::DtmfSettings) {
        if !self.digits.is_empty() && self.deadline.is_none() {
            self.deadline = Some(now + dtmf.inter_digit_timeout);
        }
    }

    /// When the sequence times out, if one is being typed.
    pub(super) fn deadline(&self) -> Option<tokio::time::Instant> {
        self.deadline
    }

    /// The sequence, complete or timed out; the keypad starts over.
    pub(super) fn take(&mut self) -> String {
        self.deadline = None;
        std::mem::take(&mut self.digits)
    }
}

impl Relay {
    /// Hands the collected digits to the model: barge in if it is speaking, add a user text
    /// item, and ask for a response (after the current one, if any).
    pub(super) async fn flush_digits(
        &mut self,
        ws: &mut Upstream,
        config: &BridgeConfig,
    ) -> Result<(), BridgeError> {
        let digits = self.keypad.take();
        if digits.is_empty() {
            return Ok(());
        }
        if self.audible() {
            self.barge_in(ws, config).await?;
        }
        let text = format!("Caller entered digits: {digits}");
        send_text(ws, self.protocol.user_text(&text), config).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::DtmfSettings;

    fn dtmf() -> DtmfSettings {
        DtmfSettings {
            terminator: Some('#'),
            inter_digit_timeout: Duration::from_secs(2),
            ..DtmfSettings::default()
        }
    }

    #[test]
    fn the_terminator_completes_a_sequence_and_each_key_restarts_the_clock() {
        let (dtmf, t0) = (dtmf(), tokio::time::Instant::now());
        let mut keypad = Keypad::default();
        assert!(!keypad.press('4', t0, &dtmf));
        assert_eq!(keypad.deadline(), Some(t0 + Duration::from_secs(2)));
        let t1 = t0 + Duration::from_millis(500);
        assert!(!keypad.press('2', t1, &dtmf));
        assert_eq!(keypad.deadline(), Some(t1 + Duration::from_secs(2)));
        assert!(keypad.press('#', t1, &dtmf), "the terminator completes it");
        assert_eq!(keypad.deadline(), None);
        assert_eq!(keypad.take(), "42#");
        assert_eq!(keypad.take(), "", "it starts over");
    }

    #[test]
    fn keys_held_without_a_session_are_timed_on_the_next() {
        let (dtmf, t0) = (dtmf(), tokio::time::Instant::now());
        let mut keypad = Keypad::default();
        keypad.resume(t0, &dtmf);
        assert_eq!(keypad.deadline(), None, "nothing typed, nothing to time");
        keypad.hold('7');
        keypad.hold('1');
        assert_eq!(keypad.deadline(), None);
        keypad.resume(t0, &dtmf);
        assert_eq!(keypad.deadline(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(keypad.take(), "71");
    }
}
