//! Admission of a carrier call, in one place: the HTTP stack every carrier route's upgrade
//! passes, outermost first, and what holds the call to account after the upgrade.
//!
//! Before the upgrade ([`carrier_stack`]): drain → client IP → origin → upgrade shape →
//! per-IP upgrade limit → failed-auth standing → the route's auth → the gateway-wide budget
//! → the call caps. Every refusal is an HTTP status with a short reason, a
//! `callgate_upgrades_rejected_total{reason}` count and a log line; nothing reaches the
//! model before all of them pass.
//!
//! After the upgrade, the call's connection (`connection.rs`) enforces the per-socket
//! limits: every frame is metered below the WebSocket parser (`calls` message rate and
//! burst → 1008), messages over `security.max_message_bytes` close 1009, a socket without
//! a valid `start` within `calls.start_deadline_ms` closes 1008 (on token-in-start routes the
//! token's own, usually shorter, deadline counts as a failed authentication), and
//! `start` itself is checked by the event stack (`pipeline.rs`): the token of carriers
//! that cannot send headers, and for those calls the call caps.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get_service, MethodRouter};
use callgate_layers::http::admission::{
    AsyncGate, FailedAuthLayer, Gate, GateLayer, GlobalBudget, OriginAllowList, PerIpLimit,
    Rejection, UpgradeShape,
};
use callgate_layers::http::auth::{Admitted, AuthLayer, AuthMode};
use callgate_layers::http::client_ip::{ClientIpLayer, TrustedProxies};
use callgate_layers::http::limits::Pending;
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceBuilder};

use crate::caps::{CallCaps, CapExceeded};
use crate::routes::AppState;

/// The admission stack in front of one carrier route's upgrade `handler`.
pub fn carrier_stack<H>(
    state: &AppState,
    proxies: TrustedProxies,
    auth: AuthMode,
    handler: H,
) -> MethodRouter<AppState>
where
    H: Service<Request, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
    H::Future: Send + 'static,
{
    let admission = state.security.admission.clone();
    // ServiceBuilder reads top-down: the first layer is the outermost.
    let stack = ServiceBuilder::new()
        // 503 once draining has begun: new calls belong on another replica.
        .layer(GateLayer::new(Draining(state.shutdown.clone())))
        // Who is calling: the peer, or behind trusted proxies the configured forwarding header.
        .layer(ClientIpLayer::new(proxies))
        // 403 for a browser page not on the allow-list (carriers send no `Origin`).
        .layer(GateLayer::new(OriginAllowList(admission.clone())))
        // 426 for anything but a WebSocket upgrade, before any limiter state is touched.
        .layer(GateLayer::new(UpgradeShape))
        // 429 past the per-IP upgrade rate: one address cannot monopolise the handshakes.
        .layer(GateLayer::new(PerIpLimit(admission.clone())))
        // Throttles an address with too many failed authentications; counts 401/403 from inside.
        .layer(FailedAuthLayer::new(admission.clone()))
        // The route's credentials: JWT, Twilio signature, Basic or an IP allow-list.
        .layer(AuthLayer::new(auth))
        // 503 past the gateway-wide upgrade rate, spent only by authenticated upgrades.
        .layer(GateLayer::new(GlobalBudget(admission)))
        // 503 at `max_calls` or the tenant's cap; the permit rides to the call in extensions.
        .layer(GateLayer::new(CallCap(state.security.caps.clone())))
        .service(handler);
    get_service(stack)
}

/// Refuses new calls while the gateway drains.
#[derive(Debug, Clone)]
struct Draining(CancellationToken);

impl Gate for Draining {
    fn admit<B>(&self, _: &mut axum::http::Request<B>) -> Result<(), Rejection> {
        match self.0.is_cancelled() {
            false => Ok(()),
            true => Err(Rejection::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "draining",
                Some(Duration::from_secs(5)),
            )),
        }
    }
}

/// Takes the call-cap permit of an authenticated upgrade before the 101 and hands it to the
/// call (a [`crate::caps::CallPermit`] extension). Calls that authenticate in `start` take
/// theirs when `start` proves who they are.
#[derive(Debug, Clone)]
struct CallCap(Arc<CallCaps>);

impl AsyncGate for CallCap {
    fn admit<B: Send + 'static>(
        &self,
        mut request: axum::http::Request<B>,
    ) -> Pending<'static, Result<axum::http::Request<B>, Rejection>> {
        let caps = self.0.clone();
        Box::pin(async move {
            let admitted = request.extensions().get::<Admitted>();
            if admitted.is_some_and(|a| a.start_token.is_some()) {
                return Ok(request);
            }
            let tenant = admitted.and_then(|a| a.identity.tenant.clone());
            match caps.acquire(tenant.as_deref()).await {
                Ok(permit) => {
                    request.extensions_mut().insert(permit);
                    Ok(request)
                }
                Err(cap) => {
                    tracing::warn!(%cap, "call refused");
                    let reason = match cap {
                        CapExceeded::Unavailable => "cluster_unavailable",
                        _ => "call_cap",
                    };
                    Err(Rejection::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        reason,
                        Some(Duration::from_secs(1)),
                    ))
                }
            }
        })
    }
}
