//! The bounded queue of caller audio waiting for the upstream socket.
//!
//! Policy when full: drop the **oldest** frame and count it. Fresh audio matters more to
//! a live conversation than stale audio, and the carrier must never be slowed down.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::Notify;

/// A bounded, drop-oldest queue of base64 audio chunks (already in the upstream format).
#[derive(Debug)]
pub struct AudioQueue {
    frames: Mutex<VecDeque<(Instant, String)>>,
    capacity: usize,
    ready: Notify,
}

impl AudioQueue {
    /// A queue holding at most `capacity` chunks.
    pub fn new(capacity: usize) -> Self {
        Self {
            frames: Mutex::new(VecDeque::with_capacity(capacity.min(256))),
            capacity: capacity.max(1),
            ready: Notify::new(),
        }
    }

    /// Queues a chunk, stamped with the time it was accepted (for the gateway-latency
    /// histogram); returns true when an older chunk had to be dropped for it (the caller
    /// counts it on the call).
    pub fn push(&self, chunk: String) -> bool {
        let chunk = (Instant::now(), chunk);
        let dropped = {
            let mut frames = self.frames.lock().unwrap_or_else(|p| p.into_inner());
            let full = frames.len() >= self.capacity;
            if full {
                frames.pop_front();
            }
            frames.push_back(chunk);
            full
        };
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
        let dropped: Vec<bool> = (0..5).map(|i| q.push(i.to_string())).collect();
        assert_eq!(dropped, [false, false, false, true, true]);
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
