//! `dtmf`: count the key press. Digits never reach logs (they may be card numbers).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::call::{sync_service, CallContext, Flow};
use crate::error::EventError;
use crate::event::Dtmf;

/// Handles `dtmf`.
#[derive(Debug, Clone)]
pub struct DtmfHandler {
    ctx: Arc<CallContext>,
}

impl DtmfHandler {
    /// A handler for one connection.
    pub fn new(ctx: Arc<CallContext>) -> Self {
        Self { ctx }
    }

    fn handle(&mut self, dtmf: Dtmf) -> Result<Flow, EventError> {
        let (session, bridge) = self.ctx.started()?;
        session.owns(dtmf.stream_sid.as_deref())?;
        session.touch();
        session.counters.dtmf.fetch_add(1, Relaxed);
        #[cfg(feature = "fault-injection")]
        if session
            .custom_parameters
            .get("callgate_fault")
            .map(String::as_str)
            == Some("panic_on_dtmf")
        {
            panic!("fault injection: panic_on_dtmf");
        }
        // The digit itself is never logged (it may be a card number).
        tracing::info!(digit = "[redacted]", "dtmf received");
        if let Some(recorder) = session.recorder.get() {
            recorder.digit(dtmf.digit);
        }
        bridge.dtmf(dtmf.digit);
        Ok(Flow::Continue)
    }
}

sync_service!(DtmfHandler, Dtmf);
