//! What the benchmarks share: how they were started, a relay as its own
//! process, raw protocol clients, and percentiles.
#![allow(dead_code)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tokio_tungstenite::tungstenite::Message;

use termphone::ids::{DEV_APP_ID, UserId};
use termphone::protocol::{self, ClientMsg, ServerMsg};
use termphone::relay::server::ws_config;
use termphone::time::unix_millis;
use termphone::tls::{Stream, Trust};
use termphone::usersig::{self, DEV_SECRET, Ticket};

/// A client's connection, plain or TLS, as the client's own shell has it.
pub type Ws = termphone::client::connection::Ws;

/// Whether a benchmark's relay serves `ws://` or `wss://`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Plain,
    Tls,
}

impl Transport {
    pub const BOTH: [Transport; 2] = [Transport::Plain, Transport::Tls];

    pub fn label(self) -> &'static str {
        match self {
            Transport::Plain => "ws",
            Transport::Tls => "wss",
        }
    }
}

/// Every benchmark client trusts a relay's self-signed certificate on
/// first use, in this process's memory (each relay has its own port).
fn trust() -> &'static Trust {
    static TRUST: std::sync::OnceLock<Trust> = std::sync::OnceLock::new();
    TRUST.get_or_init(Trust::default)
}

/// How long a raw client waits for a message before the benchmark fails:
/// a broken benchmark must fail `cargo test`, not hang it.
const WAIT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `cargo bench`: the figures docs/benchmarks.md quotes.
    Full,
    /// `cargo test`: a few iterations of everything, so that a benchmark
    /// that no longer runs fails the build; its figures mean nothing.
    Quick,
}

impl Mode {
    /// `full` under `cargo bench`, `quick` under `cargo test`.
    pub fn pick<T>(self, full: T, quick: T) -> T {
        match self {
            Mode::Full => full,
            Mode::Quick => quick,
        }
    }

    pub fn build(self) -> &'static str {
        match self {
            Mode::Full => "release build",
            Mode::Quick => "quick mode: a few iterations of a debug build, figures meaningless",
        }
    }
}

/// How this benchmark was started. `cargo bench` passes `--bench`;
/// `cargo test` runs it (`test = true` in Cargo.toml) without, and with
/// its test-name filter if one was given: a filter that does not match
/// `name` skips the benchmark as libtest would skip a test (`None`), and so
/// does `--list`, after naming it.
pub fn mode(name: &str) -> Option<Mode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--bench") {
        return Some(Mode::Full);
    }
    if args.iter().any(|a| a == "--list") {
        println!("{name}: test");
        return None;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
        return None;
    }
    Some(Mode::Quick)
}

/// `termphone relay` on 127.0.0.1:0 (the release build under `cargo
/// bench`), with `config` as its config file; returns the process, its URL
/// and the directory it lives in.
pub async fn start_relay(config: &str) -> (Child, String, tempfile::TempDir) {
    start_relay_over(config, Transport::Plain).await
}

/// [`start_relay`], serving `wss://` with a self-signed certificate for
/// `Transport::Tls`.
pub async fn start_relay_over(
    config: &str,
    transport: Transport,
) -> (Child, String, tempfile::TempDir) {
    spawn_relay(config, transport, None).await
}

/// [`start_relay`], the relay pinned to `core` (see [`pin_command`]).
pub async fn start_relay_on(
    config: &str,
    core: Option<usize>,
) -> (Child, String, tempfile::TempDir) {
    spawn_relay(config, Transport::Plain, core).await
}

async fn spawn_relay(
    config: &str,
    transport: Transport,
    core: Option<usize>,
) -> (Child, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (relay, url) = relay_in(dir.path(), config, transport, core).await;
    (relay, url, dir)
}

/// A relay again on the database (and certificate) of one started in
/// `dir`, as a restart would: it prints where it listens once it serves.
pub async fn restart_relay(dir: &Path, config: &str, transport: Transport) -> (Child, String) {
    relay_in(dir, config, transport, None).await
}

