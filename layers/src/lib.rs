//! callgate-layers: Tower middleware that knows nothing of telephony.
//!
//! The event layers are generic over the request type, so the per-connection event stack is
//! built from the same kind of parts as an HTTP stack:
//!
//! - [`event::ValidateLayer`]: turn a raw request into a typed one, or reject it.
//! - [`event::TraceLayer`]: one span per request, unless the hook says the request is too
//!   frequent to deserve one.
//! - [`event::CatchPanicLayer`]: a panic in the inner service becomes an error.

pub mod event;

/// The error type every layer here returns.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
