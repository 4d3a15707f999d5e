//! Per-call state behind a cheap-to-clone handle.
//!
//! The store maps a connection id to its [`CallState`]. Counters are atomics and the few
//! mutable fields sit behind a `std::sync::Mutex` that is never held across an `.await`;
//! a media frame touches only the atomics (the store's lock is taken at start and end).

use callgate_layers::util::lock;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::bridge::UpstreamAudio;
use crate::codec::AudioFormat;
use crate::dialect::Dialect;
use crate::error::EventError;
use crate::event::Start;

/// Live counters of one call.
#[derive(Debug, Default)]
pub struct Counters {
    /// Media frames received from the carrier.
    pub frames_in: AtomicU64,
    /// Audio bytes received from the carrier (decoded).
    pub bytes_in: AtomicU64,
    /// Media messages sent to the carrier.
    pub frames_out: AtomicU64,
    /// Audio bytes sent to the carrier (decoded).
    pub bytes_out: AtomicU64,
    /// Marks sent to the carrier.
    pub marks_sent: AtomicU64,
    /// Marks the carrier echoed.
    pub marks_acked: AtomicU64,
    /// DTMF digits received.
    pub dtmf: AtomicU64,
    /// Frames rejected as bad input.
    pub bad_frames: AtomicU64,
    /// Caller audio frames dropped because the upstream queue was full.
    pub audio_dropped: AtomicU64,
    /// Of `audio_dropped`: frames the reorder window gave up on (a gap, or too late).
    pub reorder_lost: AtomicU64,
    /// Of `audio_dropped`: frames that ran ahead of the clock by more than the burst.
    pub too_fast: AtomicU64,
    /// `clear` messages sent (barge-ins).
    pub clears: AtomicU64,
    /// Function tools the model called.
    pub tool_calls: AtomicU64,
}

/// Who a call was authenticated as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallIdentity {
    /// Tenant (caps and settings are per tenant).
    pub tenant: Option<String>,
    /// Subject of the credential.
    pub subject: Option<String>,
}

/// One call's state.
#[derive(Debug)]
pub struct CallState {
    /// Gateway-local connection id (unique per process).
    pub id: u64,
    /// The route's dialect.
    pub dialect: Dialect,
    /// `start.streamSid`.
    pub stream_sid: String,
    /// `start.callSid`.
    pub call_sid: String,
    /// `start.accountSid`.
    pub account_sid: Option<String>,
    /// Caller and called numbers, when the carrier sends them.
    pub from: Option<String>,
    /// Called number.
    pub to: Option<String>,
    /// The caller's audio format.
    pub media_format: AudioFormat,
    /// The format of audio sent back to the carrier (see [`Start::outbound_format`]).
    pub outbound_format: AudioFormat,
    /// Upstream audio format chosen for this call.
    pub upstream_audio: UpstreamAudio,
    /// Custom parameters from `start` (credentials removed).
    pub custom_parameters: BTreeMap<String, String>,
    /// Who the call was authenticated as.
    pub identity: CallIdentity,
    /// Wall-clock start, for records.
    pub started_at: SystemTime,
    started: Instant,
    /// Milliseconds since `started` of the last inbound frame.
    last_activity_ms: AtomicU64,
    /// Live counters.
    pub counters: Counters,
    /// Marks written to the carrier and not yet echoed, with when (round-trip histogram).
    pending_marks: Mutex<VecDeque<(String, Instant)>>,
    /// The call's live feed (transcripts, DTMF, barge-ins, end).
    pub feed: crate::feed::Feed,
    /// The call's stereo recording, when it is recorded (set once, just after `start`).
    pub recorder: std::sync::OnceLock<crate::recording::Recorder>,
    /// The call's tape, when taped (set at `start`, before the upstream opens).
    pub tape: std::sync::OnceLock<Arc<crate::tape::Tape>>,
}

impl CallState {
    /// Records inbound activity now (for idle reaping).
    pub fn touch(&self) {
        self.last_activity_ms
            .store(self.started.elapsed().as_millis() as u64, Relaxed);
    }

