//! The bounded queue of caller audio waiting for the upstream socket, bounded in time of
//! audio (not in messages, whose size the carrier chooses).
//!
//! Policy when full: drop the **oldest** frames and count them. Fresh audio matters more to
//! a live conversation than stale audio, and the carrier must never be slowed down.

use callgate_layers::util::lock;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// A bounded, drop-oldest queue of base64 audio chunks (already in the upstream format).
#[derive(Debug)]
pub struct AudioQueue {
    queued: Mutex<Queued>,
    capacity: Duration,
    ready: Notify,
}

#[derive(Debug, Default)]
struct Queued {
    frames: VecDeque<(Instant, String, Duration)>,
    audio: Duration,
}

impl AudioQueue {
    /// A queue holding at most `capacity` of audio (and always the newest chunk).
    pub fn new(capacity: Duration) -> Self {
        Self {
            queued: Mutex::default(),
            capacity,
            ready: Notify::new(),
        }
    }

    /// Queues a chunk carrying `audio`, stamped with the time it was accepted (for the
    /// gateway-latency histogram); returns how many older chunks had to be dropped for it
    /// (the caller counts them on the call).
    pub fn push(&self, chunk: String, audio: Duration) -> u64 {
        let mut dropped = 0;
        {
            let mut queued = lock(&self.queued);
            while !queued.frames.is_empty() && queued.audio + audio > self.capacity {
                if let Some((_, _, old)) = queued.frames.pop_front() {
                    queued.audio -= old;
                    dropped += 1;
                }
            }
            queued.audio += audio;
            queued.frames.push_back((Instant::now(), chunk, audio));
        }
        self.ready.notify_one();
        dropped
    }

    /// Moves every queued chunk, with its acceptance time and length, into `out` (in order).
    pub fn drain_into(&self, out: &mut Vec<(Instant, String, Duration)>) {
        let mut queued = lock(&self.queued);
        queued.audio = Duration::ZERO;
        out.extend(queued.frames.drain(..));
    }

    /// Puts chunks that could not be sent back in front of the queue, in order (the
    /// upstream went away mid-send: they go to the next session). Past the capacity the
    /// oldest are dropped, as for [`AudioQueue::push`]; returns how many.
    pub fn requeue(
        &self,
        chunks: impl DoubleEndedIterator<Item = (Instant, String, Duration)>,
    ) -> u64 {
        let mut queued = lock(&self.queued);
        for chunk in chunks.rev() {
            queued.audio += chunk.2;
            queued.frames.push_front(chunk);
        }
        let mut dropped = 0;
        while queued.frames.len() > 1 && queued.audio > self.capacity {
            if let Some((_, _, old)) = queued.frames.pop_front() {
                queued.audio -= old;
                dropped += 1;
            }
        }
        dropped
    }

    /// Waits until a chunk may be available.
    pub async fn notified(&self) {
        self.ready.notified().await
    }

    /// Chunks waiting.
    pub fn len(&self) -> usize {
        lock(&self.queued).frames.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: Duration = Duration::from_millis(20);

    #[test]
    fn drops_oldest_when_full() {
        let q = AudioQueue::new(FRAME * 3);
        let dropped: Vec<u64> = (0..5).map(|i| q.push(i.to_string(), FRAME)).collect();
        assert_eq!(dropped, [0, 0, 0, 1, 1]);
        let mut out = Vec::new();
        q.drain_into(&mut out);
        let chunks: Vec<&str> = out.iter().map(|(_, c, _)| c.as_str()).collect();
        assert_eq!(chunks, ["2", "3", "4"]);
        assert!(q.is_empty());
    }

    #[test]
    fn chunks_that_could_not_be_sent_go_back_in_front_in_order() {
        let q = AudioQueue::new(FRAME * 4);
        for i in 0..3 {
            q.push(i.to_string(), FRAME);
        }
        let mut out = Vec::new();
        q.drain_into(&mut out);
        q.push("3".into(), FRAME);
        assert_eq!(q.requeue(out.drain(..)), 0);
        q.push("4".into(), FRAME);
        q.drain_into(&mut out);
        let chunks: Vec<&str> = out.iter().map(|(_, c, _)| c.as_str()).collect();
        assert_eq!(
            chunks,
            ["1", "2", "3", "4"],
            "the oldest went past the capacity"
        );
    }

    #[test]
    fn the_bound_is_time_of_audio_not_messages() {
        // One second of room: a 5 s message replaces everything, twenty 20 ms frames fit.
        let q = AudioQueue::new(Duration::from_secs(1));
        for i in 0..20 {
            assert_eq!(q.push(i.to_string(), FRAME), 0);
        }
        assert_eq!(q.push("huge".into(), Duration::from_secs(5)), 20);
        assert_eq!(q.len(), 1, "the newest chunk is always kept");
        assert_eq!(q.push("next".into(), FRAME), 1);
        assert_eq!(q.len(), 1);
    }

    #[tokio::test]
    async fn push_wakes_a_waiter_even_if_it_came_first() {
        let q = AudioQueue::new(FRAME * 2);
        q.push("a".into(), FRAME);
        // The permit stored by notify_one makes this return at once.
        tokio::time::timeout(std::time::Duration::from_secs(1), q.notified())
            .await
            .unwrap();
    }
}
