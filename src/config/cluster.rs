//! `[cluster]`: state shared by every replica, in Redis. Unset (`redis_url = ""`), each
//! process keeps its own (one machine needs nothing installed).

use serde::Deserialize;

/// What new upgrades meet while Redis cannot be reached (calls in progress always continue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisError {
    /// Admit on this replica's own limits and caps (as with no cluster), loudly: a metric
    /// and a log line a minute. Availability first; the caps hold per replica meanwhile.
    Local,
    /// Refuse new upgrades with 503 `cluster_unavailable` until Redis is back.
    Closed,
}

/// `[cluster]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host:6379[/db]` ("" = no cluster: in-process state).
    pub redis_url: String,
    /// How other replicas and operators reach this one (`http://10.1.2.3:8080`); shown in
    /// the call directory. "" = `http://` + the listen address.
    pub advertise_url: String,
    /// `local` or `closed`: see [`OnRedisError`].
    pub on_redis_error: OnRedisError,
    /// A call's slot and directory entry live this long without renewal (renewed every
    /// third of it): how soon a replica that died frees its calls.
    pub lease_ttl_s: u64,
    /// Limit on each Redis command (connecting included); past it Redis counts as down.
    pub timeout_ms: u64,
    /// Prefix of every key and channel (several deployments can share one Redis).
    pub key_prefix: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: String::new(),
            advertise_url: String::new(),
            on_redis_error: OnRedisError::Local,
            lease_ttl_s: 6,
            timeout_ms: 500,
            key_prefix: "callgate".into(),
        }
    }
}

impl ClusterConfig {
    /// True when the replicas share state.
    pub fn enabled(&self) -> bool {
        !self.redis_url.is_empty()
    }

    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        if !self.enabled() {
            return;
        }
        let url = &self.redis_url;
        if !(url.starts_with("redis://") || url.starts_with("unix://")) {
            errors.push(
                "cluster.redis_url: must start with redis:// (TLS, rediss://, is not in this build)"
                    .into(),
            );
        } else if redis::Client::open(url.as_str()).is_err() {
            errors.push("cluster.redis_url: not a valid Redis URL".into());
        }
        if self.lease_ttl_s < 3 {
            errors.push("cluster.lease_ttl_s: must be at least 3".into());
        }
        if self.timeout_ms == 0 {
            errors.push("cluster.timeout_ms: must be greater than 0".into());
        }
        if self.key_prefix.is_empty() {
            errors.push("cluster.key_prefix: must not be empty".into());
        }
        let advertise = &self.advertise_url;
        if !(advertise.is_empty()
            || advertise.starts_with("http://")
            || advertise.starts_with("https://"))
        {
            errors.push("cluster.advertise_url: must start with http:// or https://".into());
        }
    }
}
