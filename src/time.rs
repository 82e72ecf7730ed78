//! The one place the shells read the clock. Cores take time as input.
//!
//! That time is unix milliseconds on a clock that never jumps: the wall
//! clock read once, when the process first asks, then advanced by
//! `CLOCK_BOOTTIME`, which counts a suspended laptop's sleep and is never
//! stepped by `date` or NTP. So a wall-clock step cannot fire every timer of
//! a core at once (or hold them all back), and message timestamps stay in
//! order; the price is that a process does not follow a step of the wall
//! clock made after it started (a restart does).

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds, on the process's clock that never jumps.
pub fn unix_millis() -> u64 {
    static ANCHOR: OnceLock<Anchor> = OnceLock::new();
    ANCHOR
        .get_or_init(|| Anchor {
            wall_ms: wall_millis(),
            boot_ms: boot_millis(),
        })
        .at(boot_millis())
}

/// The tokio instant at which unix time `at` (milliseconds) arrives.
pub fn deadline(at: u64) -> tokio::time::Instant {
    let now = unix_millis();
    tokio::time::Instant::now() + Duration::from_millis(at.saturating_sub(now).min(86_400_000))
}

/// The wall clock and the boot clock read at the same moment.
#[derive(Clone, Copy, Debug)]
struct Anchor {
    wall_ms: u64,
    boot_ms: u64,
}

impl Anchor {
    /// Unix time when the boot clock reads `boot_ms`.
    fn at(self, boot_ms: u64) -> u64 {
        self.wall_ms + boot_ms.saturating_sub(self.boot_ms)
    }
}

fn wall_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn boot_millis() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the space given.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } == 0;
    if ok {
        ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
    } else {
        // Only a kernel older than 2.6.39 lacks it; the wall clock is then
        // the best there is.
        wall_millis()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_moves_with_the_boot_clock_not_the_wall() {
        let anchor = Anchor {
            wall_ms: 1_795_435_200_000,
            boot_ms: 5_000,
        };
        assert_eq!(anchor.at(5_000), 1_795_435_200_000);
        assert_eq!(anchor.at(65_000), 1_795_435_260_000);
    }

    #[test]
    fn the_clock_starts_at_the_wall_clock_and_never_goes_back() {
        let first = unix_millis();
        assert!(first.abs_diff(wall_millis()) < 1_000);
        let mut last = first;
        for _ in 0..1_000 {
            let now = unix_millis();
            assert!(now >= last);
            last = now;
        }
    }
}