async fn relay_in(
    dir: &Path,
    config: &str,
    transport: Transport,
    core: Option<usize>,
) -> (Child, String) {
    let config_path = dir.join("relay.toml");
    // A benchmark measures how fast the relay is, not its rate limits
    // (unless it sets them itself).
    let unlimited = "{ per_sec = 1e9, burst = 1000000000 }";
    let limits = [
        "frames",
        "typing",
        "read_marks",
        "calls",
        "logins",
        "media_frames",
    ]
    .map(|name| format!("{name} = {unlimited}\n"))
    .concat()
        + "message_bytes_per_day = 4000000000\n";
    let config = if config.contains("[relay.rate_limits]") {
        config.to_owned()
    } else {
        format!("{config}\n[relay.rate_limits]\n{limits}")
    };
    std::fs::write(&config_path, config).unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_termphone"));
    die_with_bench(&mut command);
    if let Some(core) = core {
        pin_command(&mut command, core);
    }
    let mut relay = command
        .arg("--config")
        .arg(&config_path)
        .args(["relay", "--listen", "127.0.0.1:0", "--db"])
        .arg(dir.join("bench.sqlite3"))
        .args((transport == Transport::Tls).then_some("--tls"))
        .env("XDG_DATA_HOME", dir)
        .env("TERMPHONE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start termphone relay");
    let mut lines = BufReader::new(relay.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().unwrap();
    let url = first
        .strip_prefix("listening on ")
        .expect(&first)
        .to_owned();
    if transport == Transport::Tls {
        // The certificate's line; read, so that no line is left unread.
        lines.next_line().await.unwrap().unwrap();
    }
    (relay, url)
}

pub fn ticket(user: &str) -> String {
    usersig::mint(
        DEV_SECRET,
        &Ticket {
            app: DEV_APP_ID,
            user: UserId::parse(user).unwrap(),
            issued_at: unix_millis() / 1000,
            lifetime: 3600,
        },
    )
}

pub fn login_msg(user: &str, device: &str) -> String {
    protocol::encode(&ClientMsg::Login {
        app: DEV_APP_ID,
        user: user.into(),
        device: device.into(),
        platform: "terminal".into(),
        user_sig: ticket(user),
    })
}

/// A raw client whose socket buffers little, so that when it stops reading
/// the relay feels it soon, as it would a stopped process.
pub async fn connect_small(url: &str) -> Ws {
    let addr: std::net::SocketAddr = url.trim_start_matches("ws://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(url, Stream::Plain(stream), Some(ws_config()))
            .await
            .expect("connect to the relay");
    ws
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc")
}

/// A client connection to `url`, `ws://` or `wss://`, as a device opens it.
pub async fn connect(url: &str) -> Ws {
    match termphone::client::connection::open(url, trust()).await {
        Ok(connected) => connected.ws,
        Err(e) => panic!("connect to the relay: {e:?}"),
    }
}

pub async fn send(ws: &mut Ws, msg: &ClientMsg) {
    ws.send(Message::text(protocol::encode(msg))).await.unwrap();
}

pub async fn recv(ws: &mut Ws) -> ServerMsg {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return protocol::decode(&t).unwrap(),
            Ok(Some(Ok(_))) => continue,
            Ok(other) => panic!("relay connection ended: {other:?}"),
            Err(_) => panic!("nothing from the relay within {WAIT:?}"),
        }
    }
}

/// The next message `ok` accepts. The relay sends more than a benchmark
/// measures (media peers, call state, presence, ...), and adds messages as
/// it grows: those are skipped. An `Error` is not: the benchmark asked for
/// something the relay refused.
pub async fn expect(ws: &mut Ws, what: &str, ok: impl Fn(&ServerMsg) -> bool) -> ServerMsg {
    loop {
        let msg = recv(ws).await;
        if ok(&msg) {
            return msg;
        }
        if let ServerMsg::Error { .. } = msg {
            panic!("waiting for {what}, the relay refused: {msg:?}");
        }
    }
}

pub async fn login(url: &str, user: &str, device: &str) -> Ws {
    let mut ws = connect(url).await;
    ws.send(Message::text(login_msg(user, device)))
        .await
        .unwrap();
    match recv(&mut ws).await {
        ServerMsg::LoginOk { .. } => ws,
        other => panic!("login failed: {other:?}"),
    }
}

/// Returns once `done` holds; fails the benchmark if it does not within a
/// minute, rather than hang.
pub async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within a minute"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// p-th percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

pub fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// "p50 X  p99 Y" of unsorted samples.
pub fn p50_p99(samples: &mut [Duration]) -> String {
    samples.sort();
    format!(
        "p50 {}  p99 {}",
        us(percentile(samples, 0.5)),
        us(percentile(samples, 0.99))
    )
}

/// Restricts the calling thread, and the threads and processes it starts
/// from then on, to `core` (`taskset -c CORE` for the rest of the run);
/// false when the system refuses.
pub fn pin_current(core: usize) -> bool {
    // SAFETY: sched_setaffinity reads the set given, of the size given.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Makes the process `command` starts run on `core` only, as `taskset -c
/// CORE` would: a tokio runtime in it then starts one worker.
pub fn pin_command(command: &mut tokio::process::Command, core: usize) {
    // SAFETY: between fork and exec only sched_setaffinity runs, which is
    // a plain system call on a set built in the child's own stack.
    unsafe {
        command.pre_exec(move || {
            if pin_current(core) {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Makes the process `command` starts end with this one, however this one
/// ends: `kill_on_drop` covers a bench that returns or panics, not one
/// that is killed (a relay left behind would keep its core busy for the
/// next run).
pub fn die_with_bench(command: &mut tokio::process::Command) {
    // SAFETY: between fork and exec only prctl runs, a plain system call.
    unsafe {
        command.pre_exec(
            || match libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            },
        );
    }
}

/// CPU seconds a process has used: user and system (`/proc/PID/stat`).
pub fn cpu_secs(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // SAFETY: sysconf only reads a setting.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let ticks = |i: usize| fields[i].parse::<u64>().unwrap() as f64 / per_sec;
    (ticks(11), ticks(12))
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Lets this process hold as many sockets as the system lets it (the soft
/// limit is often 1,024): a benchmark's thousands of connections.
pub fn raise_open_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct given.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}
