//! Warm upstream sessions (`upstream.prewarm`): connected and configured with the
//! deployment's defaults before any call needs them, so a call's first reply is not late by
//! a TLS + WebSocket handshake and a session setup.
//!
//! ```text
//! refill task: connect ─► session.created ─► session.update (defaults) ─► session.updated ─► idle
//! call start:  take() ─► session.update (the call's own settings, only if they differ) ─► ready
//! upkeep:      every ping interval, each idle session: read what it said (a close ends it),
//!              ping it, and recycle it once it is `prewarm_max_age` old or its
//!              `expires_at` is near
//! ```
//!
//! A session is only taken by the bridge of a call whose `start` was admitted, so a socket
//! that never authenticates never spends one. The pool holds at most `prewarm` idle
//! sessions and opens up to 16 at a time, backing off while the upstream refuses.

use callgate_layers::util::lock;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

use super::task::socket::{self, Upstream};
use super::wire::{self, ServerKind};
use super::{BridgeConfig, BridgeError, UpstreamAudio};
use crate::codec::AudioFormat;

/// Sessions opened at once while refilling.
const MAX_OPENING: usize = 16;

/// One session the pool opened and configured, waiting for a call.
pub(in crate::bridge) struct Warm {
    /// The socket, configured with [`Warm::configured`].
    pub(in crate::bridge) ws: Upstream,
    /// `session` of its `session.created` (the call plans its rollover from `expires_at`).
    pub(in crate::bridge) created: Value,
    /// The `session.update` it was configured with.
    pub(in crate::bridge) configured: Arc<str>,
    /// What was said in setup, in order (`true`: from the upstream), for the call's tape.
    pub(in crate::bridge) setup: Vec<(bool, String)>,
    opened: Instant,
    last_heard: Instant,
}

/// The pool of warm sessions for the deployment's upstream. Cheap to clone.
#[derive(Clone)]
pub struct WarmPool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool")
            .field("size", &self.inner.size)
            .field("idle", &lock(&self.inner.idle).len())
            .finish()
    }
}

