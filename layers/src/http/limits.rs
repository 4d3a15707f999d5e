//! Where admission's rate state lives. [`Limits`] is the one interface the gates use: the
//! per-IP upgrade rate, the gateway-wide budget and the failed-authentication standing.
//! [`LocalLimits`] keeps them in this process (governor, see [`super::limit`]); the root
//! crate's cluster mode keeps them in Redis, shared by every replica, with these as its
//! fallback.

use std::fmt::Debug;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use super::limit::{FailureBlocklist, GlobalLimiter, KeyedLimiter, Refusal, Standing};

/// A boxed answer from a [`Limits`] (or a single-use token guard).
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Admission's rate state, shared by every carrier route and the admin API.
pub trait Limits: Send + Sync + Debug {
    /// Takes one upgrade attempt of `ip` (429 past its rate).
    fn per_ip(&self, ip: IpAddr) -> Pending<'_, Result<(), Refusal>>;
    /// Takes one authenticated upgrade from the gateway-wide budget (503 past it).
    fn global(&self) -> Pending<'_, Result<(), Refusal>>;
    /// How `ip` stands after its failed authentications.
    fn standing(&self, ip: IpAddr) -> Pending<'_, Result<Standing, Refusal>>;
    /// Counts one failed authentication of `ip`.
    fn record_failure(&self, ip: IpAddr) -> Pending<'_, ()>;
    /// Forgets idle in-process state (called periodically).
    fn sweep(&self);
}

/// The limits of one process: governor limiters with bounded, swept state.
#[derive(Debug)]
pub struct LocalLimits {
    /// Upgrade attempts per client IP.
    pub per_ip: KeyedLimiter,
    /// Failed authentications per client IP.
    pub failures: FailureBlocklist,
    /// Authenticated upgrades for the whole gateway.
    pub global: GlobalLimiter,
}

impl Limits for LocalLimits {
    fn per_ip(&self, ip: IpAddr) -> Pending<'_, Result<(), Refusal>> {
        Box::pin(std::future::ready(self.per_ip.check(ip)))
    }

    fn global(&self) -> Pending<'_, Result<(), Refusal>> {
        Box::pin(std::future::ready(self.global.check()))
    }

    fn standing(&self, ip: IpAddr) -> Pending<'_, Result<Standing, Refusal>> {
        Box::pin(std::future::ready(self.failures.standing(ip)))
    }

    fn record_failure(&self, ip: IpAddr) -> Pending<'_, ()> {
        self.failures.record_failure(ip);
        Box::pin(std::future::ready(()))
    }

    fn sweep(&self) {
        self.per_ip.sweep();
        self.failures.sweep();
    }
}
