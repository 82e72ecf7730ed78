//! Delivery under faults, on virtual time: cuts at any message boundary,
//! half-open links, refused reconnects, processes killed and started again,
//! a relay restarting from its store, a store that fails. Each test is a
//! fault someone hit for real (issue 10).

use termphone::client::engine::{self, CallCommand, ChatCommand, Command};
use termphone::client::event::{Event, LoginStatus};
use termphone::ids::UserId;
use termphone::protocol::{ChatMessage, Entry, EntryKind, ServerMsg};

use crate::common::mesh::Mesh;

fn user(u: &str) -> UserId {
    UserId::parse(u).unwrap()
}

fn send(to: &str, text: &str) -> Command {
    Command::Chat(ChatCommand::SendMessage {
        to: user(to),
        text: text.into(),
        client_msg_id: None,
    })
}

fn send_as(to: &str, text: &str, id: &str) -> Command {
    Command::Chat(ChatCommand::SendMessage {
        to: user(to),
        text: text.into(),
        client_msg_id: Some(id.into()),
    })
}

fn call(to: &str) -> Command {
    Command::Call(CallCommand::Call {
        users: vec![user(to)],
        timeout_secs: None,
        user_data: None,
    })
}

fn accept() -> Command {
    Command::Call(CallCommand::Accept {
        call_id: None,
        end_current: false,
    })
}

fn hangup() -> Command {
    Command::Call(CallCommand::Hangup { call_id: None })
}

