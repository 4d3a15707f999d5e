//! The per-connection event stack: a real `tower::Service<Frame>`.
//!
//! `ServiceBuilder` reads top-down, outermost first. There is no timeout layer: every
//! handler's future is ready when `call` returns (the handlers are synchronous; the slow
//! work, the upstream, happens in the bridge task, which has deadlines of its own). The one
//! exception is the `start` of a call that authenticates in `start`: its admission may ask
//! the cluster's Redis, and each of those commands has its own limit
//! (`cluster.timeout_ms`), so a timeout here would only repeat it.

use std::sync::Arc;

use callgate_handlers::dialect::Hints;
use callgate_handlers::event::{Event, Frame};
use callgate_handlers::{CallContext, EventRouter, Flow};
use callgate_layers::event::{CatchPanicLayer, TraceLayer, ValidateLayer};
use callgate_layers::BoxError;
use tower::{Service, ServiceBuilder};
use tracing::Span;

/// Builds the stack for one connection; `hints` are what the upgrade request and the route
/// said (call id in the path, Exotel's `?sample-rate=`, Telnyx's outbound codec).
pub fn build(
    ctx: Arc<CallContext>,
    hints: Hints,
) -> impl Service<Frame, Response = Flow, Error = BoxError, Future: Send> + Send {
    let dialect = ctx.dialect;
    ServiceBuilder::new()
        // Frame → typed Event for this route's dialect; rejects bad input before anything
        // else runs.
        .layer(ValidateLayer::new(move |frame: Frame| {
            dialect.decode_with(&frame, &hints)
        }))
        // A span per event, inside the call span, except media: 50 a second would drown the
        // trace (they are counted on the call span instead).
        .layer(TraceLayer::new(|event: &Event| match event {
            Event::Media(_) => Span::none(),
            other => tracing::debug_span!("event", kind = other.kind()),
        }))
        // A panic in a handler becomes an error: this call closes with 1011, no other call
        // notices. Inside the trace layer, so the span records it.
        .layer(CatchPanicLayer::new())
        .service(EventRouter::new(ctx))
}
