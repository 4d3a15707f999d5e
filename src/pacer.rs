//! Pacing for carriers that buffer only a little of what we send and drop the rest
//! silently (Voximplant: about 10 s, PROTOCOLS.md §5.3).

use std::collections::VecDeque;
use std::time::Duration;

use callgate_handlers::dialect::OutFrame;

/// Keeps outbound audio at most `lead` ahead of real time, for carriers that buffer only a
/// little and drop the rest silently (Voximplant: about 10 s, PROTOCOLS.md §5.3).
#[derive(Debug)]
pub struct Pacer {
    lead: Duration,
    /// When everything handed to the carrier so far will have played.
    playhead: tokio::time::Instant,
    queue: VecDeque<(Vec<OutFrame>, Duration)>,
}

impl Pacer {
    pub fn new(lead: Duration) -> Self {
        Self {
            lead,
            playhead: tokio::time::Instant::now(),
            queue: VecDeque::new(),
        }
    }

    /// Queues frames carrying `audio` of playback and returns whatever may go now.
    pub fn push(&mut self, frames: Vec<OutFrame>, audio: Duration) -> Vec<OutFrame> {
        self.queue.push_back((frames, audio));
        self.release()
    }

    /// Frames whose turn has come.
    pub fn release(&mut self) -> Vec<OutFrame> {
        let now = tokio::time::Instant::now();
        let mut out = Vec::new();
        while self.queue.front().is_some()
            && self.playhead.saturating_duration_since(now) < self.lead
        {
            let (frames, audio) = self.queue.pop_front().expect("checked");
            self.playhead = self.playhead.max(now) + audio;
            out.extend(frames);
        }
        out
    }

    /// When the next queued frames may go.
    pub fn next_due(&self) -> Option<tokio::time::Instant> {
        (!self.queue.is_empty()).then(|| self.playhead - self.lead)
    }

    /// Barge-in: nothing queued will ever play.
    pub fn clear(&mut self) {
        self.queue.clear();
        self.playhead = tokio::time::Instant::now();
    }
}
