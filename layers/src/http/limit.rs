//! Rate limiters over governor: keyed (per client IP) with swept, capped state, and a
//! blocklist for clients that keep failing authentication.

use crate::util::lock;
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
pub use governor::Quota;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter};

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This key is over its limit: 429, retry after the duration.
    TooMany(Duration),
    /// This key is blocked for failing authentication and has used its probation attempts:
    /// 429, retry after the duration.
    Blocked(Duration),
    /// The gateway as a whole is over its limit: 503, retry after the duration.
    Overloaded(Duration),
    /// The shared state (Redis) cannot be reached and the policy is to fail closed: 503.
    Unavailable,
}

/// A quota of `per_second` requests a second with a burst of `burst`.
pub fn quota(per_second: u32, burst: u32) -> Quota {
    let rate = NonZeroU32::new(per_second.max(1)).expect("max(1)");
    Quota::per_second(rate).allow_burst(NonZeroU32::new(burst.max(1)).expect("max(1)"))
}

/// A quota of `per_minute` requests a minute with a burst of `burst`.
pub fn quota_per_minute(per_minute: u32, burst: u32) -> Quota {
    let rate = NonZeroU32::new(per_minute.max(1)).expect("max(1)");
    Quota::per_minute(rate).allow_burst(NonZeroU32::new(burst.max(1)).expect("max(1)"))
}

/// A per-key limiter whose memory is bounded: idle keys are swept, and past `max_keys`
/// live keys new traffic is refused as overload rather than tracked.
#[derive(Debug)]
pub struct KeyedLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    max_keys: usize,
}

impl KeyedLimiter {
    /// A limiter with `quota` per key, tracking at most `max_keys` keys.
    pub fn new(quota: Quota, max_keys: usize) -> Self {
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            max_keys: max_keys.max(1),
        }
    }

    /// Takes one request for `key`.
    pub fn check(&self, key: IpAddr) -> Result<(), Refusal> {
        if self.limiter.len() >= self.max_keys {
            self.sweep();
            if self.limiter.len() >= self.max_keys {
                return Err(Refusal::Overloaded(Duration::from_secs(1)));
            }
        }
        self.limiter.check_key(&key).map_err(|not_until| {
            Refusal::TooMany(not_until.wait_time_from(DefaultClock::default().now()))
        })
    }

    /// Forgets keys whose state has returned to full capacity, and frees the memory.
    pub fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    /// True when no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A limiter for the whole gateway.
#[derive(Debug)]
pub struct GlobalLimiter(DefaultDirectRateLimiter);

impl GlobalLimiter {
    /// A limiter with `quota`.
    pub fn new(quota: Quota) -> Self {
        Self(DefaultDirectRateLimiter::direct(quota))
    }

    /// Takes one request.
    pub fn check(&self) -> Result<(), Refusal> {
        self.0.check().map_err(|not_until| {
            Refusal::Overloaded(not_until.wait_time_from(DefaultClock::default().now()))
        })
    }
}

/// How an address stands with the failure blocklist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Not blocked.
    Good,
    /// Blocked for this much longer, but allowed this attempt: if it authenticates it
    /// passes, if it fails it is answered 429.
    Probation(Duration),
}

/// Clients over their failed-authentication quota, on probation until a time: their
/// attempts are throttled to `probation` and only those that authenticate pass. Carriers
/// share addresses, so a block must throttle guessing without refusing the valid calls of
/// another tenant behind the same address. Bounded: past `max_keys` entries, expired ones
/// are dropped and new failures refuse as overload.
#[derive(Debug)]
pub struct FailureBlocklist {
    failures: KeyedLimiter,
    probation: KeyedLimiter,
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    block_for: Duration,
    max_keys: usize,
}

impl FailureBlocklist {
    /// Allow `quota` failures per key; a key that exceeds it is blocked for `block_for`,
    /// during which it may try `probation` times.
    pub fn new(quota: Quota, probation: Quota, block_for: Duration, max_keys: usize) -> Self {
        Self {
            failures: KeyedLimiter::new(quota, max_keys),
            probation: KeyedLimiter::new(probation, max_keys),
            blocked: Mutex::new(HashMap::new()),
            block_for,
            max_keys: max_keys.max(1),
        }
    }

    /// Whether `key` may try now, and on what terms; `Err` carries the time left on its
    /// block once its probation attempts are spent.
    pub fn standing(&self, key: IpAddr) -> Result<Standing, Refusal> {
        let left = {
            let blocked = self.lock();
            match blocked.get(&key) {
                Some(until) => until.saturating_duration_since(Instant::now()),
                None => return Ok(Standing::Good),
            }
        };
        if left.is_zero() {
            return Ok(Standing::Good);
        }
        match self.probation.check(key) {
            Ok(()) => Ok(Standing::Probation(left)),
            Err(_) => Err(Refusal::Blocked(left)),
        }
    }

