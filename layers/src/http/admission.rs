//! Admission: what an upgrade must pass before authentication, and the one thing it must
//! pass after.
//!
//! Before authentication, in order: the `Origin` allow-list, the shape of the request (a
//! request that is not a WebSocket upgrade is refused before any limiter state is touched),
//! the per-IP upgrade limit, and the failed-authentication standing of the address. After
//! authentication: the gateway-wide upgrade budget ([`GlobalBudgetLayer`]), so that no refused
//! request, whoever sent it, spends the budget every carrier shares.
//!
//! Carriers share IP addresses, so admitted calls are never capped per IP (that is the job
//! of [`super::caps`]); per IP we only limit the rate of upgrade attempts and of failures.
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
use super::limit::{FailureBlocklist, GlobalLimiter, KeyedLimiter, Refusal, Standing};

/// The admission policy, shared by every carrier route.
#[derive(Debug)]
pub struct Admission {
    /// Allowed `Origin` values; a request without `Origin` (every carrier) passes.
    pub allowed_origins: Vec<String>,
    /// Upgrade attempts per client IP.
    pub per_ip: KeyedLimiter,
    /// Failed authentications per client IP.
    pub failures: FailureBlocklist,
    /// Authenticated upgrades for the whole gateway.
    pub global: GlobalLimiter,
}

impl Admission {
    /// Decides before authentication. `Ok` carries the address's standing: on probation,
    /// a failed authentication answers 429 instead of 401.
    pub fn check(
        &self,
        method: &Method,
        headers: &HeaderMap,
        ip: ClientIp,
    ) -> Result<Standing, Rejection> {
        if let Some(origin) = headers.get(header::ORIGIN) {
            let allowed = origin
                .to_str()
                .is_ok_and(|o| self.allowed_origins.iter().any(|a| a == o));
            if !allowed {
                return Err(Rejection::new(StatusCode::FORBIDDEN, "origin", None));
            }
        }
        if !is_websocket_upgrade(method, headers) {
            return Err(Rejection::new(
                StatusCode::UPGRADE_REQUIRED,
                "not_upgrade",
                None,
            ));
        }
        let key = ip.key();
        self.per_ip
            .check(key)
            .and_then(|()| self.failures.standing(key))
            .map_err(Rejection::from)
    }

    /// Spends one unit of the gateway-wide upgrade budget (after authentication).
    pub fn spend_global(&self) -> Result<(), Rejection> {
        self.global.check().map_err(Rejection::from)
    }

    /// Sweeps idle limiter state (call periodically).
    pub fn sweep(&self) {
        self.per_ip.sweep();
        self.failures.sweep();
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
    fn new(status: StatusCode, reason: &'static str, retry_after: Option<Duration>) -> Self {
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

/// Applies [`AdmissionService`].
#[derive(Debug, Clone)]
pub struct AdmissionLayer {
    admission: Arc<Admission>,
}

impl AdmissionLayer {
    /// Enforce `admission`.
    pub fn new(admission: Arc<Admission>) -> Self {
        Self { admission }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = AdmissionService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AdmissionService {
            inner,
            admission: self.admission.clone(),
        }
    }
}

/// See the module docs. Needs [`ClientIp`] from the client-IP layer outside it.
#[derive(Debug, Clone)]
pub struct AdmissionService<S> {
    inner: S,
    admission: Arc<Admission>,
}

impl<S, B> Service<Request<B>> for AdmissionService<S>
where
    S: Service<Request<B>, Response = Response>,
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
        let ip = request
            .extensions()
            .get::<ClientIp>()
            .copied()
            .unwrap_or(ClientIp([0, 0, 0, 0].into()));
        let standing = match self
            .admission
            .check(request.method(), request.headers(), ip)
        {
            Ok(standing) => standing,
            Err(rejection) => return Box::pin(std::future::ready(Ok(rejection.into_response()))),
        };
        let admission = self.admission.clone();
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            if matches!(
                response.status(),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            ) {
                admission.failures.record_failure(ip.key());
                if let Standing::Probation(wait) = standing {
                    // A blocked address learns nothing from its failures but when to return.
                    return Ok(Rejection::from(Refusal::Blocked(wait)).into_response());
                }
            }
            Ok(response)
        })
    }
}

/// Applies [`GlobalBudgetService`]: the gateway-wide upgrade budget, spent only by requests
/// that have passed everything else. Goes inside the route's auth layer.
#[derive(Debug, Clone)]
pub struct GlobalBudgetLayer {
    admission: Arc<Admission>,
}

impl GlobalBudgetLayer {
    /// Spend `admission.global` on authenticated upgrades.
    pub fn new(admission: Arc<Admission>) -> Self {
        Self { admission }
    }
}

impl<S> Layer<S> for GlobalBudgetLayer {
    type Service = GlobalBudgetService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GlobalBudgetService {
            inner,
            admission: self.admission.clone(),
        }
    }
}

/// See [`GlobalBudgetLayer`]: 503 with `Retry-After` when the gateway's budget is spent.
#[derive(Debug, Clone)]
pub struct GlobalBudgetService<S> {
    inner: S,
    admission: Arc<Admission>,
}

impl<S, B> Service<Request<B>> for GlobalBudgetService<S>
where
    S: Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future =
        futures_util::future::Either<std::future::Ready<Result<Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        use futures_util::future::Either;
        match self.admission.spend_global() {
            Ok(()) => Either::Right(self.inner.call(request)),
            Err(rejection) => Either::Left(std::future::ready(Ok(rejection.into_response()))),
        }
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
