//! The end of an upstream session foreseen: the rollover to a fresh session before
//! `expires_at`, and the fallback audio when the upstream is gone for good.

use std::time::Duration;

use tokio::time::Instant;

use super::{BridgeConfig, BridgeError, Downstream, Relay, Transcoder};

/// When the current session is to be replaced, planned from its `expires_at`.
#[derive(Debug, Default)]
pub(super) struct Rollover {
    /// Move to a fresh session from then on, between turns.
    at: Option<Instant>,
    /// Move even mid-response from then on (just before the server's own limit).
    hard: Option<Instant>,
    /// The session began with `expires_at` inside the margin: a fault, not a rollover.
    fault: Option<BridgeError>,
}

/// What to do when the rollover is due.
#[derive(Debug)]
pub(super) enum Due {
    /// Close this session and open a fresh one.
    RollOver,
    /// A response is in progress and there is time: look again shortly.
    Later,
    /// The session could never have lasted: end it with this error.
    Fault(BridgeError),
}

impl Rollover {
    /// A session with `left` until `expires_at` (from `now`): replace it `margin` before.
    pub(super) fn plan(&mut self, left: Duration, margin: Duration, now: Instant) {
        // `expires_at` has whole seconds: a session that ends exactly at the margin still
        // gets its rollover; one that ends inside it is a fault.
        if left < margin {
            self.fault = Some(BridgeError::ExpiresAtOnce {
                left_s: left.as_secs(),
                margin_s: margin.as_secs(),
            });
        }
        let end = now + left;
        self.hard = Some(end.checked_sub(Duration::from_millis(500)).unwrap_or(end));
        self.at = Some(end.checked_sub(margin).unwrap_or(now));
    }

    /// The connection will close within `hard_in` (a server's warning): due now, between
    /// turns, and even mid-response once `hard_in` has passed.
    pub(super) fn soon(&mut self, now: Instant, hard_in: Duration) {
        self.fault = None;
        self.at = Some(now);
        self.hard = Some(now + hard_in);
    }

    /// When it is due, if planned.
    pub(super) fn due_at(&self) -> Option<Instant> {
        self.at
    }

    /// It is due (`now`): roll over unless a response is in progress and the hard limit is
    /// still ahead; then look again in 200 ms.
    pub(super) fn due(&mut self, now: Instant, response_in_progress: bool) -> Due {
        if let Some(fault) = self.fault.take() {
            return Due::Fault(fault);
        }
        let hard = self.hard.is_some_and(|at| now >= at);
        if !response_in_progress || hard {
            return Due::RollOver;
        }
        self.at = Some(now + Duration::from_millis(200));
        Due::Later
    }
}

impl Relay {
    /// Reads `expires_at` and plans the move to a fresh session `rollover_margin` before it.
    pub(super) fn plan_rollover(
        &mut self,
        session: Option<&serde_json::Value>,
        config: &BridgeConfig,
    ) {
        if let Some(left) = session.and_then(crate::bridge::wire::expires_in) {
            self.rollover
                .plan(left, config.rollover_margin, Instant::now());
        }
    }

    /// The fallback audio for the carrier, when the upstream is gone for good.
    pub(super) fn fallback(&mut self, config: &BridgeConfig) -> Option<Downstream> {
        let (format, audio) = config.fallback_audio.as_ref()?;
        let mut transcoder = Transcoder::new(*format, self.call.outbound_format).ok()?;
        let mut out = Vec::new();
        transcoder.transcode(audio, &mut out);
        transcoder.flush(&mut out);
        let duration = Duration::from_millis(self.call.outbound_format.duration_ms(out.len()));
        Some(Downstream::Fallback {
            audio: out.into(),
            duration,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARGIN: Duration = Duration::from_secs(60);

    #[test]
    fn a_session_is_replaced_a_margin_before_it_expires_between_turns() {
        let now = Instant::now();
        let mut rollover = Rollover::default();
        assert_eq!(rollover.due_at(), None, "nothing planned");
        rollover.plan(Duration::from_secs(3600), MARGIN, now);
        assert_eq!(rollover.due_at(), Some(now + Duration::from_secs(3540)));
        let due = now + Duration::from_secs(3540);
        assert!(
            matches!(rollover.due(due, true), Due::Later),
            "mid-response"
        );
        assert_eq!(rollover.due_at(), Some(due + Duration::from_millis(200)));
        assert!(matches!(rollover.due(due, false), Due::RollOver));
        // Just before the server's own limit it goes even mid-response.
        let hard = now + Duration::from_millis(3_599_500);
        assert!(matches!(rollover.due(hard, true), Due::RollOver));
    }

    #[test]
    fn a_session_that_expires_inside_the_margin_is_a_fault() {
        let now = Instant::now();
        let mut rollover = Rollover::default();
        rollover.plan(Duration::from_secs(30), MARGIN, now);
        assert!(rollover.due_at().unwrap() <= now, "due at once");
        assert!(matches!(
            rollover.due(now, false),
            Due::Fault(BridgeError::ExpiresAtOnce {
                left_s: 30,
                margin_s: 60
            })
        ));
        // Exactly at the margin is a rollover, not a fault.
        let mut exact = Rollover::default();
        exact.plan(MARGIN, MARGIN, now);
        assert!(matches!(exact.due(now, false), Due::RollOver));
    }
}
