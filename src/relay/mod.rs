//! `termphone relay`: the server every device connects to.

pub mod core;
pub mod gate;
pub mod media;
pub mod rate;
pub mod server;
pub mod store;

use std::time::Duration;

pub use server::{RelayError, RelayHandle, start, start_with};

use std::path::Path;

use crate::config::RelayConfig;
use crate::signals::Signals;
use crate::tls::Fingerprint;
use store::Store;

/// The directory of the relay's database, where a self-signed certificate
/// is kept too.
pub fn data_dir(db: &Path) -> &Path {
    match db.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// `relay: wss://HOST:PORT  certificate SHA-256 AB:CD:…`, what the relay
/// prints at start and for `--print-fingerprint`.
pub fn fingerprint_line(url: &str, fingerprint: Fingerprint) -> String {
    format!("relay: {url}  certificate SHA-256 {fingerprint}")
}

/// `termphone relay --print-fingerprint`: the certificate the relay would
/// present (made now if it is a self-signed one not made yet).
pub fn print_fingerprint(config: &RelayConfig, db: &Path) -> Result<(), RelayError> {
    let dir = data_dir(db);
    let tls = server::server_tls(config, Some(dir))?;
    let url = format!("wss://{}", config.listen);
    println!("{}", fingerprint_line(&url, tls.fingerprint));
    Ok(())
}

/// Runs a relay in the foreground until SIGINT or SIGTERM (or, with
/// `exit_when_idle`, until it has had no connection for that long), then
/// shuts down gracefully. Prints `listening on ws://ADDR` on stdout once
/// bound; with TLS `listening on wss://ADDR`, then the certificate's
/// fingerprint line (see [`fingerprint_line`]).
pub async fn run(
    config: &RelayConfig,
    db: &Path,
    exit_when_idle: Option<Duration>,
) -> Result<(), RelayError> {
    // Refused before anything is made: no certificate or database is left
    // behind by a relay that never ran.
    server::check_exposure(config, config.tls)?;
    let dir = data_dir(db);
    // The relay's data directory holds its database and, with TLS, its key:
    // nobody else's to read.
    if let Err(e) = crate::tls::create_private_dir(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot create the relay's data directory");
    }
    let tls = match config.tls {
        true => Some(server::server_tls(config, Some(dir))?),
        false => None,
    };
    let relay = start_with(config, Store::open(db)?, tls).await?;
    // Listened for before the address is printed: whoever read it may signal
    // at once, and a signal with no handler yet would kill the relay
    // mid-write (SIGHUP's default) instead of closing its store cleanly.
    let signals = Signals::new().map_err(RelayError::Signals)?;
    // One write, whose failure (nobody reads stdout any more) is no reason
    // to stop: a reader that took the first line and left gets no half.
    let mut said = format!("listening on {}\n", relay.url());
    if let Some(fingerprint) = relay.fingerprint() {
        said += &format!("{}\n", fingerprint_line(&relay.url(), fingerprint));
    }
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), said.as_bytes());
    let reason = wait_for_stop(&relay, signals, exit_when_idle).await;
    tracing::info!(reason, "relay stopping");
    relay.shutdown().await;
    Ok(())
}

/// A SIGHUP (its terminal closed) stops the relay as SIGTERM does, its
/// sessions and store closed cleanly: nothing is reloaded, so a renewed
/// certificate takes a restart.
async fn wait_for_stop(
    relay: &RelayHandle,
    mut signals: Signals,
    exit_when_idle: Option<Duration>,
) -> &'static str {
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
        signal = signals.recv() => signal,
        _ = idle => "idle",
    }
}
