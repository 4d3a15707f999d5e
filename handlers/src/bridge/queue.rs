//! The bounded queue of caller audio waiting for the upstream socket.
//!
//! Policy when full: drop the **oldest** frame and count it. Fresh audio matters more to
//! a live conversation than stale audio, and the carrier must never be slowed down.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::Notify;

/// A bounded, drop-oldest queue of base64 audio chunks (already in the upstream format).
#[derive(Debug)]
pub struct AudioQueue {
    frames: Mutex<VecDeque<(Instant, String)>>,
    capacity: usize,
    ready: Notify,
    dropped: AtomicU64,
}

impl AudioQueue {
    /// A queue holding at most `capacity` chunks.
    pub fn new(capacity: usize) -> Self {
        Self {
            frames: Mutex::new(VecDeque::with_capacity(capacity.min(256))),
            capacity: capacity.max(1),
            ready: Notify::new(),
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues a chunk, stamped with the time it was accepted (for the gateway-latency
    /// histogram); returns true when an older chunk had to be dropped for it.
    pub fn push(&self, chunk: String) -> bool {
        let chunk = (Instant::now(), chunk);
        let dropped = {
            let mut frames = self.frames.lock().unwrap_or_else(|p| p.into_inner());
            let dropped = if frames.len() >= self.capacity {
                frames.pop_front();
                true
            } else {
                false
            };
            frames.push_back(chunk);
            dropped
        };
        if dropped {
            self.dropped.fetch_add(1, Relaxed);
        }
        self.ready.notify_one();
        dropped
    }

    /// Moves every queued chunk, with its acceptance time, into `out` (in order).
    pub fn drain_into(&self, out: &mut Vec<(Instant, String)>) {
        let mut frames = self.frames.lock().unwrap_or_else(|p| p.into_inner());
        out.extend(frames.drain(..));
    }

    /// Waits until a chunk may be available.
    pub async fn notified(&self) {
        self.ready.notified().await
    }

    /// Chunks dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// Chunks waiting.
    pub fn len(&self) -> usize {
        self.frames.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_oldest_when_full() {
        let q = AudioQueue::new(3);
        for i in 0..5 {
            q.push(i.to_string());
        }
        assert_eq!(q.dropped(), 2);
        let mut out = Vec::new();
        q.drain_into(&mut out);
        let chunks: Vec<&str> = out.iter().map(|(_, c)| c.as_str()).collect();
        assert_eq!(chunks, ["2", "3", "4"]);
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn push_wakes_a_waiter_even_if_it_came_first() {
        let q = AudioQueue::new(2);
        q.push("a".into());
        // The permit stored by notify_one makes this return at once.
        tokio::time::timeout(std::time::Duration::from_secs(1), q.notified())
            .await
            .unwrap();
    }
}
