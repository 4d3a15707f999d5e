//! The per-socket loop: one task per call, `select!` over the carrier socket, the outbox and
//! shutdown. It owns the carrier socket and is the only place that sends a close frame.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use callgate_handlers::bridge::Downstream;
use callgate_handlers::dialect::{Writer, CONNECTED_GREETING};
use callgate_handlers::event::{Frame, Outbound};
use callgate_handlers::{CallContext, Flow};
use futures_util::SinkExt;
use tokio::sync::mpsc;
use tower::{Service, ServiceExt};
use tracing::Instrument;

use crate::close::{classify, CloseReason, Verdict};
use crate::routes::{AppState, CallAdmission, Route};
use callgate_layers::http::limit::{quota, GlobalLimiter};

/// Outbox bound: a few seconds of model audio at typical delta sizes. When full the bridge
/// waits, which slows its reading of the upstream (backpressure, never unbounded memory).
const OUTBOX: usize = 256;

/// Serves one upgraded carrier socket until the call ends.
pub async fn serve(
    socket: WebSocket,
    state: AppState,
    route: Arc<Route>,
    admission: CallAdmission,
) {
    let id = state.next_call_id();
    let span = tracing::info_span!(
        "call",
        carrier = route.dialect.name(),
        route = %route.path,
        call_id = id,
        call_sid = tracing::field::Empty,
        stream_sid = tracing::field::Empty,
        close_code = tracing::field::Empty,
        frames_in = tracing::field::Empty,
        frames_out = tracing::field::Empty,
        bad_frames = tracing::field::Empty,
        tenant = admission.identity.tenant.as_deref(),
        subject = admission.identity.subject.as_deref(),
    );
    let carrier = route.dialect.name();
    metrics::gauge!("callgate_calls_active", "carrier" => carrier).increment(1.0);
    let close = run(socket, &state, &route, id, admission)
        .instrument(span)
        .await;
    metrics::gauge!("callgate_calls_active", "carrier" => carrier).decrement(1.0);
    metrics::counter!("callgate_calls_total", "carrier" => carrier, "outcome" => close.outcome())
        .increment(1);
}

