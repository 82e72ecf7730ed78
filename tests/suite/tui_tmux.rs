//! The real TUI in tmux, driven as a person would: keys in, screens out.

use std::time::Duration;

use serde_json::json;

use crate::common::headless::Headless;
use crate::common::net::{Proxy, relay_at, test_config};

/// One tmux server of our own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(name: &str) -> Tmux {
        if let Err(why) = require("tmux", "tmux") {
            panic!("{why}");
        }
        let tmux = Tmux {
            socket: format!("termphone-test-{name}-{}", std::process::id()),
        };
        // The server outlives its sessions: a test that closes its last TUI
        // and opens another must not race the server's own exit.
        tmux.run(&["start-server", ";", "set-option", "-g", "exit-empty", "off"]);
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            // The user's own ~/.tmux.conf never shapes what a test sees.
            .args(["-f", "/dev/null"])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("tmux {args:?}: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn start(&self, session: &str, command: &str) {
        self.run(&[
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "100",
            "-y",
            "30",
            command,
        ]);
    }

    fn keys(&self, session: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", session];
        args.extend(keys);
        self.run(&args);
    }

    fn text(&self, session: &str, text: &str) {
        self.run(&["send-keys", "-t", session, "-l", text]);
    }

    fn screen(&self, session: &str) -> String {
        self.run(&["capture-pane", "-p", "-t", session])
    }

    /// The screen with wrapped lines joined: long messages read whole.
    fn joined(&self, session: &str) -> String {
        self.run(&["capture-pane", "-p", "-J", "-t", session])
    }

    /// Leaves the message editor (Esc): keys are commands again once the
    /// footer no longer offers the editor's `new line`.
    async fn stop_writing(&self, session: &str) {
        self.keys(session, &["Escape"]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let screen = self.screen(session);
            let footer = screen.lines().last().unwrap_or_default();
            if !footer.contains("new line") {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{session} kept writing; the screen:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the screen shows `what`; panics with the screen if not.
    async fn wait_for(&self, session: &str, what: &str) {
        self.wait_for_any(session, &[what]).await;
    }

    /// Waits until the screen shows one of `whats`.
    async fn wait_for_any(&self, session: &str, whats: &[&str]) {
        self.wait_for_any_within(session, whats, Duration::from_secs(15))
            .await;
    }

    /// Waits up to `within` until the screen shows one of `whats`.
    async fn wait_for_any_within(&self, session: &str, whats: &[&str], within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let screen = self.screen(session);
            if whats.iter().any(|w| screen.contains(w)) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("{session} never showed {whats:?}; the screen:\n{screen}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Never panics: this may run while a failed test unwinds.
        let _ = std::process::Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

/// A test with calls on ALSA's null device, whose clockless threads spin,
/// takes its turn with the tests that judge real time: it would starve them.
async fn calls_turn() -> tokio::sync::MutexGuard<'static, ()> {
    crate::common::REAL_TIME.lock().await
}

/// The TUI of `flags` (after `--relay URL`), with its profile and config
/// in `home`, as a command line for tmux.
fn tui(home: &std::path::Path, url: &str, flags: &str) -> String {
    format!(
        "env XDG_DATA_HOME={} XDG_CONFIG_HOME={} {} --relay {url} {flags}",
        home.join("data").display(),
        home.join("config").display(),
        env!("CARGO_BIN_EXE_termphone"),
    )
}

/// A tool a test needs, or a message that names the Debian package to install.
fn require(tool: &str, package: &str) -> Result<(), String> {
    match std::process::Command::new(tool).arg("-V").output() {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "{tool} is not installed ({e}): these tests drive the real TUI in it; \
             install it with `apt-get install {package}`"
        )),
    }
}

#[test]
fn a_missing_tool_is_named_with_its_package() {
    let why = require("termphone-no-such-tool", "tmux").unwrap_err();
    assert!(why.contains("apt-get install tmux"), "{why}");
}

#[tokio::test]
async fn a_bad_key_in_the_config_is_told_on_the_terminal_before_the_tui_starts() {
    let dir = tempfile::tempdir().unwrap();
    let config_dir = dir.path().join("config/termphone");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(config_dir.join("config.toml"), "[tui.keys]\ncall = \"a\"\n").unwrap();
    let flag_file = dir.path().join("keys.toml");
    std::fs::write(&flag_file, "[tui.keys]\ncall = \"ctrl-shift-p\"\n").unwrap();
    let tmux = Tmux::new("badkey");
    // Nothing listens on the relay address: the keys are refused before
    // any connection.
    let tui = |extra: &str| {
        format!(
            "env XDG_DATA_HOME={} XDG_CONFIG_HOME={} {} {extra} --relay ws://127.0.0.1:9 --user alice; \
             echo \"exit status $?\"; sleep 600",
            dir.path().join("data").display(),
            dir.path().join("config").display(),
            env!("CARGO_BIN_EXE_termphone"),
        )
    };
    tmux.start("clash", &tui(""));
    tmux.start("bad", &tui(&format!("--config {}", flag_file.display())));
    let missing = dir.path().join("missing.wav");
    // Its own config, without the clash: only the sound file is wrong.
    std::fs::write(dir.path().join("none.toml"), "").unwrap();
    tmux.start(
        "wav",
        &tui(&format!(
            "--config {} --audio-in wav:{}",
            dir.path().join("none.toml").display(),
            missing.display()
        )),
    );
    tmux.wait_for("clash", "exit status 2").await;
    tmux.wait_for("bad", "exit status 2").await;
    tmux.wait_for("wav", "exit status 2").await;
    // Said on the terminal, not only in the log file the TUI writes to.
    let wav = tmux.joined("wav");
    assert!(wav.contains(&format!("wav:{}", missing.display())), "{wav}");

    let clash = tmux.joined("clash");
    assert!(
        clash.contains(&format!(
            "{}: [tui.keys] call = \"a\": a already means \"answer\" (accept) while a call rings; \
             bind call or accept to another key",
            config_dir.join("config.toml").display()
        )),
        "{clash}"
    );
    assert!(clash.contains("termphone did not start"), "{clash}");
    let bad = tmux.joined("bad");
    assert!(
        bad.contains("call = \"ctrl-shift-p\": \"ctrl-shift-p\" is not a key"),
        "{bad}"
    );
}

#[tokio::test]
async fn a_kicked_out_tui_says_why_and_logs_in_again_with_l() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let url = relay.url();
    let tmux = Tmux::new("kicked");
    let tui = tui(dir.path(), &url, "--user alice --device d1");
    tmux.start("tui", &tui);
    tmux.wait_for("tui", "LOGINED").await;

    // The same device logs in elsewhere: the TUI is kicked out.
    let mut other = Headless::spawn(
        dir.path(),
        &["--relay", &url, "--user", "alice", "--device", "d1"],
    );
    other.expect("SDK_READY").await;
    tmux.wait_for("tui", "Press l to log in again").await;
    // Each part waited for: under load a capture can fall between the
    // writes of one frame, the message drawn and the header not yet.
    tmux.wait_for("tui", "LOGOUT  kicked out").await;
    let screen = tmux.joined("tui");
    assert!(
        screen.contains("Kicked out: device d1 of alice logged in on another connection."),
        "{screen}"
    );
    let footer = screen.lines().last().unwrap_or_default().to_owned();
    assert!(footer.contains("l  log in again"), "{footer}");
    assert!(
        !footer.contains(" c  call") && !footer.contains(" w  write"),
        "{footer}"
    );

    // c calls no one and says nothing of headless commands.
    tmux.keys("tui", &["c"]);
    tmux.keys("tui", &["l"]);
    tmux.wait_for("tui", "LOGINED").await;
    other.expect("KICKED_OUT").await;
    let screen = tmux.screen("tui");
    assert!(!screen.contains("send `login`"), "{screen}");
    assert!(!screen.contains("Kicked out"), "{screen}");
    tmux.keys("tui", &["q"]);
    relay.shutdown().await;
}

#[tokio::test]
async fn two_alice_terminals_ring_one_answers_and_chat_reaches_everyone() {
    let _turn = calls_turn().await;
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let url = relay.url();
    let tmux = Tmux::new("multi");
    // As the README has it: no --multi-device, and both terminals ring.
    let tui = tui(dir.path(), &url, "--user alice");
    tmux.start("one", &tui);
    tmux.start("two", &tui);
    tmux.wait_for("one", "LOGINED").await;
    tmux.wait_for("two", "LOGINED").await;

    let mut bob = Headless::spawn(
        dir.path(),
        &["--relay", &url, "--user", "bob", "--device", "b1"],
    );
    bob.expect("SYNCED").await;
    tmux.wait_for("one", "● bob").await;
    bob.send(json!({"cmd": "call", "userID": "alice"})).await;
    tmux.wait_for("one", "bob is calling").await;
    tmux.wait_for("two", "bob is calling").await;

    tmux.keys("one", &["a"]);
    tmux.wait_for("one", "In call").await;
    tmux.wait_for("two", "answered on another device").await;
    bob.expect("ON_CALL_BEGIN").await;

    // Open bob's conversation in the first terminal and write to him: it
    // opens to write in.
    tmux.keys("one", &["Enter"]);
    tmux.text("one", "hello from terminal one");
    tmux.keys("one", &["Enter"]);
    let received = bob.expect("MESSAGE_RECEIVED").await;
    assert_eq!(received["text"], "hello from terminal one");
    tmux.wait_for("one", "me: hello from terminal one").await;
    tmux.keys("two", &["Enter"]);
    tmux.wait_for("two", "me: hello from terminal one").await;

    tmux.stop_writing("one").await;
    tmux.keys("one", &["h"]);
    tmux.wait_for("one", "call ended after").await;
    bob.expect("CALLING_END").await;
    tmux.keys("one", &["q"]);
    tmux.keys("two", &["q"]);
    relay.shutdown().await;
}

#[tokio::test]
async fn the_demo_rings_at_once_and_answers_with_a_key() {
    let _turn = calls_turn().await;
    let dir = tempfile::tempdir().unwrap();
    // A sound card for the ringtone and the call: ALSA's null device.
    std::fs::write(dir.path().join(".asoundrc"), "pcm.!default { type null }\n").unwrap();
    let tmux = Tmux::new("demo");
    let demo = format!(
        "env HOME={home} XDG_DATA_HOME={home}/data XDG_CONFIG_HOME={home}/config {} demo",
        env!("CARGO_BIN_EXE_termphone"),
        home = dir.path().display(),
    );
    tmux.start("demo", &demo);
    tmux.wait_for("demo", "Welcome to the termphone demo").await;
    tmux.wait_for("demo", "carol is calling").await;
    tmux.keys("demo", &["a"]);
    tmux.wait_for("demo", "with carol").await;
    // carol's generated voice lights her meter; the network is graded.
    tmux.wait_for("demo", "▮▮▮▮▮").await;
    // A loopback network; how busy the machine is decides which of the two.
    // The first grade comes after 2 s of the call's playout; with the whole
    // suite on two cores (and the null device's clockless threads spinning)
    // it once took longer than 15 s.
    tmux.wait_for_any_within("demo", &["excellent", "good"], Duration::from_secs(40))
        .await;
    tmux.keys("demo", &["m"]);
    tmux.wait_for("demo", "muted").await;
    let screen = tmux.screen("demo");
    assert!(
        !screen.contains("ALSA lib"),
        "ALSA wrote over the TUI:\n{screen}"
    );
    tmux.keys("demo", &["h"]);
    tmux.wait_for("demo", "call ended after").await;
    tmux.keys("demo", &["q"]);
}

#[tokio::test]
async fn the_demo_contacts_answer_chat_and_call_back() {
    let _turn = calls_turn().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".asoundrc"), "pcm.!default { type null }\n").unwrap();
    let tmux = Tmux::new("demochat");
    let demo = format!(
        "env HOME={home} XDG_DATA_HOME={home}/data XDG_CONFIG_HOME={home}/config {} demo",
        env!("CARGO_BIN_EXE_termphone"),
        home = dir.path().display(),
    );
    tmux.start("demo", &demo);
    // carol calls once the demo user is online; declining it leaves a note.
    tmux.wait_for("demo", "carol is calling").await;
    tmux.keys("demo", &["d"]);
    tmux.wait_for("demo", "carol declined").await;

    // dave's two devices both ring; each says in chat what it saw.
    tmux.keys("demo", &["j", "c"]);
    tmux.wait_for("demo", "with dave").await;
    tmux.wait_for("demo", "In call").await;
    tmux.keys("demo", &["h"]);
    tmux.keys("demo", &["Enter"]);
    tmux.wait_for("demo", "laptop: both rang, I answered").await;
    tmux.wait_for("demo", "phone: stopped (answered_elsewhere)")
        .await;

    // echo echoes what the demo user writes.
    tmux.stop_writing("demo").await;
    tmux.keys("demo", &["BTab", "j", "Enter"]);
    tmux.text("demo", "hello echo");
    tmux.keys("demo", &["Enter"]);
    tmux.wait_for("demo", "echo: echo: hello echo").await;

    // A message to carol makes her call back.
    tmux.stop_writing("demo").await;
    tmux.keys("demo", &["BTab", "k", "k", "Enter"]);
    tmux.wait_for("demo", "No problem. Message me to call back.")
        .await;
    tmux.text("demo", "ring me");
    tmux.keys("demo", &["Enter"]);
    tmux.wait_for("demo", "calling you back").await;
    tmux.wait_for("demo", "carol is calling").await;
    tmux.keys("demo", &["a"]);
    tmux.wait_for("demo", "with carol").await;
    tmux.keys("demo", &["h"]);
    tmux.keys("demo", &["q"]);
}