    /// Time since the last inbound frame.
    pub fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_activity_ms.load(Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// Time since `start`.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// Checks that an event naming `stream_sid` belongs to this call (one naming none does).
    pub fn owns(&self, stream_sid: Option<&str>) -> Result<(), EventError> {
        match stream_sid {
            Some(sid) if sid != self.stream_sid => Err(EventError::StreamSidMismatch),
            _ => Ok(()),
        }
    }

    /// Milliseconds since the call started (feed timestamps).
    pub fn at_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Publishes an event to the call's listeners (none listening is fine).
    pub fn publish(&self, event: crate::feed::FeedEvent) {
        let _ = self.feed.send(event);
    }

    /// Records that mark `name` was written to the carrier now.
    pub fn mark_sent(&self, name: &str) {
        if let Some(recorder) = self.recorder.get() {
            recorder.mark_sent(name);
        }
        let mut marks = lock(&self.pending_marks);
        if marks.len() == 64 {
            marks.pop_front();
        }
        marks.push_back((name.to_owned(), Instant::now()));
    }

    /// The echo of mark `name` arrived: its round trip, if we sent it.
    pub fn mark_echoed(&self, name: &str) -> Option<Duration> {
        if let Some(recorder) = self.recorder.get() {
            recorder.mark_played(name);
        }
        let mut marks = lock(&self.pending_marks);
        let index = marks.iter().position(|(n, _)| n == name)?;
        let (_, sent) = marks.remove(index)?;
        // Earlier marks were echoed out of order or lost in a clear: forget them.
        marks.drain(..index);
        Some(sent.elapsed())
    }
}

/// All live calls, shared by every connection; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct CallStore {
    inner: Arc<Mutex<HashMap<u64, Arc<CallState>>>>,
}

impl CallStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates the session of connection `id` from its `start` event.
    pub fn insert(
        &self,
        id: u64,
        dialect: Dialect,
        start: Start,
        identity: CallIdentity,
        upstream_audio: UpstreamAudio,
    ) -> Arc<CallState> {
        let session = Arc::new(CallState {
            id,
            dialect,
            stream_sid: start.stream_sid,
            call_sid: start.call_sid,
            account_sid: start.account_sid,
            from: start.from,
            to: start.to,
            media_format: start.media_format,
            outbound_format: start.outbound_format,
            upstream_audio,
            custom_parameters: start.custom_parameters,
            identity,
            started_at: SystemTime::now(),
            started: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            counters: Counters::default(),
            pending_marks: Mutex::new(VecDeque::new()),
            feed: tokio::sync::broadcast::channel(crate::feed::FEED_CAPACITY).0,
            recorder: std::sync::OnceLock::new(),
            tape: std::sync::OnceLock::new(),
        });
        self.lock().insert(id, session.clone());
        session
    }

    /// The session of connection `id`.
    pub fn get(&self, id: u64) -> Option<Arc<CallState>> {
        self.lock().get(&id).cloned()
    }

    /// Finds a live call by the carrier's call id.
    pub fn find_call(&self, call_sid: &str) -> Option<Arc<CallState>> {
        self.lock()
            .values()
            .find(|s| s.call_sid == call_sid)
            .cloned()
    }

    /// Removes the session of connection `id` (on stop or close).
    pub fn remove(&self, id: u64) -> Option<Arc<CallState>> {
        self.lock().remove(&id)
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no call is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of every live session.
    pub fn all(&self) -> Vec<Arc<CallState>> {
        self.lock().values().cloned().collect()
    }

    /// Drops sessions idle for longer than `max_idle` and returns how many went. Normal calls
    /// remove their own session when they end; this only catches leaks.
    pub fn reap_idle(&self, max_idle: Duration) -> usize {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|_, s| s.idle_for() <= max_idle);
        before - map.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<CallState>>> {
        // A panic while holding this lock cannot leave the map inconsistent (every operation
        // is a single insert/remove), so a poisoned lock is safe to keep using.
        lock(&self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(call: &str) -> Start {
        Start {
            stream_sid: format!("MZ{call}"),
            call_sid: call.into(),
            account_sid: None,
            from: None,
            to: None,
            tracks: vec![],
            media_format: AudioFormat::Mulaw,
            outbound_format: AudioFormat::Mulaw,
            custom_parameters: BTreeMap::new(),
        }
    }

    #[test]
    fn insert_find_remove() {
        let store = CallStore::new();
        store.insert(
            1,
            Dialect::Twilio,
            start("CA1"),
            CallIdentity::default(),
            UpstreamAudio::Pcmu,
        );
        store.insert(
            2,
            Dialect::Twilio,
            start("CA2"),
            CallIdentity::default(),
            UpstreamAudio::Pcmu,
        );
        assert_eq!(store.len(), 2);
        assert_eq!(store.find_call("CA2").unwrap().id, 2);
        assert!(store.remove(1).is_some());
        assert!(store.get(1).is_none());
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn reaps_only_idle_sessions() {
        let store = CallStore::new();
        let idle = store.insert(
            1,
            Dialect::Twilio,
            start("CA1"),
            CallIdentity::default(),
            UpstreamAudio::Pcmu,
        );
        std::thread::sleep(Duration::from_millis(30));
        store
            .insert(
                2,
                Dialect::Twilio,
                start("CA2"),
                CallIdentity::default(),
                UpstreamAudio::Pcmu,
            )
            .touch();
        assert!(idle.idle_for() >= Duration::from_millis(30));
        assert_eq!(store.reap_idle(Duration::from_millis(20)), 1);
        assert!(store.get(2).is_some());
    }
}