async fn run(
    mut socket: WebSocket,
    state: &AppState,
    route: &Route,
    id: u64,
    admission: CallAdmission,
) -> CloseReason {
    let CallAdmission {
        client_ip,
        identity,
        start_auth,
        permit,
    } = admission;
    // Held for the whole call: the call-cap slot is free again only when the call ends.
    let _permit = permit;
    let deferred_auth = start_auth.is_some();
    let (outbox, mut downstream) = mpsc::channel(OUTBOX);
    let ctx = CallContext::with_auth(
        id,
        route.dialect,
        state.store.clone(),
        state.bridge.clone(),
        outbox,
        identity,
        start_auth,
    );
    let mut stack = crate::pipeline::build(ctx.clone(), state.calls.event_timeout);
    // Per-socket message rate: a flood from one carrier socket cannot starve the others.
    let rate = GlobalLimiter::new(quota(
        state.calls.messages_per_second,
        state.calls.message_burst,
    ));
    let start_deadline = tokio::time::sleep(state.security.start_deadline());
    tokio::pin!(start_deadline);
    let mut writer: Option<Writer> = None;
    let mut frames = Vec::new();
    let mut bad_streak = 0u32;
    let mut bad_total = 0u64;
    tracing::debug!("carrier connected");

    if route.send_connected
        && socket
            .send(Message::Text(CONNECTED_GREETING.into()))
            .await
            .is_err()
    {
        ctx.finish(state.calls.upstream_close_wait).await;
        return CloseReason::NORMAL;
    }

    let close = loop {
        tokio::select! {
            inbound = socket.recv() => {
                let frame = match inbound {
                    Some(Ok(Message::Text(text))) => Frame::Text(text.into()),
                    Some(Ok(Message::Binary(bytes))) => Frame::Binary(bytes),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    // The carrier hung up without `stop`: same as `stop`, but no close frame
                    // is owed.
                    Some(Ok(Message::Close(_))) | None => break None,
                    Some(Err(error)) => break Some(socket_error(error)),
                };
                if rate.check().is_err() {
                    metrics::counter!("callgate_bad_frames_total", "carrier" => route.dialect.name(), "reason" => "flood").increment(1);
                    tracing::warn!("carrier message rate exceeded");
                    break Some(CloseReason::FLOOD);
                }
                let result = match stack.ready().await {
                    Ok(service) => service.call(frame).await,
                    Err(error) => Err(error),
                };
                match result {
                    Ok(Flow::Continue) => bad_streak = 0,
                    Ok(Flow::Stop) => break Some(CloseReason::NORMAL),
                    Err(error) => match classify(&error) {
                        Verdict::BadInput(reason) => {
                            bad_streak += 1;
                            bad_total += 1;
                            metrics::counter!("callgate_bad_frames_total", "carrier" => route.dialect.name(), "reason" => reason).increment(1);
                            if let Some(session) = ctx.session() {
                                session.counters.bad_frames.fetch_add(1, Relaxed);
                            }
                            tracing::warn!(%error, reason, streak = bad_streak, "invalid frame rejected");
                            if bad_streak >= state.calls.max_consecutive_bad_frames {
                                break Some(CloseReason::TOO_MANY_BAD_FRAMES);
                            }
                        }
                        Verdict::Close(reason) if reason == CloseReason::UNAUTHORIZED => {
                            state.security.admission.failures.record_failure(client_ip.key());
                            tracing::warn!(%error, "start refused");
                            break Some(reason);
                        }
                        Verdict::Close(reason) => {
                            tracing::error!(%error, code = reason.code, "call failed");
                            break Some(reason);
                        }
                    },
                }
                if writer.is_none() {
                    if let Some(session) = ctx.session() {
                        writer = Some(Writer::new(route.dialect, session.stream_sid.clone(), session.media_format));
                    }
                }
            }
            Some(item) = downstream.recv() => match item {
                Downstream::Out(message) => {
                    // Nothing may reach the carrier before `start` (it has no streamSid yet).
                    let Some(writer) = writer.as_mut() else { continue };
                    frames.clear();
                    if let Err(error) = writer.write(&message, &mut frames) {
                        tracing::warn!(%error, "undecodable upstream audio dropped");
                        continue;
                    }
                    if matches!(message, Outbound::Media { .. }) {
                        if let Some(session) = ctx.session() {
                            session.counters.frames_out.fetch_add(frames.len() as u64, Relaxed);
                        }
                    }
                    if send_all(&mut socket, &mut frames).await.is_err() {
                        break None;
                    }
                }
                Downstream::End(error) => {
                    tracing::warn!(%error, "ending call: upstream failed");
                    break Some(CloseReason::UPSTREAM);
                }
            },
            _ = &mut start_deadline, if deferred_auth && writer.is_none() => {
                state.security.admission.failures.record_failure(client_ip.key());
                tracing::warn!("no valid start before the deadline");
                break Some(CloseReason::AUTH_TIMEOUT);
            }
            _ = state.shutdown.cancelled() => break Some(CloseReason::GOING_AWAY),
        }
    };

    let session = ctx.finish(state.calls.upstream_close_wait).await;
    let span = tracing::Span::current();
    if let Some(session) = &session {
        let c = &session.counters;
        span.record("frames_in", c.frames_in.load(Relaxed));
        span.record("frames_out", c.frames_out.load(Relaxed));
    }
    span.record("bad_frames", bad_total);
    let send_close = close.is_some();
    let reason = close.unwrap_or(CloseReason::NORMAL);
    span.record("close_code", reason.code);
    if send_close {
        let frame = CloseFrame {
            code: reason.code,
            reason: reason.reason.as_ref().into(),
        };
        let _ = socket.send(Message::Close(Some(frame))).await;
    }
    tracing::info!(
        code = reason.code,
        duration_ms = session.as_ref().map(|s| s.age().as_millis() as u64),
        "call closed"
    );
    reason
}

async fn send_all(socket: &mut WebSocket, frames: &mut Vec<String>) -> Result<(), axum::Error> {
    for frame in frames.drain(..) {
        socket.feed(Message::Text(frame.into())).await?;
    }
    socket.flush().await
}

/// A read error: oversized messages close 1009, anything else is treated as a dead peer.
fn socket_error(error: axum::Error) -> CloseReason {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match error.into_inner().downcast::<WsError>() {
        Ok(e) if matches!(*e, WsError::Capacity(_)) => {
            metrics::counter!("callgate_bad_frames_total", "carrier" => "any", "reason" => "too_big").increment(1);
            tracing::warn!(error = %e, "oversized message");
            CloseReason::TOO_BIG
        }
        Ok(e) => {
            tracing::debug!(error = %e, "carrier socket error");
            CloseReason::PROTOCOL
        }
        Err(e) => {
            tracing::debug!(error = %e, "carrier socket error");
            CloseReason::PROTOCOL
        }
    }
}
