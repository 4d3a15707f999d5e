//! `mark`: the carrier played (or cleared) everything before one of our marks.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::call::{sync_service, CallContext, Flow};
use crate::error::EventError;
use crate::event::Mark;

/// Handles `mark` echoes.
#[derive(Debug, Clone)]
pub struct MarkHandler {
    ctx: Arc<CallContext>,
}

impl MarkHandler {
    /// A handler for one connection.
    pub fn new(ctx: Arc<CallContext>) -> Self {
        Self { ctx }
    }

    fn handle(&mut self, mark: Mark) -> Result<Flow, EventError> {
        let (session, bridge) = self.ctx.started()?;
        session.owns(mark.stream_sid.as_deref())?;
        session.touch();
        session.counters.marks_acked.fetch_add(1, Relaxed);
        bridge.mark_played(&mark.name);
        if let Some(round_trip) = session.mark_echoed(&mark.name) {
            metrics::histogram!("callgate_mark_round_trip_seconds")
                .record(round_trip.as_secs_f64());
        }
        tracing::info!(name = ?mark.name, "mark played");
        Ok(Flow::Continue)
    }
}

sync_service!(MarkHandler, Mark);
