//! TUI benchmark: prints figures, asserts nothing.
//!
//! `cargo bench --bench tui`: the time to render a full 120x40 frame with
//! 200 contacts and 10,000 messages in the open conversation; the time to
//! open that conversation from a real local store and to page back to its
//! first message; and the resident memory of a real `termphone` TUI
//! process with it open, beside the same TUI with an empty conversation
//! open, run in tmux. `cargo test` runs it in its quick mode (see
//! `common::mode`).

mod common;

use std::time::{Duration, Instant};

use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

use termphone::client::event::{DeviceView, Event, LinkState, LoginStatus, UserView};
use termphone::client::records::StoredMessage;
use termphone::ids::{DeviceId, Platform, UserId};
use termphone::tui::keymap::Keymap;
use termphone::tui::state::Model;
use termphone::tui::view;

const CONTACTS: usize = 200;

fn loaded_model(messages: usize) -> Model {
    let now = 1_795_435_200_000;
    let mut m = Model::new(
        UserId::parse("alice").unwrap(),
        DeviceId::parse("bench").unwrap(),
        Platform::terminal(),
        "ws://127.0.0.1:7787".into(),
        Keymap::default(),
        now,
    );
    m.on_engine(Event::status(LoginStatus::Logined), now);
    m.on_engine(
        Event::ConnectionChanged {
            state: LinkState::Connected,
        },
        now,
    );
    let users = (0..CONTACTS)
        .map(|k| UserView {
            user: format!("user{k:03}").parse().unwrap(),
            devices: (0..k % 4)
                .map(|d| DeviceView {
                    device: format!("d{d}").parse().unwrap(),
                    platform: "terminal".parse().unwrap(),
                })
                .collect(),
            in_call: k % 10 == 0,
        })
        .collect();
    m.on_engine(Event::Users { users }, now);
    m.on_terminal(
        TermEvent::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)),
        now,
    );
    let messages = (0..messages)
        .map(|k| StoredMessage {
            msg_id: format!("m{k}"),
            from: if k % 2 == 0 {
                "user000".parse().unwrap()
            } else {
                "alice".parse().unwrap()
            },
            to: if k % 2 == 0 {
                "alice".parse().unwrap()
            } else {
                "user000".parse().unwrap()
            },
            text: format!("message number {k} with some ordinary length to it"),
            timestamp: now + k as u64 * 1_000,
            recalled: k % 97 == 0,
        })
        .collect();
    m.on_messages(&"user000".parse().unwrap(), messages);
    for k in 0..300 {
        m.on_engine(
            Event::Typing {
                user_id: format!("user{k:03}").parse().unwrap(),
            },
            now,
        );
    }
    m
}

