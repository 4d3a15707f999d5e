//! `stop`: the carrier ended the stream. The connection then closes the upstream with 1000
//! and the carrier socket with 1000 ([`crate::call::CallContext::finish`]).

use std::sync::Arc;

use crate::call::{sync_service, CallContext, Flow};
use crate::error::EventError;
use crate::event::Stop;

/// Handles `stop`.
#[derive(Debug, Clone)]
pub struct StopHandler {
    ctx: Arc<CallContext>,
}

impl StopHandler {
    /// A handler for one connection.
    pub fn new(ctx: Arc<CallContext>) -> Self {
        Self { ctx }
    }

    fn handle(&mut self, stop: Stop) -> Result<Flow, EventError> {
        // A stop before start still ends the socket: there is nothing to keep open.
        if let Some(session) = self.ctx.call_state() {
            session.owns(stop.stream_sid.as_deref())?;
        }
        tracing::info!(reason = stop.reason.as_deref(), "carrier sent stop");
        Ok(Flow::Stop)
    }
}

sync_service!(StopHandler, Stop);