/// The texts of the messages a device received, in order.
fn received(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::MessageReceived { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// The texts of the messages a device was told are stored, in order.
fn sent(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::MessageSent { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

fn numbered(n: usize) -> Vec<String> {
    (0..n).map(|k| format!("m{k}")).collect()
}

/// alice (a1) called bob (b1), who answered.
fn in_a_call() -> (Mesh, usize, usize) {
    let mut m = Mesh::dev();
    let alice = m.online("alice", "a1");
    let bob = m.online("bob", "b1");
    m.command(alice, call("bob"));
    m.command(bob, accept());
    (m, alice, bob)
}

/// alice (a1) calls bob (b1), each on a link of 10 ms, and bob's device rings.
fn ringing_over_10_ms_links() -> (Mesh, usize, usize) {
    let mut m = Mesh::dev();
    m.latency_ms = 10;
    let alice = m.online("alice", "a1");
    let bob = m.online("bob", "b1");
    m.command(alice, call("bob"));
    m.advance(30);
    (m, alice, bob)
}

fn names(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(Event::name).collect()
}

#[test]
fn a_device_cut_off_while_a_thousand_messages_are_acknowledged_gets_each_once_in_order() {
    let mut m = Mesh::dev();
    m.latency_ms = 5;
    let alice = m.online("alice", "a1");
    let bob = m.online("bob", "b1");
    // The link resets, and reconnects are refused for 4 s.
    m.cut(bob);
    m.block(bob, 4_000);
    for k in 0..1000 {
        m.command(alice, send("bob", &format!("m{k}")));
        m.advance(2);
    }
    m.advance(10_000);
    assert_eq!(sent(&m.take(alice)), numbered(1000));
    let seen = m.take(bob);
    assert_eq!(received(&seen), numbered(1000));
    assert!(names(&seen).contains(&"SYNCED"));
}

#[test]
fn a_link_cut_in_the_middle_of_a_stream_loses_nothing() {
    let mut m = Mesh::dev();
    m.latency_ms = 20;
    let alice = m.online("alice", "a1");
    let bob = m.online("bob", "b1");
    for k in 0..300 {
        m.command(alice, send("bob", &format!("m{k}")));
        m.advance(1);
        // Frames to bob are in flight when his link resets.
        if k == 120 {
            m.cut(bob);
        }
    }
    m.advance(10_000);
    assert_eq!(received(&m.take(bob)), numbered(300));
}

#[test]
fn a_half_open_link_is_noticed_and_what_went_into_it_arrives() {
    let mut m = Mesh::dev();
    let alice = m.online("alice", "a1");
    let bob = m.online("bob", "b1");
    m.cut_silently(bob);
    for k in 0..10 {
        m.command(alice, send("bob", &format!("m{k}")));
    }
    assert_eq!(sent(&m.take(alice)), numbered(10));
    // A heartbeat goes unanswered within 15 s: bob reconnects by himself.
    m.advance(16_000);
    let seen = m.take(bob);
    let links: Vec<String> = seen
        .iter()
        .filter_map(|e| match e {
            Event::ConnectionChanged { state } => Some(format!("{state:?}")),
            _ => None,
        })
        .collect();
    assert_eq!(links, ["Reconnecting", "Connected"]);
    assert_eq!(received(&seen), numbered(10));
}

#[test]
fn a_relay_restart_in_the_middle_loses_nothing_acknowledged() {
    let mut m = Mesh::dev();
    m.latency_ms = 3;
    let alice = m.online("alice", "a1");
    let bob = m.online("bob", "b1");
    for k in 0..200 {
        m.command(alice, send("bob", &format!("m{k}")));
        m.advance(1);
        if k == 77 {
            m.restart_relay();
        }
    }
    m.advance(10_000);
    // Every message alice sent is stored once and reaches bob once, in the
    // order alice sent them; the ones in flight at the restart were resent.
    assert_eq!(sent(&m.take(alice)), numbered(200));
    assert_eq!(received(&m.take(bob)), numbered(200));
}

#[test]
fn entries_that_do_not_follow_the_mark_are_not_applied_and_start_a_sync() {
    let mut m = Mesh::dev();
    let alice = m.online("alice", "a1");
    let bob = m.online("bob", "b1");
    m.command(alice, send("bob", "real"));
    assert_eq!(received(&m.take(bob)), ["real"]);
    let hw = m.nodes[bob].high_water;
    // A frame claiming to follow seq hw + 5: four entries are missing.
    let forged = Entry {
        seq: hw + 6,
        kind: EntryKind::Message {
            message: ChatMessage {
                msg_id: "forged".into(),
                from: user("alice"),
                to: user("bob"),
                text: "after a gap".into(),
                server_time: m.now,
                sent_by: None,
            },
        },
    };
    let now = m.now;
    m.nodes[bob].engine.handle(
        now,
        engine::Input::Frame(ServerMsg::Entries {
            entries: vec![forged],
            offline: false,
            after: hw + 5,
        }),
    );
    m.settle();
    let seen = m.take(bob);
    assert_eq!(names(&seen), ["SYNCED"], "a sync, and nothing applied");
    assert_eq!(m.nodes[bob].high_water, hw);
    m.command(alice, send("bob", "next"));
    assert_eq!(received(&m.take(bob)), ["next"]);
}

#[test]
fn a_device_killed_in_a_call_is_in_it_again_when_it_comes_back() {
    let (mut m, alice, bob) = in_a_call();
    m.take(alice);
    m.take(bob);
    m.kill(bob);
    m.advance(2_000);
    m.restart(bob);
    let seen = m.take(bob);
    assert!(names(&seen).contains(&"ON_CALL_BEGIN"), "{seen:?}");
    assert!(m.take(alice).iter().all(|e| e.name() != "CALLING_END"));
    assert!(!m.media_rooms.is_empty(), "voice flows again");
    m.command(bob, hangup());
    assert_eq!(names(&m.take(bob)), ["CALLING_END"]);
    assert!(names(&m.take(alice)).contains(&"CALLING_END"));
}

/// The call's figures are the media thread's: asked for while the link
/// is down, they come, where a call command is refused.
#[test]
fn media_stats_answer_while_the_relay_is_out_of_reach() {
    use termphone::media::control::MediaCommand;
    let (mut m, _, bob) = in_a_call();
    m.take(bob);
    m.block(bob, 60_000);
    m.cut(bob);
    m.take(bob);
    m.nodes[bob].media.clear();
    m.command(bob, Command::Call(CallCommand::GetMediaStats));
    assert!(m.take(bob).is_empty(), "no error");
    assert_eq!(m.nodes[bob].media, [MediaCommand::Stats]);
    m.command(bob, Command::Call(CallCommand::Hold { call_id: None }));
    match &m.take(bob)[..] {
        [Event::Error { code: 6200, .. }] => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_call_that_ended_while_the_link_was_half_open_ends_on_return() {
    let (mut m, alice, bob) = in_a_call();
    m.take(bob);
    // bob's link goes dead without a word; alice hangs up into it.
    m.cut_silently(bob);
    m.command(alice, hangup());
    assert!(names(&m.take(alice)).contains(&"CALLING_END"));
    m.advance(16_000);
    let seen = m.take(bob);
    assert!(
        seen.iter().any(|e| matches!(e, Event::CallingEnd { .. })),
        "{seen:?}"
    );
}

/// A hang-up needs no relay: the call ends on this device at once, the
/// relay hears of it when the link is back, and the call is not taken up
/// again on return.
#[test]
fn a_call_hung_up_while_the_relay_is_out_of_reach_ends_at_once_and_there_on_return() {
    let (mut m, alice, bob) = in_a_call();
    m.advance(5_000);
    m.take(alice);
    m.take(bob);
    m.cut(alice);
    m.block(alice, 20_000);
    m.advance(3_000);
    m.take(alice);
    m.command(alice, hangup());
    let seen = m.take(alice);
    let ended: Vec<u64> = (seen.iter())
        .filter_map(|e| match e {
            Event::CallingEnd { total_time, .. } => Some(*total_time),
            _ => None,
        })
        .collect();
    // The call's length is what it was when she hung up.
    assert_eq!(ended, [8], "{seen:?}");
    assert!(!names(&seen).contains(&"ERROR"), "{seen:?}");
    // bob is still in it, as far as the relay knows, until she is back.
    assert!(!names(&m.take(bob)).contains(&"CALLING_END"));
    m.advance(30_000);
    assert!(names(&m.take(bob)).contains(&"CALLING_END"));
    let back = m.take(alice);
    assert!(names(&back).contains(&"CONNECTION_CHANGED"), "{back:?}");
    for name in ["ON_CALL_BEGIN", "CALLING_END", "ERROR"] {
        assert!(!names(&back).contains(&name), "{name} on return: {back:?}");
    }
}

/// An answer or a hang-up that crosses the call's end on the way is dropped
/// quietly: the call's own event says it ended, and no ERROR follows.
#[test]
fn answers_and_hang_ups_that_cross_the_end_are_dropped_quietly() {
    let (mut m, alice, bob) = ringing_over_10_ms_links();
    m.take(bob);
    // alice cancels as bob answers: the cancel reaches the relay first.
    m.command(alice, hangup());
    m.advance(1);
    m.command(bob, accept());
    m.advance(100);
    assert_eq!(names(&m.take(bob)), ["ON_CALL_CANCELED"]);

    // Both hang up at once.
    let (mut m, alice, bob) = in_a_call();
    m.latency_ms = 10;
    m.advance(1_000);
    m.take(alice);
    m.take(bob);
    m.command(alice, hangup());
    m.command(bob, hangup());
    m.advance(100);
    for device in [alice, bob] {
        let seen = m.take(device);
        assert!(names(&seen).contains(&"CALLING_END"), "{seen:?}");
        assert!(!names(&seen).contains(&"ERROR"), "{seen:?}");
    }
}

#[test]
fn an_answer_whose_begin_was_lost_begins_on_return() {
    let (mut m, alice, bob) = ringing_over_10_ms_links();
    m.command(bob, accept());
    // The accept reaches the relay; its answer dies on the way back.
    m.advance(10);
    m.cut_silently(bob);
    m.advance(30);
    assert!(names(&m.take(alice)).contains(&"ON_CALL_BEGIN"));
    assert!(!names(&m.take(bob)).contains(&"ON_CALL_BEGIN"));
    m.advance(16_000);
    let seen = m.take(bob);
    assert!(names(&seen).contains(&"ON_CALL_BEGIN"), "{seen:?}");
    m.command(alice, hangup());
    m.advance(100);
    assert!(names(&m.take(bob)).contains(&"CALLING_END"));
}

#[test]
fn a_relay_restart_ends_calls_on_every_side() {
    let (mut m, alice, bob) = in_a_call();
    m.take(alice);
    m.take(bob);
    m.restart_relay();
    m.advance(5_000);
    // Each ends it without word from the relay, and knows it did.
    for d in [alice, bob] {
        let seen = m.take(d);
        assert!(
            seen.iter()
                .any(|e| matches!(e, Event::CallingEnd { unheard: true, .. })),
            "{seen:?}"
        );
    }
    // And both can call again; a call the relay ends is heard.
    m.command(alice, call("bob"));
    assert!(names(&m.take(bob)).contains(&"ON_CALL_RECEIVED"));
    m.command(bob, accept());
    m.command(alice, hangup());
    for d in [alice, bob] {
        let seen = m.take(d);
        assert!(
            seen.iter()
                .any(|e| matches!(e, Event::CallingEnd { unheard: false, .. })),
            "{seen:?}"
        );
    }
}

#[test]
fn a_failing_store_refuses_each_message_by_its_id_and_acknowledges_nothing() {
    let mut m = Mesh::dev();
    let alice = m.online("alice", "a1");
    let bob = m.online("bob", "b1");
    m.store_down = true;
    m.command(alice, send_as("bob", "x", "c1"));
    let seen = m.take(alice);
    match &seen[..] {
        [
            Event::Error {
                code: 90008,
                cmd: Some(cmd),
                client_msg_id: Some(id),
                ..
            },
        ] => assert_eq!((cmd.as_str(), id.as_str()), ("sendMessage", "c1")),
        other => panic!("{other:?}"),
    }
    assert!(m.take(bob).is_empty());
    // Refused, so not resent when the link comes back.
    m.store_down = false;
    m.cut(alice);
    m.advance(2_000);
    assert!(sent(&m.take(alice)).is_empty());
    assert!(received(&m.take(bob)).is_empty());
    // Sent again by hand, it is a new attempt under the same id.
    m.command(alice, send_as("bob", "x", "c1"));
    assert_eq!(sent(&m.take(alice)), ["x"]);
    assert_eq!(received(&m.take(bob)), ["x"]);
}

#[test]
fn a_catch_up_the_store_could_not_read_is_asked_again() {
    let mut m = Mesh::dev();
    let alice = m.online("alice", "a1");
    m.command(alice, Command::GetUsers { subscribe: false });
    let bob = m.online("bob", "b1");
    m.command(bob, Command::Logout);
    m.command(alice, send("bob", "while away"));
    m.take(bob);
    m.store_down = true;
    m.login(bob);
    let seen = m.take(bob);
    assert!(
        seen.iter().any(|e| matches!(
            e,
            Event::Error {
                code: 90008,
                cmd: None,
                ..
            }
        )),
        "{seen:?}"
    );
    assert!(!names(&seen).contains(&"SYNCED"));
    m.store_down = false;
    m.advance(1_500);
    let seen = m.take(bob);
    assert_eq!(received(&seen), ["while away"]);
    assert!(names(&seen).contains(&"SYNCED"));
}

#[test]
fn a_sync_from_beyond_the_head_counts_from_the_head() {
    let mut m = Mesh::dev();
    let alice = m.online("alice", "a1");
    let bob = m.add(termphone::ids::DEV_APP_ID, "terminal", "bob", "b1");
    // A device that synced with a relay whose database is gone.
    m.nodes[bob].high_water = u64::MAX;
    m.login(bob);
    let seen = m.take(bob);
    assert!(
        seen.iter().any(|e| matches!(e, Event::Synced { seq: 0 })),
        "{seen:?}"
    );
    assert_eq!(m.nodes[bob].high_water, 0);
    m.command(alice, send("bob", "hello"));
    assert_eq!(received(&m.take(bob)), ["hello"]);
}

#[test]
fn a_client_id_names_one_message_and_errors_name_their_message() {
    let mut m = Mesh::dev();
    let alice = m.online("alice", "a1");
    let bob = m.online("bob", "b1");
    m.online("carol", "c1");
    m.command(alice, send_as("bob", "first", "c1"));
    assert_eq!(sent(&m.take(alice)), ["first"]);
    let reuse = |m: &mut Mesh, to: &str, text: &str| {
        m.command(alice, send_as(to, text, "c1"));
        match &m.take(alice)[..] {
            [
                Event::Error {
                    code,
                    client_msg_id,
                    ..
                },
            ] => (*code, client_msg_id.clone()),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        reuse(&mut m, "bob", "other text"),
        (6407, Some("c1".into()))
    );
    assert_eq!(reuse(&mut m, "carol", "first"), (6407, Some("c1".into())));
    // The same message again is the same message: acknowledged, stored once.
    m.command(alice, send_as("bob", "first", "c1"));
    assert_eq!(sent(&m.take(alice)), ["first"]);
    assert_eq!(received(&m.take(bob)), ["first"]);
    m.command(alice, send_as("nobody", "hi", "c9"));
    match &m.take(alice)[..] {
        [
            Event::Error {
                code: 6401,
                client_msg_id: Some(id),
                ..
            },
        ] => assert_eq!(id, "c9"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_resent_message_is_acknowledged_with_its_seq() {
    let mut m = Mesh::dev();
    m.latency_ms = 10;
    let alice = m.online("alice", "a1");
    let bob = m.online("bob", "b1");
    m.command(alice, send("bob", "once"));
    // Stored, but the acknowledgement dies with the link.
    m.advance(12);
    m.cut(alice);
    m.advance(5_000);
    let acks: Vec<Option<u64>> = m
        .take(alice)
        .iter()
        .filter_map(|e| match e {
            Event::MessageSent { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert!(acks[0].is_some());
    assert_eq!(received(&m.take(bob)), ["once"]);
}

#[test]
fn a_message_written_while_reconnecting_goes_out_when_the_link_is_back() {
    let mut m = Mesh::dev();
    let alice = m.online("alice", "a1");
    let bob = m.online("bob", "b1");
    m.cut(alice);
    m.block(alice, 1_000);
    m.command(alice, send("bob", "typed offline"));
    assert!(m.take(alice).iter().all(|e| e.name() != "ERROR"));
    m.advance(5_000);
    assert_eq!(sent(&m.take(alice)), ["typed offline"]);
    assert_eq!(received(&m.take(bob)), ["typed offline"]);
}

#[test]
fn a_message_stored_just_before_a_relay_restart_is_reported_once_at_its_place() {
    let mut m = Mesh::dev();
    m.latency_ms = 5;
    let alice = m.online("alice", "a1");
    let bob = m.online("bob", "b1");
    m.command(alice, send("bob", "before"));
    // Stored; its acknowledgement is on the way when the relay dies.
    m.advance(5);
    m.restart_relay();
    m.command(alice, send("bob", "after"));
    m.advance(10_000);
    let seen = m.take(alice);
    assert_eq!(sent(&seen), ["before", "after"]);
    assert!(received(&seen).is_empty(), "{seen:?}");
    assert!(
        seen.iter()
            .all(|e| !matches!(e, Event::MessageSent { seq: None, .. })),
        "{seen:?}"
    );
    assert_eq!(received(&m.take(bob)), ["before", "after"]);
}

/// A logout asked for while messages are on their way waits for them, even
/// through a reconnection: each is `MESSAGE_SENT`, then the device logs out.
#[test]
fn a_logout_waits_for_the_messages_on_their_way() {
    let mut m = Mesh::dev();
    let alice = m.online("alice", "a1");
    let bob = m.online("bob", "b1");
    m.cut(alice);
    m.block(alice, 3_000);
    m.command(alice, send("bob", "one"));
    m.command(alice, send("bob", "two"));
    m.command(alice, Command::Logout);
    m.advance(9_000);
    let seen = m.take(alice);
    assert_eq!(sent(&seen), ["one", "two"]);
    let logout = seen.iter().position(logged_out).expect("logged out");
    let last_sent = seen.iter().rposition(|e| e.name() == "MESSAGE_SENT");
    assert!(last_sent < Some(logout), "{seen:?}");
    assert_eq!(received(&m.take(bob)), ["one", "two"]);
}

/// A relay that never comes back within 10 s: the logout goes ahead, and
/// each message it could not wait for any longer is named in an `ERROR`,
/// not left without an answer.
#[test]
fn a_logout_that_cannot_wait_any_longer_names_each_message_not_acknowledged() {
    let mut m = Mesh::dev();
    let alice = m.online("alice", "a1");
    m.cut(alice);
    m.block(alice, 60_000);
    m.command(alice, send_as("bob", "one", "c1"));
    m.command(alice, send_as("bob", "two", "c2"));
    m.command(alice, Command::Logout);
    m.advance(9_900);
    assert!(!m.take(alice).iter().any(logged_out));
    m.advance(200);
    let seen = m.take(alice);
    let refused: Vec<_> = seen
        .iter()
        .filter_map(|e| match e {
            Event::Error {
                code: 6200,
                client_msg_id: Some(id),
                ..
            } => Some(id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(refused, ["c1", "c2"]);
    assert!(seen.iter().any(logged_out), "{seen:?}");
}

fn logged_out(e: &Event) -> bool {
    matches!(
        e,
        Event::LoginStatusChanged {
            status: LoginStatus::Logout,
            ..
        }
    )
}

/// A hang-up sent into a link that had died without a word (the relay
/// stopped, `kill -STOP`) is not lost with it: it goes again once the
/// device is back, and the call ends on both sides.
#[test]
fn a_hangup_lost_in_a_dead_link_goes_again_when_the_link_is_back() {
    let (mut m, alice, bob) = in_a_call();
    m.take(alice);
    m.take(bob);
    m.cut_silently(alice);
    m.command(alice, hangup());
    m.advance(30_000);
    let seen = m.take(alice);
    assert!(names(&seen).contains(&"CALLING_END"), "{seen:?}");
    assert!(!names(&seen).contains(&"ERROR"), "{seen:?}");
    assert!(names(&m.take(bob)).contains(&"CALLING_END"));
}

/// The same for answers: an accept lost in a dead link begins the call
/// once the callee is back, a caller's cancel stops the ringing, and a
/// reject turns the call down.
#[test]
fn answers_lost_in_a_dead_link_go_again_when_the_link_is_back() {
    for (who, answer, caller_sees, callee_sees) in [
        ("callee", accept(), "ON_CALL_BEGIN", "ON_CALL_BEGIN"),
        ("caller", hangup(), "ON_CALL_CANCELED", "ON_CALL_CANCELED"),
        (
            "callee",
            Command::Call(CallCommand::Reject { call_id: None }),
            "REJECT",
            "ON_CALL_CANCELED",
        ),
    ] {
        let mut m = Mesh::dev();
        let alice = m.online("alice", "a1");
        let bob = m.online("bob", "b1");
        m.command(
            alice,
            Command::Call(CallCommand::Call {
                users: vec![user("bob")],
                timeout_secs: Some(120),
                user_data: None,
            }),
        );
        m.advance(100);
        m.take(alice);
        m.take(bob);
        let answering = if who == "callee" { bob } else { alice };
        m.cut_silently(answering);
        m.command(answering, answer);
        m.advance(30_000);
        let (caller, callee) = (names(&m.take(alice)), names(&m.take(bob)));
        assert!(caller.contains(&caller_sees), "{who}: {caller:?}");
        assert!(callee.contains(&callee_sees), "{who}: {callee:?}");
        assert!(!caller.contains(&"ERROR") && !callee.contains(&"ERROR"));
    }
}

/// A hold made while a device of the call was dead (`kill -9`) reaches it
/// once, after its `ON_CALL_BEGIN`, when it comes back: not before the
/// call exists there, and not twice.
#[test]
fn a_hold_made_while_a_device_was_dead_comes_once_after_its_begin() {
    let (mut m, alice, bob) = in_a_call();
    m.take(alice);
    m.take(bob);
    m.kill(bob);
    m.command(alice, Command::Call(CallCommand::Hold { call_id: None }));
    m.advance(2_000);
    m.restart(bob);
    let seen: Vec<_> = names(&m.take(bob))
        .into_iter()
        .filter(|n| ["ON_CALL_BEGIN", "CALL_HOLD_CHANGED"].contains(n))
        .collect();
    assert_eq!(seen, ["ON_CALL_BEGIN", "CALL_HOLD_CHANGED"]);
}

/// A device killed in a group call hears, when it comes back, who the call
/// has invited by now: one invited while it was dead too.
#[test]
fn a_device_back_in_a_group_call_hears_who_is_invited_now() {
    let (mut m, alice, bob) = in_a_call();
    let _zed = m.online("zed", "z1");
    m.take(alice);
    m.take(bob);
    m.kill(bob);
    m.command(
        alice,
        Command::Call(CallCommand::InviteUser {
            users: vec![user("zed")],
        }),
    );
    m.advance(2_000);
    m.restart(bob);
    let seen = m.take(bob);
    let invited = seen.iter().find_map(|e| match e {
        Event::GroupCallInviteeListUpdate { user_id_list, .. } => Some(user_id_list.clone()),
        _ => None,
    });
    let invited = invited.unwrap_or_else(|| panic!("no invitee list: {seen:?}"));
    assert!(invited.contains(&user("zed")), "{invited:?}");
    let names = names(&seen);
    let begin = names.iter().position(|n| *n == "ON_CALL_BEGIN").unwrap();
    let list = names
        .iter()
        .position(|n| *n == "GROUP_CALL_INVITEE_LIST_UPDATE")
        .unwrap();
    assert!(begin < list, "{names:?}");
}

/// A link that drops right after every reconnection (a relay that closes
/// it once logged in) is tried again later each time, not four times a
/// second for good; one that had been up a while is tried again at once.
#[test]
fn a_link_that_keeps_dropping_at_once_backs_off_further_each_time() {
    use termphone::client::event::LinkState;
    let mut m = Mesh::dev();
    let alice = m.online("alice", "a1");
    let back_after = |m: &mut Mesh| {
        m.cut(alice);
        let cut_at = m.now;
        loop {
            m.advance(50);
            let back = m.take(alice).iter().any(|e| {
                matches!(
                    e,
                    Event::ConnectionChanged {
                        state: LinkState::Connected
                    }
                )
            });
            if back {
                return m.now - cut_at;
            }
        }
    };
    let gaps: Vec<u64> = (0..5).map(|_| back_after(&mut m)).collect();
    assert!(gaps.windows(2).all(|w| w[1] > w[0]), "{gaps:?}");
    assert!(gaps[4] >= 2_000, "{gaps:?}");
    m.advance(15_000);
    assert!(back_after(&mut m) <= 500, "a link up 15 s starts over");
}

/// A message written while the link was down, then the device signed out
/// (its ticket ran out meanwhile): the message is named in an `ERROR`, not
/// left without an answer, nor sent later under another login.
#[test]
fn a_message_waiting_when_the_device_is_signed_out_is_named() {
    use termphone::ids::DEV_APP_ID;
    let mut m = Mesh::dev();
    let bob = m.online("bob", "b1");
    let alice = m.add(DEV_APP_ID, "terminal", "alice", "a1");
    let sig = m.ticket(DEV_APP_ID, &user("alice"), 5);
    m.login_with(alice, sig);
    m.take(alice);
    m.cut(alice);
    m.block(alice, 10_000);
    m.command(alice, send_as("bob", "late", "c1"));
    m.advance(15_000);
    let seen = m.take(alice);
    let named = seen.iter().any(
        |e| matches!(e, Event::Error { code: 6200, client_msg_id: Some(id), .. } if id == "c1"),
    );
    assert!(named, "{seen:?}");
    assert!(seen.iter().any(logged_out), "{seen:?}");
    m.login(alice);
    m.advance(2_000);
    assert!(received(&m.take(bob)).is_empty(), "nothing sent later");
}

/// The same when the device logs in as another user with a message still
/// waiting: it is not sent under the new account.
#[test]
fn a_message_waiting_at_an_account_switch_is_named_not_sent_as_the_other_user() {
    use termphone::ids::DEV_APP_ID;
    let mut m = Mesh::dev();
    let bob = m.online("bob", "b1");
    let alice = m.online("alice", "a1");
    m.cut(alice);
    m.block(alice, 1_000);
    m.command(alice, send_as("bob", "mine", "c1"));
    let carol = user("carol");
    let device = m.nodes[alice].device.clone();
    let user_sig = m.ticket(DEV_APP_ID, &carol, 3600);
    m.command(
        alice,
        Command::Login {
            user: carol,
            device,
            user_sig,
            sync_after: 0,
        },
    );
    m.advance(5_000);
    let seen = m.take(alice);
    let named = seen.iter().any(
        |e| matches!(e, Event::Error { code: 6200, client_msg_id: Some(id), .. } if id == "c1"),
    );
    assert!(named, "{seen:?}");
    assert!(received(&m.take(bob)).is_empty(), "nothing sent as carol");
}
