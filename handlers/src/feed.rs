//! A call's live feed: transcripts, key presses, barge-ins and the end, broadcast to whoever
//! listens (the live-feed WebSocket, the `/client` subscribers, the call recorder).

use serde::Serialize;

/// Events kept for slow listeners before they start missing some (allocated up front, per
/// call: 64 covers seconds of transcript deltas for a follower that reads as they come).
pub const FEED_CAPACITY: usize = 64;

/// One thing that happened on a call.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FeedEvent {
    /// Words of the caller (`user`) or the assistant (`assistant`).
    Transcript {
        /// `user` or `assistant`.
        role: &'static str,
        /// The text (a delta, or the whole utterance when final).
        text: String,
        /// The utterance is complete.
        is_final: bool,
        /// Milliseconds since the call started.
        at_ms: u64,
    },
    /// A DTMF sequence (`[redacted]` in PCI mode).
    Dtmf {
        /// The digits, or `[redacted]`.
        digits: String,
        /// Milliseconds since the call started.
        at_ms: u64,
    },
    /// The caller interrupted the assistant.
    BargeIn {
        /// Assistant audio the caller had heard, ms.
        played_ms: u64,
        /// Milliseconds since the call started.
        at_ms: u64,
    },
    /// The call was handed to a configured destination (`transfer_call`).
    Transferred {
        /// The destination's name (never its number).
        target: String,
        /// Milliseconds since the call started.
        at_ms: u64,
    },
    /// The call ended.
    CallEnded {
        /// The close code sent to the carrier.
        close_code: u16,
        /// `completed`, `failed`, ...
        outcome: &'static str,
    },
}

/// A call's broadcast channel.
pub type Feed = tokio::sync::broadcast::Sender<FeedEvent>;