    /// Records one failed attempt by `key`.
    pub fn record_failure(&self, key: IpAddr) {
        if self.failures.check(key).is_ok() {
            return;
        }
        let mut blocked = self.lock();
        if blocked.len() >= self.max_keys {
            let now = Instant::now();
            blocked.retain(|_, until| *until > now);
            blocked.shrink_to_fit();
            if blocked.len() >= self.max_keys {
                return;
            }
        }
        blocked.insert(key, Instant::now() + self.block_for);
    }

    /// Drops expired blocks and idle failure state.
    pub fn sweep(&self) {
        self.failures.sweep();
        self.probation.sweep();
        let now = Instant::now();
        let mut blocked = self.lock();
        blocked.retain(|_, until| *until > now);
        blocked.shrink_to_fit();
    }

    /// Keys tracked (failure state plus blocks).
    pub fn len(&self) -> usize {
        self.failures.len() + self.lock().len()
    }

    /// True when nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Instant>> {
        lock(&self.blocked)
    }
}

/// Connections not yet upgraded, counted per client key: one host cannot fill the whole
/// connection cap with silent sockets while they wait out the header timeout. Memory is
/// bounded by the connections themselves (a key lives while it has one).
#[derive(Debug)]
pub struct ConnectionsPerKey {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max: usize,
}

/// One counted connection; the count drops with it.
#[derive(Debug)]
pub struct ConnectionSlot {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    key: IpAddr,
}

impl ConnectionsPerKey {
    /// At most `max` connections per key.
    pub fn new(max: usize) -> Self {
        Self {
            counts: Arc::default(),
            max: max.max(1),
        }
    }

    /// A slot for `key`, or `None` when it already holds `max` connections.
    pub fn try_acquire(&self, key: IpAddr) -> Option<ConnectionSlot> {
        let mut counts = lock(&self.counts);
        let count = counts.entry(key).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            counts: self.counts.clone(),
            key,
        })
    }

    /// Keys holding at least one connection.
    pub fn keys(&self) -> usize {
        lock(&self.counts).len()
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_limits_each_key_separately() {
        let limiter = KeyedLimiter::new(quota(1, 2), 100);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        assert!(limiter.check(a).is_ok() && limiter.check(a).is_ok());
        assert!(
            matches!(limiter.check(a), Err(Refusal::TooMany(d)) if d <= Duration::from_secs(1))
        );
        assert!(limiter.check(b).is_ok());
    }

    #[test]
    fn a_million_keys_do_not_stay_in_memory() {
        let limiter = KeyedLimiter::new(quota(1000, 1000), 2_000_000);
        for i in 0..1_000_000u32 {
            let _ = limiter.check(IpAddr::from(i.to_be_bytes()));
        }
        assert_eq!(limiter.len(), 1_000_000);
        // One request each is far below the burst: once it has replenished, sweeping
        // forgets them all.
        std::thread::sleep(Duration::from_millis(5));
        limiter.sweep();
        assert_eq!(limiter.len(), 0);
    }

    #[test]
    fn the_key_cap_refuses_instead_of_growing() {
        let limiter = KeyedLimiter::new(quota_per_minute(1, 5), 1000);
        for i in 0..1000u32 {
            let _ = limiter.check(IpAddr::from(i.to_be_bytes()));
        }
        // Those keys are not idle (quota per minute), so the sweep keeps them: refuse.
        assert!(matches!(
            limiter.check("198.51.100.1".parse().unwrap()),
            Err(Refusal::Overloaded(_))
        ));
        assert!(limiter.len() <= 1000);
    }

    #[test]
    fn repeated_failures_put_the_key_on_probation() {
        let list = FailureBlocklist::new(
            quota_per_minute(2, 2),
            quota_per_minute(2, 2),
            Duration::from_secs(60),
            100,
        );
        let ip: IpAddr = "203.0.113.5".parse().unwrap();
        list.record_failure(ip);
        list.record_failure(ip);
        assert_eq!(list.standing(ip), Ok(Standing::Good), "within quota");
        list.record_failure(ip);
        // Blocked: two throttled attempts (each may still authenticate), then refused.
        assert!(
            matches!(list.standing(ip), Ok(Standing::Probation(d)) if d > Duration::from_secs(59))
        );
        assert!(matches!(list.standing(ip), Ok(Standing::Probation(_))));
        assert!(matches!(list.standing(ip), Err(Refusal::Blocked(_))));
        assert_eq!(
            list.standing("203.0.113.6".parse().unwrap()),
            Ok(Standing::Good)
        );
    }

    #[test]
    fn connections_are_counted_per_key_and_freed_on_drop() {
        let per_key = ConnectionsPerKey::new(2);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let first = per_key.try_acquire(a).unwrap();
        let second = per_key.try_acquire(a).unwrap();
        assert!(
            per_key.try_acquire(a).is_none(),
            "a third from the same host"
        );
        let other = per_key.try_acquire(b);
        assert!(other.is_some(), "another host is unaffected");
        drop(first);
        assert!(per_key.try_acquire(a).is_some());
        drop(second);
        assert_eq!(per_key.keys(), 1, "idle keys are forgotten");
        drop(other);
        assert_eq!(per_key.keys(), 0);
    }
}
