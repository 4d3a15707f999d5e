//! `start`: create the session and open the upstream.

use std::sync::Arc;

use crate::call::{sync_service, CallContext, Flow};
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

    fn handle(&mut self, start: Start) -> Result<Flow, EventError> {
        let session = self.ctx.begin(start)?;
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
        Ok(Flow::Continue)
    }
}

sync_service!(StartHandler, Start);
