//! Errors of the event handlers.

/// Why a handler rejected an event.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// Any event before `start` (kind unknown to the caller).
    #[error("event before start")]
    NotStarted,
    /// A second `start` on the same socket.
    #[error("duplicate start")]
    AlreadyStarted,
    /// The event's `streamSid` is not this call's.
    #[error("streamSid does not match the call")]
    StreamSidMismatch,
    /// The media payload is not valid base64.
    #[error("media payload is not valid base64")]
    BadBase64,
    /// One media message carries more audio than allowed.
    #[error("media message carries {ms} ms of audio (at most {max_ms} ms)")]
    MediaTooLong {
        /// Audio in the message.
        ms: u64,
        /// The limit (`security.max_media_ms`).
        max_ms: u64,
    },
    /// `start` without valid credentials on a route that requires them.
    #[error("unauthorized")]
    Unauthorized,
    /// A call cap is full.
    #[error("call limit reached")]
    Overloaded,
    /// Audio conversion could not be set up.
    #[error("audio setup failed: {0}")]
    Audio(String),
}

impl EventError {
    /// True when the carrier sent something wrong (counted toward the 1007 limit), false
    /// when the gateway failed (1011).
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, Self::Audio(_) | Self::Unauthorized | Self::Overloaded)
    }

    /// A short, bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotStarted => "before_start",
            Self::AlreadyStarted => "duplicate_start",
            Self::StreamSidMismatch => "stream_sid_mismatch",
            Self::BadBase64 => "bad_base64",
            Self::MediaTooLong { .. } => "media_too_long",
            Self::Unauthorized => "unauthorized",
            Self::Overloaded => "overloaded",
            Self::Audio(_) => "audio_setup",
        }
    }
}
