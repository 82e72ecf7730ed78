//! Snapshots of every pane in its main states (80x24 and 120x40), and the
//! update function's answers to keys and events. The view takes `now`, so
//! the snapshots are stable.

use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

use super::conversation::Delivery;
use super::keymap::Keymap;
use super::state::{Effect, LOGGING_IN_AGAIN, Model, NOTICE_MS, Pane};
use super::view;
use crate::client::engine::{CallCommand, ChatCommand, Command};
use crate::client::event::{
    AUDIO_CALL, CallRole, DeviceState, DeviceView, Event, LinkState, LoginStatus, NetworkQuality,
    UserView, VoiceVolume,
};
use crate::client::records::CallOutcome;
use crate::client::records::CallRecord;
use crate::client::records::Conversation as Summary;
use crate::client::records::StoredMessage;
use crate::error::ErrorCode;
use crate::ids::{DeviceId, Platform, UserId};
use crate::media::quality::Quality;
use crate::protocol::{CancelReason, KickReason};

/// 2026-11-23 12:00:00 UTC.
const T0: u64 = 1_795_435_200_000;

fn model() -> Model {
    let mut m = Model::new(
        UserId::parse("alice").unwrap(),
        DeviceId::parse("term-1a2b3c").unwrap(),
        Platform::terminal(),
        "ws://127.0.0.1:7787".into(),
        Keymap::default(),
        T0,
    );
    for e in [
        Event::status(LoginStatus::Logined),
        Event::ConnectionChanged {
            state: LinkState::Connected,
        },
        Event::SdkReady,
    ] {
        m.on_engine(e, T0 + 20);
    }
    m
}

fn user(name: &str, devices: usize) -> UserView {
    UserView {
        user: name.parse().unwrap(),
        devices: (0..devices)
            .map(|k| DeviceView {
                device: format!("d{k}").parse().unwrap(),
                platform: "terminal".parse().unwrap(),
            })
            .collect(),
        // dave is busy in a call.
        in_call: name == "dave",
    }
}

fn with_contacts(mut m: Model) -> Model {
    let users = vec![
        user("alice", 2),
        user("bob", 1),
        user("carol", 0),
        user("dave", 3),
    ];
    m.on_engine(Event::Users { users }, T0 + 30);
    m.unread.insert("carol".parse().unwrap(), 2);
    m
}

fn message(from: &str, to: &str, text: &str, minute: u64) -> StoredMessage {
    StoredMessage {
        msg_id: format!("{from}-{minute}"),
        from: from.parse().unwrap(),
        to: to.parse().unwrap(),
        text: text.into(),
        timestamp: T0 + minute * 60_000,
        recalled: false,
    }
}

fn with_conversation(m: Model) -> Model {
    let mut m = with_contacts(m);
    // Opened to write; Esc to read it, its keys commands again.
    m.on_terminal(key(KeyCode::Enter), T0 + 40);
    m.on_terminal(key(KeyCode::Esc), T0 + 40);
    let mut messages = vec![
        message("bob", "alice", "are you joining the standup?", 1),
        message("alice", "bob", "yes, two minutes", 2),
        message("bob", "alice", "this one was a typo", 3),
        message("bob", "alice", "great, calling you", 4),
    ];
    messages[2].recalled = true;
    messages[2].text.clear();
    m.on_messages(&"bob".parse().unwrap(), messages);
    m.on_history(vec![
        record("bob", CallRole::Called, "answered", false, 754),
        record("carol", CallRole::Called, "missed", true, 0),
        record("dave", CallRole::Caller, "no_answer", false, 0),
        record("erin", CallRole::Caller, "declined", false, 0),
        record("frank", CallRole::Caller, "caller_canceled", false, 0),
    ]);
    m
}

fn record(peer: &str, role: CallRole, outcome: &str, missed: bool, total_time: u64) -> CallRecord {
    CallRecord {
        call_id: format!("c-{peer}"),
        room_id: 7,
        call_role: role,
        peers: vec![peer.parse().unwrap()],
        started_at: T0,
        outcome: CallOutcome::parse(outcome).unwrap(),
        missed,
        total_time,
        elsewhere: None,
    }
}

/// A call event's history record: the TUI reads only its peers, for a
/// call it was not rung for.
fn any_record() -> Box<CallRecord> {
    Box::new(record("bob", CallRole::Called, "ringing", false, 0))
}

fn ringing(m: &mut Model, group: bool) {
    m.on_engine(
        Event::OnCallReceived {
            call_id: "c1".into(),
            room_id: 4_242,
            sponsor: "bob".parse().unwrap(),
            user_id_list: if group {
                vec!["carol".parse().unwrap(), "dave".parse().unwrap()]
            } else {
                vec![]
            },
            is_from_group: group,
            call_media_type: AUDIO_CALL,
            call_role: CallRole::Called,
            user_data: None,
            transferred_by: None,
            waiting: false,
            record: any_record(),
        },
        T0 + 1_000,
    );
}

