//! Admission's rate state and single-use token ids, shared by the replicas: the same quotas
//! as [`LocalLimits`], each a GCRA in Redis keyed like the local limiters (by client address,
//! or one key for the gateway), so a brute-force attempt gets one budget however many
//! replicas it reaches. Keys expire once their state has caught up with the clock, which
//! bounds Redis's memory. Without Redis: [`LocalLimits`] or 503, by policy.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use callgate_layers::http::auth::{AuthError, LocalReplayGuard, ReplayGuard};
use callgate_layers::http::limit::{Quota, Refusal, Standing};
use callgate_layers::http::limits::{Limits, LocalLimits, Pending};

use super::{scripts, Cluster, Fallback};

/// A quota as the scripts take it: microseconds per request, and the burst.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    interval_us: u64,
    burst: u32,
}

impl From<Quota> for Rate {
    fn from(quota: Quota) -> Self {
        Self {
            interval_us: (quota.replenish_interval().as_micros() as u64).max(1),
            burst: quota.burst_size().get(),
        }
    }
}

/// The quotas, as configured (`[security]`).
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    /// Upgrade attempts per client address.
    pub per_ip: Rate,
    /// Authenticated upgrades, gateway-wide.
    pub global: Rate,
    /// Failed authentications per address before it is blocked.
    pub failures: Rate,
    /// Attempts a blocked address may still make.
    pub probation: Rate,
    /// How long a block lasts.
    pub block_for: Duration,
}

/// [`Limits`] in Redis, with this replica's own as the fallback.
#[derive(Debug)]
pub struct SharedLimits {
    cluster: Arc<Cluster>,
    rates: Rates,
    local: LocalLimits,
}

impl SharedLimits {
    /// Limits at `rates` in `cluster`; `local` decides while Redis is down (policy `local`).
    pub fn new(cluster: Arc<Cluster>, rates: Rates, local: LocalLimits) -> Self {
        Self {
            cluster,
            rates,
            local,
        }
    }

    /// One GCRA step on `key`: `Ok(wait)`, or the policy's answer without Redis.
    async fn rate(
        &self,
        what: &'static str,
        key: String,
        rate: Rate,
    ) -> Result<Duration, Fallback> {
        let wait_us = self
            .cluster
            .decide(what, |mut redis| {
                let mut invocation = scripts::RATE.prepare_invoke();
                invocation.key(key).arg(rate.interval_us).arg(rate.burst);
                async move { invocation.invoke_async::<u64>(&mut redis).await }
            })
            .await?;
        Ok(Duration::from_micros(wait_us))
    }
}

impl Limits for SharedLimits {
    fn per_ip(&self, ip: IpAddr) -> Pending<'_, Result<(), Refusal>> {
        Box::pin(async move {
            let key = self.cluster.key(format_args!("rate:ip:{ip}"));
            match self.rate("per_ip", key, self.rates.per_ip).await {
                Ok(wait) if wait.is_zero() => Ok(()),
                Ok(wait) => Err(Refusal::TooMany(wait)),
                Err(Fallback::Local) => self.local.per_ip.check(ip),
                Err(Fallback::Refuse) => Err(Refusal::Unavailable),
            }
        })
    }

    fn global(&self) -> Pending<'_, Result<(), Refusal>> {
        Box::pin(async move {
            let key = self.cluster.key(format_args!("rate:global"));
            match self.rate("global", key, self.rates.global).await {
                Ok(wait) if wait.is_zero() => Ok(()),
                Ok(wait) => Err(Refusal::Overloaded(wait)),
                Err(Fallback::Local) => self.local.global.check(),
                Err(Fallback::Refuse) => Err(Refusal::Unavailable),
            }
        })
    }

    fn standing(&self, ip: IpAddr) -> Pending<'_, Result<Standing, Refusal>> {
        Box::pin(async move {
            let block = self.cluster.key(format_args!("block:{ip}"));
            let probation = self.cluster.key(format_args!("probation:{ip}"));
            let rate = self.rates.probation;
            let answer = self
                .cluster
                .decide("standing", |mut redis| {
                    let mut invocation = scripts::STANDING.prepare_invoke();
                    invocation
                        .key(block)
                        .key(probation)
                        .arg(rate.interval_us)
                        .arg(rate.burst);
                    async move { invocation.invoke_async::<(u8, u64)>(&mut redis).await }
                })
                .await;
            match answer {
                Ok((0, _)) => Ok(Standing::Good),
                Ok((1, left_ms)) => Ok(Standing::Probation(Duration::from_millis(left_ms))),
                Ok((_, left_ms)) => Err(Refusal::Blocked(Duration::from_millis(left_ms))),
                Err(Fallback::Local) => self.local.failures.standing(ip),
                Err(Fallback::Refuse) => Err(Refusal::Unavailable),
            }
        })
    }

    fn record_failure(&self, ip: IpAddr) -> Pending<'_, ()> {
        Box::pin(async move {
            let failures = self.cluster.key(format_args!("fail:{ip}"));
            let block = self.cluster.key(format_args!("block:{ip}"));
            let rate = self.rates.failures;
            let block_ms = self.rates.block_for.as_millis() as u64;
            let counted = self
                .cluster
                .decide("failed_auth", |mut redis| {
                    let mut invocation = scripts::FAILURE.prepare_invoke();
                    invocation
                        .key(failures)
                        .key(block)
                        .arg(rate.interval_us)
                        .arg(rate.burst)
                        .arg(block_ms);
                    async move { invocation.invoke_async::<u8>(&mut redis).await }
                })
                .await;
            // Failures are remembered locally either way when Redis is down: they cost
            // nothing to count, and a block must not depend on Redis's health.
            if counted.is_err() {
                self.local.failures.record_failure(ip);
            }
        })
    }

    fn sweep(&self) {
        self.local.sweep();
    }
}

/// Single-use token ids in Redis: `SET NX` with the token's remaining lifetime (plus the
/// leeway), so the key goes when the token could no longer pass anyway.
#[derive(Debug)]
pub struct SharedReplayGuard {
    cluster: Arc<Cluster>,
    local: LocalReplayGuard,
    leeway_s: u64,
}

impl SharedReplayGuard {
    /// A guard in `cluster` for tokens verified with `leeway_s`.
    pub fn new(cluster: Arc<Cluster>, leeway_s: u64) -> Self {
        Self {
            cluster,
            local: LocalReplayGuard::new(leeway_s),
            leeway_s,
        }
    }
}

impl ReplayGuard for SharedReplayGuard {
    fn first_use<'a>(&'a self, jti: &'a str, exp: u64) -> Pending<'a, Result<(), AuthError>> {
        Box::pin(async move {
            let now = jsonwebtoken::get_current_timestamp();
            let ttl_s = (exp + self.leeway_s).saturating_sub(now).max(1);
            let key = self.cluster.key(format_args!("jti:{jti}"));
            let first = self
                .cluster
                .decide("jti", |mut redis| async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(1)
                        .arg("NX")
                        .arg("EX")
                        .arg(ttl_s)
                        .query_async::<Option<String>>(&mut redis)
                        .await
                })
                .await;
            match first {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err(AuthError::Replayed),
                Err(Fallback::Local) => self.local.first_use_now(jti, exp),
                Err(Fallback::Refuse) => Err(AuthError::Unavailable),
            }
        })
    }
}
