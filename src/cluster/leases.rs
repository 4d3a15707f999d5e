//! Call caps shared by the replicas, as leases: a call holds a member in the global cap's
//! sorted set and its tenant's, scored by when it expires. The acquiring script drops expired
//! members and admits only when every set has room; this replica pushes its members' expiry
//! every third of the TTL and removes them when the call ends. A replica that dies stops
//! renewing, and its calls stop counting within one TTL.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use callgate_layers::util::lock;

use super::{scripts, Cluster, Fallback};

/// The leases this replica holds: id → the cap sets its member is in.
#[derive(Debug, Default)]
pub struct Registry {
    held: Mutex<HashMap<u64, Vec<String>>>,
    next: AtomicU64,
    releasing: Arc<AtomicUsize>,
}

/// Why no lease was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseRefused {
    /// The cap at this index of the request is full, cluster-wide.
    Full(usize),
    /// Redis is unreachable and the policy is to fail closed.
    Unavailable,
}

/// One call's slots in the cluster's caps; released when dropped.
#[derive(Debug)]
pub struct Lease {
    cluster: Arc<Cluster>,
    id: u64,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.cluster.release(self.id);
    }
}

impl Cluster {
    /// A lease in each of `caps` (key suffix and limit), or the first that is full. With
    /// Redis down and the local policy the lease is granted (the caller's local caps decide)
    /// and joins the sets once Redis is back.
    pub async fn acquire(
        self: &Arc<Self>,
        caps: &[(String, usize)],
    ) -> Result<Lease, LeaseRefused> {
        let id = self.leases.next.fetch_add(1, Relaxed);
        let member = self.member(id);
        let keys: Vec<String> = caps
            .iter()
            .map(|(k, _)| self.key(format_args!("cap:{k}")))
            .collect();
        let ttl_ms = self.ttl.as_millis() as u64;
        let full = self
            .decide("call_cap", |mut redis| {
                let mut invocation = scripts::ACQUIRE.prepare_invoke();
                invocation.key(&keys).arg(&member).arg(ttl_ms);
                for (_, limit) in caps {
                    invocation.arg(*limit);
                }
                async move { invocation.invoke_async::<usize>(&mut redis).await }
            })
            .await;
        match full {
            Ok(0) | Err(Fallback::Local) => {}
            Ok(index) => return Err(LeaseRefused::Full(index - 1)),
            Err(Fallback::Refuse) => return Err(LeaseRefused::Unavailable),
        }
        lock(&self.leases.held).insert(id, keys);
        Ok(Lease {
            cluster: self.clone(),
            id,
        })
    }

    fn member(&self, id: u64) -> String {
        format!("{}:{id}", self.replica)
    }

    /// Forgets lease `id` here and removes it from its sets (in the background: a call's end
    /// must not wait for Redis; if this fails the TTL frees it).
    fn release(self: &Arc<Self>, id: u64) {
        let Some(keys) = lock(&self.leases.held).remove(&id) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let cluster = self.clone();
        let releasing = self.leases.releasing.clone();
        releasing.fetch_add(1, Relaxed);
        runtime.spawn(async move {
            let member = cluster.member(id);
            cluster
                .ask("release", |mut redis| async move {
                    let mut pipe = redis::pipe();
                    for key in &keys {
                        pipe.zrem(key, &member).ignore();
                    }
                    pipe.query_async::<()>(&mut redis).await
                })
                .await;
            releasing.fetch_sub(1, Relaxed);
        });
    }

    /// Pushes the expiry of every lease held here (`restore`: re-adds them too).
    pub(super) async fn renew_leases(&self, restore: bool) {
        let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
        for (id, keys) in lock(&self.leases.held).iter() {
            for key in keys {
                by_key
                    .entry(key.clone())
                    .or_default()
                    .push(self.member(*id));
            }
        }
        for (key, members) in by_key {
            self.renew_set(&key, &members, restore).await;
        }
    }

    /// Pushes the expiry of `members` of the sorted set `key`.
    pub(super) async fn renew_set(&self, key: &str, members: &[String], restore: bool) {
        let ttl_ms = self.ttl.as_millis() as u64;
        let mode = if restore { "CH" } else { "XX" };
        self.ask("renew", |mut redis| {
            let mut invocation = scripts::RENEW.prepare_invoke();
            invocation.key(key).arg(ttl_ms).arg(mode).arg(members);
            async move { invocation.invoke_async::<()>(&mut redis).await }
        })
        .await;
    }

    /// Leases held by this replica.
    pub fn leases_held(&self) -> usize {
        lock(&self.leases.held).len()
    }
}

impl Registry {
    /// Waits (at most `limit`) for releases still being sent.
    pub async fn wait_released(&self, limit: Duration) {
        let until = tokio::time::Instant::now() + limit;
        while self.releasing.load(Relaxed) > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
