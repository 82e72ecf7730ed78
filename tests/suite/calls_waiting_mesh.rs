//! Call waiting (SPEC 8.2) on virtual time: a second call waits on the
//! device in a call instead of finding the user busy; accepting it holds
//! the first (or ends it with `endCurrent`), and `unhold` swaps the two.
//! Every device's exact events, and the voice the relay routes.

use serde_json::json;

use termphone::client::engine::{CallCommand, Command, MediaCommand};
use termphone::client::event::Event;
use termphone::ids::UserId;
use termphone::protocol::ClientMsg;
use termphone::relay::core;

use crate::common::mesh::{Mesh, describe};

fn call(to: &str) -> Command {
    Command::Call(CallCommand::place(
        vec![UserId::parse(to).unwrap()],
        false,
        None,
    ))
}

fn accept(call_id: Option<String>, end_current: bool) -> Command {
    Command::Call(CallCommand::Accept {
        call_id,
        end_current,
    })
}

fn hangup(call_id: Option<String>) -> Command {
    Command::Call(CallCommand::Hangup { call_id })
}

fn unhold(call_id: Option<String>) -> Command {
    Command::Call(CallCommand::Unhold { call_id })
}

fn waiting(enable: bool) -> Command {
    Command::EnableCallWaiting { enable }
}

/// The users heard in each room the relay routes, sorted.
fn voices(m: &Mesh) -> Vec<Vec<String>> {
    let mut rooms: Vec<Vec<String>> = m.voices().into_values().collect();
    rooms.sort();
    rooms
}

/// bob calls alice (call waiting on) and she answers; carol calls her too.
/// Returns the mesh, bob, alice, carol and the two calls' ids.
fn waiting_call() -> (Mesh, usize, usize, usize, String, String) {
    let mut m = Mesh::dev();
    let bob = m.online("bob", "b1");
    let alice = m.online("alice", "a1");
    let carol = m.online("carol", "c1");
    m.command(alice, waiting(true));
    m.command(bob, call("alice"));
    m.command(alice, accept(None, false));
    let first = m.last_call_id(alice);
    m.take(bob);
    m.take(alice);
    m.command(carol, call("alice"));
    let second = m.last_call_id(carol);
    m.take(carol);
    (m, bob, alice, carol, first, second)
}

#[test]
fn a_second_call_waits_instead_of_busy_and_accept_holds_the_first() {
    let (mut m, bob, alice, carol, first, second) = waiting_call();
    assert_eq!(m.log(alice), ["ON_CALL_RECEIVED from carol (waiting)"]);
    assert!(m.log(carol).is_empty(), "no LINE_BUSY");
    assert!(m.log(bob).is_empty());
    assert_eq!(voices(&m), [["alice", "bob"]]);

    m.command(alice, accept(Some(second.clone()), false));
    assert_eq!(
        m.log(alice),
        ["CALL_HOLD_CHANGED alice true", "ON_CALL_BEGIN"]
    );
    assert_eq!(m.log(bob), ["CALL_HOLD_CHANGED alice true"]);
    assert_eq!(
        m.log(carol),
        ["USER_ACCEPT alice", "USER_ENTER alice", "ON_CALL_BEGIN"]
    );
    // Only the new call has voice: bob, held, hears nobody.
    assert_eq!(voices(&m), [["alice", "carol"]]);
    let started = m.nodes[alice]
        .media
        .iter()
        .filter(|c| matches!(c, MediaCommand::Start { .. }))
        .count();
    assert_eq!(started, 2, "alice's media moved to carol's call");

    // Back to bob: carol's call is held and set aside in its place.
    m.command(alice, unhold(Some(first.clone())));
    assert_eq!(
        m.log(alice),
        [
            "CALL_HOLD_CHANGED alice true",
            "CALL_HOLD_CHANGED alice false"
        ]
    );
    assert_eq!(m.log(bob), ["CALL_HOLD_CHANGED alice false"]);
    assert_eq!(m.log(carol), ["CALL_HOLD_CHANGED alice true"]);
    assert_eq!(voices(&m), [["alice", "bob"]]);

    // And back to carol, by naming her call.
    m.command(alice, unhold(Some(second)));
    assert_eq!(m.log(bob), ["CALL_HOLD_CHANGED alice true"]);
    assert_eq!(m.log(carol), ["CALL_HOLD_CHANGED alice false"]);
    assert_eq!(voices(&m), [["alice", "carol"]]);

    // alice hangs up on carol: bob's call, still held, is hers again.
    m.take(alice);
    m.command(alice, hangup(None));
    assert_eq!(m.log(alice), ["CALLING_END 0s"]);
    assert_eq!(m.log(carol), ["USER_LEAVE alice", "CALLING_END 0s"]);
    assert!(voices(&m).is_empty(), "bob's call is still held");
    m.command(alice, unhold(None));
    assert_eq!(m.log(alice), ["CALL_HOLD_CHANGED alice false"]);
    assert_eq!(m.log(bob), ["CALL_HOLD_CHANGED alice false"]);
    assert_eq!(voices(&m), [["alice", "bob"]]);
    m.command(bob, hangup(None));
    assert_eq!(m.log(alice), ["USER_LEAVE bob", "CALLING_END 0s"]);
}

