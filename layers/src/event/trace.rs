//! One span per request, made by a hook; the hook may return `Span::none()` for requests
//! too frequent to deserve a span (media frames), which costs nothing.
//!
//! ```
//! use callgate_layers::event::TraceLayer;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap(); rt.block_on(async {
//! let svc = ServiceBuilder::new()
//!     .layer(TraceLayer::new(|n: &u32| tracing::debug_span!("request", n)))
//!     .service(service_fn(|n: u32| async move { Ok::<_, std::convert::Infallible>(n) }));
//! assert_eq!(svc.oneshot(1).await.unwrap(), 1);
//! # })
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing::Span;

/// Makes the span of one request.
pub trait MakeSpan<Req> {
    /// The span for `request` (`Span::none()` for no span).
    fn make_span(&mut self, request: &Req) -> Span;
}

impl<Req, F> MakeSpan<Req> for F
where
    F: FnMut(&Req) -> Span,
{
    fn make_span(&mut self, request: &Req) -> Span {
        self(request)
    }
}

/// Applies [`Trace`].
#[derive(Debug, Clone)]
pub struct TraceLayer<M> {
    make_span: M,
}

impl<M> TraceLayer<M> {
    /// A layer whose spans come from `make_span`.
    pub fn new(make_span: M) -> Self {
        Self { make_span }
    }
}

impl<S, M: Clone> Layer<S> for TraceLayer<M> {
    type Service = Trace<S, M>;
    fn layer(&self, inner: S) -> Self::Service {
        Trace {
            inner,
            make_span: self.make_span.clone(),
        }
    }
}

/// Runs each request (its `call` and its future) inside the span the hook made, and
/// records a failure on it.
#[derive(Debug, Clone)]
pub struct Trace<S, M> {
    inner: S,
    make_span: M,
}

impl<S, M, Req> Service<Req> for Trace<S, M>
where
    S: Service<Req>,
    S::Error: std::fmt::Display,
    M: MakeSpan<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let span = self.make_span.make_span(&req);
        let future = span.in_scope(|| self.inner.call(req));
        ResponseFuture { future, span }
    }
}

pin_project! {
    /// Response future of [`Trace`].
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        span: Span,
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let result = std::task::ready!(this.future.poll(cx));
        if let Err(error) = &result {
            if !this.span.is_none() {
                tracing::debug!(%error, "event failed");
            }
        }
        Poll::Ready(result)
    }
}
