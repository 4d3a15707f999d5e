//! `start`: create the session and open the upstream.

use std::sync::Arc;
use std::task::{Context, Poll};

use std::future::{ready, Ready};
use tower::Service;

use crate::call::{CallContext, Flow};
use crate::error::EventError;
use crate::event::Start;

/// Handles `start`.
#[derive(Debug, Clone)]
pub struct StartHandler {
    ctx: Arc<CallContext>,
}

impl StartHandler {
    /// A handler for one connection.
    pub fn new(ctx: Arc<CallContext>) -> Self {
        Self { ctx }
    }
}

impl Service<Start> for StartHandler {
    type Response = Flow;
    type Error = EventError;
    type Future = Ready<Result<Flow, EventError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), EventError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, start: Start) -> Self::Future {
        ready(self.ctx.begin(&start).map(|session| {
            let span = tracing::Span::current();
            span.record("call_sid", session.call_sid.as_str());
            span.record("stream_sid", session.stream_sid.as_str());
            tracing::info!(
                call_sid = %session.call_sid,
                stream_sid = %session.stream_sid,
                format = ?session.media_format,
                parameters = session.custom_parameters.len(),
                "call started"
            );
            Flow::Continue
        }))
    }
}