#[test]
fn accept_with_end_current_hangs_up_the_first_call() {
    let (mut m, bob, alice, carol, _, second) = waiting_call();
    m.take(alice);
    m.advance(3_000);
    m.command(alice, accept(Some(second), true));
    assert_eq!(m.log(alice), ["CALLING_END 3s", "ON_CALL_BEGIN"]);
    assert_eq!(m.log(bob), ["USER_LEAVE alice", "CALLING_END 3s"]);
    assert_eq!(
        m.log(carol),
        ["USER_ACCEPT alice", "USER_ENTER alice", "ON_CALL_BEGIN"]
    );
    assert_eq!(voices(&m), [["alice", "carol"]]);
}

#[test]
fn a_waiting_call_declined_or_ignored_leaves_the_first_alone() {
    let (mut m, bob, alice, carol, _, _) = waiting_call();
    m.take(alice);
    m.command(alice, Command::Call(CallCommand::Reject { call_id: None }));
    assert_eq!(m.log(alice), ["ON_CALL_CANCELED declined"]);
    assert_eq!(m.log(carol), ["REJECT alice", "ON_CALL_CANCELED declined"]);
    assert!(m.log(bob).is_empty());
    assert_eq!(voices(&m), [["alice", "bob"]]);

    m.command(carol, call("alice"));
    m.command(alice, Command::Call(CallCommand::Ignore { call_id: None }));
    assert_eq!(
        m.log(alice),
        [
            "ON_CALL_RECEIVED from carol (waiting)",
            "ON_CALL_CANCELED ignored"
        ]
    );
    m.advance(31_000);
    assert_eq!(
        m.log(carol),
        ["CALL_DIALING", "NO_RESP alice", "ON_CALL_CANCELED timeout"]
    );
    assert!(m.log(alice).is_empty());
    assert_eq!(voices(&m), [["alice", "bob"]]);
}

#[test]
fn without_call_waiting_or_with_a_call_held_aside_the_user_is_busy() {
    let (mut m, _bob, alice, carol, _, second) = waiting_call();
    m.take(carol);
    // Turned off: the next caller hears busy, as in SPEC section 3.
    m.command(alice, waiting(false));
    let dave = m.online("dave", "d1");
    m.command(dave, call("alice"));
    assert_eq!(
        m.log(dave),
        ["CALL_DIALING", "LINE_BUSY alice", "ON_CALL_CANCELED busy"]
    );
    // carol's call, which rang before, cannot be taken on top any more.
    m.take(alice);
    m.command(alice, accept(Some(second.clone()), false));
    assert_eq!(m.log(alice), ["ERROR 6102 accept"]);

    // On again: alice takes carol and holds bob aside; a third caller is busy.
    m.command(alice, waiting(true));
    m.command(alice, accept(Some(second), false));
    m.take(alice);
    m.command(dave, call("alice"));
    assert_eq!(
        m.log(dave),
        ["CALL_DIALING", "LINE_BUSY alice", "ON_CALL_CANCELED busy"]
    );
    assert!(m.log(alice).is_empty());
}

