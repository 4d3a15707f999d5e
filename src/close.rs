//! [`CloseReason`]: any error of a call → a WebSocket close code and a short reason.
//!
//! One rescue function, in the manner of tonic's `Status::from_error`: walk the error's
//! `source()` chain and let the first error we recognise decide. The client gets the short
//! reason; the span and log get the full error.

use std::borrow::Cow;

use callgate_handlers::dialect::DecodeError;
use callgate_handlers::EventError;
use callgate_layers::event::Panicked;
use callgate_layers::BoxError;
use tokio_tungstenite::tungstenite::Error as WsError;

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

/// Every way a call can end, and the one way an event can fail without ending it.
#[derive(Debug)]
pub enum Ending<'a> {
    /// The carrier sent `stop`.
    Stopped,
    /// The carrier closed its socket or stopped reading: no close frame can reach it.
    CarrierGone,
    /// The assistant ended the conversation (`end_call`).
    HungUp,
    /// The assistant handed the call to a person (`transfer_call`).
    Transferred,
    /// The model side failed for good (reconnects and any fallback audio spent).
    UpstreamFailed,
    /// An event failed in the event stack.
    Event(&'a BoxError),
    /// The socket refused a frame (size, UTF-8, framing) or failed.
    Socket(&'a WsError),
    /// A detection route could not tell which carrier this is.
    Undetected(&'a str),
    /// No valid `start` before the deadline; `deferred_auth`: the `start` had to authenticate.
    NoStart {
        /// The route authenticates in `start`: the silence counts as a failed attempt.
        deferred_auth: bool,
    },
    /// Invalid frames in a row reached `calls.max_consecutive_bad_frames`.
    TooManyBadFrames,
    /// The socket's frame budget ran out.
    Flood,
    /// No frame from the carrier within the idle timeout.
    Idle,
    /// The drain deadline passed.
    Shutdown,
    /// The call's task panicked.
    Panicked,
}

/// What an [`Ending`] means; the connection records metrics, logs and spans from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rescue {
    /// How the call closes (`None`: it goes on; bad input below the limit).
    pub close: Option<CloseReason>,
    /// False when the carrier is gone and a close frame would go nowhere.
    pub send_close: bool,
    /// The `callgate_bad_frames_total` reason, when the carrier sent something invalid.
    pub bad_frame: Option<&'static str>,
    /// The client address failed authentication (feeds the failed-auth blocklist).
    pub failed_auth: bool,
    /// Counted in `callgate_panics_total`.
    pub panicked: bool,
}

impl Rescue {
    const fn closes(close: CloseReason) -> Self {
        Self {
            close: Some(close),
            send_close: true,
            bad_frame: None,
            failed_auth: false,
            panicked: false,
        }
    }

    const fn bad_input(reason: &'static str) -> Self {
        Self {
            close: None,
            send_close: true,
            bad_frame: Some(reason),
            failed_auth: false,
            panicked: false,
        }
    }

    fn counting(mut self, reason: &'static str) -> Self {
        self.bad_frame = Some(reason);
        self
    }
}

impl CloseReason {
    /// A close that is the gateway's or the model's failure: the call span's status is ERROR.
    pub fn is_error(&self) -> bool {
        self.code == 1011
    }
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

/// The one rescue: every way a call ends → close code, short reason, outcome (via
/// [`CloseReason::outcome`]) and what to count. Pure; the caller records.
pub fn rescue(ending: Ending<'_>) -> Rescue {
    match ending {
        Ending::Stopped => Rescue::closes(CloseReason::NORMAL),
        Ending::CarrierGone => Rescue {
            send_close: false,
            ..Rescue::closes(CloseReason::NORMAL)
        },
        Ending::HungUp => Rescue::closes(CloseReason::NORMAL),
        Ending::Transferred => Rescue::closes(CloseReason::TRANSFERRED),
        Ending::UpstreamFailed => Rescue::closes(CloseReason::UPSTREAM),
        Ending::Event(error) => event_failed(error),
        Ending::Socket(error) => match error {
            WsError::Capacity(_) => Rescue::closes(CloseReason::TOO_BIG).counting("too_big"),
            // RFC 6455 §8.1: text that is not UTF-8 fails the connection with 1007.
            WsError::Utf8(_) => Rescue::closes(CloseReason::BAD_UTF8).counting("invalid_utf8"),
            WsError::Protocol(_) => Rescue::closes(CloseReason::PROTOCOL).counting("protocol"),
            // A reset or a dead peer: nothing the carrier sent was wrong.
            _ => Rescue::closes(CloseReason::PROTOCOL),
        },
        Ending::Undetected(why) => Rescue::closes(CloseReason {
            code: 1008,
            reason: short(format!("unknown carrier: {why}")).into(),
        })
        .counting("undetected"),
        Ending::NoStart { deferred_auth } => Rescue {
            failed_auth: deferred_auth,
            ..Rescue::closes(match deferred_auth {
                true => CloseReason::AUTH_TIMEOUT,
                false => CloseReason::NO_START,
            })
            .counting("no_start")
        },
        Ending::TooManyBadFrames => Rescue::closes(CloseReason::TOO_MANY_BAD_FRAMES),
        Ending::Flood => Rescue::closes(CloseReason::FLOOD).counting("flood"),
        Ending::Idle => Rescue::closes(CloseReason::IDLE),
        Ending::Shutdown => Rescue::closes(CloseReason::GOING_AWAY),
        Ending::Panicked => Rescue {
            panicked: true,
            ..Rescue::closes(CloseReason::INTERNAL)
        },
    }
}

/// An error from the event stack: walk its `source()` chain (in the manner of tonic's
/// `Status::from_error`) and let the first error we recognise decide.
fn event_failed(error: &BoxError) -> Rescue {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error.as_ref());
    while let Some(e) = current {
        if let Some(e) = e.downcast_ref::<DecodeError>() {
            return match e {
                // Every frame after it would fail too: say at once what to change.
                DecodeError::UnsupportedFormat(what) => Rescue::closes(CloseReason {
                    code: 1003,
                    reason: short(format!("unsupported codec {what}")).into(),
                })
                .counting(e.reason()),
                e => Rescue::bad_input(e.reason()),
            };
        }
        if let Some(e) = e.downcast_ref::<EventError>() {
            return match e {
                EventError::Unauthorized => Rescue {
                    failed_auth: true,
                    ..Rescue::closes(CloseReason::UNAUTHORIZED)
                },
                EventError::Overloaded => Rescue::closes(CloseReason::OVERLOADED),
                e if e.is_bad_input() => Rescue::bad_input(e.reason()),
                _ => Rescue::closes(CloseReason::INTERNAL),
            };
        }
        if e.downcast_ref::<Panicked>().is_some() {
            return rescue(Ending::Panicked);
        }
        current = e.source();
    }
    Rescue::closes(CloseReason::INTERNAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_errors_walk_to_the_known_error() {
        let bad: BoxError = Box::new(DecodeError::Binary);
        assert_eq!(
            rescue(Ending::Event(&bad)),
            Rescue::bad_input("binary_frame")
        );
        let early: BoxError = Box::new(EventError::NotStarted);
        assert_eq!(
            rescue(Ending::Event(&early)),
            Rescue::bad_input("before_start")
        );
        let codec: BoxError = Box::new(DecodeError::UnsupportedFormat("g729".into()));
        let close = rescue(Ending::Event(&codec)).close.unwrap();
        assert_eq!((close.code, close.outcome()), (1003, "unsupported_format"));
        let refused: BoxError = Box::new(EventError::Unauthorized);
        let refused = rescue(Ending::Event(&refused));
        assert!(refused.failed_auth);
        assert_eq!(refused.close, Some(CloseReason::UNAUTHORIZED));
        let panic: BoxError = Box::new(Panicked {
            message: "x".into(),
        });
        let panic = rescue(Ending::Event(&panic));
        assert!(panic.panicked);
        assert_eq!(panic.close, Some(CloseReason::INTERNAL));
        let other: BoxError = "something".into();
        assert_eq!(
            rescue(Ending::Event(&other)).close,
            Some(CloseReason::INTERNAL)
        );
    }

    #[test]
    fn every_ending_has_a_code_and_an_outcome() {
        let utf8 = WsError::Utf8("x".into());
        let cases = [
            (Ending::Stopped, 1000, "completed"),
            (Ending::CarrierGone, 1000, "completed"),
            (Ending::HungUp, 1000, "completed"),
            (Ending::Transferred, 1000, "transferred"),
            (Ending::UpstreamFailed, 1011, "failed"),
            (Ending::Socket(&utf8), 1007, "bad_input"),
            (Ending::Undetected("no start event"), 1008, "policy"),
            (
                Ending::NoStart {
                    deferred_auth: false,
                },
                1008,
                "policy",
            ),
            (
                Ending::NoStart {
                    deferred_auth: true,
                },
                1008,
                "policy",
            ),
            (Ending::TooManyBadFrames, 1007, "bad_input"),
            (Ending::Flood, 1008, "policy"),
            (Ending::Idle, 1001, "drained"),
            (Ending::Shutdown, 1001, "drained"),
            (Ending::Panicked, 1011, "failed"),
        ];
        for (ending, code, outcome) in cases {
            let what = format!("{ending:?}");
            let close = rescue(ending).close.expect(&what);
            assert_eq!((close.code, close.outcome()), (code, outcome), "{what}");
            assert!(close.reason.len() <= 123);
        }
        assert!(!rescue(Ending::CarrierGone).send_close);
        assert!(
            rescue(Ending::NoStart {
                deferred_auth: true
            })
            .failed_auth
        );
        assert_eq!(
            rescue(Ending::Socket(&utf8)).bad_frame,
            Some("invalid_utf8")
        );
        let long = "x".repeat(500);
        assert!(
            rescue(Ending::Undetected(&long))
                .close
                .unwrap()
                .reason
                .len()
                <= 123
        );
    }
}
