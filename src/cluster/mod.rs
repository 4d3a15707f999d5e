//! Cluster mode (`[cluster] redis_url`): the state every replica must agree on, in Redis.
//!
//! - [`limits`]: the per-IP and gateway-wide upgrade rates and the failed-auth blocks (a GCRA
//!   per key in a script), and single-use token ids (`SET NX` for the token's lifetime);
//! - [`leases`]: the call caps, as leases each replica renews; a replica that dies frees
//!   its calls when their TTL runs out;
//! - [`directory`]: call_sid → replica, for the admin API and the live feeds of every call
//!   from any replica (each call's feed published on its own channel).
//!
//! [`Cluster`] is the connection (one multiplexed, pipelining connection: every command
//! is a single round trip, none waits for another's reply), Redis's health, and the
//! `on_redis_error` policy. When a command fails or times out, Redis counts as down:
//! further decisions do not wait for it (local fallback or 503, by policy), calls in progress
//! go on, and the upkeep task pings once a second until it answers, then re-registers
//! this replica's leases and calls (Redis may have lost them).

pub mod directory;
pub mod leases;
pub mod limits;
mod scripts;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use callgate_handlers::call_state::CallStore;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisResult;
use tokio_util::sync::CancellationToken;

use crate::config::{ClusterConfig, OnRedisError};

/// This replica's handle on the shared state.
pub struct Cluster {
    redis: ConnectionManager,
    client: redis::Client,
    prefix: String,
    /// This replica's id (unique per process).
    pub replica: String,
    /// How others reach this replica.
    pub advertise_url: String,
    policy: OnRedisError,
    ttl: Duration,
    timeout: Duration,
    up: AtomicBool,
    /// Decisions taken without Redis since the last log line.
    fallbacks: AtomicU64,
    leases: leases::Registry,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("replica", &self.replica)
            .field("up", &self.up.load(Relaxed))
            .finish()
    }
}

/// What to do about one decision Redis could not make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Decide with this replica's own state.
    Local,
    /// Refuse (503).
    Refuse,
}

impl Cluster {
    /// A handle on `config.redis_url` (connecting in the background: a replica starts, and
    /// follows its policy, while Redis is down). `listen` is the advertised address's default.
    pub fn new(config: &ClusterConfig, listen: &str) -> anyhow::Result<Arc<Self>> {
        let client = redis::Client::open(config.redis_url.as_str())
            .context("cluster.redis_url: not a valid Redis URL")?;
        let timeout = Duration::from_millis(config.timeout_ms);
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let redis = ConnectionManager::new_lazy_with_config(client.clone(), manager)
            .context("cluster.redis_url")?;
        let replica = format!(
            "{}-{}-{:08x}",
            hostname(),
            std::process::id(),
            rand::random::<u32>()
        );
        let advertise_url = match config.advertise_url.is_empty() {
            true => format!("http://{listen}"),
            false => config.advertise_url.trim_end_matches('/').to_owned(),
        };
        metrics::gauge!("callgate_cluster_redis_up").set(1.0);
        Ok(Arc::new(Self {
            redis,
            client,
            prefix: config.key_prefix.clone(),
            replica,
            advertise_url,
            policy: config.on_redis_error,
            ttl: Duration::from_secs(config.lease_ttl_s),
            timeout,
            up: AtomicBool::new(true),
            fallbacks: AtomicU64::new(0),
            leases: leases::Registry::default(),
        }))
    }

    /// `prefix:rest`.
    fn key(&self, rest: std::fmt::Arguments<'_>) -> String {
        format!("{}:{rest}", self.prefix)
    }

    /// Runs one Redis operation within the timeout; `None` when Redis is down (then without
    /// waiting), fails or is too slow (then it counts as down from now on).
    async fn ask<T, F>(
        &self,
        what: &'static str,
        op: impl FnOnce(ConnectionManager) -> F,
    ) -> Option<T>
    where
        F: Future<Output = RedisResult<T>>,
    {
        if !self.up.load(Relaxed) {
            return None;
        }
        let error = match tokio::time::timeout(self.timeout, op(self.redis.clone())).await {
            Ok(Ok(value)) => return Some(value),
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {} ms", self.timeout.as_millis()),
        };
        if self.up.swap(false, Relaxed) {
            metrics::gauge!("callgate_cluster_redis_up").set(0.0);
            tracing::error!(what, %error, policy = ?self.policy, "Redis unreachable: new upgrades follow cluster.on_redis_error; live calls continue");
        }
        None
    }

