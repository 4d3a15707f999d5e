//! callgate-handlers: the call domain, independent of any HTTP framework.
//!
//! - [`dialect`]: carrier wire formats (inbound JSON → [`event::Event`], outbound framing).
//! - [`router::EventRouter`]: a `tower::Service<Event>` dispatching to one handler per kind
//!   ([`start`], [`media`], [`dtmf`], [`mark`], [`stop`]), all sharing a [`call::CallContext`].
//! - [`call_state::CallStore`]: per-call state behind a cheap handle.
//! - [`codec`]: G.711, PCM16, resampling, base64; pure and synchronous.
//! - [`bridge`]: the model client, one task per call: the call core (reconnects, rollover,
//!   the playback ledger and barge-in, DTMF, tools) acting on provider-neutral events, the
//!   adapters that speak each protocol (OpenAI Realtime, GPT-Live, Gemini Live), the pool of
//!   warm Realtime sessions, and bearer tokens read at each connect.
//! - [`feed`]: each call's live events (transcripts, DTMF, barge-ins, end).
//! - [`recording`]: mixing a call's stereo recording as the caller heard it; [`tape`]: what a
//!   call tape holds and how it is redacted; [`settings`]: reading the sections this crate owns.
#![warn(missing_docs)]

pub mod audio_pace;
pub mod bridge;
pub mod call;
pub mod call_state;
pub mod codec;
pub mod dialect;
pub mod dtmf;
pub mod error;
pub mod event;
pub mod feed;
pub mod mark;
pub mod media;
pub mod pci;
pub mod recording;
pub mod router;
pub mod settings;
pub mod start;
pub mod stop;
pub mod tape;

pub use call::{CallContext, Flow, StartAdmission, StartAuth, StartRejected};
pub use error::EventError;
pub use router::EventRouter;