fn key(code: KeyCode) -> TermEvent {
    TermEvent::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn render(m: &Model, now: u64, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal
        .draw(|f| {
            view::draw(f, m, now);
        })
        .unwrap();
    terminal.backend().to_string()
}

/// The texts the open conversation shows, oldest first.
fn texts(m: &Model) -> Vec<String> {
    let c = m.conversation.as_ref().expect("a conversation is open");
    c.shown.iter().map(|s| s.message.text.clone()).collect()
}

/// Snapshots a state at both sizes.
macro_rules! snap {
    ($name:literal, $model:expr, $now:expr) => {
        let m = &$model;
        insta::assert_snapshot!(concat!($name, "_80x24"), render(m, $now, 80, 24));
        insta::assert_snapshot!(concat!($name, "_120x40"), render(m, $now, 120, 40));
    };
}

#[test]
fn snapshot_idle_alone() {
    snap!("idle_alone", model(), T0 + 5_000);
}

#[test]
fn snapshot_chat_with_history_and_unread() {
    let mut m = with_conversation(model());
    m.on_engine(
        Event::Typing {
            user_id: "bob".parse().unwrap(),
        },
        T0 + 4_900,
    );
    snap!("chat", m, T0 + 5_000);
}

#[test]
fn snapshot_ringing() {
    let mut m = with_conversation(model());
    ringing(&mut m, false);
    snap!("ringing", m, T0 + 6_000);
}

#[test]
fn snapshot_group_call_ringing() {
    let mut m = with_contacts(model());
    ringing(&mut m, true);
    snap!("group_ringing", m, T0 + 3_000);
}

#[test]
fn snapshot_answered_elsewhere() {
    let mut m = with_contacts(model());
    ringing(&mut m, false);
    m.on_engine(
        Event::OnCallCanceled {
            call_id: "c1".into(),
            room_id: 4_242,
            user_id: "alice".parse().unwrap(),
            reason: CancelReason::parse("answered_elsewhere").unwrap(),
            call_media_type: AUDIO_CALL,
            call_role: CallRole::Called,
            elsewhere: None,
            record: any_record(),
        },
        T0 + 4_000,
    );
    snap!("answered_elsewhere", m, T0 + 5_000);
}

/// The device a call was answered on is the point of multi-device
/// ringing: in a narrow Calls pane it goes on a row of its own, whole.
#[test]
fn the_device_a_call_was_answered_on_shows_whole_in_a_narrow_pane() {
    let mut m = with_contacts(model());
    let mut record = record("bob", CallRole::Called, "answered_elsewhere", false, 0);
    record.elsewhere = Some(DeviceView {
        device: DeviceId::parse("term-7b7ad8").unwrap(),
        platform: Platform::terminal(),
    });
    m.on_history(vec![record]);
    for (width, height) in [(100, 30), (80, 24)] {
        let screen = render(&m, T0 + 20_000, width, height);
        assert!(screen.contains("answered on term-7b7ad8"), "{screen}");
    }
}

#[test]
fn snapshot_in_a_group_call() {
    let mut m = with_conversation(model());
    m.on_engine(
        Event::CallDialing {
            call_id: "c2".into(),
            room_id: 99,
            user_id_list: vec!["bob".parse().unwrap(), "dave".parse().unwrap()],
            is_from_group: true,
            call_media_type: AUDIO_CALL,
            call_role: CallRole::Caller,
            record: any_record(),
        },
        T0,
    );
    for e in [
        Event::UserAccept {
            call_id: "c2".into(),
            user_id: "bob".parse().unwrap(),
        },
        Event::OnCallBegin {
            call_id: "c2".into(),
            room_id: 99,
            call_media_type: AUDIO_CALL,
            call_role: CallRole::Caller,
            user_id_list: vec![],
            record: any_record(),
        },
        Event::UserVoiceVolume {
            volume_map: vec![
                VoiceVolume {
                    user_id: "alice".parse().unwrap(),
                    volume: 35,
                },
                VoiceVolume {
                    user_id: "bob".parse().unwrap(),
                    volume: 72,
                },
            ],
        },
        Event::OnUserNetworkQualityChanged {
            network_quality_list: vec![NetworkQuality {
                user_id: "bob".parse().unwrap(),
                quality: Quality::Poor,
                loss_percent: 6.0,
                jitter_ms: 30,
                rtt_ms: Some(120),
            }],
        },
        Event::UserAudioAvailable {
            user_id: "bob".parse().unwrap(),
            is_audio_available: false,
        },
    ] {
        m.on_engine(e, T0 + 2_000);
    }
    // m closes this device's microphone, from any pane.
    let effects = m.on_terminal(key(KeyCode::Char('m')), T0 + 3_000);
    assert_eq!(
        effects,
        [Effect::Engine(Command::Call(CallCommand::CloseMicrophone))]
    );
    assert!(
        m.log
            .iter()
            .all(|l| !l.text.starts_with("USER_VOICE_VOLUME")),
        "levels are meters, not log lines"
    );
    snap!("group_call", m, T0 + 65_000);
}

/// On a sound card's microphone the call pane says voice processing is on;
/// `n` turns every stage off (and the words go), and on again.
#[test]
fn n_switches_voice_processing_and_the_call_pane_shows_it() {
    use crate::client::engine::VoiceProcessingChange;
    use crate::media::control::VoiceProcessing;
    let mut m = with_conversation(model());
    m.voice = VoiceProcessing::ON;
    m.card_mic = true;
    for e in [
        Event::CallDialing {
            call_id: "c3".into(),
            room_id: 7,
            user_id_list: vec!["bob".parse().unwrap()],
            is_from_group: false,
            call_media_type: AUDIO_CALL,
            call_role: CallRole::Caller,
            record: any_record(),
        },
        Event::OnCallBegin {
            call_id: "c3".into(),
            room_id: 7,
            call_media_type: AUDIO_CALL,
            call_role: CallRole::Caller,
            user_id_list: vec![],
            record: any_record(),
        },
    ] {
        m.on_engine(e, T0);
    }
    let now = T0 + 1_000;
    let on_the_meter = |m: &Model| {
        (render(m, now, 80, 24).lines())
            .any(|l| l.contains("you ") && l.contains("voice processing"))
    };
    assert!(on_the_meter(&m), "{}", render(&m, now, 80, 24));
    let f = footer(&m, now, 200, 24);
    assert!(f.contains("n  voice processing"), "{f}");
    let all = |on| VoiceProcessingChange {
        echo_cancellation: Some(on),
        noise_suppression: Some(on),
        auto_gain: Some(on),
    };
    let effects = m.on_terminal(key(KeyCode::Char('n')), now);
    assert_eq!(
        effects,
        [Effect::Engine(Command::SetAudioProcessing(all(false)))]
    );
    let screen = render(&m, now, 80, 24);
    assert!(
        screen.contains("voice processing off"),
        "the notice:\n{screen}"
    );
    assert!(!on_the_meter(&m), "{screen}");
    let effects = m.on_terminal(key(KeyCode::Char('n')), now);
    assert_eq!(
        effects,
        [Effect::Engine(Command::SetAudioProcessing(all(true)))]
    );

    // The call fell back to null audio (no sound card after all), or a
    // file was picked: nothing to process, and nothing said of it.
    let mic = |m: &mut Model, id: &str| {
        let devices = DeviceState {
            microphone_list: vec![],
            speaker_list: vec![],
            current_microphone_id: id.into(),
            current_speaker_id: "default".into(),
        };
        m.on_engine(Event::DevicedUpdated { devices }, now);
    };
    for id in ["null", "wav:/tmp/speech.wav"] {
        mic(&mut m, id);
        assert!(!footer(&m, now, 120, 24).contains("voice processing"));
        assert!(!on_the_meter(&m), "{}", render(&m, now, 80, 24));
        assert!(render(&m, now, 80, 24).contains(&format!("mic {id}")));
        assert_eq!(m.on_terminal(key(KeyCode::Char('n')), now), []);
    }
    mic(&mut m, "default");
    assert!(on_the_meter(&m), "{}", render(&m, now, 80, 24));
}

/// A contact's unread count shows first: the end of a busy row (devices,
/// in a call) is cut at 80 columns.
#[test]
fn unread_messages_show_on_a_contact_in_a_call() {
    let mut m = with_contacts(model());
    m.unread.insert("dave".parse().unwrap(), 2);
    let screen = render(&m, T0, 80, 24);
    assert!(screen.contains("● dave (2) in call 3 dev"), "{screen}");
}

#[test]
fn snapshot_relay_down() {
    let mut m = with_contacts(model());
    m.on_engine(
        Event::ConnectionChanged {
            state: LinkState::Reconnecting,
        },
        T0 + 100,
    );
    snap!("relay_down", m, T0 + 200);
}

/// At the smallest size, in a call, the editor is still drawn (it was
/// squeezed out, and text was typed blind) and so is the far end's meter:
/// the event log gives way.
#[test]
fn the_editor_and_the_call_fit_the_smallest_screen() {
    let mut m = with_conversation(model());
    connected(&mut m, "c1", "bob", false);
    begin(&mut m, "c1", T0 + 2_000);
    m.focus = Pane::Conversation;
    m.on_terminal(key(KeyCode::Char('w')), T0 + 3_000);
    for c in "typed at 60x16".chars() {
        m.on_terminal(key(KeyCode::Char(c)), T0 + 3_000);
    }
    let screen = render(&m, T0 + 3_000, 60, 16);
    assert!(screen.contains("typed at 60x16"), "{screen}");
    let meters = screen.lines().filter(|l| l.contains("▯")).count();
    assert_eq!(meters, 2, "this device's meter and bob's:\n{screen}");
    // Under a notice of five lines too (the missing sound card's, which a
    // new device gets in its first call), the draft stays in sight.
    m.notice = Some(("no audio output device, ".repeat(10), T0 + 3_000));
    let screen = render(&m, T0 + 3_000, 60, 16);
    assert!(screen.contains("typed at 60x16"), "{screen}");
    // Where there is room the event log stays, the editor open or not.
    assert!(render(&m, T0 + 3_000, 80, 24).contains("Event log"));
}

/// In a call, from another pane, `w` writes: letters typed after it were
/// call keys (`t` started a transfer, `p` opened the keypad and the digits
/// went to bob as DTMF) when it only worked in the conversation pane.
#[test]
fn w_writes_from_any_pane_in_a_call() {
    let mut m = with_conversation(model());
    connected(&mut m, "c1", "bob", false);
    begin(&mut m, "c1", T0 + 2_000);
    m.focus = Pane::Log;
    m.on_terminal(key(KeyCode::Char('w')), T0 + 3_000);
    assert!(m.composing);
    assert_eq!(m.focus, Pane::Conversation);
    let mut effects = Vec::new();
    for c in "tp 6016".chars() {
        effects.extend(m.on_terminal(key(KeyCode::Char(c)), T0 + 3_000));
    }
    assert!(
        effects
            .iter()
            .all(|e| matches!(e, Effect::Engine(Command::Chat(_)))),
        "only typing notices: {effects:?}"
    );
    assert!(m.keypad.is_none());
    let bob: UserId = "bob".parse().unwrap();
    assert_eq!(m.drafts[&bob].lines().join("\n"), "tp 6016");
}

/// `y` was offered and did nothing at all with copying off (the default):
/// now the footer offers it only when it works, and the key says how to
/// turn it on.
#[test]
fn copy_is_offered_only_when_on_and_says_how_to_turn_it_on() {
    let mut m = with_conversation(model());
    m.on_terminal(key(KeyCode::Up), T0 + 1_000);
    let footer = |m: &Model| {
        render(m, T0 + 1_000, 80, 24)
            .lines()
            .last()
            .unwrap()
            .to_owned()
    };
    assert!(!footer(&m).contains(" y "), "{}", footer(&m));
    assert_eq!(m.on_terminal(key(KeyCode::Char('y')), T0 + 1_000), vec![]);
    assert!(m.notice.as_ref().unwrap().0.contains("osc52_copy = true"));
    m.copy = true;
    assert!(footer(&m).contains(" y  copy "), "{}", footer(&m));
    assert_eq!(
        m.on_terminal(key(KeyCode::Char('y')), T0 + 2_000),
        vec![Effect::Copy("great, calling you".into())]
    );
    assert_eq!(
        m.notice.as_ref().unwrap().0,
        "copied to the terminal's clipboard"
    );
}

/// Scrolled back in the event log, newer events came out of sight with no
/// sign, and End did nothing there: a QA user thought no events came.
#[test]
fn the_event_log_says_what_is_below_and_end_follows_again() {
    let mut m = with_conversation(model());
    m.focus = Pane::Log;
    for _ in 0..2 {
        m.on_terminal(key(KeyCode::Up), T0 + 1_000);
    }
    assert_eq!(m.log_scroll, 2);
    let screen = render(&m, T0 + 1_000, 80, 24);
    assert!(screen.contains("2 newer below (End)"), "{screen}");
    assert!(
        screen.lines().last().unwrap().contains("End  newest"),
        "{screen}"
    );
    m.on_terminal(key(KeyCode::End), T0 + 2_000);
    assert_eq!(m.log_scroll, 0);
    assert!(!render(&m, T0 + 2_000, 80, 24).contains("newer below"));
}

/// The demo's welcome was cut at 60x16 with no way to scroll it: each
/// line fits the pane's width there, and the event log makes room.
#[test]
fn the_demo_welcome_is_whole_on_the_smallest_screen() {
    let mut m = with_contacts(model());
    m.banner = crate::demo::BANNER.iter().map(|l| l.to_string()).collect();
    let screen = render(&m, T0, 60, 16);
    for line in crate::demo::BANNER {
        assert!(screen.contains(line), "{line:?} missing:\n{screen}");
    }
}

/// Too small to draw, a ringing call was hidden (its keys still worked,
/// blind): the notice names the caller and the keys.
#[test]
fn a_call_rings_visibly_on_a_screen_too_small_to_draw() {
    let mut m = with_contacts(model());
    connected(&mut m, "c1", "bob", false);
    let screen = render(&m, T0 + 1_000, 40, 12);
    assert!(screen.contains("too small"), "{screen}");
    assert!(screen.contains("bob calls you"), "{screen}");
    assert!(screen.contains("a\u{a0}answer"), "{screen}");
    assert!(
        screen.contains("C-c\u{a0}quit"),
        "the keys whole, wrapped: {screen}"
    );
}

/// Invited into a group call already running, a device names everyone in
/// it (as the relay says when it enters), not only who invited it, and
/// keeps them as they leave.
#[test]
fn a_group_call_joined_late_names_everyone_in_it() {
    let mut m = with_contacts(model());
    ringing(&mut m, true);
    m.on_terminal(key(KeyCode::Char('a')), T0 + 1_500);
    m.on_engine(
        Event::OnCallBegin {
            call_id: "c1".into(),
            room_id: 4_242,
            call_media_type: AUDIO_CALL,
            call_role: CallRole::Called,
            user_id_list: vec!["bob".parse().unwrap(), "carol".parse().unwrap()],
            record: any_record(),
        },
        T0 + 2_000,
    );
    assert!(render(&m, T0 + 3_000, 80, 24).contains("with bob, carol"));
    m.on_engine(
        Event::UserLeave {
            call_id: "c1".into(),
            user_id: "bob".parse().unwrap(),
        },
        T0 + 4_000,
    );
    let screen = render(&m, T0 + 4_000, 80, 24);
    assert!(screen.contains("with carol"), "{screen}");
}

/// In a call, quitting (which logs out and so hangs up) asks to be
/// pressed again; out of one, or pressed again in time, it quits.
#[test]
fn quitting_in_a_call_asks_twice() {
    let mut m = with_contacts(model());
    assert_eq!(
        m.on_terminal(key(KeyCode::Char('q')), T0),
        vec![Effect::Quit]
    );
    connected(&mut m, "c1", "bob", false);
    begin(&mut m, "c1", T0 + 2_000);
    let q = key(KeyCode::Char('q'));
    assert_eq!(m.on_terminal(q.clone(), T0 + 5_000), vec![]);
    let screen = render(&m, T0 + 5_000, 80, 24);
    assert!(
        screen.contains("q again within 3 s to hang up and quit"),
        "{screen}"
    );
    // Too late: asked again.
    assert_eq!(m.on_terminal(q.clone(), T0 + 9_000), vec![]);
    assert_eq!(m.on_terminal(q, T0 + 10_000), vec![Effect::Quit]);
}

/// Too small to draw in a call: the notice says who with and the call's
/// keys, so `h` hangs up knowingly.
#[test]
fn a_call_stays_in_sight_on_a_screen_too_small_to_draw() {
    let mut m = with_contacts(model());
    connected(&mut m, "c1", "bob", false);
    begin(&mut m, "c1", T0 + 2_000);
    let screen = render(&m, T0 + 3_000, 50, 12);
    assert!(screen.contains("in a call with bob"), "{screen}");
    assert!(screen.contains("h\u{a0}hang up"), "{screen}");
}

/// A relay lost in a call: the call pane says the call hangs on the
/// relay's return, and a call the relay no longer had ends saying so.
#[test]
fn a_call_lost_with_the_relay_says_why_it_ended() {
    let mut m = with_contacts(model());
    connected(&mut m, "c1", "bob", false);
    begin(&mut m, "c1", T0 + 2_000);
    let link = |m: &mut Model, state, now| m.on_engine(Event::ConnectionChanged { state }, now);
    link(&mut m, LinkState::Reconnecting, T0 + 5_000);
    let screen = render(&m, T0 + 5_100, 80, 24);
    assert!(screen.contains("reconnecting to the relay"), "{screen}");
    link(&mut m, LinkState::Connected, T0 + 9_000);
    assert!(!render(&m, T0 + 9_000, 80, 24).contains("reconnecting to the relay"));
    m.on_engine(
        Event::CallingEnd {
            call_id: "c1".into(),
            room_id: 7,
            user_id: "alice".parse().unwrap(),
            total_time: 7,
            call_media_type: AUDIO_CALL,
            call_role: CallRole::Called,
            record: any_record(),
            unheard: true,
        },
        T0 + 9_000,
    );
    let screen = render(&m, T0 + 9_100, 80, 24);
    assert!(
        screen.contains("call ended after 0:07 while this device was cut off"),
        "{screen}"
    );
}

/// The help is taller than the smallest screen: it scrolls to its end.
#[test]
fn the_help_scrolls_to_its_end_on_the_smallest_screen() {
    use crate::tui::layout::{MIN_HEIGHT, MIN_WIDTH};
    let mut m = with_contacts(model());
    m.on_terminal(key(KeyCode::Char('?')), T0);
    // As the TUI's loop does: draw, and tell the model what was drawn.
    let draw = |m: &mut Model| {
        let mut terminal = Terminal::new(TestBackend::new(MIN_WIDTH, MIN_HEIGHT)).unwrap();
        let mut drawn = None;
        terminal
            .draw(|f| drawn = Some(view::draw(f, m, T0)))
            .unwrap();
        m.on_overlay(drawn.unwrap().overlay);
        terminal.backend().to_string()
    };
    let screen = draw(&mut m);
    assert!(
        screen.contains("Anywhere") && screen.contains("(↑↓ PgUp PgDn, Esc closes)"),
        "{screen}"
    );
    assert!(!screen.contains("l log in again"), "{screen}");
    m.on_terminal(key(KeyCode::End), T0);
    let screen = draw(&mut m);
    assert!(screen.contains("l log in again"), "{screen}");
    // The keypad's keys, wider than the column, wrap whole.
    assert!(screen.contains("D dial (0-9 * # A-D)"), "{screen}");
    assert!(!screen.contains("Anywhere"), "{screen}");
    // Past the end is the end: one step back up moves at once.
    m.on_terminal(key(KeyCode::Down), T0);
    m.on_terminal(key(KeyCode::Up), T0);
    let screen = draw(&mut m);
    assert!(!screen.contains("l log in again"), "{screen}");
    m.on_terminal(key(KeyCode::Home), T0);
    assert!(draw(&mut m).contains("Anywhere"));
    m.on_terminal(key(KeyCode::Esc), T0);
    assert!(!draw(&mut m).contains("↑↓ PgUp PgDn"));
}

#[test]
fn snapshot_help() {
    let mut m = with_contacts(model());
    m.on_terminal(key(KeyCode::Char('?')), T0);
    snap!("help", m, T0);
}

/// A call that rings while the help (or an event in full) is open closes
/// it: the ringing pane shows, and `a` answers.
#[test]
fn a_ringing_call_closes_the_help_and_answers() {
    let mut m = with_contacts(model());
    m.on_terminal(key(KeyCode::Char('?')), T0);
    ringing(&mut m, false);
    let screen = render(&m, T0, 80, 24);
    assert!(!screen.contains("Esc closes"), "{screen}");
    assert!(screen.contains("bob is calling"), "{screen}");
    assert_eq!(
        m.on_terminal(key(KeyCode::Char('a')), T0),
        vec![Effect::Engine(Command::Call(CallCommand::Accept {
            call_id: Some("c1".into()),
            end_current: false,
        }))]
    );
}

#[test]
fn ringing_takes_the_keys_and_answers() {
    let mut m = with_contacts(model());
    ringing(&mut m, false);
    assert_eq!(
        m.on_terminal(key(KeyCode::Char('a')), T0),
        vec![Effect::Engine(Command::Call(CallCommand::Accept {
            call_id: Some("c1".into()),
            end_current: false,
        }))]
    );
    assert_eq!(
        m.on_terminal(key(KeyCode::Char('q')), T0),
        vec![],
        "q does not quit under a ringing call"
    );
}

#[test]
fn writing_and_sending_a_message() {
    let mut m = with_conversation(model());
    assert_eq!(m.focus, Pane::Conversation);
    m.on_terminal(key(KeyCode::Char('w')), T0);
    let bob = UserId::parse("bob").unwrap();
    // The first key tells bob this device is typing; the rest are text.
    assert_eq!(
        m.on_terminal(key(KeyCode::Char('h')), T0),
        vec![Effect::Engine(Command::Chat(ChatCommand::Typing {
            to: bob.clone()
        }))]
    );
    for c in "i q".chars() {
        assert_eq!(
            m.on_terminal(key(KeyCode::Char(c)), T0),
            vec![],
            "typing, q included, is text"
        );
    }
    let effects = m.on_terminal(key(KeyCode::Enter), T0 + 300_000);
    let id = format!("term-1a2b3c-{T0:x}-1");
    assert_eq!(
        effects,
        vec![Effect::Engine(Command::Chat(ChatCommand::SendMessage {
            to: bob.clone(),
            text: "hi q".into(),
            client_msg_id: Some(id.clone()),
        }))]
    );
    // It shows at once, as sending; the editor stays open, empty, for
    // the next message.
    assert!(m.composing);
    assert!(m.drafts[&bob].is_empty());
    let c = m.conversation.as_ref().unwrap();
    let sent = c.shown.last().unwrap();
    assert_eq!(
        (sent.message.text.as_str(), &sent.delivery),
        ("hi q", &Delivery::Sending)
    );
    m.on_engine(
        Event::MessageSent {
            msg_id: "m-99".into(),
            client_msg_id: id,
            to: bob,
            text: "hi q".into(),
            timestamp: T0 + 300_050,
            seq: Some(40),
        },
        T0 + 300_050,
    );
    let sent = m.conversation.as_ref().unwrap().shown.last().unwrap();
    assert_eq!(
        (sent.message.msg_id.as_str(), &sent.delivery),
        ("m-99", &Delivery::Sent)
    );
}

#[test]
fn opening_an_unread_conversation_marks_it_read() {
    let mut m = with_contacts(model());
    m.on_terminal(key(KeyCode::Down), T0);
    let effects = m.on_terminal(key(KeyCode::Enter), T0);
    assert_eq!(
        effects,
        vec![
            Effect::LoadMessages(UserId::parse("carol").unwrap()),
            Effect::LoadConversations,
            Effect::Engine(Command::Chat(ChatCommand::MarkRead {
                peer: UserId::parse("carol").unwrap()
            })),
        ]
    );
}

#[test]
fn c_calls_the_selected_contact_and_h_hangs_up_from_any_pane() {
    let mut m = with_contacts(model());
    assert_eq!(
        m.on_terminal(key(KeyCode::Char('c')), T0),
        vec![Effect::Engine(Command::Call(CallCommand::Call {
            users: vec![UserId::parse("bob").unwrap()],
            timeout_secs: None,
            user_data: None,
        }))]
    );
    m.on_engine(
        Event::CallDialing {
            call_id: "c9".into(),
            room_id: 1,
            user_id_list: vec!["bob".parse().unwrap()],
            is_from_group: false,
            call_media_type: AUDIO_CALL,
            call_role: CallRole::Caller,
            record: any_record(),
        },
        T0,
    );
    m.on_terminal(key(KeyCode::Tab), T0);
    m.on_terminal(key(KeyCode::Tab), T0);
    assert_eq!(
        m.on_terminal(key(KeyCode::Char('h')), T0),
        vec![Effect::Engine(Command::Call(CallCommand::Hangup {
            call_id: Some("c9".into())
        }))]
    );
}

#[test]
fn an_incoming_call_rings_the_bell() {
    let mut m = model();
    let effects = m.on_engine(
        Event::OnCallReceived {
            call_id: "c1".into(),
            room_id: 1,
            sponsor: "bob".parse().unwrap(),
            user_id_list: vec![],
            is_from_group: false,
            call_media_type: AUDIO_CALL,
            call_role: CallRole::Called,
            user_data: None,
            transferred_by: None,
            waiting: false,
            record: any_record(),
        },
        T0,
    );
    assert_eq!(effects, vec![Effect::Bell]);
}

/// A message that came while the conversation was on screen but the focus
/// elsewhere stayed unread on every device, even once answered.
#[test]
fn a_message_that_came_while_the_focus_was_elsewhere_is_read_when_it_returns() {
    let mut m = with_conversation(model());
    let bob: UserId = "bob".parse().unwrap();
    m.on_terminal(key(KeyCode::BackTab), T0);
    assert_ne!(m.focus, Pane::Conversation);
    let effects = m.on_engine(
        Event::MessageReceived {
            msg_id: "live".into(),
            from: bob.clone(),
            to: "alice".parse().unwrap(),
            text: "read test".into(),
            timestamp: T0 + 120_000,
            offline: false,
            seq: 9,
        },
        T0,
    );
    assert_eq!(effects, vec![Effect::LoadConversations], "not read yet");
    m.on_conversations(vec![Summary {
        user_id: bob.clone(),
        last_message: message("bob", "alice", "read test", 2),
        unread_count: 1,
        peer_read: None,
    }]);
    assert_eq!(
        m.on_terminal(key(KeyCode::Tab), T0 + 1_000),
        vec![
            Effect::Engine(Command::Chat(ChatCommand::MarkRead { peer: bob })),
            Effect::LoadConversations
        ]
    );
    assert_eq!(m.focus, Pane::Conversation);
    // Nothing unread: passing through says nothing.
    m.on_conversations(Vec::new());
    m.on_terminal(key(KeyCode::BackTab), T0 + 2_000);
    assert_eq!(m.on_terminal(key(KeyCode::Tab), T0 + 2_000), vec![]);
}

#[test]
fn a_message_that_arrives_while_the_conversation_loads_stays_on_screen() {
    let mut m = with_contacts(model());
    m.on_terminal(key(KeyCode::Enter), T0);
    m.on_engine(
        Event::MessageReceived {
            msg_id: "live".into(),
            from: "bob".parse().unwrap(),
            to: "alice".parse().unwrap(),
            text: "just now".into(),
            timestamp: T0 + 120_000,
            offline: false,
            seq: 9,
        },
        T0,
    );
    // The store's page was read before the live message was written.
    let peer = m.open_peer().cloned().unwrap();
    m.on_messages(&peer, vec![message(peer.as_str(), "alice", "earlier", 1)]);
    assert_eq!(texts(&m), ["earlier", "just now"]);
}

#[test]
fn the_relays_page_joins_what_the_local_store_had() {
    let mut m = with_conversation(model());
    let bob: UserId = "bob".parse().unwrap();
    let mut older = vec![
        message("alice", "bob", "from before this device", 0),
        message("bob", "alice", "this one was a typo", 3),
    ];
    older[1].msg_id = m.conversation.as_ref().unwrap().shown[2]
        .message
        .msg_id
        .clone();
    m.on_engine(
        Event::Messages {
            user_id: bob,
            messages: older,
        },
        T0 + 50,
    );
    assert_eq!(
        texts(&m),
        [
            "from before this device",
            "are you joining the standup?",
            "yes, two minutes",
            "this one was a typo",
            "great, calling you"
        ]
    );
    // Another conversation's page changes nothing here.
    m.on_engine(
        Event::Messages {
            user_id: "carol".parse().unwrap(),
            messages: vec![message("carol", "alice", "hi", 5)],
        },
        T0 + 60,
    );
    assert_eq!(texts(&m).len(), 5);
}

fn dialing(m: &mut Model) {
    m.on_engine(
        Event::CallDialing {
            call_id: "c9".into(),
            room_id: 1,
            user_id_list: vec!["bob".parse().unwrap()],
            is_from_group: false,
            call_media_type: AUDIO_CALL,
            call_role: CallRole::Caller,
            record: any_record(),
        },
        T0 + 1_000,
    );
}

fn footer(m: &Model, now: u64, width: u16, height: u16) -> String {
    let screen = render(m, now, width, height);
    screen.lines().last().unwrap().to_owned()
}

/// The open conversation's last message selected (`k`) and its details
/// opened (`v`) at `at`, as a 100x30 terminal shows them.
fn details_of_the_last_message(m: &mut Model, at: u64) -> String {
    m.on_terminal(key(KeyCode::Char('k')), at);
    m.on_terminal(key(KeyCode::Char('v')), at);
    render(m, at, 100, 30)
}

/// A message's details are titled by whose message it is, not by when
/// the window was opened.
#[test]
fn message_details_are_titled_by_the_message() {
    let mut m = with_conversation(model());
    let screen = details_of_the_last_message(&mut m, T0 + 1_000);
    assert!(screen.contains("Message from bob (Esc closes)"), "{screen}");
}

/// A contact row says as much as fits, each part whole: the device count
/// shortened, and "in call" or the count left out where they do not fit.
#[test]
fn a_contact_row_shortens_its_device_count_to_fit() {
    let mut m = model();
    let mut busy = user("dave", 3);
    busy.user = "davidson".parse().unwrap();
    let mut longer = user("dave", 3);
    longer.user = "davidsonsmith".parse().unwrap();
    let mut longest = user("dave", 3);
    longest.user = "carolinesmithjones".parse().unwrap();
    m.on_engine(
        Event::Users {
            users: vec![busy, longer, longest],
        },
        T0 + 30,
    );
    let screen = render(&m, T0 + 1_000, 80, 24);
    assert!(screen.contains("│● davidson in call 3 dev│"), "{screen}");
    assert!(screen.contains("│● davidsonsmith in call │"), "{screen}");
    // Not "in " cut from "in call".
    assert!(screen.contains("│● carolinesmithjones    │"), "{screen}");
}

/// A message the logout gave up on is named with its text whichever
/// conversation is open by then, not only when it is its own.
#[test]
fn a_message_given_up_at_logout_is_named_from_any_conversation() {
    let mut m = with_contacts(model());
    // bob's conversation (the first contact): write, send, leave it for
    // carol's.
    m.on_terminal(key(KeyCode::Enter), T0 + 100);
    m.on_terminal(TermEvent::Paste("see you at ten".into()), T0 + 200);
    let effects = m.on_terminal(key(KeyCode::Enter), T0 + 200);
    let id = effects
        .iter()
        .find_map(|e| match e {
            Effect::Engine(Command::Chat(ChatCommand::SendMessage { client_msg_id, .. })) => {
                client_msg_id.clone()
            }
            _ => None,
        })
        .expect("sent");
    m.on_terminal(key(KeyCode::Esc), T0 + 300);
    m.on_terminal(key(KeyCode::BackTab), T0 + 300);
    m.on_terminal(key(KeyCode::Char('j')), T0 + 300);
    m.on_terminal(key(KeyCode::Enter), T0 + 300);
    let given_up = Event::Error {
        code: ErrorCode::RelayUnreachable.code(),
        message: "not acknowledged".into(),
        cmd: Some("sendMessage".into()),
        relay_code: None,
        client_msg_id: Some(id),
    };
    assert_eq!(
        m.conversation.as_ref().map(|c| c.peer.as_str()),
        Some("carol")
    );
    let line = super::unsent(&m, &given_up).unwrap();
    assert!(line.contains("reached bob: \"see you at ten\""), "{line}");
}

/// A message of mine the other has read (✓✓ in the list) says so in its
/// details too.
#[test]
fn the_details_of_a_read_message_say_it_was_read() {
    let mut m = a_message_bob_has_read();
    let screen = details_of_the_last_message(&mut m, T0 + 151_000);
    assert!(screen.contains("state      read by bob"), "{screen}");
}

/// Notices that are over go: a refused typing notice is none of the
/// user's (the message is queued), "logging in again…" goes with the
/// login, and the last call's end with the next call.
#[test]
fn notices_that_are_over_go() {
    let mut m = with_contacts(model());
    m.on_engine(
        Event::Error {
            code: ErrorCode::RelayUnreachable.code(),
            message: "reconnecting to the relay; try again in a moment".into(),
            cmd: Some("typing".into()),
            relay_code: None,
            client_msg_id: None,
        },
        T0,
    );
    assert!(!render(&m, T0, 80, 24).contains("try again in a moment"));
    m.notice = Some((LOGGING_IN_AGAIN.into(), T0));
    m.on_engine(Event::SdkReady, T0 + 500);
    assert!(!render(&m, T0 + 500, 80, 24).contains("logging in again"));
    m.notice = Some(("call ended after 0:03".into(), T0 + 1_000));
    ringing(&mut m, false);
    assert!(!render(&m, T0 + 1_000, 80, 24).contains("call ended after"));
}

/// A muted or held call's footer offers the way back, not the same word.
#[test]
fn mute_and_hold_keys_say_which_way_they_go() {
    let mut m = model();
    ringing(&mut m, false);
    begin(&mut m, "c1", T0 + 2_000);
    let shown = footer(&m, T0 + 3_000, 120, 40);
    assert!(
        shown.contains("m  mute") && shown.contains("o  hold"),
        "{shown}"
    );
    m.on_terminal(key(KeyCode::Char('m')), T0 + 3_000);
    hold_changed(&mut m, "c1", "alice", true);
    // At the smallest size too: the way back is what stays in the footer.
    for (width, height) in [(120, 40), (60, 16)] {
        let shown = footer(&m, T0 + 6_000, width, height);
        assert!(
            shown.contains("m  unmute") && shown.contains("o  resume"),
            "{shown}"
        );
    }
}

#[test]
fn snapshot_kicked_out_offers_a_new_login_and_nothing_that_needs_one() {
    let mut m = with_conversation(model());
    m.on_engine(
        Event::KickedOut {
            reason: KickReason::DeviceLimit,
            message: "alice logged in on another terminal device; at most 3 may be online at once"
                .into(),
        },
        T0 + 2_000,
    );
    m.on_engine(Event::status(LoginStatus::Logout), T0 + 2_000);
    assert_eq!(
        m.on_terminal(key(KeyCode::Char('c')), T0 + 2_500),
        vec![],
        "c calls no one while signed out"
    );
    assert_eq!(m.on_terminal(key(KeyCode::Char('w')), T0 + 2_500), vec![]);
    assert!(!m.composing);
    let screen = render(&m, T0 + 3_000, 80, 24);
    let last = screen.lines().last().unwrap();
    assert!(last.contains(" l  log in again "), "{last}");
    assert!(!last.contains(" c ") && !last.contains(" w "), "{last}");
    snap!("kicked_out", m, T0 + 3_000);

    assert_eq!(
        m.on_terminal(key(KeyCode::Char('l')), T0 + 4_000),
        vec![Effect::Login]
    );
    m.on_engine(Event::status(LoginStatus::Logining), T0 + 4_100);
    m.on_engine(Event::status(LoginStatus::Logined), T0 + 4_200);
    m.on_engine(Event::SdkReady, T0 + 4_200);
    assert!(m.signed_out.is_none() && m.alert.is_none());
    assert!(footer(&m, T0 + 4_300, 80, 24).contains(" c  call "));
}

#[test]
fn snapshot_an_expired_ticket_offers_a_new_login() {
    let mut m = with_contacts(model());
    m.on_engine(Event::UserSigExpired, T0 + 2_000);
    m.on_engine(Event::status(LoginStatus::Logout), T0 + 2_000);
    let screen = render(&m, T0 + 2_100, 80, 24);
    assert!(
        screen.contains("Your UserSig expired. Press l to log in again."),
        "{screen}"
    );
    assert!(screen.contains("LOGOUT  ticket expired"), "{screen}");
}

#[test]
fn snapshot_dialing_offers_hang_up_but_not_invite_or_mute() {
    let mut m = with_contacts(model());
    dialing(&mut m);
    let line = footer(&m, T0 + 2_000, 120, 40);
    assert!(line.contains(" h  hang up "), "{line}");
    assert!(!line.contains("invite") && !line.contains("mute"), "{line}");
    snap!("dialing", m, T0 + 2_000);
}

#[test]
fn snapshot_a_no_audio_error_leaves_the_keys_in_view() {
    let mut m = with_contacts(model());
    dialing(&mut m);
    m.on_engine(
        Event::UserAccept {
            call_id: "c9".into(),
            user_id: "bob".parse().unwrap(),
        },
        T0 + 2_000,
    );
    m.on_engine(
        Event::OnCallBegin {
            call_id: "c9".into(),
            room_id: 1,
            call_media_type: AUDIO_CALL,
            call_role: CallRole::Caller,
            user_id_list: vec![],
            record: any_record(),
        },
        T0 + 2_000,
    );
    m.on_engine(
        Event::Error {
            code: crate::error::ErrorCode::AudioDeviceFailed.code(),
            message: "cannot open the input device \"default\": no sound card (ALSA: \
                      cannot find card '0'); the call goes on with null audio on this side"
                .into(),
            cmd: None,
            relay_code: None,
            client_msg_id: None,
        },
        T0 + 2_100,
    );
    for (w, h) in [(80, 24), (120, 40)] {
        let screen = render(&m, T0 + 2_500, w, h);
        let last = screen.lines().last().unwrap();
        assert!(last.contains(" h  hang up "), "{w}x{h}: {last}");
        assert!(screen.contains("null audio"), "{screen}");
    }
    snap!("no_audio", m, T0 + 2_500);
}

#[test]
fn the_footer_fits_and_names_each_key_once() {
    let mut m = with_conversation(model());
    dialing(&mut m);
    m.on_engine(
        Event::OnCallBegin {
            call_id: "c9".into(),
            room_id: 1,
            call_media_type: AUDIO_CALL,
            call_role: CallRole::Caller,
            user_id_list: vec![],
            record: any_record(),
        },
        T0 + 2_000,
    );
    for width in [80, 120] {
        let line = footer(&m, T0 + 3_000, width, 24);
        let trimmed = line.trim_end_matches('"').trim_end();
        assert!(
            trimmed.ends_with("q  quit"),
            "{width} columns: the footer is cut: {line}"
        );
        assert!(line.matches(" Tab ").count() <= 1, "{line}");
        assert_eq!(line.matches(" ?  help").count(), 1, "{line}");
    }
    let wide = footer(&m, T0 + 3_000, 120, 40);
    assert_eq!(wide.matches(" Tab  next pane").count(), 1, "{wide}");
}

#[test]
fn snapshot_an_event_shown_whole() {
    let mut m = with_contacts(model());
    m.on_engine(
        Event::OnUserNetworkQualityChanged {
            network_quality_list: vec![NetworkQuality {
                user_id: "bob".parse().unwrap(),
                quality: Quality::Poor,
                loss_percent: 6.0,
                jitter_ms: 30,
                rtt_ms: Some(120),
            }],
        },
        T0 + 1_500,
    );
    m.focus = Pane::Log;
    assert!(footer(&m, T0 + 2_000, 120, 40).contains(" Enter  show event "));
    m.on_terminal(key(KeyCode::Enter), T0 + 2_000);
    let shown = m.detail.clone().expect("Enter on the log shows the event");
    assert!(shown.full.contains("\"rttMs\": 120"), "{}", shown.full);
    snap!("event_detail", m, T0 + 2_000);
    m.on_terminal(key(KeyCode::Esc), T0 + 2_100);
    assert!(m.detail.is_none());
    // Up selects an older event; Enter shows that one.
    m.on_terminal(key(KeyCode::Up), T0 + 2_200);
    m.on_terminal(key(KeyCode::Enter), T0 + 2_300);
    assert!(m.detail.unwrap().full.contains("USERS"));
}

#[test]
fn snapshot_too_small() {
    let m = with_contacts(model());
    insta::assert_snapshot!("too_small_59x15", render(&m, T0, 59, 15));
    let fits = render(&m, T0, 60, 16);
    assert!(!fits.contains("too small"), "{fits}");
}

#[test]
fn snapshot_relay_never_reached() {
    let mut m = Model::new(
        UserId::parse("alice").unwrap(),
        DeviceId::parse("term-1a2b3c").unwrap(),
        Platform::terminal(),
        "ws://127.0.0.1:9".into(),
        Keymap::default(),
        T0,
    );
    m.on_engine(Event::status(LoginStatus::Logining), T0 + 10);
    m.on_engine(
        Event::Error {
            code: crate::error::ErrorCode::RelayUnreachable.code(),
            message: "cannot reach the relay: Connection refused (os error 111); \
                      retrying with backoff"
                .into(),
            cmd: None,
            relay_code: None,
            client_msg_id: None,
        },
        T0 + 20,
    );
    let screen = render(&m, T0 + 1_000, 80, 24);
    assert!(!screen.contains("No one else here yet"), "{screen}");
    assert!(screen.contains("Cannot reach the relay"), "{screen}");
    snap!("relay_never_reached", m, T0 + 1_000);
    // Something answers there, not as a relay: no relay can be started
    // where another server listens.
    m.on_engine(
        Event::Error {
            code: crate::error::ErrorCode::RelayUnreachable.code(),
            message: "cannot reach the relay: ws://127.0.0.1:9: HTTP version must be 1.1 or \
                      higher: 127.0.0.1:9 answers, but not as a relay over ws://; \
                      a relay with TLS is reached at wss://127.0.0.1:9; retrying with backoff"
                .into(),
            cmd: None,
            relay_code: None,
            client_msg_id: None,
        },
        T0 + 2_000,
    );
    let screen = render(&m, T0 + 3_000, 80, 24);
    assert!(!screen.contains("Start one there"), "{screen}");
    assert!(screen.contains("not as a relay"), "{screen}");
}

#[test]
fn ignoring_a_call_says_the_other_devices_may_still_ring() {
    let mut m = with_contacts(model());
    ringing(&mut m, false);
    m.on_engine(
        Event::OnCallCanceled {
            call_id: "c1".into(),
            room_id: 4_242,
            user_id: "alice".parse().unwrap(),
            reason: CancelReason::parse("ignored").unwrap(),
            call_media_type: AUDIO_CALL,
            call_role: CallRole::Called,
            elsewhere: None,
            record: any_record(),
        },
        T0 + 2_000,
    );
    assert!(m.incoming.is_empty());
    assert_eq!(
        m.notice_now(T0 + 2_500),
        Some("ignored the call from bob; your other devices may still ring")
    );
}

#[test]
fn the_relay_address_in_the_header_is_whole_or_absent() {
    let m = with_contacts(model());
    let header = |width: u16| render(&m, T0, width, 24).lines().next().unwrap().to_owned();
    assert!(header(120).contains("ws://127.0.0.1:7787"));
    assert!(header(80).contains(" 127.0.0.1:7787"));
    for width in 40..120 {
        let line = header(width);
        assert!(
            !line.contains("127.0") || line.contains("127.0.0.1:7787"),
            "{width} columns: {line}"
        );
    }
}

#[test]
fn a_relay_with_another_certificate_is_an_alert_not_a_reconnect_loop() {
    use crate::error::{Error, ErrorCode};
    let mut m = with_contacts(model());
    let mismatch = crate::tls::Mismatch {
        address: "wss://relay.lan:7787".into(),
        trusted: crate::tls::Fingerprint::of(b"old"),
        presented: crate::tls::Fingerprint::of(b"new"),
        source: "given by --relay-fingerprint or client.relay_fingerprint".into(),
        file: None,
    };
    let error = Error::new(ErrorCode::RelayCertificateMismatch, mismatch.message());
    // What the engine reports for `Input::ConnectRefused`, then its sign-out.
    m.on_engine(Event::error(error, Some("login")), T0 + 2_000);
    m.on_engine(Event::status(LoginStatus::Logout), T0 + 2_000);
    assert_eq!(m.signed_out, Some("login refused"));
    let alert = m.alert.clone().unwrap();
    assert!(
        alert.contains("wss://relay.lan:7787") && alert.contains("--relay-fingerprint"),
        "{alert}"
    );
    let screen = render(&m, T0 + 3_000, 120, 40);
    assert!(screen.contains("login refused"), "{screen}");
    assert!(screen.contains("Login refused: the relay at"), "{screen}");
}

/// A conversation with bob holding `messages`, opened and laid out at
/// 100x30 (the conversation area the view draws there).
fn conversation_with(messages: Vec<StoredMessage>, unread: u64) -> Model {
    let mut m = with_contacts(model());
    m.unread.insert("bob".parse().unwrap(), unread);
    m.on_terminal(key(KeyCode::Enter), T0 + 40);
    m.on_terminal(key(KeyCode::Esc), T0 + 40);
    let bob: UserId = "bob".parse().unwrap();
    m.on_messages(&bob, messages);
    m
}

#[test]
fn snapshot_long_and_chinese_messages_wrap_whole() {
    let words: Vec<String> = (0..90).map(|i| format!("w{i:02}")).collect();
    let long = words.join(" ");
    let chinese = "我们明天下午三点在三楼的大会议室开会，请大家准时参加并带上各自负责的项目进度报告和下季度计划。";
    let m = conversation_with(
        vec![
            message("bob", "alice", &long, 1),
            message("bob", "alice", chinese, 2),
            message("alice", "bob", "收到 👍", 3),
        ],
        0,
    );
    snap!("wrapped", m, T0 + 200_000);
    let screen = render(&m, T0 + 200_000, 120, 40);
    for w in &words {
        assert!(screen.contains(w.as_str()), "{w} is not on the screen");
    }
    // The conversation pane's column of each row, spaces left out.
    let pane: String = (screen.lines())
        .filter_map(|l| l.split('│').nth(3))
        .map(|l| l.replace(' ', ""))
        .collect();
    assert!(pane.contains(chinese), "the sentence is cut:\n{screen}");
}

#[test]
fn snapshot_scrolled_back_with_new_messages_below() {
    let messages: Vec<StoredMessage> = (1..=40)
        .map(|n| message("bob", "alice", &format!("message {n:02}"), n))
        .collect();
    let mut m = conversation_with(messages, 0);
    render(&m, T0, 80, 24);
    m.on_viewport(52, 9);
    m.on_terminal(key(KeyCode::PageUp), T0 + 50);
    for n in [41, 42] {
        m.on_engine(
            Event::MessageReceived {
                msg_id: format!("live-{n}"),
                from: "bob".parse().unwrap(),
                to: "alice".parse().unwrap(),
                text: format!("message {n}"),
                timestamp: T0 + n * 60_000,
                offline: false,
                seq: n,
            },
            T0 + 60,
        );
    }
    insta::assert_snapshot!("scrolled_back_80x24", render(&m, T0 + 70, 80, 24));
    let screen = render(&m, T0 + 70, 80, 24);
    assert!(screen.contains("2 new messages below"), "{screen}");
    assert!(!screen.contains("message 41"), "{screen}");
    // End returns to the newest, and the marker goes.
    m.on_terminal(key(KeyCode::End), T0 + 80);
    let screen = render(&m, T0 + 90, 80, 24);
    assert!(
        screen.contains("message 42") && !screen.contains("below"),
        "{screen}"
    );
}

#[test]
fn snapshot_a_new_day_and_the_first_unread_message() {
    let day = 86_400_000 / 60_000;
    let m = conversation_with(
        vec![
            message("bob", "alice", "see you tomorrow", 1),
            message("alice", "bob", "good night", 2),
            message("bob", "alice", "morning!", day + 1),
            message("bob", "alice", "the build is green", day + 2),
        ],
        2,
    );
    snap!("day_and_unread", m, T0 + day * 60_000 + 200_000);
}

/// A conversation with bob whose last message, alice's, bob has read.
fn a_message_bob_has_read() -> Model {
    let mut m = conversation_with(
        vec![
            message("bob", "alice", "ping", 1),
            message("alice", "bob", "read by bob", 2),
        ],
        0,
    );
    m.on_engine(
        Event::C2cReadReceipt {
            user_id: "bob".parse().unwrap(),
            timestamp: T0 + 2 * 60_000,
            seq: 5,
        },
        T0 + 150_000,
    );
    m
}

#[test]
fn snapshot_each_state_of_a_message_of_mine() {
    let mut m = a_message_bob_has_read();
    let bob: UserId = "bob".parse().unwrap();
    let send = |m: &mut Model, text: &str, at: u64| {
        m.on_terminal(TermEvent::Paste(text.into()), at);
        m.on_terminal(key(KeyCode::Enter), at)
    };
    // One editor for all three: it stays open after each is sent.
    m.on_terminal(key(KeyCode::Char('w')), T0 + 180_000);
    send(&mut m, "stored by the relay", T0 + 180_000);
    send(&mut m, "still sending", T0 + 190_000);
    send(&mut m, "refused", T0 + 200_000);
    m.on_terminal(key(KeyCode::Esc), T0 + 200_000);
    m.on_engine(
        Event::MessageSent {
            msg_id: "m-sent".into(),
            client_msg_id: format!("term-1a2b3c-{T0:x}-1"),
            to: bob.clone(),
            text: "stored by the relay".into(),
            timestamp: T0 + 180_050,
            seq: Some(6),
        },
        T0 + 180_050,
    );
    m.on_engine(
        Event::Error {
            code: 90010,
            message: "too many messages".into(),
            cmd: Some("sendMessage".into()),
            relay_code: None,
            client_msg_id: Some(format!("term-1a2b3c-{T0:x}-3")),
        },
        T0 + 200_050,
    );
    snap!("message_states", m, T0 + 200_100);
    // r sends the failed one again, under the same id.
    let effects = m.on_terminal(key(KeyCode::Char('r')), T0 + 210_000);
    assert_eq!(
        effects,
        vec![Effect::Engine(Command::Chat(ChatCommand::SendMessage {
            to: bob,
            text: "refused".into(),
            client_msg_id: Some(format!("term-1a2b3c-{T0:x}-3")),
        }))]
    );
}

#[test]
fn snapshot_a_three_line_draft() {
    let mut m = conversation_with(vec![message("bob", "alice", "how was it?", 1)], 0);
    m.on_terminal(key(KeyCode::Char('w')), T0 + 100);
    m.on_terminal(TermEvent::Paste("line one\nline two".into()), T0 + 100);
    m.on_terminal(
        TermEvent::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::ALT)),
        T0 + 100,
    );
    for c in "three".chars() {
        m.on_terminal(key(KeyCode::Char(c)), T0 + 100);
    }
    snap!("three_line_draft", m, T0 + 200);
    let draft = &m.drafts[&"bob".parse::<UserId>().unwrap()];
    assert_eq!(draft.lines(), ["line one", "line two", "three"]);
}

