//! Decode and validate a request before the inner service sees it.
//!
//! ```
//! use callgate_layers::event::ValidateLayer;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap(); rt.block_on(async {
//! let svc = ServiceBuilder::new()
//!     .layer(ValidateLayer::new(|raw: &str| raw.parse::<u32>()))
//!     .service(service_fn(|n: u32| async move { Ok::<_, std::convert::Infallible>(n * 2) }));
//! assert_eq!(svc.clone().oneshot("21").await.unwrap(), 42);
//! assert!(svc.oneshot("x").await.is_err());
//! # })
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::BoxError;

/// Turns a raw request into the inner service's request type.
pub trait Decode<Raw> {
    /// The decoded request.
    type Output;
    /// Why a raw request was rejected.
    type Error: Into<BoxError>;
    /// Decodes one request.
    fn decode(&mut self, raw: Raw) -> Result<Self::Output, Self::Error>;
}

impl<Raw, F, T, E> Decode<Raw> for F
where
    F: FnMut(Raw) -> Result<T, E>,
    E: Into<BoxError>,
{
    type Output = T;
    type Error = E;
    fn decode(&mut self, raw: Raw) -> Result<T, E> {
        self(raw)
    }
}

/// Applies [`Validate`] with a decoder.
#[derive(Debug, Clone)]
pub struct ValidateLayer<D> {
    decoder: D,
}

impl<D> ValidateLayer<D> {
    /// A layer decoding with `decoder`.
    pub fn new(decoder: D) -> Self {
        Self { decoder }
    }
}

impl<S, D: Clone> Layer<S> for ValidateLayer<D> {
    type Service = Validate<S, D>;
    fn layer(&self, inner: S) -> Self::Service {
        Validate {
            inner,
            decoder: self.decoder.clone(),
        }
    }
}

/// Decodes each request; rejects it with the decoder's error or passes it on.
#[derive(Debug, Clone)]
pub struct Validate<S, D> {
    inner: S,
    decoder: D,
}

impl<Raw, S, D> Service<Raw> for Validate<S, D>
where
    D: Decode<Raw>,
    S: Service<D::Output>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, raw: Raw) -> Self::Future {
        match self.decoder.decode(raw) {
            Ok(request) => ResponseFuture::Inner {
                future: self.inner.call(request),
            },
            Err(error) => ResponseFuture::Rejected {
                error: Some(error.into()),
            },
        }
    }
}

pin_project! {
    /// Response future of [`Validate`].
    #[project = Proj]
    pub enum ResponseFuture<F> {
        /// The request was decoded and is being served.
        Inner { #[pin] future: F },
        /// The request was rejected.
        Rejected { error: Option<BoxError> },
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
            Proj::Inner { future } => future.poll(cx).map_err(Into::into),
            Proj::Rejected { error } => {
                Poll::Ready(Err(error.take().expect("polled after completion")))
            }
        }
    }
}
