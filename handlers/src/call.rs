//! [`CallContext`]: what every handler service of one connection shares.

use callgate_layers::util::lock;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::bridge::{self, BridgeConfig, BridgeHandle, Downstream};
use crate::call_state::{CallIdentity, CallState, CallStore};
use crate::dialect::Dialect;
use crate::error::EventError;
use crate::event::Start;

/// What a handler tells the connection loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading frames.
    Continue,
    /// Keep reading frames; the event was not understood (an unknown event name), so it
    /// neither counts as bad input nor ends a run of bad frames.
    Ignored,
    /// The carrier ended the stream: close normally.
    Stop,
}

/// Implements `tower::Service<$event>` for a handler whose work is synchronous: its
/// `handle(&mut self, $event) -> Result<Flow, EventError>` runs inside `call`, and the
/// future is already complete (so events of a call are handled strictly in order).
macro_rules! sync_service {
    ($handler:ty, $event:ty) => {
        impl tower::Service<$event> for $handler {
            type Response = $crate::call::Flow;
            type Error = $crate::error::EventError;
            type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

            fn poll_ready(
                &mut self,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Result<(), Self::Error>> {
                std::task::Poll::Ready(Ok(()))
            }

            fn call(&mut self, event: $event) -> Self::Future {
                std::future::ready(self.handle(event))
            }
        }
    };
}
pub(crate) use sync_service;

/// Checks a call's `start` before anything is spent on it, for routes whose carriers
/// cannot authenticate the upgrade (a token in `start.customParameters`).
pub trait StartAuth: Send + Sync + std::fmt::Debug {
    /// Admits or refuses the call (may ask the cluster's shared state).
    fn admit<'a>(
        &'a self,
        start: &'a Start,
    ) -> callgate_layers::http::limits::Pending<'a, Result<StartAdmission, StartRejected>>;
    /// The `customParameters` key that carries the credential (removed before the session
    /// stores the parameters).
    fn parameter(&self) -> &str;
}

/// An admitted `start`.
#[derive(Debug, Default)]
pub struct StartAdmission {
    /// Who is calling.
    pub identity: CallIdentity,
    /// Held for the call's lifetime (a call-cap permit).
    pub hold: Option<Box<dyn std::any::Any + Send + Sync>>,
}

/// A refused `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartRejected {
    /// Missing or invalid credentials (close 1008).
    Unauthorized,
    /// A call cap is full (close 1013).
    Overloaded,
}

#[derive(Debug, Default)]
struct Started {
    state: Option<Arc<CallState>>,
    bridge: Option<Arc<BridgeHandle>>,
    hold: Option<Box<dyn std::any::Any + Send + Sync>>,
}

/// One connection's shared state: its id, dialect, the store, the bridge and the outbox.
#[derive(Debug)]
pub struct CallContext {
    /// Gateway-local connection id.
    pub id: u64,
    /// The route's dialect.
    pub dialect: Dialect,
    /// All live calls.
    pub store: CallStore,
    /// Upstream settings.
    pub bridge_config: Arc<BridgeConfig>,
    /// Messages for the carrier (and the bridge's end-of-call signal).
    pub outbox: mpsc::Sender<Downstream>,
    /// Who the upgrade was authenticated as.
    pub identity: CallIdentity,
    /// Set when the call must authenticate in `start`.
    pub start_auth: Option<Arc<dyn StartAuth>>,
    /// The call's span (the context was created inside it); the bridge task runs in it.
    pub span: tracing::Span,
    /// The call's tape, when taped (handed to the call state at `start`).
    pub tape: std::sync::OnceLock<Arc<crate::tape::Tape>>,
    started: Mutex<Started>,
}

impl CallContext {
    /// A context for connection `id`.
    pub fn new(
        id: u64,
        dialect: Dialect,
        store: CallStore,
        bridge_config: Arc<BridgeConfig>,
        outbox: mpsc::Sender<Downstream>,
    ) -> Arc<Self> {
        Self::with_auth(
            id,
            dialect,
            store,
            bridge_config,
            outbox,
            CallIdentity::default(),
            None,
        )
    }