#[tokio::test]
async fn a_tui_closed_in_a_call_ends_it_at_once_and_keeps_it_in_its_history() {
    let _turn = calls_turn().await;
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let url = relay.url();
    let tmux = Tmux::new("hup");
    let tui = tui(dir.path(), &url, "--user alice");
    tmux.start("one", &tui);
    tmux.wait_for("one", "LOGINED").await;
    let mut bob = Headless::spawn(
        dir.path(),
        &["--relay", &url, "--user", "bob", "--device", "b1"],
    );
    bob.expect("SYNCED").await;
    bob.send(json!({"cmd": "call", "userID": "alice"})).await;
    tmux.wait_for("one", "bob is calling").await;
    tmux.keys("one", &["a"]);
    tmux.wait_for("one", "In call").await;
    bob.expect("ON_CALL_BEGIN").await;

    // The terminal closes under the TUI: it hangs up on its way out, so bob
    // hears at once instead of after the 90 s grace period.
    let pid: i32 = tmux
        .run(&["display-message", "-p", "-t", "one", "#{pane_pid}"])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let end = tokio::time::timeout(Duration::from_secs(5), bob.expect("CALLING_END"))
        .await
        .expect("the call ends for bob within 5 s");
    assert!(end["totalTime"].is_u64());

    // Opened again, the same device lists the call.
    tmux.start("two", &tui);
    tmux.wait_for("two", "LOGINED").await;
    tmux.wait_for("two", "↙ bob 0:0").await;
    tmux.keys("two", &["q"]);
    relay.shutdown().await;
}

