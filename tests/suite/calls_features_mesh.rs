//! SPEC section 8.2 on virtual time: `userData`, auto-answer, hold and
//! blind transfer, with the exact events every device sees and the media
//! routes the relay publishes.

use serde_json::json;

use termphone::client::engine::{CallCommand, Command};
use termphone::client::event::Event;
use termphone::ids::UserId;
use termphone::protocol::{ClientMsg, MAX_USER_DATA_BYTES};
use termphone::relay::core;

use crate::common::mesh::Mesh;

fn user(u: &str) -> UserId {
    UserId::parse(u).unwrap()
}

fn call(users: &[&str]) -> Command {
    let users: Vec<UserId> = users.iter().map(|u| user(u)).collect();
    let group = users.len() > 1;
    Command::Call(CallCommand::place(users, group, None))
}

fn call_with_data(to: &str, data: &str) -> Command {
    Command::Call(CallCommand::Call {
        users: vec![user(to)],
        timeout_secs: None,
        user_data: Some(data.into()),
    })
}

fn accept() -> Command {
    Command::Call(CallCommand::Accept {
        call_id: None,
        end_current: false,
    })
}
fn reject() -> Command {
    Command::Call(CallCommand::Reject { call_id: None })
}
fn hangup() -> Command {
    Command::Call(CallCommand::Hangup { call_id: None })
}
fn hold() -> Command {
    Command::Call(CallCommand::Hold { call_id: None })
}
fn unhold() -> Command {
    Command::Call(CallCommand::Unhold { call_id: None })
}
fn transfer(to: &str) -> Command {
    Command::Call(CallCommand::TransferCall { user: user(to) })
}
fn auto_answer(delay_ms: Option<u64>) -> Command {
    Command::SetAutoAnswer { delay_ms }
}

/// The users whose voice the relay routes in the only room (none: closed).
fn voices(m: &Mesh) -> Vec<String> {
    assert!(m.media_rooms.len() <= 1, "{:?}", m.media_rooms);
    let mut users: Vec<String> = (m.media_rooms.values().next())
        .map(|members| members.iter().map(|(_, u)| u.to_string()).collect())
        .unwrap_or_default();
    users.sort();
    users
}

/// The JSON of the only event in `events`.
fn only_json(events: Vec<Event>) -> serde_json::Value {
    assert_eq!(events.len(), 1, "{events:?}");
    serde_json::to_value(&events[0]).unwrap()
}

/// bob calls alice; alice answers; every log read.
fn connected() -> (Mesh, usize, usize) {
    let mut m = Mesh::dev();
    let bob = m.online("bob", "b1");
    let alice = m.online("alice", "a1");
    m.command(bob, call(&["alice"]));
    m.command(alice, accept());
    m.take(bob);
    m.take(alice);
    (m, bob, alice)
}

// userData

#[test]
fn user_data_reaches_every_ringing_device_and_is_absent_without() {
    let mut m = Mesh::dev();
    let bob = m.online("bob", "b1");
    let a1 = m.online_multi("alice", "a1");
    let a2 = m.online_multi("alice", "a2");
    m.command(bob, call_with_data("alice", "ticket #42 ✓"));
    for a in [a1, a2] {
        let rang = only_json(m.take(a));
        assert_eq!(rang["event"], "ON_CALL_RECEIVED");
        assert_eq!(rang["userData"], "ticket #42 ✓", "{rang}");
        assert!(rang.get("transferredBy").is_none(), "{rang}");
    }
    m.command(bob, hangup());
    m.take(a1);
    m.take(a2);
    m.command(bob, call(&["alice"]));
    let rang = only_json(m.take(a1));
    assert!(rang.get("userData").is_none(), "{rang}");
}