#[test]
fn hostile_text_reaches_the_screen_as_text() {
    let m = conversation_with(
        vec![message(
            "bob",
            "alice",
            "\x1b[2J\x1b]52;c;aGk=\x07\u{202e}evil\ttab",
            1,
        )],
        0,
    );
    let screen = render(&m, T0 + 100, 80, 24);
    assert!(
        screen.contains("^[[2J^[]52;c;aGk=^Gevil    tab"),
        "{screen}"
    );
    assert!(!screen.contains('\u{1b}') && !screen.contains('\u{202e}'));
}

/// Enter on a contact opens the conversation to write in, as any chat
/// client does: "check" typed at once is the message, not `c` (call)
/// and four other commands; Esc makes the keys commands again.
#[test]
fn letters_typed_as_a_conversation_opens_are_the_message() {
    let mut m = with_contacts(model());
    m.on_terminal(key(KeyCode::Enter), T0);
    for c in "check".chars() {
        let effects = m.on_terminal(key(KeyCode::Char(c)), T0);
        assert!(
            effects
                .iter()
                .all(|e| matches!(e, Effect::Engine(Command::Chat(ChatCommand::Typing { .. })))),
            "{c}: {effects:?}"
        );
    }
    let bob: UserId = "bob".parse().unwrap();
    assert_eq!(m.drafts[&bob].lines(), ["check"]);
    m.on_terminal(key(KeyCode::Esc), T0);
    let effects = m.on_terminal(key(KeyCode::Char('c')), T0);
    assert!(
        matches!(effects[..], [Effect::Engine(Command::Call(_))]),
        "{effects:?}"
    );
}

