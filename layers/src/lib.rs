//! callgate-layers: Tower middleware that knows nothing of telephony.
//!
//! The event layers are generic over the request type, so the per-connection event stack is
//! built from the same kind of parts as an HTTP stack:
//!
//! - [`event::ValidateLayer`]: turn a raw request into a typed one, or reject it.
//! - [`event::TraceLayer`]: one span per request, unless the hook says the request is too
//!   frequent to deserve one.
//! - [`event::CatchPanicLayer`]: a panic in the inner service becomes an error.
//!
//! The HTTP layers ([`http`]) admit WebSocket upgrades: client IP behind trusted proxies,
//! origin and rate limits (governor), authentication (JWT via `jsonwebtoken` with the
//! `rust_crypto` backend, Twilio signatures, Basic, IP allow-lists).
#![warn(missing_docs)]

pub mod event;
pub mod http;
pub mod util;

/// The error type every layer here returns.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Installs the one JWT crypto backend (`rust_crypto`). Call once at startup; later calls
/// are harmless.
pub fn install_crypto() {
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}
