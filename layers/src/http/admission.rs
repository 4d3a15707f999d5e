//! Admission: the checks an upgrade passes before it becomes a call, each a small [`Gate`]
//! (or, for failed authentications, [`FailedAuthLayer`]) applied as its own layer, so the
//! stack that orders them reads one concern per line (see `src/admission.rs` in the root
//! crate).
//!
//! Carriers share IP addresses, so admitted calls are never capped per IP (the call caps
//! do that per tenant); per IP we only limit the rate of upgrade attempts and of failures.
//! An address over its failure quota is not refused outright: its attempts are throttled,
//! a failure answers 429, and a request that authenticates is let through, so one tenant's
//! bad signatures cannot lock another tenant out of a carrier address they share.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use tower::{Layer, Service};

use super::client_ip::ClientIp;
use super::limit::{Refusal, Standing};
use super::limits::{Limits, Pending};

/// The admission policy, shared by every carrier route.
#[derive(Debug)]
pub struct Admission {
    /// Allowed `Origin` values; a request without `Origin` (every carrier) passes.
    pub allowed_origins: Vec<String>,
    /// The rate state: per-IP upgrades, failed authentications, the gateway-wide budget
    /// (in this process, or shared by the cluster).
    pub limits: Arc<dyn Limits>,
}

impl Admission {
    /// 403 unless the request's `Origin`, if any, is on the allow-list.
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let allowed = origin
            .to_str()
            .is_ok_and(|o| self.allowed_origins.iter().any(|a| a == o));
        match allowed {
            true => Ok(()),
            false => Err(Rejection::new(StatusCode::FORBIDDEN, "origin", None)),
        }
    }

    /// Sweeps idle limiter state (call periodically).
    pub fn sweep(&self) {
        self.limits.sweep();
    }
}

/// True for a well-formed WebSocket opening handshake (RFC 6455 §4.2.1): `GET`,
/// `Connection: upgrade`, `Upgrade: websocket`, a key and version 13.
pub fn is_websocket_upgrade(method: &Method, headers: &HeaderMap) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    method == Method::GET
        && has_token(header::CONNECTION, "upgrade")
        && has_token(header::UPGRADE, "websocket")
        && headers.contains_key(header::SEC_WEBSOCKET_KEY)
        && headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13")
}

/// Why admission refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// 403, 429 or 503.
    pub status: StatusCode,
    /// Metric label and body.
    pub reason: &'static str,
    /// When to come back.
    pub retry_after: Option<Duration>,
}

impl Rejection {
    /// A refusal with `status`, counted under `reason`.
    pub fn new(status: StatusCode, reason: &'static str, retry_after: Option<Duration>) -> Self {
        Self {
            status,
            reason,
            retry_after,
        }
    }
}

impl From<Refusal> for Rejection {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::TooMany(wait) => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", Some(wait))
            }
            Refusal::Blocked(wait) => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "blocked", Some(wait))
            }
            Refusal::Overloaded(wait) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", Some(wait))
            }
            Refusal::Unavailable => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_unavailable",
                Some(Duration::from_secs(1)),
            ),
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let mut response = reject(self.status, self.reason, self.retry_after);
        if self.reason == "not_upgrade" {
            let headers = response.headers_mut();
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        response
    }
}

/// A short refusal with `Retry-After` (whole seconds, at least 1) and a counter.
pub fn reject(status: StatusCode, reason: &'static str, retry_after: Option<Duration>) -> Response {
    metrics::counter!("callgate_upgrades_rejected_total", "reason" => reason).increment(1);
    tracing::info!(status = status.as_u16(), reason, "upgrade refused");
    let mut response = (status, format!("{reason}\n")).into_response();
    if let Some(wait) = retry_after {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    }
    response
}

/// One admission check that decides on its own: inspects (and may extend) a request, or
/// refuses it. Every `Gate` is an [`AsyncGate`] whose answer is ready at once.
pub trait Gate {
    /// `Err` answers the request with the rejection; nothing inside runs.
    fn admit<B>(&self, request: &mut Request<B>) -> Result<(), Rejection>;
}

/// An admission check that must ask someone else (shared state): takes the request and
/// gives it back, possibly extended, or refuses it.
pub trait AsyncGate: Clone + Send + Sync + 'static {
    /// `Err` answers the request with the rejection; nothing inside runs.
    fn admit<B: Send + 'static>(
        &self,
        request: Request<B>,
    ) -> Pending<'static, Result<Request<B>, Rejection>>;
}

impl<G: Gate + Clone + Send + Sync + 'static> AsyncGate for G {
    fn admit<B: Send + 'static>(
        &self,
        mut request: Request<B>,
    ) -> Pending<'static, Result<Request<B>, Rejection>> {
        let decided = Gate::admit(self, &mut request).map(|()| request);
        Box::pin(std::future::ready(decided))
    }
}

/// Applies a [`Gate`] or an [`AsyncGate`] in front of a service.
#[derive(Debug, Clone)]
pub struct GateLayer<G>(G);

impl<G> GateLayer<G> {
    /// Check every request with `gate`.
    pub fn new(gate: G) -> Self {
        Self(gate)
    }
}

impl<G: Clone, S> Layer<S> for GateLayer<G> {
    type Service = GateService<G, S>;
    fn layer(&self, inner: S) -> Self::Service {
        GateService {
            gate: self.0.clone(),
            inner,
        }
    }
}