    /// Runs a decision in Redis, or tells the caller what the policy says to do instead
    /// (counted per `what`).
    async fn decide<T, F>(
        &self,
        what: &'static str,
        op: impl FnOnce(ConnectionManager) -> F,
    ) -> Result<T, Fallback>
    where
        F: Future<Output = RedisResult<T>>,
    {
        match self.ask(what, op).await {
            Some(value) => Ok(value),
            None => Err(self.fallback(what)),
        }
    }

    /// Counts a decision taken without Redis and says how (`on_redis_error`).
    fn fallback(&self, what: &'static str) -> Fallback {
        let (policy, fallback) = match self.policy {
            OnRedisError::Local => ("local", Fallback::Local),
            OnRedisError::Closed => ("closed", Fallback::Refuse),
        };
        metrics::counter!("callgate_cluster_fallbacks_total", "what" => what, "policy" => policy)
            .increment(1);
        self.fallbacks.fetch_add(1, Relaxed);
        fallback
    }

    /// A connection for one subscriber (pub/sub needs its own).
    async fn subscriber(&self) -> Option<redis::aio::PubSub> {
        if !self.up.load(Relaxed) {
            return None;
        }
        tokio::time::timeout(self.timeout, self.client.get_async_pubsub())
            .await
            .ok()?
            .ok()
    }

    /// Renews this replica's leases and directory entries every third of the TTL; while
    /// Redis is down, pings it every second, logs the fallbacks once a minute, and once it
    /// answers again re-registers everything (it may have restarted empty).
    pub fn spawn_upkeep(self: &Arc<Self>, store: CallStore, shutdown: CancellationToken) {
        let cluster = self.clone();
        tokio::spawn(async move {
            let renew_every = cluster.ttl / 3;
            let mut next_renewal = tokio::time::Instant::now();
            let mut last_report = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.cancelled() => return,
                }
                if !cluster.up.load(Relaxed) {
                    if last_report.elapsed() >= Duration::from_secs(60) {
                        last_report = tokio::time::Instant::now();
                        let decisions = cluster.fallbacks.swap(0, Relaxed);
                        tracing::error!(decisions, policy = ?cluster.policy, "Redis still unreachable: upgrades decided by cluster.on_redis_error in the last minute");
                    }
                    if cluster.ping().await {
                        cluster.up.store(true, Relaxed);
                        metrics::gauge!("callgate_cluster_redis_up").set(1.0);
                        let decisions = cluster.fallbacks.swap(0, Relaxed);
                        tracing::warn!(decisions, "Redis reachable again: shared state resumes");
                        cluster.renew(&store, true).await;
                        next_renewal = tokio::time::Instant::now() + renew_every;
                    }
                    continue;
                }
                if tokio::time::Instant::now() >= next_renewal {
                    cluster.renew(&store, false).await;
                    next_renewal = tokio::time::Instant::now() + renew_every;
                }
            }
        });
    }

    /// One `PING` straight to the server (the shared connection may be mid-reconnect).
    async fn ping(&self) -> bool {
        let ping = async {
            let mut conn = self.client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        matches!(tokio::time::timeout(self.timeout, ping).await, Ok(Ok(_)))
    }

    /// Pushes the expiry of this replica's leases and calls; `restore` re-adds them.
    async fn renew(&self, store: &CallStore, restore: bool) {
        self.renew_leases(restore).await;
        self.renew_directory(store, restore).await;
    }

    /// Waits for the release of leases and directory entries still in flight (drain).
    pub async fn flush(&self) {
        self.leases.wait_released(Duration::from_secs(2)).await;
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "callgate".into())
}
