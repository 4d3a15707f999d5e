//! [`CloseReason`]: any error of a call → a WebSocket close code and a short reason.
//!
//! One rescue function, in the manner of tonic's `Status::from_error`: walk the error's
//! `source()` chain and let the first error we recognise decide. The client gets the short
//! reason; the span and log get the full error.

use std::borrow::Cow;

use callgate_handlers::bridge::BridgeError;
use callgate_handlers::dialect::DecodeError;
use callgate_handlers::EventError;
use callgate_layers::event::Panicked;
use callgate_layers::BoxError;

/// A close code and the short reason sent with it (at most 123 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// RFC 6455 close code.
    pub code: u16,
    /// Short human reason; never contains secrets or carrier data.
    pub reason: Cow<'static, str>,
}

impl CloseReason {
    const fn new(code: u16, reason: &'static str) -> Self {
        Self {
            code,
            reason: Cow::Borrowed(reason),
        }
    }

    /// 1000: the carrier sent `stop`.
    pub const NORMAL: Self = Self::new(1000, "call ended");
    /// 1000: the call was handed to a person (`transfer_call`).
    pub const TRANSFERRED: Self = Self::new(1000, "call transferred");
    /// 1001: the gateway is shutting down.
    pub const GOING_AWAY: Self = Self::new(1001, "gateway shutting down");
    /// 1002: the carrier broke the WebSocket protocol.
    pub const PROTOCOL: Self = Self::new(1002, "protocol error");
    /// 1001: no frame from the carrier within the idle timeout (a half-open socket).
    pub const IDLE: Self = Self::new(1001, "carrier idle");
    /// 1007: a text frame that is not UTF-8.
    pub const BAD_UTF8: Self = Self::new(1007, "invalid UTF-8");
    /// 1007: a run of consecutive invalid frames.
    pub const TOO_MANY_BAD_FRAMES: Self = Self::new(1007, "too many invalid frames");
    /// 1008: the call's credentials were refused.
    pub const UNAUTHORIZED: Self = Self::new(1008, "unauthorized");
    /// 1008: no valid `start` within the deadline on a token-in-start route.
    pub const AUTH_TIMEOUT: Self = Self::new(1008, "authentication timeout");
    /// 1008: no valid `start` within `calls.start_deadline_ms` (any route).
    pub const NO_START: Self = Self::new(1008, "no start");
    /// 1008: the carrier sent frames faster than allowed.
    pub const FLOOD: Self = Self::new(1008, "message rate exceeded");
    /// 1013: a call cap is full.
    pub const OVERLOADED: Self = Self::new(1013, "try again later");
    /// 1009: a message over the size limit.
    pub const TOO_BIG: Self = Self::new(1009, "message too big");
    /// 1011: the gateway failed this call.
    pub const INTERNAL: Self = Self::new(1011, "internal error");
    /// 1011: the model side failed.
    pub const UPSTREAM: Self = Self::new(1011, "upstream unavailable");

    /// The outcome label for metrics.
    pub fn outcome(&self) -> &'static str {
        match self.code {
            1000 if self.reason == Self::TRANSFERRED.reason => "transferred",
            1000 => "completed",
            1001 => "drained",
            1007 => "bad_input",
            1008 => "policy",
            1009 => "too_big",
            1003 => "unsupported_format",
            1013 => "overloaded",
            _ => "failed",
        }
    }
}

/// What a failed event means for the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The carrier sent something invalid: count it (label), keep the call unless the run of
    /// bad frames reaches the limit.
    BadInput(&'static str),
    /// The call cannot go on.
    Close(CloseReason),
}

/// At most 123 bytes (a close frame's reason), cut on a character boundary.
fn short(mut text: String) -> String {
    if text.len() > 123 {
        let mut end = 123;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Classifies an error from the event stack.
pub fn classify(error: &BoxError) -> Verdict {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error.as_ref());
    while let Some(e) = current {
        if let Some(e) = e.downcast_ref::<DecodeError>() {
            return match e {
                // Every frame after it would fail too: say at once what to change.
                DecodeError::UnsupportedFormat(what) => Verdict::Close(CloseReason {
                    code: 1003,
                    reason: short(format!("unsupported codec {what}")).into(),
                }),
                e => Verdict::BadInput(e.reason()),
            };
        }
        if let Some(e) = e.downcast_ref::<EventError>() {
            return match e {
                EventError::Unauthorized => Verdict::Close(CloseReason::UNAUTHORIZED),
                EventError::Overloaded => Verdict::Close(CloseReason::OVERLOADED),
                e if e.is_bad_input() => Verdict::BadInput(e.reason()),
                _ => Verdict::Close(CloseReason::INTERNAL),
            };
        }
        if e.downcast_ref::<Panicked>().is_some() {
            metrics::counter!("callgate_panics_total").increment(1);
            return Verdict::Close(CloseReason::INTERNAL);
        }
        if e.downcast_ref::<BridgeError>().is_some() {
            return Verdict::Close(CloseReason::UPSTREAM);
        }
        current = e.source();
    }
    Verdict::Close(CloseReason::INTERNAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_to_the_known_error() {
        let bad: BoxError = Box::new(DecodeError::Binary);
        assert_eq!(classify(&bad), Verdict::BadInput("binary_frame"));
        let early: BoxError = Box::new(EventError::NotStarted);
        assert_eq!(classify(&early), Verdict::BadInput("before_start"));
        let panic: BoxError = Box::new(Panicked {
            message: "x".into(),
        });
        assert_eq!(classify(&panic), Verdict::Close(CloseReason::INTERNAL));
        let other: BoxError = "something".into();
        assert_eq!(classify(&other), Verdict::Close(CloseReason::INTERNAL));
    }
}