#[tokio::test]
async fn a_tui_whose_terminal_goes_away_logs_out_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let url = relay.url();
    let tmux = Tmux::new("gone");
    tmux.start("one", &tui(dir.path(), &url, "--user alice"));
    tmux.wait_for("one", "LOGINED").await;
    let pid: i32 = tmux
        .run(&["display-message", "-p", "-t", "one", "#{pane_pid}"])
        .trim()
        .parse()
        .unwrap();
    let mut bob = Headless::spawn(
        dir.path(),
        &["--relay", &url, "--user", "bob", "--device", "b1"],
    );
    bob.expect("SYNCED").await;
    bob.send(json!({"cmd": "getUsers", "subscribe": true}))
        .await;
    bob.expect("USERS").await;

    // The terminal goes away under it (a closed window, a dropped ssh).
    tmux.run(&["kill-server"]);
    loop {
        let e = bob.expect("USER_STATUS_CHANGED").await;
        if e["userID"] == "alice" && e["devices"].as_array().is_some_and(|d| d.is_empty()) {
            break;
        }
    }
    // And nothing of it is left running.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while unsafe { libc::kill(pid, 0) } == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "termphone (pid {pid}) still runs after its terminal went away"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    relay.shutdown().await;
}

/// The conversation pane's column of `screen` (the fourth `│`-separated
/// field of each row), spaces left out: CJK text read across its rows.
fn conversation_column(screen: &str) -> String {
    (screen.lines())
        // The right-hand column's text, whatever the left one shows on
        // that row (a border's corner has no '│').
        .filter_map(|l| l.rsplit('│').nth(1))
        .map(|l| l.replace(' ', ""))
        .collect()
}

