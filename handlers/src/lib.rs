pub mod codec;
pub mod dialect;
pub mod event;
