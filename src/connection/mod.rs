//! The per-socket loop: one task per call, `select!` over the carrier socket, the outbox and
//! shutdown. It owns the carrier socket and is the only place that sends a close frame.

use callgate_layers::util::sleep_until;
use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use callgate_handlers::call_state::CallState;
use callgate_handlers::dialect::{Dialect, Hints, OutFrame, Writer, CONNECTED_GREETING};
use callgate_handlers::event::Frame;
use callgate_handlers::recording::KeypadSilence;
use callgate_handlers::tape::Tape;
use callgate_handlers::{CallContext, Flow};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tower::{Service, ServiceExt};
use tracing::Instrument;

use crate::carrier_socket::{linger, send_close, CarrierSocket};
use crate::pacer::Pacer;

use crate::close::{rescue, CloseReason, Ending, Rescue};

use crate::config::RouteDialect;
use crate::routes::{AppState, CallAdmission, Route};

mod inbound;
mod outbound;
use inbound::{detect_dialect, frame_in};
use outbound::send_frames;

/// Outbox bound: a few seconds of model audio at typical delta sizes. When full the bridge
/// waits, which slows its reading of the upstream (backpressure, never unbounded memory).
const OUTBOX: usize = 256;

/// Serves one upgraded carrier socket until the call ends.
pub async fn serve(
    socket: CarrierSocket,
    state: AppState,
    route: Arc<Route>,
    admission: CallAdmission,
    opened: Hints,
) {
    let id = state.next_call_id();
    let label = match route.dialect {
        RouteDialect::Fixed(d) => d.name(),
        RouteDialect::Detect => "detect",
    };
    let span = tracing::info_span!(
        "call",
        carrier = label,
        route = %route.path,
        call_id = id,
        call_sid = tracing::field::Empty,
        stream_sid = tracing::field::Empty,
        close_code = tracing::field::Empty,
        frames_in = tracing::field::Empty,
        frames_out = tracing::field::Empty,
        bad_frames = tracing::field::Empty,
        audio_dropped = tracing::field::Empty,
        outcome = tracing::field::Empty,
        model = %state.model,
        tenant = admission.identity.tenant.as_deref(),
        subject = admission.identity.subject.as_deref(),
        // OpenTelemetry semantic conventions where one exists.
        "otel.kind" = "server",
        "url.path" = %route.path,
        "client.address" = %admission.client_ip.0,
        "otel.status_code" = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    // With trace export on, the call's log lines carry its trace and span ids (JSON logs
    // list the enclosing spans' fields), so a log line leads to its trace.
    {
        use opentelemetry::trace::TraceContextExt as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let context = span.context();
        let ids = context.span().span_context().clone();
        if ids.is_valid() {
            span.record("trace_id", ids.trace_id().to_string());
            span.record("span_id", ids.span_id().to_string());
        }
    }
    let closed = async move {
        let _live = state.live_call();
        let mut socket = socket;
        let mut queued = VecDeque::new();
        let client_ip = admission.client_ip;
        let tape = state.tapes.as_ref().map(|tapes| tapes.open(id, &route.path, label));
        let dialect = match route.dialect {
            RouteDialect::Fixed(dialect) => dialect,
            RouteDialect::Detect => match detect_dialect(&mut socket, &mut queued, tape.as_deref()).await {
                Ok(dialect) => {
                    tracing::Span::current().record("carrier", dialect.name());
                    dialect
                }
                Err(why) => {
                    tracing::warn!(why, "carrier not recognised");
                    let rescue = record(&state, "detect", client_ip, rescue(Ending::Undetected(&why)));
                    let close = rescue.close.unwrap_or(CloseReason::PROTOCOL);
                    metrics::counter!("callgate_calls_total", "carrier" => "detect", "outcome" => close.outcome()).increment(1);
                    send_close(&mut socket, &close).await;
                    return (socket, close);
                }
            },
        };
        let carrier = dialect.name();
        metrics::gauge!("callgate_calls_active", "carrier" => carrier).increment(1.0);
        // Dialects without a `start` begin the call as the socket opens.
        if dialect.starts_on_open() {
            queued.push_front(Frame::Opened);
        }
        // A panic anywhere in this call's loop closes this call with 1011; nothing else notices.
        let opening = Opening {
            hints: opened,
            queued,
            tape,
        };
        let run = Call::run(&mut socket, &state, &route, dialect, id, admission, opening);
        let close = match std::panic::AssertUnwindSafe(run).catch_unwind().await {
            Ok(close) => close,
            Err(_) => {
                tracing::error!("call task panicked");
                state.store.remove(id);
                let rescue = record(&state, carrier, client_ip, rescue(Ending::Panicked));
                let close = rescue.close.unwrap_or(CloseReason::INTERNAL);
                send_close(&mut socket, &close).await;
                close
            }
        };
        metrics::gauge!("callgate_calls_active", "carrier" => carrier).decrement(1.0);
        metrics::counter!("callgate_calls_total", "carrier" => carrier, "outcome" => close.outcome()).increment(1);
        (socket, close)
    }
    .instrument(span)
    .await;
    // Outside the call span: the call is over, only the close handshake is left.
    let (mut socket, close) = closed;
    linger(&mut socket, &close).await;
}

/// What the socket's opening gave the call: the upgrade request's hints for the decoder,
/// and the frames read before the call began (detection, the opening signal).
struct Opening {
    hints: Hints,
    queued: VecDeque<Frame>,
    tape: Option<Arc<Tape>>,
}

/// How far ahead of playback the carrier may be sent audio, where that is bounded:
/// Voximplant drops what overflows its buffer; GPT-Live has no barge-in signal, so what the
/// carrier holds unplayed (at most 200 ms) is what the caller still hears after the model
/// stops for them.
fn pacing(dialect: Dialect, provider: callgate_handlers::bridge::Provider) -> Option<Duration> {
    match (dialect, provider) {
        (Dialect::Voximplant, _) => Some(Duration::from_secs(2)),
        (_, callgate_handlers::bridge::Provider::OpenaiLive) => Some(Duration::from_millis(200)),
        _ => None,
    }
}

/// What the carrier side of a started call needs: its session and its writer.
struct Started {
    call: Arc<CallState>,
    writer: Writer,
}

/// One call's loop state.
struct Call<'a> {
    state: &'a AppState,
    dialect: Dialect,
    ctx: Arc<CallContext>,
    /// Set once `start` has created the session; nothing goes to the carrier before.
    started: Option<Started>,
    frames: Vec<OutFrame>,
    bad_streak: u32,
    bad_total: u64,
    client_ip: callgate_layers::http::client_ip::ClientIp,
    /// Audio held back so the carrier is never far ahead of playback (see [`pacing`]).
    pacer: Option<Pacer>,
    /// Upstream delta received → carrier frame written (handle cached).
    latency_outbound: metrics::Histogram,
    /// While the fallback audio plays: when it will have played.
    fallback_until: Option<tokio::time::Instant>,
    /// The route's `recording` setting.
    route_recording: Option<bool>,
    /// The call's tape, when taped.
    tape: Option<Arc<Tape>>,
}