#[tokio::test]
async fn a_long_history_scrolls_back_to_its_first_message_and_long_ones_show_whole() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let url = relay.url();
    let tmux = Tmux::new("scroll");
    tmux.start("tui", &tui(dir.path(), &url, "--user alice --device a1"));
    tmux.wait_for("tui", "LOGINED").await;
    let mut bob = Headless::spawn(
        dir.path(),
        &["--relay", &url, "--user", "bob", "--device", "b1"],
    );
    bob.expect("SYNCED").await;
    let words: Vec<String> = (0..120).map(|i| format!("w{i:03}")).collect();
    let long = words.join(" ");
    let chinese =
        "我们明天下午三点在三楼的大会议室开会，请大家准时参加并带上各自负责的项目进度报告和计划。";
    let mut texts: Vec<String> = (1..=40).map(|n| format!("message {n:02}")).collect();
    texts.extend([long.clone(), chinese.to_owned()]);
    for text in &texts {
        bob.send(json!({"cmd": "sendMessage", "userID": "alice", "text": text}))
            .await;
        bob.expect("MESSAGE_SENT").await;
    }
    tmux.wait_for("tui", "● bob").await;
    tmux.keys("tui", &["Enter"]);
    tmux.wait_for("tui", "的项目进度报告").await;

    // Every word of the 600-character message and the whole sentence.
    let screen = tmux.screen("tui");
    for w in &words {
        assert!(screen.contains(w.as_str()), "{w} is missing:\n{screen}");
    }
    assert!(
        conversation_column(&screen).contains(chinese),
        "the sentence is cut:\n{screen}"
    );

    // PageUp reaches the first of them, page by page.
    for _ in 0..30 {
        if tmux.screen("tui").contains("message 01") {
            break;
        }
        tmux.keys("tui", &["PageUp"]);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    tmux.wait_for("tui", "message 01").await;
    // While writing, PgDn is the way back (End is the draft's); once
    // reading, End comes back to the newest at once.
    tmux.wait_for("tui", "PgDn for newer").await;
    tmux.stop_writing("tui").await;
    tmux.wait_for("tui", "End to return").await;
    tmux.keys("tui", &["End"]);
    tmux.wait_for("tui", "的项目进度报告").await;
    tmux.keys("tui", &["q"]);
    relay.shutdown().await;
}

