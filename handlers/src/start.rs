//! `start`: create the session and open the upstream. The one handler that may wait: a call
//! that authenticates in `start` is admitted first (its token spent and its cap slot taken,
//! which in a cluster asks Redis). The connection awaits each event before it reads the
//! next, so the call's frames are still handled strictly in order.

use std::future::Ready;
use std::sync::Arc;
use std::task::{Context, Poll};

use callgate_layers::http::limits::Pending;
use futures_util::future::Either;
use tower::Service;

use crate::call::{CallContext, Flow, StartAdmission, StartRejected};
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

    fn handle(&self, start: Start, admission: Option<StartAdmission>) -> Result<Flow, EventError> {
        let session = self.ctx.begin(start, admission)?;
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

impl Service<Start> for StartHandler {
    type Response = Flow;
    type Error = EventError;
    type Future =
        Either<Ready<Result<Flow, EventError>>, Pending<'static, Result<Flow, EventError>>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), EventError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, start: Start) -> Self::Future {
        let auth = match &self.ctx.start_auth {
            // A second `start` is refused before it can spend anything.
            Some(auth) if !self.ctx.is_started() => auth.clone(),
            _ => return Either::Left(std::future::ready(self.handle(start, None))),
        };
        let handler = self.clone();
        Either::Right(Box::pin(async move {
            let admission = auth
                .admit(&start)
                .await
                .map_err(|rejected| match rejected {
                    StartRejected::Unauthorized => EventError::Unauthorized,
                    StartRejected::Overloaded => EventError::Overloaded,
                })?;
            handler.handle(start, Some(admission))
        }))
    }
}
