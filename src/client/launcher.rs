//! Starting the bundled relay in the background when a client finds none.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::net::TcpStream;

/// How long an autostarted relay keeps running without any connection.
pub const AUTOSTART_IDLE_EXIT_SECS: u64 = 60;

/// The file in the data directory that holds the bundled relay's pid.
pub const PID_FILE: &str = "relay.pid";

/// Makes sure a relay answers at `addr`: if nothing does, starts
/// `termphone relay` there as a detached background process (logging to
/// `relay.log` in `data_dir`, its pid in `relay.pid`) and waits until it
/// accepts connections.
pub async fn ensure_relay(addr: SocketAddr, data_dir: &Path) -> Result<(), String> {
    if TcpStream::connect(addr).await.is_ok() {
        return Ok(());
    }
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the termphone binary: {e}"))?;
    // The relay keeps its database here: nobody else's to read.
    crate::tls::create_private_dir(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let log_path = data_dir.join("relay.log");
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("relay")
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--exit-when-idle")
        .arg(AUTOSTART_IDLE_EXIT_SECS.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // Its own process group: Ctrl-C in this terminal must not stop the relay
    // that the user's other terminals are using.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start the bundled relay: {e}"))?;
    tracing::info!(%addr, pid = child.id(), "started the bundled relay");
    // So that a person (or a test) can stop exactly this process.
    let pid_path = data_dir.join(PID_FILE);
    if let Err(e) = std::fs::write(&pid_path, format!("{}\n", child.id())) {
        tracing::warn!(path = %pid_path.display(), error = %e, "cannot write the relay's pid");
    }
    for _ in 0..50 {
        if TcpStream::connect(addr).await.is_ok() {
            // The relay outlives this process on purpose; reap it if it exits first.
            std::thread::spawn(move || child.wait());
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Another terminal may have won the race to start it.
            if TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            return Err(format!(
                "the bundled relay exited ({status}); see {}",
                log_path.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "the bundled relay did not start listening on {addr} within 5 s; see {}",
        log_path.display()
    ))
}