/// Short messages sent one after another (the editor stays open) tell
/// the peer of typing at most once in 3 s, as docs/chat.md allows: the
/// relay's limit (2 a second) is never met, so no refusal reaches the
/// screen.
#[test]
fn quick_messages_in_a_row_send_typing_notices_at_the_allowed_rate() {
    let mut m = with_contacts(model());
    m.on_terminal(key(KeyCode::Enter), T0);
    let mut notices = 0;
    for k in 0..10u64 {
        let at = T0 + k * 300;
        for c in "ok".chars() {
            let effects = m.on_terminal(key(KeyCode::Char(c)), at);
            notices += effects
                .iter()
                .filter(|e| matches!(e, Effect::Engine(Command::Chat(ChatCommand::Typing { .. }))))
                .count();
        }
        m.on_terminal(key(KeyCode::Enter), at);
    }
    // 10 messages over 2.7 s: the first keystroke's notice only.
    assert_eq!(notices, 1);
}

/// Answering a call while writing leaves the editor, so that the call's
/// keys work at once: `h` hangs up, it is not text.
#[test]
fn answering_while_writing_makes_the_call_keys_work() {
    let mut m = with_contacts(model());
    m.on_terminal(key(KeyCode::Enter), T0);
    m.on_terminal(key(KeyCode::Char('x')), T0);
    ringing(&mut m, false);
    m.on_terminal(key(KeyCode::Char('a')), T0 + 1_500);
    m.on_engine(
        Event::OnCallBegin {
            call_id: "c1".into(),
            room_id: 4_242,
            call_media_type: AUDIO_CALL,
            call_role: CallRole::Called,
            user_id_list: vec![],
            record: any_record(),
        },
        T0 + 1_600,
    );
    let bob: UserId = "bob".parse().unwrap();
    assert_eq!(m.drafts[&bob].lines(), ["x"], "the draft waits");
    let effects = m.on_terminal(key(KeyCode::Char('h')), T0 + 2_000);
    assert!(
        matches!(
            effects[..],
            [Effect::Engine(Command::Call(CallCommand::Hangup { .. }))]
        ),
        "{effects:?}"
    );
}