/// Kills a process this benchmark started when it is done with it, also
/// when it fails half-way.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The benchmark's own tmux server, gone with it.
struct Tmux(String);

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("tmux")
            .arg("-L")
            .arg(&self.0)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run tmux ({e}): install the tmux package"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the pane shows `text`.
    fn shows(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.run(&["capture-pane", "-p", "-t", "tui"]);
            if screen.contains(text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the TUI did not show {text:?} within 20 s; it shows:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// A real TUI in tmux, with a relay that knows 200 users and a local store
/// holding `messages` messages with the contact it opens; returns its
/// resident memory in KiB.
fn tui_resident_kib(messages: usize) -> u64 {
    use termphone::client::local_store::LocalStore;
    use termphone::ids::DEV_APP_ID;
    use termphone::relay::core::StoreOp;
    use termphone::relay::store::Store;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = dir.path().join("relay.sqlite3");
    let mut relay_store = Store::open(&db).unwrap();
    let logins: Vec<StoreOp> = (0..CONTACTS)
        .map(|k| format!("user{k:03}"))
        .chain(["alice".to_string()])
        .map(|u| StoreOp::RecordLogin {
            app: DEV_APP_ID,
            user: UserId::parse(&u).unwrap(),
            device: DeviceId::parse("d0").unwrap(),
            platform: Platform::terminal(),
            at: 0,
        })
        .collect();
    relay_store.apply(&logins);
    drop(relay_store);
    let profile = data.join(format!("termphone/profiles/{DEV_APP_ID}/alice/bench"));
    std::fs::create_dir_all(&profile).unwrap();
    let mut local = LocalStore::open(&profile, &"alice".parse().unwrap()).unwrap();
    for k in 0..messages {
        local
            .apply(&Event::MessageReceived {
                msg_id: format!("m{k}"),
                from: "user000".parse().unwrap(),
                to: "alice".parse().unwrap(),
                text: format!("message number {k} with some ordinary length to it"),
                timestamp: 1_795_435_200_000 + k as u64,
                offline: true,
                seq: k as u64 + 1,
            })
            .unwrap();
    }
    drop(local);

    let exe = env!("CARGO_BIN_EXE_termphone");
    let mut relay = Reap(
        std::process::Command::new(exe)
            .args(["relay", "--listen", "127.0.0.1:0", "--db"])
            .arg(&db)
            .env("TERMPHONE_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(relay.0.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    let tmux = Tmux(format!("termphone-bench-{}", std::process::id()));
    let command = format!(
        "env XDG_DATA_HOME={} XDG_CONFIG_HOME={} {exe} --relay {url} --user alice --device bench",
        data.display(),
        dir.path().join("config").display()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "tui",
        "-x",
        "120",
        "-y",
        "40",
        &command,
    ]);
    tmux.shows("user000");
    tmux.run(&["send-keys", "-t", "tui", "Enter"]);
    match messages.checked_sub(1) {
        Some(last) => tmux.shows(&format!("message number {last}")),
        None => tmux.shows("No messages with user000 yet."),
    }
    let pid = tmux.run(&["display-message", "-p", "-t", "tui", "#{pane_pid}"]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Opens a conversation of `messages` messages from a real local store (on
/// its thread, as the TUI reads it) and pages back to its first message
/// with PageUp as a reader would: the time to the first drawn frame, the
/// time to the first message, and the pages read.
fn open_and_page_back(messages: usize) -> (Duration, Duration, usize) {
    use termphone::client::local_store::{LocalStore, StoreHandle};
    use termphone::tui::state::Effect;

    let dir = tempfile::tempdir().unwrap();
    let mut store = LocalStore::open(dir.path(), &"alice".parse().unwrap()).unwrap();
    for k in 0..messages {
        store
            .apply(&Event::MessageReceived {
                msg_id: format!("m{k:05}"),
                from: "user000".parse().unwrap(),
                to: "alice".parse().unwrap(),
                text: format!("message number {k} with some ordinary length to it"),
                timestamp: 1_795_435_200_000 + k as u64 * 1_000,
                offline: true,
                seq: k as u64 + 1,
            })
            .unwrap();
    }
    let store = StoreHandle::spawn(store);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let peer: UserId = "user000".parse().unwrap();
    let mut model = loaded_model(0);
    let mut terminal = Terminal::new(TestBackend::new(120, 40)).unwrap();
    let now = 1_795_435_260_000;

    let started = Instant::now();
    let page = runtime
        .block_on(store.page(peer.clone(), 100, None))
        .unwrap();
    model.on_messages(&peer, page.messages);
    let mut viewport = (0, 0);
    terminal
        .draw(|f| viewport = view::draw(f, &model, now).viewport)
        .unwrap();
    let open = started.elapsed();

    model.on_viewport(viewport.0, viewport.1);
    let started = Instant::now();
    let mut pages = 1;
    let page_up = TermEvent::Key(KeyEvent::new(KeyCode::PageUp, KeyModifiers::NONE));
    let first = |m: &Model| {
        let c = m.conversation.as_ref().unwrap();
        c.shown
            .first()
            .is_some_and(|s| s.message.msg_id == "m00000")
    };
    for _ in 0..messages * 2 {
        for effect in model.on_terminal(page_up.clone(), now) {
            if let Effect::LoadOlder { peer, before } = effect {
                let page = runtime
                    .block_on(store.page(peer.clone(), 100, Some(before)))
                    .unwrap();
                model.on_older(&peer, page.messages);
                pages += 1;
            }
        }
        terminal
            .draw(|f| {
                view::draw(f, &model, now);
            })
            .unwrap();
        if first(&model) && terminal.backend().to_string().contains("message number 0 ") {
            break;
        }
    }
    assert!(first(&model), "PageUp never reached the first message");
    (open, started.elapsed(), pages)
}

fn main() {
    let Some(mode) = common::mode("tui") else {
        return;
    };
    let messages = mode.pick(10_000, 500);
    let frames = mode.pick(2_000, 20);
    println!("tui benchmark ({})", mode.build());
    let model = loaded_model(messages);
    let mut terminal = Terminal::new(TestBackend::new(120, 40)).unwrap();
    for _ in 0..mode.pick(100, 2) {
        terminal
            .draw(|f| {
                view::draw(f, &model, 1_795_435_260_000);
            })
            .unwrap();
    }
    let mut times: Vec<Duration> = Vec::with_capacity(frames);
    for k in 0..frames {
        let t = Instant::now();
        terminal
            .draw(|f| {
                view::draw(f, &model, 1_795_435_260_000 + k as u64);
            })
            .unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    let at = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    println!(
        "full frame at 120x40, {CONTACTS} contacts, {messages} messages open: p50 {:.1} µs  p99 {:.1} µs over {frames} frames (goal: under 2 ms)",
        at(0.5).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6
    );
    let (open, back, pages) = open_and_page_back(messages);
    println!(
        "opening a {messages}-message conversation from the local store, drawn: {:.1} ms (goal: under 50 ms); \
         paging back to its first message: {pages} pages in {:.0} ms, {:.2} ms a page",
        open.as_secs_f64() * 1e3,
        back.as_secs_f64() * 1e3,
        back.as_secs_f64() * 1e3 / pages.max(1) as f64
    );
    let empty = tui_resident_kib(0);
    let rss = tui_resident_kib(messages);
    println!(
        "a real TUI process ({CONTACTS} contacts): resident memory {:.1} MiB with a {messages}-message conversation open, \
         {:.1} MiB with an empty one open: {:+.2} MiB (goals: under 40 MiB; within 1 MiB of the empty one)",
        rss as f64 / 1024.0,
        empty as f64 / 1024.0,
        (rss as f64 - empty as f64) / 1024.0
    );
}