#[tokio::test]
async fn a_paste_is_one_message_read_marks_show_and_a_recall_reaches_the_peer() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let url = relay.url();
    let mut bob = Headless::spawn(
        dir.path(),
        &["--relay", &url, "--user", "bob", "--device", "b1"],
    );
    bob.expect("SYNCED").await;
    let tmux = Tmux::new("paste");
    tmux.start("tui", &tui(dir.path(), &url, "--user alice --device a1"));
    tmux.wait_for("tui", "● bob").await;
    tmux.keys("tui", &["Enter"]);
    tmux.wait_for("tui", " write ").await;

    // A bracketed paste of two lines is one draft, sent once with Enter.
    tmux.run(&[
        "set-buffer",
        "-b",
        "p",
        "first pasted line\nsecond pasted line",
    ]);
    tmux.run(&["paste-buffer", "-p", "-b", "p", "-t", "tui"]);
    tmux.wait_for("tui", "second pasted line").await;
    tmux.keys("tui", &["Enter"]);
    let got = bob.expect("MESSAGE_RECEIVED").await;
    assert_eq!(got["text"], "first pasted line\nsecond pasted line");
    tmux.wait_for("tui", "second pasted line ✓").await;

    // bob reads it: the mark turns to read.
    bob.send(json!({"cmd": "markRead", "userID": "alice"}))
        .await;
    tmux.wait_for("tui", "second pasted line ✓✓").await;

    // alice selects her message and recalls it; bob sees it go.
    tmux.stop_writing("tui").await;
    tmux.keys("tui", &["Up", "X"]);
    let recalled = bob.expect("MESSAGE_RECALLED").await;
    assert_eq!(recalled["msgID"], got["msgID"]);
    tmux.wait_for("tui", "(message recalled)").await;
    tmux.keys("tui", &["q"]);
    relay.shutdown().await;
}