#[test]
fn the_editor_moves_by_words_and_deletes_like_a_shell() {
    let mut m = conversation_with(vec![message("bob", "alice", "hi", 1)], 0);
    m.on_terminal(key(KeyCode::Char('w')), T0);
    for c in "one two three".chars() {
        m.on_terminal(key(KeyCode::Char(c)), T0);
    }
    let ctrl = |c| TermEvent::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL));
    m.on_terminal(ctrl('w'), T0);
    let bob: UserId = "bob".parse().unwrap();
    assert_eq!(m.drafts[&bob].lines(), ["one two "]);
    m.on_terminal(
        TermEvent::Key(KeyEvent::new(KeyCode::Left, KeyModifiers::CONTROL)),
        T0,
    );
    m.on_terminal(key(KeyCode::Char('X')), T0);
    assert_eq!(m.drafts[&bob].lines(), ["one Xtwo "]);
    m.on_terminal(ctrl('u'), T0);
    assert_eq!(m.drafts[&bob].lines(), ["two "]);
    // Esc keeps the draft; another conversation has its own.
    m.on_terminal(key(KeyCode::Esc), T0);
    assert!(!m.composing);
    assert_eq!(m.drafts[&bob].lines(), ["two "]);
    // Up on an empty draft brings back the last text sent.
    m.on_terminal(key(KeyCode::Char('w')), T0);
    m.on_terminal(ctrl('u'), T0);
    m.on_terminal(key(KeyCode::End), T0);
    m.on_terminal(key(KeyCode::Backspace), T0);
    m.on_terminal(key(KeyCode::Backspace), T0);
    m.on_terminal(key(KeyCode::Backspace), T0);
    m.on_terminal(key(KeyCode::Backspace), T0);
    m.on_terminal(TermEvent::Paste("sent text".into()), T0);
    m.on_terminal(key(KeyCode::Enter), T0 + 300_000);
    m.on_terminal(key(KeyCode::Up), T0 + 300_002);
    assert_eq!(m.drafts[&bob].lines(), ["sent text"]);
}