impl Call<'_> {
    async fn run(
        socket: &mut CarrierSocket,
        state: &AppState,
        route: &Route,
        dialect: Dialect,
        id: u64,
        admission: CallAdmission,
        opening: Opening,
    ) -> CloseReason {
        let Opening {
            hints,
            mut queued,
            tape,
        } = opening;
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
            dialect,
            state.store.clone(),
            state.bridge.clone(),
            outbox,
            identity,
            start_auth,
        );
        let mut stack = crate::pipeline::build(ctx.clone(), hints);
        let mut call = Call {
            state,
            dialect,
            ctx,
            started: None,
            frames: Vec::new(),
            bad_streak: 0,
            bad_total: 0,
            client_ip,
            pacer: pacing(dialect, state.bridge.provider).map(Pacer::new),
            latency_outbound: metrics::histogram!("callgate_gateway_latency_seconds", "direction" => "outbound"),
            fallback_until: None,
            route_recording: route.recording,
            tape: tape.clone(),
        };
        if let Some(tape) = tape {
            let _ = call.ctx.tape.set(tape);
        }
        // Per-socket frame budget, metered below tungstenite (every frame counts, control
        // and continuation frames too): a flood from one socket cannot starve the others.
        let flooded = socket.get_ref().flooded();
        // Every route has a start deadline; token-in-start routes a (usually shorter) one
        // of their own, whose expiry counts as a failed authentication.
        let start_deadline = tokio::time::sleep(match deferred_auth {
            true => state
                .security
                .start_deadline()
                .min(state.calls.start_deadline),
            false => state.calls.start_deadline,
        });
        tokio::pin!(start_deadline);
        // A half-open carrier socket must not keep a paid upstream session alive.
        let idle = tokio::time::sleep(state.calls.idle_timeout);
        tokio::pin!(idle);
        tracing::debug!("carrier connected");

        let mut ended = None;
        if route.send_connected
            && socket
                .send(Message::Text(CONNECTED_GREETING.into()))
                .await
                .is_err()
        {
            ended = Some(call.end(Ending::CarrierGone));
        }
        // Frames read before the call began (detection, the socket's opening).
        while ended.is_none() {
            let Some(frame) = queued.pop_front() else {
                break;
            };
            ended = call.on_frame(&mut stack, frame).await;
        }
        let ended = match ended {
            Some(ended) => ended,
            None => loop {
                tokio::select! {
                    inbound = socket.next() => {
                        let frame = match inbound {
                            Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => frame_in(message, call.tape.as_deref()),
                            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                            // The carrier hung up without `stop`: same as `stop`. tungstenite has
                            // queued the echo of its close frame; flushing sends it, so the peer
                            // sees its own code back instead of 1006.
                            Some(Ok(Message::Close(_))) => {
                                let _ = socket.flush().await;
                                break call.end(Ending::CarrierGone);
                            }
                            None => break call.end(Ending::CarrierGone),
                            Some(Err(error)) => {
                                let ended = call.end(Ending::Socket(&error));
                                match ended.bad_frame {
                                    Some(reason) => tracing::warn!(%error, reason, "carrier socket refused a frame"),
                                    None => tracing::debug!(%error, "carrier socket error"),
                                }
                                break ended;
                            }
                        };
                        // Before the call has begun only a valid `start` is activity: a socket
                        // that sends anything else holds a call slot for nothing.
                        if call.started.is_some() {
                            idle.as_mut().reset(tokio::time::Instant::now() + state.calls.idle_timeout);
                        }
                        if let Some(ended) = call.on_frame(&mut stack, frame).await {
                            break ended;
                        }
                    }
                    Some(item) = downstream.recv() => {
                        if let Some(ended) = call.on_downstream(&mut *socket, item).await {
                            break ended;
                        }
                    }
                    _ = sleep_until(call.pacer.as_ref().and_then(Pacer::next_due)) => {
                        let frames = call.pacer.as_mut().map(Pacer::release).unwrap_or_default();
                        if send_frames(&mut *socket, frames, state.calls.carrier_write_timeout, call.tape.as_deref()).await.is_err() {
                            break call.end(Ending::CarrierGone);
                        }
                    }
                    _ = &mut start_deadline, if call.started.is_none() => {
                        tracing::warn!("no valid start before the deadline");
                        break call.end(Ending::NoStart { deferred_auth });
                    }
                    _ = flooded.notified() => {
                        tracing::warn!("carrier frame rate exceeded");
                        break call.end(Ending::Flood);
                    }
                    _ = &mut idle => {
                        tracing::warn!("no frame from the carrier within the idle timeout");
                        break call.end(Ending::Idle);
                    }
                    _ = state.hard_stop.cancelled() => break call.end(Ending::Shutdown),
                }
            },
        };
        // Nothing more goes to the carrier: a bridge blocked on a full outbox is released at
        // once, so it can close the upstream cleanly.
        drop(downstream);
        call.finish(socket, ended).await
    }

    /// Rescues one ending and records what it counts.
    fn end(&self, ending: Ending<'_>) -> Rescue {
        record(
            self.state,
            self.dialect.name(),
            self.client_ip,
            rescue(ending),
        )
    }

    /// Runs one inbound frame through the event stack; `Some` ends the call.
    async fn on_frame<S>(&mut self, stack: &mut S, frame: Frame) -> Option<Rescue>
    where
        S: Service<Frame, Response = Flow, Error = callgate_layers::BoxError>,
    {
        let result = match stack.ready().await {
            Ok(service) => service.call(frame).await,
            Err(error) => Err(error),
        };
        let outcome = match result {
            Ok(Flow::Continue) => {
                self.bad_streak = 0;
                None
            }
            Ok(Flow::Ignored) => None,
            Ok(Flow::Stop) => Some(self.end(Ending::Stopped)),
            Err(error) => {
                let rescued = self.end(Ending::Event(&error));
                match (&rescued.close, rescued.bad_frame) {
                    (None, reason) => {
                        self.bad_streak += 1;
                        self.bad_total += 1;
                        if let Some(session) = self.ctx.call_state() {
                            session.counters.bad_frames.fetch_add(1, Relaxed);
                        }
                        tracing::warn!(%error, reason, streak = self.bad_streak, "invalid frame rejected");
                        (self.bad_streak >= self.state.calls.max_consecutive_bad_frames)
                            .then(|| self.end(Ending::TooManyBadFrames))
                    }
                    (Some(close), _) => {
                        match close.is_error() {
                            true => tracing::error!(%error, code = close.code, "call failed"),
                            false => tracing::warn!(%error, code = close.code, "call refused"),
                        }
                        Some(rescued)
                    }
                }
            }
        };
        if self.started.is_none() {
            if let Some(session) = self.ctx.call_state() {
                let recording = self.start_recording(&session);
                if let Some(records) = &self.state.records {
                    records.follow(&session, recording);
                }
                if let Some(cluster) = &self.state.cluster {
                    cluster.follow(&session);
                }
                let writer = Writer::new(
                    self.dialect,
                    session.stream_sid.clone(),
                    session.outbound_format,
                );
                self.started = Some(Started {
                    call: session,
                    writer,
                });
            }
        }
        outcome
    }

    /// Starts the call's recording when its profile, else its route, else `[recording]` says
    /// so; the receiver learns where it went once it is complete.
    fn start_recording(
        &self,
        call: &CallState,
    ) -> Option<tokio::sync::oneshot::Receiver<crate::recording::RecordingInfo>> {
        let recordings = self.state.recordings.as_ref()?;
        let bridge = &self.state.bridge;
        let wanted = bridge
            .conversation
            .profile_of(call)
            .and_then(|p| p.recording)
            .or(self.route_recording)
            .unwrap_or(self.state.record_by_default);
        if !wanted {
            return None;
        }
        let keypad = KeypadSilence {
            enabled: bridge.dtmf.pci,
            terminator: bridge.dtmf.terminator,
            inter_digit_timeout: bridge.dtmf.inter_digit_timeout,
        };
        recordings.start(call, &crate::records::call_key(call), keypad)
    }

    async fn finish(self, socket: &mut CarrierSocket, ended: Rescue) -> CloseReason {
        let session = self.ctx.finish(self.state.calls.upstream_close_wait).await;
        let span = tracing::Span::current();
        if let Some(session) = &session {
            let c = &session.counters;
            span.record("frames_in", c.frames_in.load(Relaxed));
            span.record("frames_out", c.frames_out.load(Relaxed));
            span.record("audio_dropped", c.audio_dropped.load(Relaxed));
        }
        span.record("bad_frames", self.bad_total);
        let send = ended.send_close;
        let reason = ended.close.unwrap_or(CloseReason::NORMAL);
        if let Some(session) = &session {
            // Nothing more plays: the recording ends with the call.
            if let Some(recorder) = session.recorder.get() {
                recorder.finish();
            }
            session.publish(callgate_handlers::feed::FeedEvent::CallEnded {
                close_code: reason.code,
                outcome: reason.outcome(),
            });
        }
        span.record("close_code", reason.code);
        span.record("outcome", reason.outcome());
        if reason.is_error() {
            span.record("otel.status_code", "ERROR");
        }
        if send {
            if let Some(tape) = &self.tape {
                tape.carrier_close(reason.code);
            }
            send_close(socket, &reason).await;
        }
        tracing::info!(
            code = reason.code,
            duration_ms = session.as_ref().map(|s| s.age().as_millis() as u64),
            "call closed"
        );
        reason
    }
}

/// Records what a rescue counts: the carrier's bad input, a failed authentication of the
/// client address, a panic. Returns the rescue for the caller to act on.
fn record(
    state: &AppState,
    carrier: &'static str,
    client_ip: callgate_layers::http::client_ip::ClientIp,
    rescue: Rescue,
) -> Rescue {
    if let Some(reason) = rescue.bad_frame {
        metrics::counter!("callgate_bad_frames_total", "carrier" => carrier, "reason" => reason)
            .increment(1);
    }
    if rescue.failed_auth {
        // Counted in the background: in a cluster this is a Redis round trip, and the
        // call is over either way.
        let limits = state.security.admission.limits.clone();
        tokio::spawn(async move { limits.record_failure(client_ip.key()).await });
    }
    if rescue.panicked {
        metrics::counter!("callgate_panics_total").increment(1);
    }
    rescue
}