#[test]
fn a_waiting_call_rings_only_on_the_device_in_the_call() {
    let mut m = Mesh::dev();
    let bob = m.online("bob", "b1");
    let a1 = m.online_multi("alice", "a1");
    let a2 = m.online_multi("alice", "a2");
    let carol = m.online("carol", "c1");
    m.command(a1, waiting(true));
    m.command(bob, call("alice"));
    m.command(a1, accept(None, false));
    m.take(a1);
    m.take(a2);
    m.command(carol, call("alice"));
    assert_eq!(m.log(a1), ["ON_CALL_RECEIVED from carol (waiting)"]);
    assert!(m.log(a2).is_empty(), "alice's other device stays quiet");
    // A device of alice's that logs in meanwhile does not ring either.
    let a3 = m.online_multi("alice", "a3");
    assert!(m.log(a3).is_empty());
    // The waiting call's JSON says so; an ordinary one does not.
    m.command(carol, hangup(None));
    m.take(a1);
    m.command(bob, hangup(None));
    m.take(a1);
    m.command(carol, call("alice"));
    let rang = serde_json::to_value(&m.take(a1)[0]).unwrap();
    assert_eq!(rang["event"], "ON_CALL_RECEIVED");
    assert!(rang.get("waiting").is_none(), "{rang}");
    let (mut m, _, alice, _, _, _) = waiting_call();
    let rang = serde_json::to_value(&m.take(alice)[0]).unwrap();
    assert_eq!(rang["waiting"], json!(true), "{rang}");
}

#[test]
fn the_held_call_ends_when_its_other_party_hangs_up() {
    let (mut m, bob, alice, carol, first, second) = waiting_call();
    m.command(alice, accept(Some(second), false));
    m.take(alice);
    m.take(bob);
    m.take(carol);
    m.command(bob, hangup(None));
    assert_eq!(m.log(alice), ["USER_LEAVE bob", "CALLING_END 0s"]);
    // alice goes on with carol; bob's call is gone for unhold.
    assert_eq!(voices(&m), [["alice", "carol"]]);
    m.command(alice, unhold(Some(first)));
    assert_eq!(m.log(alice), ["ERROR 6103 unhold"]);
    // When carol hangs up too, alice is free: a new call rings normally.
    m.command(carol, hangup(None));
    m.take(alice);
    m.command(bob, call("alice"));
    assert_eq!(m.log(alice), ["ON_CALL_RECEIVED from bob"]);
}

#[test]
fn a_device_that_restarts_takes_up_both_calls() {
    let (mut m, bob, alice, carol, first, second) = waiting_call();
    m.command(alice, accept(Some(second.clone()), false));
    m.take(alice);
    // A dropped link and back: nothing changes.
    m.cut(alice);
    m.advance(1_000);
    assert_eq!(
        m.log(alice),
        ["CONNECTION_CHANGED", "CONNECTION_CHANGED", "SYNCED"],
        "reconnecting, connected, caught up: no call event"
    );
    // The process restarts: the relay's call_state brings back both calls,
    // bob's still held aside.
    m.restart(alice);
    m.advance(1_000);
    let seen = m.take(alice);
    let names: Vec<String> = seen.iter().map(describe).collect();
    assert_eq!(
        names,
        [
            "LOGIN_STATUS_CHANGED",
            "CONNECTION_CHANGED",
            "LOGIN_STATUS_CHANGED",
            "SDK_READY",
            "ON_CALL_BEGIN",
            "CALL_HOLD_CHANGED alice true",
            "ON_CALL_BEGIN",
            "SYNCED",
        ]
    );
    // The call set aside first, so the last begin is the current call's.
    let begun: Vec<&str> = (seen.iter())
        .filter_map(|e| match e {
            Event::OnCallBegin { call_id, .. } => Some(call_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(begun, [first.as_str(), second.as_str()]);
    m.take(bob);
    m.take(carol);
    // The restarted device turns call waiting on again and swaps back.
    m.command(alice, unhold(Some(first)));
    assert_eq!(m.log(bob), ["CALL_HOLD_CHANGED alice false"]);
    assert_eq!(m.log(carol), ["CALL_HOLD_CHANGED alice true"]);
    assert_eq!(voices(&m), [["alice", "bob"]]);
}

#[test]
fn the_relay_refuses_a_waiting_accept_from_a_device_without_call_waiting() {
    let (mut m, _bob, alice, carol, _, second) = waiting_call();
    m.take(alice);
    // A client that does not check: the relay keeps the rule.
    let conn = m.nodes[alice].conn.unwrap();
    let msg = ClientMsg::CallWaiting { enable: false };
    m.relay.handle(m.now, core::Input::Frame { conn, msg });
    let msg = ClientMsg::Accept {
        call_id: second,
        end_current: false,
    };
    m.relay.handle(m.now, core::Input::Frame { conn, msg });
    m.settle();
    assert_eq!(m.log(alice), ["ERROR 6102 accept"]);
    assert!(m.log(carol).is_empty());
}
