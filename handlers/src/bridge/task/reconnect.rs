//! The reconnect policy: connect (or take a warm session), relay, and after a failure
//! connect again within the attempt and time budget; roll over to a fresh session when one
//! is due.

use super::*;

impl Relay {
    /// Connects, relays, and reconnects within the budget.
    pub(super) async fn drive(
        &mut self,
        config: &BridgeConfig,
        control: &mut mpsc::Receiver<Control>,
    ) -> Result<(), BridgeError> {
        let policy = &config.reconnect;
        let mut attempts = 0u32;
        let mut rollovers = 0u32;
        let mut failing_since: Option<Instant> = None;
        loop {
            let started = Instant::now();
            let tap = self
                .call
                .tape
                .get()
                .map(|tape| (tape.clone(), self.connections));
            self.connections += 1;
            // A warm session when the pool has one; otherwise connect now.
            let (connected, warm) = match config.warm.as_ref().and_then(WarmPool::take) {
                Some(warm) => {
                    let mut ws = warm.ws;
                    ws.attach_tape(tap, &warm.setup);
                    (Ok(ws), Some((warm.created, warm.configured)))
                }
                None => {
                    // Boxed: the handshake's state (TLS included) is ~10 KB, needed only
                    // while connecting; inline it would sit in every call's task for good.
                    let connecting = tracing::Instrument::instrument(
                        Box::pin(connect(config, tap)),
                        tracing::info_span!("upstream.connect", attempt = attempts),
                    );
                    // The call may end while we connect: then there is nothing to close.
                    let Some(connected) = self.until_stop(connecting, control).await else {
                        return Ok(());
                    };
                    (connected, None)
                }
            };
            let outcome = match connected {
                Ok(mut ws) => {
                    self.opening_since = Some(started);
                    tracing::debug!(
                        elapsed_us = started.elapsed().as_micros() as u64,
                        reseed = self.reseed,
                        warm = warm.is_some(),
                        "upstream connected"
                    );
                    let outcome = self.relay(&mut ws, config, control, warm).await;
                    let expired_at_once = matches!(outcome, Err(BridgeError::ExpiresAtOnce { .. }));
                    if self.ready && !expired_at_once {
                        // The session worked: a later failure gets a fresh budget.
                        attempts = 0;
                        failing_since = None;
                    }
                    outcome
                }
                Err(err) => Err(err),
            };
            self.keep_open_line(config);
            self.ready = false;
            self.reseed = true;
            match outcome {
                Ok(SessionEnd::Stopped) => return Ok(()),
                Ok(SessionEnd::Rollover) => {
                    rollovers += 1;
                    if rollovers > config.max_rollovers {
                        return Err(BridgeError::TooManyRollovers(rollovers - 1));
                    }
                    metrics::counter!("callgate_upstream_rollovers_total").increment(1);
                    tracing::info!("upstream session rolled over before its limit");
                }
                Err(err) if !err.is_retryable() => return Err(err),
                Err(err) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    attempts += 1;
                    if attempts > policy.max_attempts || since.elapsed() >= policy.budget {
                        metrics::counter!("callgate_upstream_reconnects_total", "outcome" => "gave_up").increment(1);
                        return Err(BridgeError::GaveUp {
                            attempts: attempts - 1,
                            last: Box::new(err),
                        });
                    }
                    let delay = policy
                        .backoff(attempts)
                        .min(policy.budget.saturating_sub(since.elapsed()));
                    tracing::warn!(error = %err, attempt = attempts, delay_ms = delay.as_millis() as u64, "upstream lost; reconnecting");
                    metrics::counter!("callgate_upstream_reconnects_total", "outcome" => "attempt")
                        .increment(1);
                    if self
                        .until_stop(tokio::time::sleep(delay), control)
                        .await
                        .is_none()
                    {
                        return Ok(());
                    }
                }
            }
        }
    }
}