/// After a restart nothing was sent from this run: Up brings back the
/// conversation's last message of mine, as the README promises.
#[test]
fn up_on_an_empty_draft_finds_my_last_message_after_a_restart() {
    let mut m = with_conversation(model());
    let bob: UserId = "bob".parse().unwrap();
    m.on_terminal(key(KeyCode::Char('w')), T0);
    m.on_terminal(key(KeyCode::Up), T0);
    assert_eq!(m.drafts[&bob].lines(), ["yes, two minutes"]);
}

#[test]
fn o_holds_and_resumes_and_t_transfers_to_the_selected_contact() {
    let mut m = with_conversation(model());
    dialing(&mut m);
    m.on_engine(
        Event::OnCallBegin {
            call_id: "c9".into(),
            room_id: 1,
            call_media_type: AUDIO_CALL,
            call_role: CallRole::Caller,
            user_id_list: vec![],
            record: any_record(),
        },
        T0 + 2_000,
    );
    let hold = m.on_terminal(key(KeyCode::Char('o')), T0 + 2_100);
    assert_eq!(
        hold,
        vec![Effect::Engine(Command::Call(CallCommand::Hold {
            call_id: Some("c9".into())
        }))]
    );
    m.on_engine(
        Event::CallHoldChanged {
            call_id: "c9".into(),
            user_id: "alice".parse().unwrap(),
            on_hold: true,
        },
        T0 + 2_200,
    );
    // No voice flows while held: bob's grade goes down, which is no fault
    // of the network, and is not shown.
    m.on_engine(
        Event::UserEnter {
            call_id: "c9".into(),
            user_id: "bob".parse().unwrap(),
            role: crate::protocol::Role::Anchor,
        },
        T0 + 2_210,
    );
    m.on_engine(
        Event::OnUserNetworkQualityChanged {
            network_quality_list: vec![NetworkQuality {
                user_id: "bob".parse().unwrap(),
                quality: Quality::Down,
                loss_percent: 100.0,
                jitter_ms: 0,
                rtt_ms: None,
            }],
        },
        T0 + 2_250,
    );
    let screen = render(&m, T0 + 2_300, 80, 24);
    assert!(screen.contains("On hold (you)"), "{screen}");
    assert!(screen.contains("you put the call on hold"), "{screen}");
    assert!(screen.contains("bob "), "bob's meter: {screen}");
    assert!(!screen.contains("down"), "{screen}");
    // o again resumes.
    assert_eq!(
        m.on_terminal(key(KeyCode::Char('o')), T0 + 2_400),
        vec![Effect::Engine(Command::Call(CallCommand::Unhold {
            call_id: Some("c9".into())
        }))]
    );
    // t transfers to the contact selected in the contacts pane.
    m.focus = Pane::Contacts;
    m.selected = 1;
    assert_eq!(
        m.on_terminal(key(KeyCode::Char('t')), T0 + 2_500),
        vec![Effect::Engine(Command::Call(CallCommand::TransferCall {
            user: "carol".parse().unwrap()
        }))]
    );
}