/// See [`GateLayer`].
#[derive(Debug, Clone)]
pub struct GateService<G, S> {
    gate: G,
    inner: S,
}

impl<G, S, B> Service<Request<B>> for GateService<G, S>
where
    G: AsyncGate,
    B: Send + 'static,
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pending<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The service that was polled ready goes into the future; a clone stays behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let admit = AsyncGate::admit(&self.gate, request);
        Box::pin(async move {
            match admit.await {
                Ok(request) => inner.call(request).await,
                Err(rejection) => Ok(rejection.into_response()),
            }
        })
    }
}

/// The client address the client-IP layer outside found.
fn client_ip<B>(request: &Request<B>) -> ClientIp {
    request
        .extensions()
        .get::<ClientIp>()
        .copied()
        .unwrap_or(ClientIp([0, 0, 0, 0].into()))
}

/// 403 for a browser `Origin` not on the allow-list; a request without one (every
/// carrier) passes.
#[derive(Debug, Clone)]
pub struct OriginAllowList(pub Arc<Admission>);

impl Gate for OriginAllowList {
    fn admit<B>(&self, request: &mut Request<B>) -> Result<(), Rejection> {
        self.0.check_origin(request.headers())
    }
}

/// 426 for anything but a well-formed WebSocket upgrade, before any limiter is touched.
#[derive(Debug, Clone, Copy)]
pub struct UpgradeShape;

impl Gate for UpgradeShape {
    fn admit<B>(&self, request: &mut Request<B>) -> Result<(), Rejection> {
        match is_websocket_upgrade(request.method(), request.headers()) {
            true => Ok(()),
            false => Err(Rejection::new(
                StatusCode::UPGRADE_REQUIRED,
                "not_upgrade",
                None,
            )),
        }
    }
}

/// 429 when one client address upgrades faster than its quota.
#[derive(Debug, Clone)]
pub struct PerIpLimit(pub Arc<Admission>);

impl AsyncGate for PerIpLimit {
    fn admit<B: Send + 'static>(
        &self,
        request: Request<B>,
    ) -> Pending<'static, Result<Request<B>, Rejection>> {
        let limits = self.0.limits.clone();
        Box::pin(async move {
            limits.per_ip(client_ip(&request).key()).await?;
            Ok(request)
        })
    }
}

/// 503 when the gateway-wide upgrade budget is spent. Goes inside the route's auth, so that
/// no refused request, whoever sent it, spends the budget every carrier shares.
#[derive(Debug, Clone)]
pub struct GlobalBudget(pub Arc<Admission>);

impl AsyncGate for GlobalBudget {
    fn admit<B: Send + 'static>(
        &self,
        request: Request<B>,
    ) -> Pending<'static, Result<Request<B>, Rejection>> {
        let limits = self.0.limits.clone();
        Box::pin(async move {
            limits.global().await?;
            Ok(request)
        })
    }
}

/// Applies [`FailedAuthService`]: the failed-authentication standing of the client address
/// before, and the count of its failures (401 and 403 from inside) after.
#[derive(Debug, Clone)]
pub struct FailedAuthLayer(Arc<Admission>);

impl FailedAuthLayer {
    /// Keep the standing in `admission.failures`.
    pub fn new(admission: Arc<Admission>) -> Self {
        Self(admission)
    }
}

impl<S> Layer<S> for FailedAuthLayer {
    type Service = FailedAuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        FailedAuthService {
            inner,
            admission: self.0.clone(),
        }
    }
}

/// See [`FailedAuthLayer`]. On probation (over the failure quota) attempts are throttled and
/// a failure answers 429; a request that authenticates passes.
#[derive(Debug, Clone)]
pub struct FailedAuthService<S> {
    inner: S,
    admission: Arc<Admission>,
}

impl<S, B> Service<Request<B>> for FailedAuthService<S>
where
    B: Send + 'static,
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let ip = client_ip(&request);
        let limits = self.admission.limits.clone();
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let standing = match limits.standing(ip.key()).await {
                Ok(standing) => standing,
                Err(refusal) => return Ok(Rejection::from(refusal).into_response()),
            };
            let response = inner.call(request).await?;
            if matches!(
                response.status(),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            ) {
                limits.record_failure(ip.key()).await;
                if let Standing::Probation(wait) = standing {
                    // A blocked address learns nothing from its failures but when to return.
                    return Ok(Rejection::from(Refusal::Blocked(wait)).into_response());
                }
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        h
    }

    #[test]
    fn only_websocket_upgrades_pass_the_shape_check() {
        assert!(is_websocket_upgrade(&Method::GET, &upgrade_headers()));
        assert!(!is_websocket_upgrade(&Method::POST, &upgrade_headers()));
        for missing in [
            header::CONNECTION,
            header::UPGRADE,
            header::SEC_WEBSOCKET_KEY,
            header::SEC_WEBSOCKET_VERSION,
        ] {
            let mut h = upgrade_headers();
            h.remove(&missing);
            assert!(!is_websocket_upgrade(&Method::GET, &h), "without {missing}");
        }
        let mut old = upgrade_headers();
        old.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert!(!is_websocket_upgrade(&Method::GET, &old));
    }
}
