//! A private PulseAudio server with a null sink: a sound card on a real
//! clock for machines that have none (CI). Its runtime directory is a fresh
//! temporary one (mode 700), so it never touches a user's sound server, and
//! it is stopped by its own pid. Used by the suite and by `benches/sound.rs`
//! (which includes this file), so it needs nothing but std, libc and tempfile.
//!
//! cpal's PulseAudio host (and ALSA's pulse plugin, for `arecord`/`aplay`)
//! find it through `PULSE_SERVER`; every process a test starts against it
//! gets [`Pulse::env`].

#![allow(dead_code)]

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const RATE: usize = 48_000;

pub struct Pulse {
    dir: tempfile::TempDir,
    pid: i32,
}

impl Pulse {
    /// Starts a server with one null sink `a` at 48 kHz, whose monitor is
    /// the default source and which is the default sink: what is played to
    /// the default device is captured from the default device. `None`, with
    /// a message, when PulseAudio is not installed.
    pub fn start() -> Option<Pulse> {
        if Command::new("pulseaudio")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!(
                "SKIPPED: pulseaudio is not installed (apt-get install pulseaudio \
                 pulseaudio-utils libasound2-plugins; .ci/run does)"
            );
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("termphone-pulse")
            .tempdir()
            .unwrap();
        // tempfile makes it 0700: only this user can reach the server.
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        let mut pulse = Pulse { dir, pid: 0 };
        let socket = pulse.socket();
        let status = pulse
            .command("pulseaudio")
            .args([
                "--daemonize=yes",
                "--exit-idle-time=-1",
                "--use-pid-file=yes",
                "--disable-shm=yes",
                "-n",
            ])
            .arg(format!(
                "--load=module-native-protocol-unix auth-anonymous=1 socket={}",
                socket.display()
            ))
            .arg("--load=module-null-sink sink_name=a rate=48000 channels=2")
            .arg(format!(
                "--log-target=file:{}",
                pulse.dir.path().join("pulse.log").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pulseaudio did not start: {status}");
        let pid_file = pulse.dir.path().join("runtime/pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() || !pid_file.exists() {
            assert!(Instant::now() < deadline, "no pulseaudio socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        pulse.pid = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        pulse.pactl(&["set-default-sink", "a"]);
        pulse.pactl(&["set-default-source", "a.monitor"]);
        Some(pulse)
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("runtime/native")
    }

    /// What a process needs to use this server, and only it.
    pub fn env(&self) -> Vec<(&'static str, OsString)> {
        let d = self.dir.path();
        vec![
            ("XDG_RUNTIME_DIR", d.into()),
            ("PULSE_RUNTIME_PATH", d.join("runtime").into()),
            ("PULSE_STATE_PATH", d.join("state").into()),
            (
                "PULSE_SERVER",
                format!("unix:{}", self.socket().display()).into(),
            ),
            ("PULSE_COOKIE", d.join("cookie").into()),
        ]
    }

    /// `program` with this server's environment (and a private HOME).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.envs(self.env())
            .env("HOME", self.dir.path().join("home"));
        cmd
    }

    pub fn pactl(&self, args: &[&str]) -> String {
        let out = self.command("pactl").args(args).output().unwrap();
        assert!(out.status.success(), "pactl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Records `device` (a source) as 48 kHz mono until [`Recording::stop`];
    /// returns once the recording has begun.
    pub fn record(&self, device: &str) -> Recording {
        let mut child = self
            .command("parec")
            .args([
                "-d",
                device,
                "--format=float32le",
                "--rate=48000",
                "--channels=1",
                "--latency-msec=10",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let bytes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = bytes.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while bytes.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "parec recorded nothing");
            std::thread::sleep(Duration::from_millis(5));
        }
        Recording {
            child,
            reader,
            bytes,
        }
    }

    /// Plays `samples` (48 kHz mono) into `sink`, returning at once.
    pub fn play(&self, sink: &str, samples: &[f32]) -> Child {
        let path = self.dir.path().join(format!("play-{}.raw", samples.len()));
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        std::fs::write(&path, bytes).unwrap();
        self.command("pacat")
            .args([
                "-d",
                sink,
                "--format=float32le",
                "--rate=48000",
                "--channels=1",
                "--latency-msec=10",
            ])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Pulse {
    /// Stops this server, by its pid, and nothing else.
    fn drop(&mut self) {
        if self.pid > 0 {
            // SAFETY: a signal to the one process this value started.
            unsafe { libc::kill(self.pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            // SAFETY: signal 0 only asks whether the pid still exists.
            while unsafe { libc::kill(self.pid, 0) } == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

pub struct Recording {
    child: Child,
    reader: std::thread::JoinHandle<()>,
    bytes: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Recording {
    /// Stops recording; what was recorded, 48 kHz mono.
    pub fn stop(mut self) -> Vec<f32> {
        // SAFETY: a signal to the recorder this value started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        let _ = self.reader.join();
        let bytes = self.bytes.lock().unwrap();
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }
}

/// A click: 5 ms of a 1 kHz tone at half scale, then `silence_ms` of silence.
pub fn click(silence_ms: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..RATE / 200)
        .map(|i| 0.5 * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / RATE as f32).sin())
        .collect();
    v.resize(v.len() + silence_ms * RATE / 1000, 0.0);
    v
}

/// Where each click starts in `recording`, in samples: the first 1 ms
/// window whose peak passes `threshold`, at least `gap_ms` after the last.
pub fn onsets(recording: &[f32], threshold: f32, gap_ms: usize) -> Vec<usize> {
    let window = RATE / 1000;
    let mut out: Vec<usize> = Vec::new();
    for (k, w) in recording.chunks(window).enumerate() {
        let at = k * window;
        let loud = w.iter().any(|s| s.abs() > threshold);
        if loud
            && out
                .last()
                .is_none_or(|&last| at >= last + gap_ms * RATE / 1000)
        {
            out.push(at);
        }
    }
    out
}
