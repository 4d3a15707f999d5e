//! The model bridge: one task per call owns the upstream WebSocket.
//!
//! Handlers talk to it through a [`BridgeHandle`]: caller audio goes into a bounded
//! drop-oldest [`AudioQueue`], control messages (stop) into a small channel. The task sends
//! what the carrier must receive (media, mark, clear) to the call's outbox as
//! [`Downstream`] items, and ends the call with [`Downstream::End`] if the upstream fails.
//!
//! ```text
//! start ─► spawn ─► connect ─► session.created ─► session.update ─► session.updated (READY)
//!                                 caller audio is held in the queue until READY, then appended
//! start ─► spawn ─► a warm session from the pool (`pool`) ─► its update if settings differ (READY)
//! start ─► spawn ─► connect ─► session.start / setup (GPT-Live, Gemini: the client speaks
//!                              first) ─► session.started / setupComplete (READY)
//! ```
//!
//! The task (`task/`) is the call core: it acts on provider-neutral [`model::ModelEvent`]s
//! and asks the call's adapter ([`protocol::Protocol`]: [`realtime`], [`live`] for GPT-Live,
//! [`gemini`] for Gemini Live) for every message it sends, so no wire name appears in the
//! core. [`lines`] groups transcript fragments into lines for the protocols that need it.

pub mod call_control;
pub mod gemini;
pub mod lines;
pub mod live;
pub mod model;
mod pool;
pub mod protocol;
mod queue;
pub mod realtime;
mod settings;
mod task;
pub mod token;
pub mod tools;
pub mod wire;

use callgate_layers::util::lock;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::call_state::CallState;
use crate::event::Outbound;

pub use pool::WarmPool;
pub use queue::AudioQueue;
pub use settings::{
    BridgeConfig, ConversationSettings, DtmfSettings, Profile, Provider, RealtimeDialect,
    ReconnectPolicy, Secret, SessionSettings, UpstreamAudio, UpstreamAuth,
};

/// Installs rustls' `ring` provider for `wss://` upstreams (the one TLS backend compiled in).
/// Call once at startup; later calls are harmless.
pub fn install_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// What the bridge asks the connection to do.
#[derive(Debug)]
pub enum Downstream {
    /// Send this to the carrier; the instant is when the upstream event that caused it
    /// arrived (for the gateway-latency and barge-in histograms).
    Out(Outbound, std::time::Instant),
    /// The conversation is over (`end_call`): hang up normally.
    Hangup,
    /// The call was handed to `target` (`transfer_call`): close the stream normally. With
    /// `number`, the carrier's scenario dials it (Voximplant's `gw.transfer`).
    Transferred {
        /// The configured destination's name.
        target: String,
        /// For carriers whose own scenario transfers.
        number: Option<String>,
    },
    /// Play these DTMF digits to the far end through the media stream (Plivo, Voximplant).
    SendDtmf(String),
    /// Play this (carrier format) before the call ends: the upstream is gone.
    Fallback {
        /// The audio.
        audio: bytes::Bytes,
        /// How long it plays.
        duration: Duration,
    },
    /// The upstream failed: end the call.
    End(BridgeError),
}

/// Why the upstream side of a call failed.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// Could not open the upstream socket.
    #[error("upstream connect failed: {0}")]
    Connect(String),
    /// The handshake took too long.
    #[error("upstream connect timed out")]
    ConnectTimeout,
    /// No `session.updated` in time.
    #[error("upstream session not ready in time")]
    NotReady,
    /// The upstream closed or broke the socket.
    #[error("upstream closed: {0}")]
    Closed(String),
    /// The upstream sent an error it cannot recover from.
    #[error("upstream error {code}: {message}")]
    Fatal {
        /// `error.code`.
        code: String,
        /// `error.message`.
        message: String,
    },
    /// Transcoding could not be set up.
    #[error("audio setup failed: {0}")]
    Audio(String),
    /// Nothing heard and no write possible within the stall timeout.
    #[error("upstream stalled")]
    Stalled,
    /// The session's `expires_at` was inside the rollover margin when it began: rolling
    /// over would only open another such session, so it is an upstream fault (backoff and
    /// the reconnect budget apply).
    #[error("upstream session expires {left_s} s after it began (rollover margin {margin_s} s)")]
    ExpiresAtOnce {
        /// Seconds the session had left when it began.
        left_s: u64,
        /// `upstream.rollover_margin_s`.
        margin_s: u64,
    },
    /// The call has rolled over `upstream.max_rollovers` times.
    #[error("too many upstream session rollovers ({0})")]
    TooManyRollovers(u32),
    /// The reconnect budget is spent.
    #[error("upstream lost after {attempts} reconnect attempts: {last}")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: Box<BridgeError>,
    },
    /// The bridge task panicked.
    #[error("bridge task panicked")]
    Panicked,
}

