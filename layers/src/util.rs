//! Two small helpers every crate of the gateway uses.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, recovering it if a panic poisoned it: every lock in the gateway guards a
/// plain map or queue that a panic cannot leave half-written in a way that matters more than
/// losing the call that panicked (which is isolated and closed 1011).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sleeps until `at`, or forever when there is nothing to wait for (a `select!` arm that
/// is off until a deadline is set).
pub async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
