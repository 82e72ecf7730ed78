#![allow(dead_code)]

pub mod headless;
pub mod mesh;
pub mod net;
pub mod pulse;

/// Tests that judge real time (a call's audio on its 20 ms clock) and the
/// suite's heaviest tests take turns: on a 2-core machine the heavy ones
/// starve the media thread, and a gap in the audio would then say something
/// about the machine, not about termphone.
pub static REAL_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits (at most a minute) until the machine is mostly idle: for a test
/// whose measure is the media thread keeping real time (an echo canceller
/// converging), with the rest of the suite still winding down beside it.
/// Idle is 70% of the CPU time over half a second, from /proc/stat; where
/// that cannot be read, it does not wait.
pub async fn quiet_machine() {
    fn idle_and_total() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = (stat.lines().next()?.split_whitespace().skip(1))
            .filter_map(|n| n.parse().ok())
            .collect();
        // user nice system idle iowait ...: idle and iowait are idle.
        Some((cpu.get(3)? + cpu.get(4)?, cpu.iter().sum()))
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        let Some((idle0, total0)) = idle_and_total() else {
            return;
        };
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let Some((idle1, total1)) = idle_and_total() else {
            return;
        };
        if (idle1 - idle0) * 10 >= (total1 - total0).max(1) * 7 {
            return;
        }
    }
}
