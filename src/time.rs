//! The one place the shells read the wall clock. Cores take time as input.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The tokio instant at which unix time `at` (milliseconds) arrives.
pub fn deadline(at: u64) -> tokio::time::Instant {
    let now = unix_millis();
    tokio::time::Instant::now() + Duration::from_millis(at.saturating_sub(now).min(86_400_000))
}
