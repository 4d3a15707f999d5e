//! Concurrent-call caps: a global and a per-tenant limit, as permits that live as long as
//! the call (a tower concurrency limit ends with the HTTP request; a call outlives it).
//!
//! Every call takes a slot in this replica's semaphores; in a cluster it also takes a lease
//! in the cluster-wide caps (`cluster::leases`), which is what binds then (a replica never
//! has more calls than the cluster). While Redis is down, the local slots are what is left
//! (policy `local`), or the call is refused (`closed`).

use callgate_layers::util::lock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::cluster::leases::{Lease, LeaseRefused};
use crate::cluster::Cluster;

/// Which cap refused a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapExceeded {
    /// The gateway (or the cluster) is at `max_calls`.
    #[error("gateway at its call limit")]
    Global,
    /// The tenant is at its limit.
    #[error("tenant at its call limit")]
    Tenant,
    /// The cluster's caps cannot be reached and the policy is to fail closed.
    #[error("cluster state unavailable")]
    Unavailable,
}

/// Held for the whole call; dropping the last clone frees the slots. Cloneable so that it
/// can travel in request extensions from the admission stack to the call.
#[derive(Debug, Clone)]
pub struct CallPermit(#[allow(dead_code)] Arc<Slots>);

/// The semaphore permits and the cluster lease one call holds.
#[derive(Debug)]
struct Slots {
    _global: OwnedSemaphorePermit,
    _tenant: Option<OwnedSemaphorePermit>,
    _lease: Option<Lease>,
}

/// The call caps.
#[derive(Debug)]
pub struct CallCaps {
    global: Arc<Semaphore>,
    max_calls: usize,
    per_tenant_default: usize,
    tenant_limits: HashMap<String, usize>,
    tenants: Mutex<HashMap<String, Arc<Semaphore>>>,
    cluster: Option<Arc<Cluster>>,
}

impl CallCaps {
    /// At most `max_calls` calls, and per tenant its configured limit or
    /// `per_tenant_default`.
    pub fn new(
        max_calls: usize,
        per_tenant_default: usize,
        tenant_limits: HashMap<String, usize>,
    ) -> Self {
        Self {
            global: Arc::new(Semaphore::new(max_calls)),
            max_calls,
            per_tenant_default,
            tenant_limits,
            tenants: Mutex::new(HashMap::new()),
            cluster: None,
        }
    }

    /// The same caps, counted across the cluster.
    pub fn shared(mut self, cluster: Arc<Cluster>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Takes a slot for a call of `tenant` (None: unauthenticated routes, global cap only):
    /// here, then in the cluster.
    pub async fn acquire(&self, tenant: Option<&str>) -> Result<CallPermit, CapExceeded> {
        let (global, tenant_slot) = self.local(tenant)?;
        let lease = match &self.cluster {
            None => None,
            Some(cluster) => {
                let mut caps = vec![("global".to_owned(), self.max_calls)];
                if let Some(name) = tenant {
                    caps.push((format!("tenant:{name}"), self.limit_of(name)));
                }
                match cluster.acquire(&caps).await {
                    Ok(lease) => Some(lease),
                    Err(LeaseRefused::Full(0)) => return Err(CapExceeded::Global),
                    Err(LeaseRefused::Full(_)) => return Err(CapExceeded::Tenant),
                    Err(LeaseRefused::Unavailable) => return Err(CapExceeded::Unavailable),
                }
            }
        };
        Ok(CallPermit(Arc::new(Slots {
            _global: global,
            _tenant: tenant_slot,
            _lease: lease,
        })))
    }

    fn limit_of(&self, tenant: &str) -> usize {
        self.tenant_limits
            .get(tenant)
            .copied()
            .unwrap_or(self.per_tenant_default)
    }

    /// This replica's slots (all there is without a cluster).
    #[allow(clippy::type_complexity)]
    fn local(
        &self,
        tenant: Option<&str>,
    ) -> Result<(OwnedSemaphorePermit, Option<OwnedSemaphorePermit>), CapExceeded> {
        let global = self
            .global
            .clone()
            .try_acquire_owned()
            .map_err(|_| CapExceeded::Global)?;
        let tenant = match tenant {
            None => None,
            Some(name) => {
                let semaphore = {
                    let mut tenants = lock(&self.tenants);
                    // Tenants come from verified credentials, so this map is bounded by the
                    // number of real tenants.
                    tenants
                        .entry(name.to_owned())
                        .or_insert_with(|| Arc::new(Semaphore::new(self.limit_of(name))))
                        .clone()
                };
                Some(
                    semaphore
                        .try_acquire_owned()
                        .map_err(|_| CapExceeded::Tenant)?,
                )
            }
        };
        Ok((global, tenant))
    }

    /// Free global slots.
    pub fn available(&self) -> usize {
        self.global.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn global_and_tenant_caps_hold_until_dropped() {
        let caps = CallCaps::new(3, 2, HashMap::from([("big".to_owned(), 3)]));
        let a = caps.acquire(Some("acme")).await.unwrap();
        let _b = caps.acquire(Some("acme")).await.unwrap();
        assert_eq!(
            caps.acquire(Some("acme")).await.unwrap_err(),
            CapExceeded::Tenant
        );
        let _c = caps.acquire(Some("big")).await.unwrap();
        assert_eq!(caps.acquire(None).await.unwrap_err(), CapExceeded::Global);
        drop(a);
        assert!(caps.acquire(Some("acme")).await.is_ok());
    }
}
