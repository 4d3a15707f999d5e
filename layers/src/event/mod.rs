//! Layers for any request type (used on carrier events).

mod catch_panic;
mod trace;
mod validate;

pub use catch_panic::{CatchPanic, CatchPanicLayer, Panicked};
pub use trace::{MakeSpan, Trace, TraceLayer};
pub use validate::{Decode, Validate, ValidateLayer};
