//! Turn a panic in the inner service (in `call` or while polling its future) into an error,
//! so one bad request closes its own connection and nothing else.
//!
//! ```
//! use callgate_layers::event::{CatchPanicLayer, Panicked};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap(); rt.block_on(async {
//! let svc = ServiceBuilder::new()
//!     .layer(CatchPanicLayer::new())
//!     .service(service_fn(|n: u32| async move {
//!         if n == 0 { panic!("zero") }
//!         Ok::<_, std::convert::Infallible>(n)
//!     }));
//! let err = svc.oneshot(0).await.unwrap_err();
//! assert!(err.downcast_ref::<Panicked>().is_some());
//! # })
//! ```

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::BoxError;

/// A panic caught by [`CatchPanic`], with its message.
#[derive(Debug, Clone)]
pub struct Panicked {
    /// The panic payload, when it was a string.
    pub message: String,
}

impl std::fmt::Display for Panicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "handler panicked: {}", self.message)
    }
}

impl std::error::Error for Panicked {}

impl Panicked {
    fn from_payload(payload: Box<dyn Any + Send>) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".into());
        Self { message }
    }
}

/// Applies [`CatchPanic`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CatchPanicLayer;

impl CatchPanicLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CatchPanic { inner }
    }
}

/// Catches panics of the inner service and returns [`Panicked`] instead.
#[derive(Debug, Clone)]
pub struct CatchPanic<S> {
    inner: S,
}

impl<S, Req> Service<Req> for CatchPanic<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match catch_unwind(AssertUnwindSafe(|| self.inner.poll_ready(cx))) {
            Ok(ready) => ready.map_err(Into::into),
            Err(payload) => Poll::Ready(Err(Panicked::from_payload(payload).into())),
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
            Ok(future) => ResponseFuture::Inner { future },
            Err(payload) => ResponseFuture::Panicked {
                panic: Some(Panicked::from_payload(payload)),
            },
        }
    }
}

pin_project! {
    /// Response future of [`CatchPanic`].
    #[project = Proj]
    pub enum ResponseFuture<F> {
        /// The inner future.
        Inner { #[pin] future: F },
        /// `call` itself panicked.
        Panicked { panic: Option<Panicked> },
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Proj::Inner { future } => match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                Ok(poll) => poll.map_err(Into::into),
                Err(payload) => Poll::Ready(Err(Panicked::from_payload(payload).into())),
            },
            Proj::Panicked { panic } => {
                Poll::Ready(Err(panic.take().expect("polled after completion").into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::ready;
    use tower::{service_fn, ServiceExt};

    #[tokio::test]
    async fn panic_in_call_and_in_future_both_become_errors() {
        let in_call = CatchPanicLayer::new().layer(service_fn(
            |_: ()| -> std::future::Ready<Result<(), BoxError>> { panic!("in call") },
        ));
        let err = in_call.oneshot(()).await.unwrap_err();
        assert_eq!(err.downcast_ref::<Panicked>().unwrap().message, "in call");

        let in_future = CatchPanicLayer::new().layer(service_fn(|_: ()| async {
            if true {
                panic!("in future {}", 7);
            }
            Ok::<(), BoxError>(())
        }));
        let err = in_future.oneshot(()).await.unwrap_err();
        assert_eq!(
            err.downcast_ref::<Panicked>().unwrap().message,
            "in future 7"
        );

        let fine = CatchPanicLayer::new().layer(service_fn(|n: u8| ready(Ok::<_, BoxError>(n))));
        assert_eq!(fine.oneshot(3).await.unwrap(), 3);
    }
}
