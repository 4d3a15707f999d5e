//! Admission: origin allow-list, failed-auth blocking, the global upgrade limit and the
//! per-IP upgrade limit, in that order, before authentication runs; and counting the
//! authentication failures that come back from inside.
//!
//! Carriers share IP addresses, so admitted calls are never capped per IP (that is the job
//! of [`super::caps`]); per IP we only limit the rate of upgrade attempts and of failures.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, Request, StatusCode};
use tower::{Layer, Service};

use super::client_ip::ClientIp;
use super::limit::{FailureBlocklist, GlobalLimiter, KeyedLimiter, Refusal};

/// The admission policy, shared by every carrier route.
#[derive(Debug)]
pub struct Admission {
    /// Allowed `Origin` values; a request without `Origin` (every carrier) passes.
    pub allowed_origins: Vec<String>,
    /// Upgrade attempts per client IP.
    pub per_ip: KeyedLimiter,
    /// Failed authentications per client IP.
    pub failures: FailureBlocklist,
    /// Upgrade attempts for the whole gateway.
    pub global: GlobalLimiter,
}

impl Admission {
    /// Decides before authentication.
    pub fn check(&self, origin: Option<&HeaderValue>, ip: ClientIp) -> Result<(), Rejection> {
        let rejection = |status, reason, retry_after| Rejection {
            status,
            reason,
            retry_after,
        };
        if let Some(origin) = origin {
            let allowed = origin
                .to_str()
                .is_ok_and(|o| self.allowed_origins.iter().any(|a| a == o));
            if !allowed {
                return Err(rejection(StatusCode::FORBIDDEN, "origin", None));
            }
        }
        let key = ip.key();
        let refused = self
            .failures
            .check(key)
            .and_then(|()| self.global.check())
            .and_then(|()| self.per_ip.check(key));
        match refused {
            Ok(()) => Ok(()),
            Err(Refusal::TooMany(wait)) => Err(rejection(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                Some(wait),
            )),
            Err(Refusal::Overloaded(wait)) => Err(rejection(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                Some(wait),
            )),
        }
    }

    /// Sweeps idle limiter state (call periodically).
    pub fn sweep(&self) {
        self.per_ip.sweep();
        self.failures.sweep();
    }
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

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        reject(self.status, self.reason, self.retry_after)
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
        if let Err(response) = self
            .admission
            .check(request.headers().get(header::ORIGIN), ip)
        {
            return Box::pin(std::future::ready(Ok(response.into_response())));
        }
        let admission = self.admission.clone();
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            if matches!(
                response.status(),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            ) {
                admission.failures.record_failure(ip.key());
            }
            Ok(response)
        })
    }
}