impl BridgeError {
    /// Worth reconnecting for (the next session may well work).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect(_)
            | Self::ConnectTimeout
            | Self::NotReady
            | Self::Closed(_)
            | Self::Stalled
            | Self::ExpiresAtOnce { .. } => true,
            Self::Fatal { code, .. } => matches!(code.as_str(), "session_expired" | "server_error"),
            Self::Audio(_) | Self::GaveUp { .. } | Self::Panicked | Self::TooManyRollovers(_) => {
                false
            }
        }
    }

    /// A short, bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Connect(_) | Self::ConnectTimeout => "connect",
            Self::NotReady => "not_ready",
            Self::Closed(_) => "closed",
            Self::Fatal { .. } => "fatal_error",
            Self::Audio(_) => "audio",
            Self::Stalled => "stalled",
            Self::ExpiresAtOnce { .. } => "expires_at_once",
            Self::TooManyRollovers(_) => "rollover_cap",
            Self::GaveUp { .. } => "gave_up",
            Self::Panicked => "panic",
        }
    }
}

/// Control messages to the bridge task.
#[derive(Debug)]
pub(crate) enum Control {
    /// Close the upstream with 1000 and exit.
    Stop,
    /// The carrier echoed this mark.
    MarkPlayed(String),
    /// The caller pressed a key.
    Dtmf(char),
}

/// The handlers' side of one call's bridge.
#[derive(Debug)]
pub struct BridgeHandle {
    audio: Arc<AudioQueue>,
    control: mpsc::Sender<Control>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl BridgeHandle {
    /// Queues caller audio (base64, upstream format) carrying `audio`. Returns how many
    /// older chunks were dropped to make room.
    pub fn send_audio(&self, chunk: String, audio: Duration) -> u64 {
        self.audio.push(chunk, audio)
    }

    /// Reports a mark echo (dropped if the task is far behind: marks only refine playback).
    pub fn mark_played(&self, name: &str) {
        let _ = self.control.try_send(Control::MarkPlayed(name.to_owned()));
    }

    /// Reports a key press.
    pub fn dtmf(&self, digit: char) {
        if self.control.try_send(Control::Dtmf(digit)).is_err() {
            metrics::counter!("callgate_dtmf_dropped_total").increment(1);
        }
    }

    /// Asks the task to close the upstream with 1000, and waits (bounded) until it has.
    pub async fn stop(&self, wait: Duration) {
        // The channel may be full of mark echoes: wait for room rather than lose the stop.
        let _ = tokio::time::timeout(wait, self.control.send(Control::Stop)).await;
        let task = lock(&self.task).take();
        if let Some(mut task) = task {
            if tokio::time::timeout(wait, &mut task).await.is_err() {
                task.abort();
            }
        }
    }

    /// Stops the task without waiting (the call is already gone).
    pub fn abort(&self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

impl Drop for BridgeHandle {
    fn drop(&mut self) {
        // No path may leave an upstream session (and its bill) running without its call.
        self.abort();
    }
}

/// Opens the upstream for one call and returns its handle. Never blocks: connecting happens
/// in the task, while caller audio queues up.
pub fn spawn(
    config: Arc<BridgeConfig>,
    session: Arc<CallState>,
    outbox: mpsc::Sender<Downstream>,
    span: tracing::Span,
) -> BridgeHandle {
    // A profile may run its calls on another provider or model.
    let config = match config
        .conversation
        .profile_of(&session)
        .and_then(|profile| config.for_profile(profile))
    {
        Some(own) => Arc::new(own),
        None => config,
    };
    let audio = Arc::new(AudioQueue::new(config.queue));
    let (control, control_rx) = mpsc::channel(64);
    // The task runs inside the call's span, so its spans (upstream.connect, turn) and logs
    // belong to the call's trace.
    let run = task::run(config, session, outbox, audio.clone(), control_rx);
    let task = tokio::spawn(tracing::Instrument::instrument(run, span));
    BridgeHandle {
        audio,
        control,
        task: Mutex::new(Some(task)),
    }
}