struct Inner {
    config: Arc<BridgeConfig>,
    size: usize,
    max_age: Duration,
    /// The defaults every warm session is configured with.
    defaults: Arc<str>,
    idle: Mutex<VecDeque<Warm>>,
    /// A session was taken (refill now rather than at the next upkeep), or the pool closes.
    taken: Arc<Notify>,
    /// Set by [`WarmPool::close`]: open nothing more.
    closing: std::sync::atomic::AtomicBool,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl WarmPool {
    /// Starts keeping `size` sessions warm for `config`'s upstream, each recycled once it is
    /// `max_age` old. `config` is the bridge's (its own pool field is not read).
    pub fn start(config: Arc<BridgeConfig>, size: usize, max_age: Duration) -> Self {
        // The defaults as a μ-law call would send them (the common carrier format); a call
        // whose settings differ sends its own update on the warm session.
        let audio = UpstreamAudio::for_carrier(config.audio, AudioFormat::Mulaw);
        let defaults = wire::session_update(
            config.dialect,
            audio,
            &config.session,
            &config.tools.declarations(),
        );
        let inner = Arc::new(Inner {
            config,
            size,
            max_age,
            defaults: defaults.into(),
            idle: Mutex::new(VecDeque::with_capacity(size)),
            taken: Arc::default(),
            closing: Default::default(),
            task: Mutex::new(None),
        });
        let task = tokio::spawn(keep_warm(Arc::downgrade(&inner)));
        *lock(&inner.task) = Some(task);
        metrics::gauge!("callgate_upstream_pool_idle").set(0.0);
        Self { inner }
    }

    /// A warm session for an admitted call, if one is idle (the one idle longest, so that
    /// none waits long). The pool starts refilling at once.
    pub(in crate::bridge) fn take(&self) -> Option<Warm> {
        let warm = {
            let mut idle = lock(&self.inner.idle);
            let warm = idle.pop_front();
            metrics::gauge!("callgate_upstream_pool_idle").set(idle.len() as f64);
            warm
        };
        let outcome = if warm.is_some() { "warm" } else { "cold" };
        metrics::counter!("callgate_upstream_pool_takes_total", "outcome" => outcome).increment(1);
        self.inner.taken.notify_one();
        warm
    }

    /// Stops refilling and closes every idle session with 1000 (at shutdown). Sessions being
    /// opened are finished first (at most 2 s), so that none is dropped without a close.
    pub async fn close(&self) {
        self.inner
            .closing
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.inner.taken.notify_one();
        let task = lock(&self.inner.task).take();
        if let Some(mut task) = task {
            if tokio::time::timeout(Duration::from_secs(2), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
        let idle: Vec<Warm> = lock(&self.inner.idle).drain(..).collect();
        metrics::gauge!("callgate_upstream_pool_idle").set(0.0);
        for mut warm in idle {
            socket::close(&mut warm.ws).await;
        }
    }
}

/// The refill and upkeep loop; ends when the pool is dropped or closed.
async fn keep_warm(pool: std::sync::Weak<Inner>) {
    let mut failures = 0u32;
    let mut last_upkeep = Instant::now();
    loop {
        let Some(inner) = pool.upgrade() else { return };
        if inner.closing.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let tick = inner.config.ping_interval;
        if last_upkeep.elapsed() >= tick {
            upkeep(&inner).await;
            last_upkeep = Instant::now();
        }
        let missing = inner.size.saturating_sub(lock(&inner.idle).len());
        let short = missing > 0;
        let wait = if short {
            // Several at once, so that a burst of calls is refilled within one setup time.
            let opening = (0..missing.min(MAX_OPENING)).map(|_| open(&inner));
            let mut opened = 0;
            let mut last_error = None;
            for result in futures_util::future::join_all(opening).await {
                match result {
                    Ok(warm) => {
                        opened += 1;
                        lock(&inner.idle).push_back(warm);
                    }
                    Err(error) => {
                        metrics::counter!("callgate_upstream_pool_recycled_total", "reason" => "open_failed").increment(1);
                        last_error = Some(error);
                    }
                }
            }
            metrics::gauge!("callgate_upstream_pool_idle").set(lock(&inner.idle).len() as f64);
            if opened > 0 {
                failures = 0;
            }
            match last_error {
                None => continue,
                Some(_) if opened > 0 => continue,
                Some(error) => {
                    // Back off while the upstream refuses (calls still connect on their own):
                    // 0.5 s doubling, at most 30 s.
                    failures += 1;
                    let delay = Duration::from_millis(500)
                        .saturating_mul(1 << failures.min(6))
                        .min(Duration::from_secs(30));
                    tracing::warn!(%error, delay_ms = delay.as_millis() as u64, "could not open a warm upstream session");
                    delay
                }
            }
        } else {
            tick.saturating_sub(last_upkeep.elapsed())
        };
        // Registered before sleeping, so a take while we sleep wakes us to refill.
        let notify = inner.taken.clone();
        drop(inner);
        let taken = notify.notified();
        tokio::pin!(taken);
        taken.as_mut().enable();
        tokio::select! {
            _ = taken, if !short => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Checks every idle session once: what it said, its age, a ping.
async fn upkeep(inner: &Inner) {
    let count = lock(&inner.idle).len();
    for _ in 0..count {
        let Some(mut warm) = lock(&inner.idle).pop_front() else {
            return;
        };
        let verdict = match heard(&mut warm) {
            Err(reason) => Err(reason),
            Ok(()) if warm.opened.elapsed() >= inner.max_age => Err("age"),
            Ok(())
                if wire::expires_in(&warm.created)
                    .is_some_and(|left| left < inner.config.rollover_margin * 2) =>
            {
                Err("expiring")
            }
            Ok(()) if warm.last_heard.elapsed() >= inner.config.stall_timeout => Err("stalled"),
            Ok(()) => {
                let ping = Message::Ping(Default::default());
                match socket::send(&mut warm.ws, ping, &inner.config).await {
                    Ok(()) => Ok(()),
                    Err(_) => Err("closed"),
                }
            }
        };
        match verdict {
            Ok(()) => lock(&inner.idle).push_back(warm),
            Err(reason) => {
                metrics::counter!("callgate_upstream_pool_recycled_total", "reason" => reason)
                    .increment(1);
                tracing::debug!(reason, "warm upstream session recycled");
                if reason != "closed" {
                    socket::close(&mut warm.ws).await;
                }
            }
        }
    }
    metrics::gauge!("callgate_upstream_pool_idle").set(lock(&inner.idle).len() as f64);
}

/// Reads what an idle session has said without waiting (pongs, and events it may send
/// unasked); a close or an error ends it.
fn heard(warm: &mut Warm) -> Result<(), &'static str> {
    while let Some(message) = warm.ws.next().now_or_never() {
        match message {
            Some(Ok(Message::Close(_)) | Err(_)) | None => return Err("closed"),
            Some(Ok(_)) => warm.last_heard = Instant::now(),
        }
    }
    Ok(())
}

/// Opens and configures one session with the deployment's defaults.
async fn open(inner: &Inner) -> Result<Warm, BridgeError> {
    let config = &inner.config;
    let mut ws = socket::connect(config, None).await?;
    let mut said = Vec::with_capacity(3);
    let setup = async {
        let mut created = None;
        loop {
            let text = match ws.next().await {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    return Err(BridgeError::Closed("warm session closed in setup".into()))
                }
                Some(Ok(_)) => continue,
            };
            let Ok(event) = serde_json::from_str::<wire::ServerEvent<'_>>(&text) else {
                continue;
            };
            said.push((true, text.to_string()));
            match ServerKind::of(&event.kind) {
                ServerKind::SessionCreated => {
                    created = Some(event.session.unwrap_or_default());
                    said.push((false, inner.defaults.to_string()));
                    socket::send_text(&mut ws, inner.defaults.to_string(), config).await?;
                }
                ServerKind::SessionUpdated => {
                    if let Some(created) = created {
                        return Ok(created);
                    }
                }
                ServerKind::Error => {
                    let error = event.error.unwrap_or_default();
                    return Err(BridgeError::Fatal {
                        code: error.code.unwrap_or_default(),
                        message: error.message.unwrap_or_default(),
                    });
                }
                _ => {}
            }
        }
    };
    let created = match tokio::time::timeout(config.ready_timeout, setup).await {
        Err(_) => Err(BridgeError::NotReady),
        Ok(result) => result,
    };
    match created {
        Ok(created) => Ok(Warm {
            ws,
            created,
            configured: inner.defaults.clone(),
            setup: said,
            opened: Instant::now(),
            last_heard: Instant::now(),
        }),
        Err(error) => {
            socket::close(&mut ws).await;
            Err(error)
        }
    }
}
