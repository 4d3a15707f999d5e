//! Concurrent-call caps: a global and a per-tenant limit, as permits that live as long as
//! the call (a tower concurrency limit ends with the HTTP request; a call outlives it).

use callgate_layers::util::lock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Which cap refused a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapExceeded {
    /// The gateway is at `max_calls`.
    #[error("gateway at its call limit")]
    Global,
    /// The tenant is at its limit.
    #[error("tenant at its call limit")]
    Tenant,
}

/// Held for the whole call; dropping the last clone frees the slots. Cloneable so that it
/// can travel in request extensions from the admission stack to the call.
#[derive(Debug, Clone)]
pub struct CallPermit(#[allow(dead_code)] Arc<Slots>);

/// The semaphore permits one call holds.
#[derive(Debug)]
struct Slots {
    _global: OwnedSemaphorePermit,
    _tenant: Option<OwnedSemaphorePermit>,
}

/// The call caps.
#[derive(Debug)]
pub struct CallCaps {
    global: Arc<Semaphore>,
    per_tenant_default: usize,
    tenant_limits: HashMap<String, usize>,
    tenants: Mutex<HashMap<String, Arc<Semaphore>>>,
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
            per_tenant_default,
            tenant_limits,
            tenants: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a slot for a call of `tenant` (None: unauthenticated routes, global cap only).
    pub fn try_acquire(&self, tenant: Option<&str>) -> Result<CallPermit, CapExceeded> {
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
                        .or_insert_with(|| {
                            let limit = self
                                .tenant_limits
                                .get(name)
                                .copied()
                                .unwrap_or(self.per_tenant_default);
                            Arc::new(Semaphore::new(limit))
                        })
                        .clone()
                };
                Some(
                    semaphore
                        .try_acquire_owned()
                        .map_err(|_| CapExceeded::Tenant)?,
                )
            }
        };
        Ok(CallPermit(Arc::new(Slots {
            _global: global,
            _tenant: tenant,
        })))
    }

    /// Free global slots.
    pub fn available(&self) -> usize {
        self.global.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_and_tenant_caps_hold_until_dropped() {
        let caps = CallCaps::new(3, 2, HashMap::from([("big".to_owned(), 3)]));
        let a = caps.try_acquire(Some("acme")).unwrap();
        let _b = caps.try_acquire(Some("acme")).unwrap();
        assert_eq!(
            caps.try_acquire(Some("acme")).unwrap_err(),
            CapExceeded::Tenant
        );
        let _c = caps.try_acquire(Some("big")).unwrap();
        assert_eq!(caps.try_acquire(None).unwrap_err(), CapExceeded::Global);
        drop(a);
        assert!(caps.try_acquire(Some("acme")).is_ok());
    }
}