#[test]
fn user_data_on_a_group_call_reaches_every_invitee() {
    let mut m = Mesh::dev();
    let bob = m.online("bob", "b1");
    let alice = m.online("alice", "a1");
    let carol = m.online("carol", "c1");
    m.command(
        bob,
        Command::Call(CallCommand::GroupCall {
            users: vec![user("alice"), user("carol")],
            timeout_secs: None,
            user_data: Some(r#"{"topic":"standup"}"#.into()),
        }),
    );
    for d in [alice, carol] {
        assert_eq!(only_json(m.take(d))["userData"], r#"{"topic":"standup"}"#);
    }
}

#[test]
fn user_data_over_one_kib_is_refused_naming_the_limit() {
    let mut m = Mesh::dev();
    let bob = m.online("bob", "b1");
    let alice = m.online("alice", "a1");
    let too_long = "x".repeat(MAX_USER_DATA_BYTES + 1);
    m.command(bob, call_with_data("alice", &too_long));
    match &m.take(bob)[..] {
        [
            Event::Error {
                code, message, cmd, ..
            },
        ] => {
            assert_eq!((*code, cmd.as_deref()), (6106, Some("call")));
            assert!(message.contains("1024"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(m.take(alice).is_empty());
    // The relay holds the same rule for a client that does not check.
    let conn = m.nodes[bob].conn.unwrap();
    let msg = ClientMsg::Call {
        invitees: vec!["alice".into()],
        group: false,
        timeout_secs: None,
        user_data: Some(too_long),
    };
    m.relay.handle(m.now, core::Input::Frame { conn, msg });
    m.settle();
    assert_eq!(m.log(bob), ["ERROR 6106 call"]);
    assert!(m.take(alice).is_empty());
    // Exactly 1 KiB is fine.
    m.command(
        bob,
        call_with_data("alice", &"y".repeat(MAX_USER_DATA_BYTES)),
    );
    assert_eq!(m.log(bob), ["CALL_DIALING"]);
    assert_eq!(m.log(alice), ["ON_CALL_RECEIVED from bob"]);
}

// Auto-answer

#[test]
fn auto_answer_accepts_after_its_delay_and_the_other_devices_stop() {
    let mut m = Mesh::dev();
    let bob = m.online("bob", "b1");
    let a1 = m.online_multi("alice", "a1");
    let a2 = m.online_multi("alice", "a2");
    m.command(a1, auto_answer(Some(2_000)));
    m.command(bob, call(&["alice"]));
    m.take(bob);
    assert_eq!(m.log(a1), ["ON_CALL_RECEIVED from bob"]);
    assert_eq!(m.log(a2), ["ON_CALL_RECEIVED from bob"]);
    m.advance(1_999);
    assert!(m.log(a1).is_empty());
    m.advance(1);
    assert_eq!(m.log(a1), ["ON_CALL_BEGIN"]);
    assert_eq!(m.log(a2), ["ON_CALL_CANCELED answered_elsewhere on a1"]);
    assert_eq!(
        m.log(bob),
        ["USER_ACCEPT alice", "USER_ENTER alice", "ON_CALL_BEGIN"]
    );
    assert_eq!(voices(&m), ["alice", "bob"]);
}

#[test]
fn auto_answer_without_delay_answers_at_once_and_races_fairly() {
    let mut m = Mesh::dev();
    let bob = m.online("bob", "b1");
    let a = [m.online_multi("alice", "a1"), m.online_multi("alice", "a2")];
    for d in a {
        m.command(d, auto_answer(Some(0)));
    }
    m.command(bob, call(&["alice"]));
    let logs: Vec<Vec<String>> = a.iter().map(|&d| m.log(d)).collect();
    let winners = logs
        .iter()
        .filter(|l| l.last().map(String::as_str) == Some("ON_CALL_BEGIN"))
        .count();
    assert_eq!(winners, 1, "{logs:?}");
    assert!(
        logs.iter()
            .all(|l| !l.iter().any(|e| e.starts_with("ERROR"))),
        "a lost race is quiet: {logs:?}"
    );
    assert_eq!(
        m.log(bob),
        [
            "CALL_DIALING",
            "USER_ACCEPT alice",
            "USER_ENTER alice",
            "ON_CALL_BEGIN"
        ]
    );
}

#[test]
fn a_manual_answer_or_a_cancel_before_the_delay_wins() {
    let mut m = Mesh::dev();
    let bob = m.online("bob", "b1");
    let a1 = m.online_multi("alice", "a1");
    let a2 = m.online_multi("alice", "a2");
    m.command(a1, auto_answer(Some(3_000)));
    m.command(bob, call(&["alice"]));
    m.advance(1_000);
    m.command(a2, accept());
    m.take(a1);
    m.advance(5_000);
    assert!(m.log(a1).is_empty(), "no late answer from a1");
    m.command(bob, hangup());
    m.take(a1);
    m.take(a2);
    m.take(bob);
    // The caller gives up before the delay: the call is never answered.
    m.command(bob, call(&["alice"]));
    m.advance(1_000);
    m.command(bob, hangup());
    m.advance(10_000);
    assert_eq!(
        m.log(a1),
        [
            "ON_CALL_RECEIVED from bob",
            "ON_CALL_CANCELED caller_canceled"
        ]
    );
}

#[test]
fn auto_answer_applies_to_a_call_ringing_now_and_turns_off() {
    let mut m = Mesh::dev();
    let bob = m.online("bob", "b1");
    let alice = m.online("alice", "a1");
    m.command(bob, call(&["alice"]));
    m.advance(5_000);
    m.command(alice, auto_answer(Some(500)));
    m.advance(500);
    assert_eq!(m.log(alice), ["ON_CALL_RECEIVED from bob", "ON_CALL_BEGIN"]);
    m.command(bob, hangup());
    m.take(alice);
    m.take(bob);
    m.command(alice, auto_answer(None));
    m.command(bob, call(&["alice"]));
    m.advance(31_000);
    assert_eq!(
        m.log(alice),
        ["ON_CALL_RECEIVED from bob", "ON_CALL_CANCELED timeout"]
    );
}

#[test]
fn auto_answer_leaves_a_call_alone_while_this_device_is_in_another() {
    let (mut m, _bob, alice) = connected();
    let a2 = m.online_multi("alice", "a2");
    m.command(a2, auto_answer(Some(0)));
    let carol = m.online("carol", "c1");
    m.command(carol, call(&["alice"]));
    // alice is busy: nothing rings anywhere, nothing is answered.
    assert!(m.log(a2).is_empty());
    assert!(m.log(alice).is_empty());
    assert_eq!(
        m.log(carol),
        ["CALL_DIALING", "LINE_BUSY alice", "ON_CALL_CANCELED busy"]
    );
}

// Hold

#[test]
fn hold_is_heard_on_every_device_and_cuts_the_voice_both_ways() {
    let mut m = Mesh::dev();
    let bob = m.online("bob", "b1");
    let a1 = m.online_multi("alice", "a1");
    let a2 = m.online_multi("alice", "a2");
    let b2 = m.online_multi("bob", "b2");
    m.command(bob, call(&["alice"]));
    m.command(a1, accept());
    for d in [bob, a1, a2, b2] {
        m.take(d);
    }
    assert_eq!(voices(&m), ["alice", "bob"]);
    m.command(a1, hold());
    for d in [bob, a1, a2, b2] {
        assert_eq!(m.log(d), ["CALL_HOLD_CHANGED alice true"], "device {d}");
    }
    assert!(voices(&m).is_empty(), "no voice while alice holds");
    // Holding again changes nothing.
    m.command(a1, hold());
    assert!(m.log(bob).is_empty() && m.log(a1).is_empty());
    m.command(a1, unhold());
    for d in [bob, a1, a2, b2] {
        assert_eq!(m.log(d), ["CALL_HOLD_CHANGED alice false"], "device {d}");
    }
    assert_eq!(voices(&m), ["alice", "bob"]);
}

#[test]
fn call_hold_changed_is_json_with_call_id_user_and_on_hold() {
    let (mut m, bob, alice) = connected();
    m.command(bob, hold());
    let json = only_json(m.take(alice));
    assert_eq!(
        (&json["event"], &json["userID"], &json["onHold"]),
        (&json!("CALL_HOLD_CHANGED"), &json!("bob"), &json!(true)),
        "{json}"
    );
    assert!(json["callId"].is_string(), "{json}");
}

#[test]
fn both_sides_can_hold_and_voice_returns_only_when_neither_does() {
    let (mut m, bob, alice) = connected();
    m.command(bob, hold());
    m.command(alice, hold());
    m.command(bob, unhold());
    assert!(voices(&m).is_empty());
    m.command(alice, unhold());
    assert_eq!(voices(&m), ["alice", "bob"]);
    assert_eq!(
        m.log(bob),
        [
            "CALL_HOLD_CHANGED bob true",
            "CALL_HOLD_CHANGED alice true",
            "CALL_HOLD_CHANGED bob false",
            "CALL_HOLD_CHANGED alice false"
        ]
    );
}

#[test]
fn in_a_group_call_the_others_keep_talking_while_one_holds() {
    let mut m = Mesh::dev();
    let bob = m.online("bob", "b1");
    let alice = m.online("alice", "a1");
    let carol = m.online("carol", "c1");
    m.command(bob, call(&["alice", "carol"]));
    m.command(alice, accept());
    m.command(carol, accept());
    for d in [bob, alice, carol] {
        m.take(d);
    }
    assert_eq!(voices(&m), ["alice", "bob", "carol"]);
    m.command(alice, hold());
    for d in [bob, alice, carol] {
        assert_eq!(m.log(d), ["CALL_HOLD_CHANGED alice true"]);
    }
    assert_eq!(voices(&m), ["bob", "carol"]);
    // The holder leaving takes its hold with it.
    m.command(alice, hangup());
    assert_eq!(voices(&m), ["bob", "carol"]);
    assert_eq!(m.log(bob), ["USER_LEAVE alice"]);
}

#[test]
fn a_participant_entering_a_held_call_hears_who_holds() {
    let (mut m, bob, alice) = connected();
    m.command(alice, hold());
    let carol = m.online("carol", "c1");
    m.command(
        bob,
        Command::Call(CallCommand::InviteUser {
            users: vec![user("carol")],
        }),
    );
    m.take(carol);
    m.command(carol, accept());
    assert_eq!(
        m.log(carol),
        ["ON_CALL_BEGIN", "CALL_HOLD_CHANGED alice true"]
    );
    assert_eq!(voices(&m), ["bob", "carol"]);
    // The same after a transfer: the party that stays still holds.
    let (mut m, bob, alice) = connected();
    let carol = m.online("carol", "c1");
    m.command(bob, hold());
    m.command(alice, transfer("carol"));
    m.take(carol);
    m.command(carol, accept());
    assert_eq!(
        m.log(carol),
        ["ON_CALL_BEGIN", "CALL_HOLD_CHANGED bob true"]
    );
    assert!(voices(&m).is_empty(), "bob still holds");
    m.command(bob, unhold());
    assert_eq!(voices(&m), ["bob", "carol"]);
}

#[test]
fn hold_needs_a_connected_call() {
    let mut m = Mesh::dev();
    let bob = m.online("bob", "b1");
    let _alice = m.online("alice", "a1");
    m.command(bob, hold());
    assert_eq!(m.log(bob), ["ERROR 6103 hold"]);
    m.command(bob, call(&["alice"]));
    m.take(bob);
    m.command(bob, hold());
    assert_eq!(m.log(bob), ["ERROR 6107 hold"]);
    m.command(
        bob,
        Command::Call(CallCommand::Unhold {
            call_id: Some("nope".into()),
        }),
    );
    assert_eq!(m.log(bob), ["ERROR 6103 unhold"]);
}

#[test]
fn a_hold_survives_a_reconnect_and_a_restart() {
    let (mut m, bob, alice) = connected();
    m.command(alice, hold());
    m.take(bob);
    m.take(alice);
    m.cut(alice);
    m.advance(2_000);
    let log = m.log(alice);
    assert!(
        !log.iter().any(|e| e.starts_with("CALL")),
        "nothing changed in the call: {log:?}"
    );
    assert!(voices(&m).is_empty(), "still held after the reconnect");
    // A new process on the same device comes back into the call, held.
    m.restart(alice);
    m.advance(1_000);
    let log = m.log(alice);
    let begin = log
        .iter()
        .position(|e| e == "ON_CALL_BEGIN")
        .expect("{log:?}");
    assert_eq!(log[begin + 1], "CALL_HOLD_CHANGED alice true", "{log:?}");
    assert!(voices(&m).is_empty());
    assert!(m.log(bob).is_empty());
    m.command(alice, unhold());
    assert_eq!(m.log(bob), ["CALL_HOLD_CHANGED alice false"]);
    assert_eq!(voices(&m), ["alice", "bob"]);
}

/// A device killed a minute into a call and started again is back in it
/// with the minute counted: its `ON_CALL_BEGIN` record says how long the
/// call has run, and its `CALLING_END` counts from the call's start.
#[test]
fn a_device_back_in_its_call_after_a_restart_counts_the_call_from_its_start() {
    let (mut m, bob, alice) = connected();
    m.advance(60_000);
    m.restart(alice);
    m.advance(1_000);
    let begun: Vec<u64> = (m.take(alice).iter())
        .filter_map(|e| match e {
            Event::OnCallBegin { record, .. } => Some(record.total_time),
            _ => None,
        })
        .collect();
    assert_eq!(begun, [60], "ON_CALL_BEGIN once, a minute into the call");
    m.advance(4_000);
    m.command(alice, hangup());
    assert_eq!(m.log(alice), ["CALLING_END 65s"]);
    assert_eq!(m.log(bob), ["USER_LEAVE alice", "CALLING_END 65s"]);
}

#[test]
fn a_device_away_while_the_hold_changed_hears_it_on_return() {
    let (mut m, bob, alice) = connected();
    m.block(bob, 5_000);
    m.cut(bob);
    m.command(alice, hold());
    m.advance(15_000);
    let log = m.log(bob);
    assert!(
        log.contains(&"CALL_HOLD_CHANGED alice true".to_string()),
        "{log:?}"
    );
}

// Blind transfer

/// bob calls alice, alice answers, and transfers bob to carol.
fn transferred() -> (Mesh, usize, usize, usize) {
    let (mut m, bob, alice) = connected();
    let carol = m.online("carol", "c1");
    m.command(alice, transfer("carol"));
    (m, bob, alice, carol)
}

#[test]
fn a_transfer_rings_the_target_and_its_answer_connects_the_two() {
    let (mut m, bob, alice, carol) = transferred();
    assert_eq!(m.log(alice), ["CALLING_END 0s"]);
    assert_eq!(
        m.log(bob),
        ["CALL_TRANSFERRED by alice to carol", "USER_LEAVE alice"]
    );
    let rang = only_json(m.take(carol));
    assert_eq!(
        (&rang["event"], &rang["sponsor"], &rang["transferredBy"]),
        (&json!("ON_CALL_RECEIVED"), &json!("bob"), &json!("alice")),
        "{rang}"
    );
    assert_eq!(rang["userIDList"], json!([]), "{rang}");
    assert!(voices(&m).is_empty(), "nobody to talk to while carol rings");
    m.advance(3_000);
    m.command(carol, accept());
    assert_eq!(m.log(carol), ["ON_CALL_BEGIN"]);
    assert_eq!(
        m.log(bob),
        ["USER_ACCEPT carol", "USER_ENTER carol", "ON_CALL_BEGIN"]
    );
    assert_eq!(voices(&m), ["bob", "carol"]);
    assert!(m.log(alice).is_empty(), "the transferor is out of it");
    m.advance(4_000);
    m.command(carol, hangup());
    assert_eq!(m.log(carol), ["CALLING_END 4s"]);
    // bob's time counts from when he entered the call, before the transfer.
    assert_eq!(m.log(bob), ["USER_LEAVE carol", "CALLING_END 7s"]);
}

#[test]
fn call_transferred_is_json_with_call_id_by_and_to() {
    let (mut m, bob, _alice, _carol) = transferred();
    let events = m.take(bob);
    let json = serde_json::to_value(&events[0]).unwrap();
    assert_eq!(
        (&json["event"], &json["by"], &json["to"]),
        (&json!("CALL_TRANSFERRED"), &json!("alice"), &json!("carol")),
        "{json}"
    );
    assert!(json["callId"].is_string(), "{json}");
}

#[test]
fn a_declined_transfer_ends_the_call() {
    let (mut m, bob, _alice, carol) = transferred();
    m.take(bob);
    m.take(carol);
    m.command(carol, reject());
    assert_eq!(m.log(carol), ["ON_CALL_CANCELED declined"]);
    assert_eq!(m.log(bob), ["REJECT carol", "CALLING_END 0s"]);
    assert!(m.media_rooms.is_empty());
}

#[test]
fn an_unanswered_transfer_times_out_and_ends_the_call() {
    let (mut m, bob, _alice, carol) = transferred();
    m.take(bob);
    m.take(carol);
    m.advance(30_000);
    assert_eq!(m.log(carol), ["ON_CALL_CANCELED timeout"]);
    assert_eq!(m.log(bob), ["NO_RESP carol", "CALLING_END 30s"]);
}

#[test]
fn a_transfer_to_a_busy_user_ends_the_call() {
    let (mut m, bob, alice) = connected();
    let carol = m.online("carol", "c1");
    let dave = m.online("dave", "d1");
    m.command(carol, call(&["dave"]));
    m.command(dave, accept());
    m.take(carol);
    m.take(dave);
    m.command(alice, transfer("carol"));
    assert_eq!(m.log(alice), ["CALLING_END 0s"]);
    assert_eq!(
        m.log(bob),
        [
            "CALL_TRANSFERRED by alice to carol",
            "USER_LEAVE alice",
            "LINE_BUSY carol",
            "CALLING_END 0s"
        ]
    );
    assert!(m.log(carol).is_empty());
}

#[test]
fn hanging_up_while_the_target_rings_stops_the_ring() {
    let (mut m, bob, _alice, carol) = transferred();
    m.take(bob);
    m.take(carol);
    m.command(bob, hangup());
    assert_eq!(m.log(bob), ["CALLING_END 0s"]);
    assert_eq!(m.log(carol), ["ON_CALL_CANCELED caller_canceled"]);
}

#[test]
fn the_caller_can_transfer_too() {
    let (mut m, bob, alice) = connected();
    let carol = m.online("carol", "c1");
    m.command(bob, transfer("carol"));
    assert_eq!(m.log(bob), ["CALLING_END 0s"]);
    assert_eq!(
        m.log(alice),
        ["CALL_TRANSFERRED by bob to carol", "USER_LEAVE bob"]
    );
    let rang = only_json(m.take(carol));
    assert_eq!(
        (&rang["sponsor"], &rang["transferredBy"]),
        (&json!("alice"), &json!("bob"))
    );
    m.command(carol, accept());
    assert_eq!(
        m.log(alice),
        ["USER_ACCEPT carol", "USER_ENTER carol", "ON_CALL_BEGIN"]
    );
}

#[test]
fn a_transfer_back_rings_the_first_transferor_again() {
    let (mut m, bob, alice, carol) = transferred();
    m.command(carol, accept());
    m.take(alice);
    m.take(bob);
    m.take(carol);
    m.command(carol, transfer("alice"));
    assert_eq!(m.log(carol), ["CALLING_END 0s"]);
    let rang = only_json(m.take(alice));
    assert_eq!(
        (&rang["sponsor"], &rang["transferredBy"]),
        (&json!("bob"), &json!("carol"))
    );
    m.command(alice, accept());
    assert_eq!(m.log(alice), ["ON_CALL_BEGIN"]);
    assert_eq!(voices(&m), ["alice", "bob"]);
}

#[test]
fn transfers_that_make_no_sense_are_refused() {
    let mut m = Mesh::dev();
    let bob = m.online("bob", "b1");
    let alice = m.online("alice", "a1");
    let carol = m.online("carol", "c1");
    m.command(bob, transfer("carol"));
    assert_eq!(m.log(bob), ["ERROR 6103 transferCall"]);
    m.command(bob, call(&["alice"]));
    m.take(bob);
    m.command(bob, transfer("carol"));
    assert_eq!(m.log(bob), ["ERROR 6107 transferCall"]);
    m.command(alice, accept());
    m.take(bob);
    m.take(alice);
    m.command(bob, transfer("bob"));
    assert_eq!(m.log(bob), ["ERROR 6109 transferCall"]);
    m.command(bob, transfer("alice"));
    assert_eq!(m.log(bob), ["ERROR 6109 transferCall"]);
    // A group call cannot be transferred.
    m.command(
        bob,
        Command::Call(CallCommand::InviteUser {
            users: vec![user("carol")],
        }),
    );
    m.command(carol, accept());
    m.take(bob);
    m.command(bob, transfer("dave"));
    assert_eq!(m.log(bob), ["ERROR 6108 transferCall"]);
    assert!(m.log(carol).iter().all(|e| !e.starts_with("CALL")));
}
