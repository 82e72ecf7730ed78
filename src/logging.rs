//! Logs: to stderr for the relay and headless mode, to a file for the TUI
//! (whose terminal must show nothing but the UI). `TERMPHONE_LOG` sets the
//! filter, in tracing's env-filter syntax (e.g. `debug`, `termphone=trace`).

use std::io::IsTerminal;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// Libraries whose trace level prints whole frames: a login's ticket, an
/// admin request's token, every message's text. Capped whatever
/// `TERMPHONE_LOG` says, so that no filter puts a secret in a log.
const FRAME_DUMPERS: &[&str] = &["tungstenite=debug", "tokio_tungstenite=debug"];

fn filter(default: &str) -> EnvFilter {
    let filter =
        EnvFilter::try_from_env("TERMPHONE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // Below trace nothing dumps a frame, and a cap would raise their level.
    if filter
        .max_level_hint()
        .is_some_and(|max| max < tracing_subscriber::filter::LevelFilter::TRACE)
    {
        return filter;
    }
    FRAME_DUMPERS.iter().fold(filter, |f, directive| {
        f.add_directive(directive.parse().expect("a valid directive"))
    })
}

/// Colours only on a terminal: a relay started in the background writes its
/// stderr to `relay.log`, which must read as plain text.
pub fn to_stderr(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(filter(default))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Logs to `dir/termphone.log` while the returned guard lives: keep it
/// until the screen is given back, so the last lines are written.
///
/// The process's stderr goes to the same file: ALSA (through cpal) writes its
/// own messages there, and on the terminal they would tear through the TUI.
/// Dropping the guard gives stderr back, so that why termphone stopped is
/// said where it was started.
pub fn to_file(dir: &Path) -> std::io::Result<FileLogging> {
    std::fs::create_dir_all(dir)?;
    let stderr_log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(dir.join("termphone.log"))?;
    let stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
    // SAFETY: dup2 on two open descriptors; fd 2 then refers to the log file
    // (the `File` closing its own descriptor afterwards leaves fd 2 open).
    if unsafe { libc::dup2(stderr_log.as_raw_fd(), libc::STDERR_FILENO) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let (writer, guard) =
        tracing_appender::non_blocking(tracing_appender::rolling::never(dir, "termphone.log"));
    tracing_subscriber::fmt()
        .with_env_filter(filter("info"))
        .with_writer(writer)
        .with_ansi(false)
        .init();
    Ok(FileLogging {
        _writer: guard,
        stderr,
    })
}

/// Logging to a file, with the terminal's stderr kept aside until dropped.
pub struct FileLogging {
    _writer: WorkerGuard,
    stderr: OwnedFd,
}

impl FileLogging {
    /// The terminal's stderr, for what must be said there while the log
    /// file holds fd 2 (once the screen is given back).
    pub fn terminal(&self) -> std::io::Result<std::fs::File> {
        self.stderr.try_clone().map(std::fs::File::from)
    }
}

impl Drop for FileLogging {
    fn drop(&mut self) {
        // SAFETY: dup2 on two open descriptors: fd 2 is the terminal's again.
        unsafe { libc::dup2(self.stderr.as_raw_fd(), libc::STDERR_FILENO) };
    }
}