#[tokio::test]
async fn a_message_refused_by_a_full_disk_is_sent_again_with_r() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    // A disk with room for a few messages: writes beyond fail as full.
    let store = termphone::relay::store::Store::open(&db).unwrap();
    store.limit_size(256 * 1024).unwrap();
    let relay = termphone::relay::start(&test_config(), store)
        .await
        .unwrap();
    let url = relay.url();
    let addr = relay.local_addr();
    let mut bob = Headless::spawn(
        dir.path(),
        &["--relay", &url, "--user", "bob", "--device", "b1"],
    );
    bob.expect("SYNCED").await;
    let tmux = Tmux::new("resend");
    tmux.start("tui", &tui(dir.path(), &url, "--user alice --device a1"));
    tmux.wait_for("tui", "● bob").await;
    // bob fills the disk.
    let big = "x".repeat(60 * 1024);
    for k in 0..20 {
        bob.send(json!({"cmd": "sendMessage", "userID": "alice", "text": big, "clientMsgID": format!("fill{k}")}))
            .await;
        let answer = loop {
            let e = bob.next().await.unwrap();
            if e["event"] == "MESSAGE_SENT" || e["event"] == "ERROR" {
                break e;
            }
        };
        if answer["event"] == "ERROR" {
            break;
        }
    }
    tmux.keys("tui", &["Enter"]);
    tmux.wait_for("tui", " write ").await;
    // Too long for a tmux command line: the paste comes from a file.
    let text = dir.path().join("paste.txt");
    let hello = format!("hello despite the disk {}", "y".repeat(60 * 1024));
    std::fs::write(&text, &hello).unwrap();
    tmux.run(&["load-buffer", "-b", "p", text.to_str().unwrap()]);
    tmux.run(&["paste-buffer", "-p", "-b", "p", "-t", "tui"]);
    tmux.wait_for("tui", "yyyyyyyyyy").await;
    tmux.keys("tui", &["Enter"]);
    tmux.wait_for("tui", "a message was not sent; r sends it again")
        .await;
    tmux.wait_for("tui", "✗").await;

    // The operator makes room (a relay without the limit, same address and
    // database); alice's device reconnects, and r sends it once.
    relay.shutdown().await;
    let config = termphone::config::RelayConfig {
        listen: addr,
        ..test_config()
    };
    let relay = relay_at(&config, &db).await;
    tmux.wait_for("tui", "connected").await;
    tmux.stop_writing("tui").await;
    tmux.keys("tui", &["r"]);
    let got = bob.expect("MESSAGE_RECEIVED").await;
    assert!(got["text"] == hello.as_str(), "{got}");
    tmux.wait_for("tui", "y ✓").await;
    tmux.keys("tui", &["q"]);
    relay.shutdown().await;
}

#[tokio::test]
async fn a_waiting_call_the_keypad_and_a_swap_from_the_keyboard() {
    let _turn = calls_turn().await;
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let url = relay.url();
    let tmux = Tmux::new("waiting");
    tmux.start(
        "alice",
        &tui(
            dir.path(),
            &url,
            "--user alice --call-waiting --audio-in null --audio-out null",
        ),
    );
    tmux.wait_for("alice", "call waiting").await;
    let spawn = |user: &str| Headless::spawn(dir.path(), &["--relay", &url, "--user", user]);
    let (mut bob, mut carol) = (spawn("bob"), spawn("carol"));
    bob.expect("SYNCED").await;
    carol.expect("SYNCED").await;
    tmux.wait_for("alice", "LOGINED").await;

    bob.send(json!({"cmd": "call", "userID": "alice"})).await;
    tmux.wait_for("alice", "bob is calling").await;
    tmux.keys("alice", &["a"]);
    bob.expect("ON_CALL_BEGIN").await;
    carol.send(json!({"cmd": "call", "userID": "alice"})).await;
    tmux.wait_for("alice", "waiting: you are in a call with bob")
        .await;
    tmux.keys("alice", &["a"]);
    tmux.wait_for("alice", "on hold bob").await;
    assert_eq!(bob.expect("CALL_HOLD_CHANGED").await["onHold"], true);
    carol.expect("ON_CALL_BEGIN").await;

    // The keypad sends each key to carol as it is pressed.
    tmux.keys("alice", &["p"]);
    tmux.wait_for("alice", "Keypad").await;
    tmux.keys("alice", &["5", "#"]);
    for digit in ["5", "#"] {
        let heard = carol.expect("DTMF_RECEIVED").await;
        assert_eq!(
            (&heard["digit"], &heard["userID"]),
            (&json!(digit), &json!("alice"))
        );
    }
    // Esc alone first: Esc and x at once would read as Alt-x.
    tmux.keys("alice", &["Escape"]);
    tmux.wait_for("alice", "x  swap calls").await;
    tmux.keys("alice", &["x"]);
    assert_eq!(bob.expect("CALL_HOLD_CHANGED").await["onHold"], false);
    assert_eq!(carol.expect("CALL_HOLD_CHANGED").await["onHold"], true);
    tmux.wait_for("alice", "on hold carol").await;
    tmux.keys("alice", &["q"]);
    relay.shutdown().await;
}

