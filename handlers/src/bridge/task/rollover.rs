//! The end of an upstream session foreseen: the rollover to a fresh session before
//! `expires_at`, and the fallback audio when the upstream is gone for good.

use std::time::Duration;

use super::{BridgeConfig, BridgeError, Downstream, Relay, Transcoder};

impl Relay {
    /// Reads `expires_at` and plans the move to a fresh session `rollover_margin` before it.
    pub(super) fn plan_rollover(
        &mut self,
        session: Option<&serde_json::Value>,
        config: &BridgeConfig,
    ) {
        let Some(left) = session.and_then(crate::bridge::wire::expires_in) else {
            return;
        };
        // `expires_at` has whole seconds: a session that ends exactly at the margin still
        // gets its rollover; one that ends inside it is a fault.
        if left < config.rollover_margin {
            self.expires_at_once = Some(BridgeError::ExpiresAtOnce {
                left_s: left.as_secs(),
                margin_s: config.rollover_margin.as_secs(),
            });
        }
        let at = tokio::time::Instant::now() + left;
        self.expires_at = Some(at.checked_sub(Duration::from_millis(500)).unwrap_or(at));
        self.rollover_at = Some(
            at.checked_sub(config.rollover_margin)
                .unwrap_or_else(tokio::time::Instant::now),
        );
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