    /// A context whose upgrade authenticated as `identity`, and which must authenticate its
    /// `start` with `start_auth` when set.
    pub fn with_auth(
        id: u64,
        dialect: Dialect,
        store: CallStore,
        bridge_config: Arc<BridgeConfig>,
        outbox: mpsc::Sender<Downstream>,
        identity: CallIdentity,
        start_auth: Option<Arc<dyn StartAuth>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            id,
            dialect,
            store,
            bridge_config,
            outbox,
            identity,
            start_auth,
            span: tracing::Span::current(),
            tape: std::sync::OnceLock::new(),
            started: Mutex::new(Started::default()),
        })
    }

    /// True once `start` has created the call.
    pub fn is_started(&self) -> bool {
        self.lock().state.is_some()
    }

    /// Creates the call state and opens the upstream; a second `start` is an error.
    /// `admission` is what [`StartAuth`] said, on routes that authenticate in `start`.
    pub(crate) fn begin(
        &self,
        mut start: Start,
        admission: Option<StartAdmission>,
    ) -> Result<Arc<CallState>, EventError> {
        let mut started = self.lock();
        if started.state.is_some() {
            return Err(EventError::AlreadyStarted);
        }
        // Admission before money: the upstream opens only after the start is admitted.
        let identity = match &self.start_auth {
            None => self.identity.clone(),
            Some(auth) => {
                let admission = admission.ok_or(EventError::Unauthorized)?;
                started.hold = admission.hold;
                // The credential is not call data: it never reaches the session.
                start.custom_parameters.remove(auth.parameter());
                admission.identity
            }
        };
        let upstream_audio = crate::bridge::UpstreamAudio::for_provider(
            self.bridge_config.provider,
            self.bridge_config.audio,
            start.media_format,
        );
        let session = self
            .store
            .insert(self.id, self.dialect, start, identity, upstream_audio);
        if let Some(tape) = self.tape.get() {
            let _ = session.tape.set(tape.clone());
        }
        let bridge = bridge::spawn(
            self.bridge_config.clone(),
            session.clone(),
            self.outbox.clone(),
            self.span.clone(),
        );
        started.state = Some(session.clone());
        started.bridge = Some(Arc::new(bridge));
        Ok(session)
    }

    /// The call state and bridge, once `start` has arrived.
    pub(crate) fn started(&self) -> Result<(Arc<CallState>, Arc<BridgeHandle>), EventError> {
        let started = self.lock();
        match (&started.state, &started.bridge) {
            (Some(s), Some(b)) => Ok((s.clone(), b.clone())),
            _ => Err(EventError::NotStarted),
        }
    }

    /// The call state, once started.
    pub fn call_state(&self) -> Option<Arc<CallState>> {
        self.lock().state.clone()
    }

    /// Ends the call: closes the upstream with 1000 (waiting at most `wait`), removes the
    /// session and adds its counters to the process metrics. Safe to call more than once.
    pub async fn finish(&self, wait: Duration) -> Option<Arc<CallState>> {
        let (session, bridge, hold) = {
            let mut started = self.lock();
            (
                started.state.take(),
                started.bridge.take(),
                started.hold.take(),
            )
        };
        // The call's cap permit goes when the call does.
        drop(hold);
        if let Some(bridge) = bridge {
            bridge.stop(wait).await;
        }
        let session = session?;
        self.store.remove(self.id);
        let c = &session.counters;
        let carrier = self.dialect.name();
        // Per-call atomics are folded into the process metrics once, at the end, so the
        // per-frame path never touches the metrics registry.
        metrics::counter!("callgate_frames_total", "carrier" => carrier, "direction" => "inbound")
            .increment(c.frames_in.load(Relaxed));
        metrics::counter!("callgate_frames_total", "carrier" => carrier, "direction" => "outbound")
            .increment(c.frames_out.load(Relaxed));
        let (dropped, reordered, too_fast) = (
            c.audio_dropped.load(Relaxed),
            c.reorder_lost.load(Relaxed),
            c.too_fast.load(Relaxed),
        );
        let queue_full = dropped.saturating_sub(reordered + too_fast);
        metrics::counter!("callgate_audio_dropped_total", "direction" => "inbound", "reason" => "queue_full").increment(queue_full);
        metrics::counter!("callgate_audio_dropped_total", "direction" => "inbound", "reason" => "reorder").increment(reordered);
        metrics::counter!("callgate_audio_dropped_total", "direction" => "inbound", "reason" => "too_fast").increment(too_fast);
        Some(session)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Started> {
        lock(&self.started)
    }
}