/// alice's TUI with its link to the relay through a proxy that has cut it
/// and refuses to carry another, a message to bob written meanwhile (shown
/// as sending), then `q`: the TUI leaves the screen and says the logout
/// waits for the relay to take the message. The TUI's pane stays open
/// after it exits (`exited N`), so that what it said can be read.
async fn quit_with_a_message_on_its_way(
    name: &str,
) -> (
    Tmux,
    Proxy,
    Headless,
    (termphone::relay::RelayHandle, tempfile::TempDir),
) {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let proxy = Proxy::start(relay.local_addr()).await;
    let mut bob = Headless::spawn(
        dir.path(),
        &["--relay", &relay.url(), "--user", "bob", "--device", "b1"],
    );
    bob.expect("SYNCED").await;
    let tmux = Tmux::new(name);
    let alice = tui(dir.path(), &proxy.url(), "--user alice --device a1");
    tmux.start("tui", &format!("sh -c '{alice}; echo exited $?; sleep 60'"));
    tmux.wait_for("tui", "● bob").await;
    tmux.keys("tui", &["Enter"]);
    tmux.wait_for("tui", " write ").await;
    proxy.refuse(Duration::from_secs(3600));
    proxy.cut();
    tmux.wait_for("tui", "reconnecting").await;
    tmux.text("tui", "said just before quitting");
    tmux.keys("tui", &["Enter"]);
    tmux.wait_for("tui", "said just before quitting …").await;
    tmux.stop_writing("tui").await;
    tmux.keys("tui", &["q"]);
    tmux.wait_for(
        "tui",
        "waiting for the relay to take the messages on their way",
    )
    .await;
    (tmux, proxy, bob, (relay, dir))
}

/// A message still on its way when the TUI quits is not dropped with the
/// process: the logout waits for it, and once the network is back it
/// reaches bob before the TUI exits.
#[tokio::test]
async fn quitting_waits_for_a_message_on_its_way() {
    let (tmux, proxy, mut bob, _keep) = quit_with_a_message_on_its_way("quit-sends").await;
    proxy.refuse(Duration::ZERO);
    let got = bob.expect("MESSAGE_RECEIVED").await;
    assert_eq!(got["text"], "said just before quitting", "{got}");
    tmux.wait_for("tui", "exited 0").await;
    assert!(
        !tmux.screen("tui").contains("not sent"),
        "{}",
        tmux.screen("tui")
    );
}

/// If the relay stays out of reach, the logout gives up after its 10 s and
/// the TUI names the message it could not send, text and all, on the
/// terminal it leaves: nothing is lost without a word.
#[tokio::test]
async fn a_message_the_quit_could_not_send_is_named_on_the_terminal() {
    let (tmux, _proxy, mut bob, _keep) = quit_with_a_message_on_its_way("quit-names").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !tmux.screen("tui").contains("exited 0") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            tmux.screen("tui")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let screen = tmux.joined("tui");
    assert!(
        screen.contains("it may not have reached bob: \"said just before quitting\""),
        "{screen}"
    );
    let heard = tokio::time::timeout(Duration::from_millis(500), async {
        while let Some(e) = bob.next().await {
            if e["event"] == "MESSAGE_RECEIVED" {
                return e;
            }
        }
        serde_json::Value::Null
    })
    .await;
    assert!(heard.is_err(), "bob got {heard:?}");
}
