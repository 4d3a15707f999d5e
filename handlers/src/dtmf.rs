//! `dtmf`: count the key press. Digits never reach logs (they may be card numbers).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};

use std::future::{ready, Ready};
use tower::Service;

use crate::call::{CallContext, Flow};
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

    fn handle(&self, dtmf: Dtmf) -> Result<Flow, EventError> {
        let (session, _) = self.ctx.started()?;
        if dtmf.stream_sid != session.stream_sid {
            return Err(EventError::StreamSidMismatch);
        }
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
        tracing::debug!(digit = "[redacted]", "dtmf received");
        Ok(Flow::Continue)
    }
}

impl Service<Dtmf> for DtmfHandler {
    type Response = Flow;
    type Error = EventError;
    type Future = Ready<Result<Flow, EventError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), EventError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dtmf: Dtmf) -> Self::Future {
        ready(self.handle(dtmf))
    }
}
