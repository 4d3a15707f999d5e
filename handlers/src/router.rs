//! [`EventRouter`]: a `tower::Service<Event>` that dispatches each kind to its handler.

use std::sync::Arc;
use std::task::{Context, Poll};

use callgate_layers::http::limits::Pending;
use futures_util::future::Either;
use std::future::Ready;
use tower::Service;

use crate::call::{CallContext, Flow};
use crate::dtmf::DtmfHandler;
use crate::error::EventError;
use crate::event::Event;
use crate::mark::MarkHandler;
use crate::media::MediaHandler;
use crate::start::StartHandler;
use crate::stop::StopHandler;

/// Dispatches events to one handler service per kind. Handlers do their work synchronously
/// and return ready futures (only the admission of a token-in-start call waits), and the
/// connection awaits each event before the next, so frames are handled strictly in order.
#[derive(Debug)]
pub struct EventRouter {
    start: StartHandler,
    media: MediaHandler,
    dtmf: DtmfHandler,
    mark: MarkHandler,
    stop: StopHandler,
    carrier: &'static str,
}

impl EventRouter {
    /// The router of one connection.
    pub fn new(ctx: Arc<CallContext>) -> Self {
        Self {
            carrier: ctx.dialect.name(),
            start: StartHandler::new(ctx.clone()),
            media: MediaHandler::new(ctx.clone()),
            dtmf: DtmfHandler::new(ctx.clone()),
            mark: MarkHandler::new(ctx.clone()),
            stop: StopHandler::new(ctx),
        }
    }
}

impl Service<Event> for EventRouter {
    type Response = Flow;
    type Error = EventError;
    type Future =
        Either<Ready<Result<Flow, EventError>>, Pending<'static, Result<Flow, EventError>>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), EventError>> {
        // Every handler is always ready (they hold no capacity of their own).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, event: Event) -> Self::Future {
        Either::Left(match event {
            Event::Start(e) => return self.start.call(e),
            Event::Media(e) => self.media.call(e),
            Event::Dtmf(e) => self.dtmf.call(e),
            Event::Mark(e) => self.mark.call(e),
            Event::Stop(e) => self.stop.call(e),
            Event::Connected | Event::Ack(_) => std::future::ready(Ok(Flow::Continue)),
            Event::Unknown(name) => {
                metrics::counter!("callgate_unknown_events_total", "carrier" => self.carrier)
                    .increment(1);
                // Debug-formatted: the name is the carrier's text, quoted and escaped.
                tracing::info!(event = ?name, "unknown carrier event ignored");
                std::future::ready(Ok(Flow::Ignored))
            }
        })
    }
}