#[test]
fn a_transferred_call_says_who_handed_it_over() {
    let mut m = with_contacts(model());
    m.on_engine(
        Event::OnCallReceived {
            call_id: "c7".into(),
            room_id: 7,
            sponsor: "bob".parse().unwrap(),
            user_id_list: vec![],
            is_from_group: false,
            call_media_type: AUDIO_CALL,
            call_role: CallRole::Called,
            user_data: None,
            transferred_by: Some(Box::new("dave".parse().unwrap())),
            waiting: false,
            record: any_record(),
        },
        T0 + 1_000,
    );
    let screen = render(&m, T0 + 1_100, 80, 24);
    assert!(screen.contains("bob is calling"), "{screen}");
    assert!(
        screen.contains("audio call, transferred by dave"),
        "{screen}"
    );
}

/// bob's call connected with alice (this device), from the calls pane.
fn connected(m: &mut Model, call_id: &str, with: &str, group: bool) {
    m.on_engine(
        Event::OnCallReceived {
            call_id: call_id.into(),
            room_id: 7,
            sponsor: with.parse().unwrap(),
            user_id_list: vec![],
            is_from_group: group,
            call_media_type: AUDIO_CALL,
            call_role: CallRole::Called,
            user_data: None,
            transferred_by: None,
            waiting: m.call.is_some(),
            record: any_record(),
        },
        T0 + 1_000,
    );
}

fn begin(m: &mut Model, call_id: &str, now: u64) {
    m.on_engine(
        Event::OnCallBegin {
            call_id: call_id.into(),
            room_id: 7,
            call_media_type: AUDIO_CALL,
            call_role: CallRole::Called,
            user_id_list: vec![],
            record: any_record(),
        },
        now,
    );
}

/// A device killed mid-call and started again is put back in its call by
/// the relay, with no ringing before: its call pane still says who with,
/// and how long the call has run.
#[test]
fn a_call_taken_up_again_after_a_restart_says_who_it_is_with_and_since_when() {
    let mut m = model();
    m.on_engine(
        Event::OnCallBegin {
            call_id: "c1".into(),
            room_id: 7,
            call_media_type: AUDIO_CALL,
            call_role: CallRole::Called,
            user_id_list: vec![],
            record: Box::new(record("carol", CallRole::Called, "in_call", false, 75)),
        },
        T0,
    );
    let screen = render(&m, T0 + 2_000, 80, 24);
    assert!(screen.contains("with carol"), "{screen}");
    assert!(screen.contains("In call 1:17"), "{screen}");
}

fn hold_changed(m: &mut Model, call_id: &str, user: &str, on_hold: bool) {
    m.on_engine(
        Event::CallHoldChanged {
            call_id: call_id.into(),
            user_id: user.parse().unwrap(),
            on_hold,
        },
        T0 + 5_000,
    );
}

fn engine(command: CallCommand) -> Vec<Effect> {
    vec![Effect::Engine(Command::Call(command))]
}

