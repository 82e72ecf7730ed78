//! `termphone relay`: the server every device connects to.

pub mod core;
pub mod gate;
pub mod media;
pub mod rate;
pub mod server;
pub mod store;

use std::time::Duration;

pub use server::{RelayError, RelayHandle, start};

use crate::config::RelayConfig;
use store::Store;

/// Runs a relay in the foreground until SIGINT or SIGTERM (or, with
/// `exit_when_idle`, until it has had no connection for that long), then
/// shuts down gracefully. Prints `listening on ws://ADDR` on stdout once bound.
pub async fn run(
    config: &RelayConfig,
    db: &std::path::Path,
    exit_when_idle: Option<Duration>,
) -> Result<(), RelayError> {
    if let Some(dir) = db.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let relay = start(config, Store::open(db)?).await?;
    println!("listening on {}", relay.url());
    let reason = wait_for_stop(&relay, exit_when_idle).await;
    tracing::info!(reason, "relay stopping");
    relay.shutdown().await;
    Ok(())
}

async fn wait_for_stop(relay: &RelayHandle, exit_when_idle: Option<Duration>) -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let idle = async {
        let Some(limit) = exit_when_idle else {
            return std::future::pending().await;
        };
        let mut idle_since = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if relay.active_connections() > 0 {
                idle_since = tokio::time::Instant::now();
            } else if idle_since.elapsed() >= limit {
                return;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
        _ = idle => "idle",
    }
}
