//! HTTP middleware for WebSocket upgrades: who is calling, may they, and how often.
//!
//! Route layers, outermost first: [`client_ip`] (trusted proxies) → [`admission`] (origin,
//! per-IP and global limiters, failed-auth blocking) → [`auth`] (JWT, Twilio signature,
//! Basic, IP allow-list). [`caps`] holds the concurrent-call permits that outlive the
//! request.

pub mod admission;
pub mod auth;
pub mod caps;
pub mod client_ip;
pub mod limit;