#[test]
fn p_opens_the_keypad_whose_keys_send_dtmf_and_esc_closes_it() {
    let mut m = with_contacts(model());
    connected(&mut m, "c1", "bob", false);
    begin(&mut m, "c1", T0 + 2_000);
    assert!(
        m.on_terminal(key(KeyCode::Char('p')), T0 + 2_100)
            .is_empty()
    );
    assert_eq!(m.context(), crate::tui::keymap::Context::Keypad);
    for (c, at) in [('1', 2_200), ('#', 2_300), ('D', 2_400)] {
        let digit = crate::media::control::Digit::new(c).unwrap();
        assert_eq!(
            m.on_terminal(key(KeyCode::Char(c)), T0 + at),
            engine(CallCommand::SendDtmf {
                digits: vec![digit]
            })
        );
    }
    // Other letters do nothing there: q does not quit under the keypad.
    assert!(
        m.on_terminal(key(KeyCode::Char('q')), T0 + 2_500)
            .is_empty()
    );
    insta::assert_snapshot!("keypad_80x24", render(&m, T0 + 2_600, 80, 24));
    m.on_terminal(key(KeyCode::Esc), T0 + 2_700);
    assert_eq!(m.keypad, None);
    // Digits heard from the other side show in the call pane.
    m.on_engine(
        Event::DtmfReceived {
            call_id: "c1".into(),
            user_id: "bob".parse().unwrap(),
            digit: crate::media::control::Digit::new('9').unwrap(),
        },
        T0 + 2_800,
    );
    let screen = render(&m, T0 + 2_900, 80, 24);
    assert!(screen.contains("keys heard 9"), "{screen}");
    assert!(screen.contains("bob pressed 9"), "{screen}");
}

#[test]
fn a_waiting_call_offers_to_end_the_current_one_and_both_calls_show() {
    let mut m = with_contacts(model());
    m.call_waiting = true;
    connected(&mut m, "c1", "bob", false);
    begin(&mut m, "c1", T0 + 2_000);
    connected(&mut m, "c2", "carol", false);
    let screen = render(&m, T0 + 3_000, 80, 24);
    assert!(
        screen.contains("waiting: you are in a call with bob"),
        "{screen}"
    );
    assert!(screen.contains("answer, end current"), "{screen}");
    assert_eq!(
        m.on_terminal(key(KeyCode::Char('e')), T0 + 3_100),
        engine(CallCommand::Accept {
            call_id: Some("c2".into()),
            end_current: true,
        })
    );
    // a answers and holds bob's call: the relay says so, then carol's begins.
    assert_eq!(
        m.on_terminal(key(KeyCode::Char('a')), T0 + 3_100),
        engine(CallCommand::Accept {
            call_id: Some("c2".into()),
            end_current: false,
        })
    );
    hold_changed(&mut m, "c1", "alice", true);
    begin(&mut m, "c2", T0 + 5_000);
    assert_eq!(m.call.as_ref().unwrap().call_id, "c2");
    assert_eq!(m.held_call.as_ref().unwrap().call_id, "c1");
    insta::assert_snapshot!("two_calls_80x24", render(&m, T0 + 9_000, 80, 24));
    // x swaps: unhold bob's call; the relay holds carol's, then resumes bob's.
    assert_eq!(
        m.on_terminal(key(KeyCode::Char('x')), T0 + 9_100),
        engine(CallCommand::Unhold {
            call_id: Some("c1".into())
        })
    );
    hold_changed(&mut m, "c2", "alice", true);
    hold_changed(&mut m, "c1", "alice", false);
    assert_eq!(m.call.as_ref().unwrap().call_id, "c1");
    assert_eq!(m.held_call.as_ref().unwrap().call_id, "c2");
    // bob hangs up: carol's call, still on hold, is the call again.
    m.on_engine(
        Event::CallingEnd {
            call_id: "c1".into(),
            room_id: 7,
            user_id: "alice".parse().unwrap(),
            total_time: 8,
            call_media_type: AUDIO_CALL,
            call_role: CallRole::Called,
            record: any_record(),
            unheard: false,
        },
        T0 + 10_000,
    );
    assert_eq!(m.call.as_ref().unwrap().call_id, "c2");
    assert!(m.held_call.is_none());
    let screen = render(&m, T0 + 10_100, 80, 24);
    assert!(screen.contains("carol is still on hold"), "{screen}");
    assert!(screen.contains("On hold (you)"), "{screen}");
}

#[test]
fn capital_a_and_w_switch_auto_answer_and_call_waiting() {
    let mut m = with_contacts(model());
    m.auto_answer_delay = 1_500;
    assert_eq!(
        m.on_terminal(key(KeyCode::Char('A')), T0 + 100),
        vec![Effect::Engine(Command::SetAutoAnswer {
            delay_ms: Some(1_500)
        })]
    );
    assert_eq!(
        m.on_terminal(key(KeyCode::Char('W')), T0 + 200),
        vec![Effect::Engine(Command::EnableCallWaiting { enable: true })]
    );
    let screen = render(&m, T0 + 300, 120, 40);
    let header = screen.lines().next().unwrap();
    assert!(header.contains("auto-answer 1.5s"), "{header}");
    assert!(header.contains("call waiting"), "{header}");
    assert_eq!(
        m.on_terminal(key(KeyCode::Char('A')), T0 + 400),
        vec![Effect::Engine(Command::SetAutoAnswer { delay_ms: None })]
    );
    assert!(
        !render(&m, T0 + 500, 120, 40)
            .lines()
            .next()
            .unwrap()
            .contains("auto-answer")
    );
}

#[test]
fn roles_show_in_the_call_pane_and_l_switches_this_devices_role() {
    use crate::protocol::Role;
    let mut m = with_contacts(model());
    connected(&mut m, "c3", "bob", true);
    begin(&mut m, "c3", T0 + 2_000);
    m.on_engine(
        Event::UserEnter {
            call_id: "c3".into(),
            user_id: "dave".parse().unwrap(),
            role: Role::Audience,
        },
        T0 + 2_100,
    );
    let screen = render(&m, T0 + 2_200, 80, 24);
    assert!(
        screen
            .lines()
            .any(|l| l.contains("dave") && l.contains("audience")),
        "{screen}"
    );
    let wide = render(&m, T0 + 2_200, 120, 40);
    // The key says which way it switches this device.
    assert!(wide.contains("l  listen"), "{wide}");
    assert_eq!(
        m.on_terminal(key(KeyCode::Char('l')), T0 + 2_300),
        engine(CallCommand::SwitchRole {
            role: Role::Audience
        })
    );
    m.on_engine(
        Event::RoleChanged {
            call_id: "c3".into(),
            user_id: "alice".parse().unwrap(),
            role: Role::Audience,
        },
        T0 + 2_400,
    );
    let screen = render(&m, T0 + 2_500, 80, 24);
    assert!(screen.contains("Listening"), "{screen}");
    assert!(screen.contains("you only listen now"), "{screen}");
    assert!(
        !screen.contains("keypad"),
        "no keypad for a listener: {screen}"
    );
    assert_eq!(
        m.on_terminal(key(KeyCode::Char('l')), T0 + 2_600),
        engine(CallCommand::SwitchRole { role: Role::Anchor })
    );
}

/// An outgoing call that stops before it connects names who stopped it:
/// by then the engine has said they no longer ring.
#[test]
fn an_outgoing_call_declined_busy_or_unanswered_names_the_callee() {
    let bob: UserId = "bob".parse().unwrap();
    let cases: [(&str, Event, &str); 3] = [
        (
            "declined",
            Event::Reject {
                call_id: "c9".into(),
                user_id: bob.clone(),
            },
            "bob declined",
        ),
        (
            "busy",
            Event::LineBusy {
                call_id: "c9".into(),
                user_id: bob.clone(),
            },
            "bob is in another call",
        ),
        (
            "timeout",
            Event::NoResp {
                call_id: "c9".into(),
                sponsor: "alice".parse().unwrap(),
                user_id_list: vec![bob.clone()],
            },
            "no answer from bob",
        ),
    ];
    for (reason, stopped, said) in cases {
        let mut m = with_contacts(model());
        dialing(&mut m);
        m.on_engine(stopped, T0 + 2_000);
        m.on_engine(
            Event::OnCallCanceled {
                call_id: "c9".into(),
                room_id: 1,
                user_id: "alice".parse().unwrap(),
                reason: CancelReason::parse(reason).unwrap(),
                call_media_type: AUDIO_CALL,
                call_role: CallRole::Caller,
                elsewhere: None,
                record: any_record(),
            },
            T0 + 2_000,
        );
        assert_eq!(m.notice_now(T0 + 2_500), Some(said), "{reason}");
    }
}

/// A refusal of what the user just did is a notice that goes, not an alert
/// that stays through the next call; a long one shows whole, even at the
/// smallest size.
#[test]
fn a_refused_command_is_a_passing_notice_shown_whole() {
    let mut m = with_contacts(model());
    let refusal = "switchRole works in a group call; this is a one-to-one call. \
                   Invite someone (+) to make it a group call, then switch roles \
                   with l; in a one-to-one call both of you always speak, so there \
                   is no audience to switch to (6105 NOT_A_GROUP_CALL)";
    m.on_engine(
        Event::Error {
            code: 6105,
            message: refusal.into(),
            cmd: Some("switchRole".into()),
            relay_code: None,
            client_msg_id: None,
        },
        T0,
    );
    assert_eq!(m.alert, None);
    let words: Vec<&str> = refusal.split_whitespace().collect();
    for (w, h) in [(80, 24), (60, 16)] {
        let screen = render(&m, T0 + 1_000, w, h);
        // The backend's rows are quoted: the quotes are no words.
        let shown: Vec<&str> = screen
            .split_whitespace()
            .filter(|word| *word != "\"")
            .skip_while(|word| *word != "switchRole")
            .take(words.len())
            .collect();
        assert_eq!(shown, words, "{w}x{h}:\n{screen}");
    }
    let later = render(&m, T0 + NOTICE_MS, 80, 24);
    assert!(!later.contains("Invite someone"), "{later}");
}
