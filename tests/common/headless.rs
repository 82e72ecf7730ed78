//! Drives the real binary: `termphone headless` over stdin/stdout.

use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::common::net::WAIT;

/// The binary with its config and data directories in `home`.
pub fn termphone(home: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_termphone"));
    cmd.env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env_remove("TERMPHONE_LOG")
        .kill_on_drop(true);
    cmd
}

/// Sends SIGTERM to `child`, which this test spawned, and reads the rest
/// of its stdout (`lines`) until it closes: what the process said as it
/// stopped. A panic if it goes on for 20 s.
pub async fn sigterm_and_read_the_rest(
    child: &Child,
    lines: &mut Lines<BufReader<ChildStdout>>,
) -> String {
    let pid = child.id().expect("still running") as libc::pid_t;
    // SAFETY: kill(2) on the pid of a child this test spawned and still holds.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "kill {pid}");
    let mut out = String::new();
    let read_all = async {
        while let Ok(Some(line)) = lines.next_line().await {
            out.push_str(&line);
            out.push('\n');
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), read_all)
        .await
        .expect("the process ends after SIGTERM");
    out
}

/// `user`'s level in the device's next `USER_VOICE_VOLUME` that has it and
/// passes `check`; a panic after [`WAIT`] without one.
pub async fn volume_of(device: &mut Headless, user: &str, check: impl Fn(u64) -> bool) -> u64 {
    let found = async {
        loop {
            let v = device.expect("USER_VOICE_VOLUME").await;
            let level = v["volumeMap"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["userID"] == user)
                .and_then(|e| e["volume"].as_u64());
            if let Some(level) = level.filter(|l| check(*l)) {
                return level;
            }
        }
    };
    tokio::time::timeout(WAIT, found)
        .await
        .unwrap_or_else(|_| panic!("no USER_VOICE_VOLUME with {user} as asked within {WAIT:?}"))
}

/// Runs the binary to completion, expecting exit status 2; returns stderr.
pub async fn refused_with_status_2(mut cmd: Command) -> String {
    let out = cmd.output().await.unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub struct Headless {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Headless {
    pub fn spawn(home: &std::path::Path, args: &[&str]) -> Headless {
        Self::spawn_with(home, args, Vec::new())
    }

    /// [`Headless::spawn`] with more environment (a private sound server's).
    pub fn spawn_with(
        home: &std::path::Path,
        args: &[&str],
        env: Vec<(&'static str, std::ffi::OsString)>,
    ) -> Headless {
        // A test that gives the environment (a sound server's) keeps each
        // device's log, and picks the audio host as the suite was told to.
        let mut cmd = termphone(home);
        let stderr = match env.is_empty() {
            true => Stdio::null(),
            false => {
                let user = args
                    .windows(2)
                    .find(|w| w[0] == "--user")
                    .map_or("x", |w| w[1]);
                cmd.env("TERMPHONE_LOG", "info").env(
                    "TERMPHONE_AUDIO_HOST",
                    std::env::var("TERMPHONE_AUDIO_HOST").unwrap_or_default(),
                );
                std::fs::File::create(home.join(format!("{user}.log")))
                    .unwrap()
                    .into()
            }
        };
        cmd.envs(env).stderr(stderr);
        Self::start(cmd, args)
    }

    /// [`Headless::spawn`] on a disk as good as full: no file it writes may
    /// grow past `max_file_bytes` (the write fails, as on a full disk).
    pub fn spawn_with_files_up_to(
        home: &std::path::Path,
        args: &[&str],
        max_file_bytes: u64,
    ) -> Headless {
        let mut cmd = termphone(home);
        cmd.stderr(Stdio::null());
        // SAFETY: setrlimit and signal are async-signal-safe, and touch only
        // the child between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: max_file_bytes,
                    rlim_max: max_file_bytes,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The write fails with EFBIG instead of killing the process.
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                Ok(())
            });
        }
        Self::start(cmd, args)
    }

    fn start(mut cmd: Command, args: &[&str]) -> Headless {
        let mut child = cmd
            .arg("headless")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Headless {
            child,
            stdin,
            stdout,
        }
    }

    pub async fn send(&mut self, cmd: Value) {
        self.write(format!("{cmd}\n").as_bytes()).await;
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).await.unwrap();
    }

    /// `kill -9`: the process dies at once, whatever it was doing.
    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }

    /// The end of stdin, as when a script's input runs out.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Next event line; every stdout line must be one JSON event with a ts.
    pub async fn next(&mut self) -> Option<Value> {
        let line = tokio::time::timeout(WAIT, self.stdout.next_line())
            .await
            .expect("an event in time")
            .unwrap()?;
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout line {line:?}: {e}"));
        assert!(v["event"].is_string() && v["ts"].is_u64(), "{line}");
        Some(v)
    }

    /// The next `name` event, skipping others. A device in a call prints
    /// `USER_VOICE_VOLUME` five times a second, so besides each line's own
    /// deadline the whole wait has one: an event that never comes fails
    /// the test instead of hanging it.
    pub async fn expect(&mut self, name: &str) -> Value {
        let deadline = tokio::time::Instant::now() + 3 * WAIT;
        let mut seen = Vec::new();
        loop {
            let next = tokio::time::timeout_at(deadline, self.next()).await;
            match next {
                Ok(Some(v)) if v["event"] == name => return v,
                Ok(Some(v)) => seen.push(v),
                Ok(None) => panic!("stdout closed before {name}; saw {seen:?}"),
                Err(_) => panic!("no {name} within {:?}; saw {seen:?}", 3 * WAIT),
            }
        }
    }

    pub async fn exits_cleanly(mut self) {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "{status}");
    }
}
