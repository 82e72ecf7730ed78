//! Every row of SPEC section 3 on virtual time: the exact events each device sees.

use termphone::client::engine::{CallCommand, Command, MediaCommand};
use termphone::client::event::Event;
use termphone::config::RelayConfig;
use termphone::ids::UserId;
use termphone::protocol::Role;

use serde_json::json;

use crate::common::mesh::{Mesh, describe};

fn user(u: &str) -> UserId {
    UserId::parse(u).unwrap()
}

fn call(users: &[&str]) -> Command {
    let users: Vec<UserId> = users.iter().map(|u| user(u)).collect();
    let group = users.len() > 1;
    Command::Call(CallCommand::place(users, group, None))
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
fn ignore() -> Command {
    Command::Call(CallCommand::Ignore { call_id: None })
}
fn hangup() -> Command {
    Command::Call(CallCommand::Hangup { call_id: None })
}

/// bob (one device) and alice with three multi-device terminals.
fn bob_and_three_alices() -> (Mesh, usize, [usize; 3]) {
    let mut m = Mesh::dev();
    let bob = m.online("bob", "b1");
    let a = [
        m.online_multi("alice", "a1"),
        m.online_multi("alice", "a2"),
        m.online_multi("alice", "a3"),
    ];
    (m, bob, a)
}

/// `bob_and_three_alices`, with bob's call ringing on all three and every
/// log read.
fn alice_ringing() -> (Mesh, usize, [usize; 3]) {
    let (mut m, bob, a) = bob_and_three_alices();
    m.command(bob, call(&["alice"]));
    for d in a {
        m.take(d);
    }
    m.take(bob);
    (m, bob, a)
}

const RINGS: &str = "ON_CALL_RECEIVED from bob";

#[test]
fn with_multi_device_every_enabled_device_rings() {
    let (mut m, bob, a) = bob_and_three_alices();
    m.command(bob, call(&["alice"]));
    assert_eq!(m.log(bob), ["CALL_DIALING"]);
    for d in a {
        assert_eq!(m.log(d), [RINGS]);
    }
}

#[test]
fn without_multi_device_only_the_latest_login_rings() {
    let mut m = Mesh::dev();
    let bob = m.online("bob", "b1");
    let a1 = m.online("alice", "a1");
    let a2 = m.online("alice", "a2");
    m.command(bob, call(&["alice"]));
    assert!(m.log(a1).is_empty());
    assert_eq!(m.log(a2), [RINGS]);
    // The older device is not the callee's: it cannot answer.
    m.command(a1, accept());
    assert_eq!(m.log(a1), ["ERROR 6103 accept"]);
}

#[test]
fn one_device_answers_and_the_others_stop() {
    let (mut m, bob, a) = alice_ringing();
    m.command(a[1], accept());
    assert_eq!(m.log(a[1]), ["ON_CALL_BEGIN"]);
    // The others say which device answered, in the event and its record.
    let stopped = m.take(a[0]);
    assert_eq!(
        stopped.iter().map(describe).collect::<Vec<_>>(),
        ["ON_CALL_CANCELED answered_elsewhere on a2"]
    );
    let json = serde_json::to_value(&stopped[0]).unwrap();
    assert_eq!(
        (&json["userID"], &json["deviceID"], &json["platform"]),
        (&json!("alice"), &json!("a2"), &json!("terminal")),
        "{json}"
    );
    let record = serde_json::to_value(stopped[0].call_record().unwrap()).unwrap();
    assert_eq!(
        (&record["outcome"], &record["deviceID"], &record["platform"]),
        (
            &json!("answered_elsewhere"),
            &json!("a2"),
            &json!("terminal")
        ),
        "{record}"
    );
    assert_eq!(m.log(a[2]), ["ON_CALL_CANCELED answered_elsewhere on a2"]);
    assert_eq!(
        m.log(bob),
        ["USER_ACCEPT alice", "USER_ENTER alice", "ON_CALL_BEGIN"]
    );
}

#[test]
fn answered_on_another_device_names_that_device_and_its_platform() {
    let mut m = Mesh::dev();
    let bob = m.online("bob", "b1");
    let mut alice = |device: &str, platform: &str| {
        let d = m.add(termphone::ids::DEV_APP_ID, platform, "alice", device);
        m.login(d);
        m.command(d, Command::EnableMultiDeviceAbility { enable: true });
        d
    };
    let (phone, laptop) = (alice("phone", "android"), alice("laptop", "desktop"));
    m.command(bob, call(&["alice"]));
    m.take(phone);
    m.command(laptop, accept());
    match &m.take(phone)[..] {
        [
            Event::OnCallCanceled {
                elsewhere: Some(d),
                record,
                ..
            },
        ] => {
            assert_eq!(
                (d.device.as_str(), d.platform.as_str()),
                ("laptop", "desktop")
            );
            assert_eq!(record.elsewhere.as_ref(), Some(d));
        }
        other => panic!("{other:?}"),
    }
    // Reasons that involve no other device name none.
    m.command(bob, hangup());
    m.command(bob, call(&["alice"]));
    m.take(phone);
    m.command(bob, hangup());
    match &m.take(phone)[..] {
        [
            Event::OnCallCanceled {
                elsewhere, record, ..
            },
        ] => assert!(elsewhere.is_none() && record.elsewhere.is_none()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn devices_answering_at_the_same_instant_get_exactly_one_winner() {
    let (mut m, bob, a) = alice_ringing();
    for d in a {
        m.command_later(d, accept());
    }
    m.settle();
    let logs: Vec<Vec<String>> = a.iter().map(|&d| m.log(d)).collect();
    let winners: Vec<usize> = (0..3).filter(|&k| logs[k] == ["ON_CALL_BEGIN"]).collect();
    assert_eq!(winners.len(), 1, "{logs:?}");
    // The losers name the device whose answer won.
    let lost = [format!(
        "ON_CALL_CANCELED answered_elsewhere on a{}",
        winners[0] + 1
    )];
    let losers = logs.iter().filter(|l| **l == lost).count();
    assert_eq!(losers, 2, "{logs:?}");
    assert_eq!(
        m.log(bob),
        ["USER_ACCEPT alice", "USER_ENTER alice", "ON_CALL_BEGIN"]
    );
}

#[test]
fn one_device_declines_and_every_device_stops() {
    let (mut m, bob, a) = alice_ringing();
    m.command(a[0], reject());
    assert_eq!(m.log(a[0]), ["ON_CALL_CANCELED declined"]);
    assert_eq!(m.log(a[1]), ["ON_CALL_CANCELED declined_elsewhere on a1"]);
    assert_eq!(m.log(a[2]), ["ON_CALL_CANCELED declined_elsewhere on a1"]);
    assert_eq!(m.log(bob), ["REJECT alice", "ON_CALL_CANCELED declined"]);
}

#[test]
fn one_device_ignores_and_only_it_stops() {
    let (mut m, bob, a) = alice_ringing();
    m.command(a[0], ignore());
    assert_eq!(m.log(a[0]), ["ON_CALL_CANCELED ignored"]);
    assert!(m.log(a[1]).is_empty() && m.log(a[2]).is_empty());
    assert!(m.log(bob).is_empty());
    // The others still ring and can answer; the ignoring device hears nothing more.
    m.command(a[2], accept());
    assert_eq!(m.log(a[2]), ["ON_CALL_BEGIN"]);
    assert_eq!(m.log(a[1]), ["ON_CALL_CANCELED answered_elsewhere on a3"]);
    assert!(m.log(a[0]).is_empty());
}

#[test]
fn the_caller_cancels_while_it_rings() {
    let (mut m, bob, a) = alice_ringing();
    m.command(bob, hangup());
    assert_eq!(m.log(bob), ["ON_CALL_CANCELED caller_canceled"]);
    for d in a {
        assert_eq!(m.log(d), ["ON_CALL_CANCELED caller_canceled"]);
    }
}

#[test]
fn nobody_answers_within_the_default_30_seconds() {
    let (mut m, bob, a) = alice_ringing();
    m.advance(29_999);
    assert!(m.log(bob).is_empty());
    m.advance(1);
    assert_eq!(m.log(bob), ["NO_RESP alice", "ON_CALL_CANCELED timeout"]);
    for d in a {
        assert_eq!(m.log(d), ["ON_CALL_CANCELED timeout"]);
    }
}

#[test]
fn the_timeout_is_per_call() {
    let mut m = Mesh::dev();
    let bob = m.online("bob", "b1");
    let alice = m.online("alice", "a1");
    m.command(
        bob,
        Command::Call(CallCommand::Call {
            users: vec![user("alice")],
            timeout_secs: Some(5),
            user_data: None,
        }),
    );
    m.take(bob);
    m.take(alice);
    m.advance(5_000);
    assert_eq!(m.log(bob), ["NO_RESP alice", "ON_CALL_CANCELED timeout"]);
    assert_eq!(m.log(alice), ["ON_CALL_CANCELED timeout"]);
}

/// alice's other device holds the call: a1 is told which, and when that
/// device was killed, that it stays in the call until it comes back (a1
/// cannot hang it up: it was told to "hang up first").
#[test]
fn a_call_from_a_device_whose_user_talks_on_another_names_that_device() {
    let (mut m, bob, a) = bob_and_three_alices();
    let carol = m.online("carol", "c1");
    m.command(bob, call(&["alice"]));
    m.command(a[1], accept());
    m.take(a[0]);
    let refusal = |m: &mut Mesh| match &m.take(a[0])[..] {
        [
            Event::Error {
                code: 6102,
                message,
                ..
            },
        ] => message.clone(),
        other => panic!("{other:?}"),
    };
    m.command(a[0], call(&["carol"]));
    assert_eq!(
        refusal(&mut m),
        "alice is already in a call on a2; hang up there first"
    );
    m.kill(a[1]);
    m.command(a[0], call(&["carol"]));
    let message = refusal(&mut m);
    assert!(
        message.contains("on a2, which lost its link to the relay"),
        "{message}"
    );
    assert!(message.contains("for 90 s"), "{message}");
    assert!(m.take(carol).is_empty());
}

#[test]
fn a_callee_in_a_call_on_any_device_is_busy() {
    let (mut m, bob, a) = bob_and_three_alices();
    let carol = m.online("carol", "c1");
    m.command(bob, call(&["alice"]));
    m.command(a[0], accept());
    for d in a {
        m.take(d);
    }
    m.command(carol, call(&["alice"]));
    assert_eq!(
        m.log(carol),
        ["CALL_DIALING", "LINE_BUSY alice", "ON_CALL_CANCELED busy"]
    );
    for d in a {
        assert!(
            m.log(d).is_empty(),
            "nothing rings on a busy user's devices"
        );
    }
    // The caller is busy too.
    m.command(carol, call(&["bob"]));
    assert_eq!(
        m.log(carol)[1..],
        ["LINE_BUSY bob", "ON_CALL_CANCELED busy"]
    );
}

/// A busy invitee of a group call is told to everyone the call rings for,
/// not to the caller alone.
#[test]
fn a_busy_invitee_of_a_group_call_is_heard_by_the_others_too() {
    let mut m = Mesh::dev();
    let bob = m.online("bob", "b1");
    let alice = m.online("alice", "a1");
    let carol = m.online("carol", "c1");
    let dave = m.online("dave", "d1");
    let erin = m.online("erin", "e1");
    m.command(erin, call(&["dave"]));
    m.command(dave, accept());
    m.command(bob, call(&["alice", "dave", "carol"]));
    assert_eq!(m.log(bob), ["CALL_DIALING", "LINE_BUSY dave"]);
    for invitee in [alice, carol] {
        assert_eq!(
            m.log(invitee),
            ["ON_CALL_RECEIVED from bob", "LINE_BUSY dave"]
        );
    }
}

#[test]
fn a_device_that_logs_in_while_the_call_rings_receives_it() {
    let mut m = Mesh::dev();
    let bob = m.online("bob", "b1");
    m.command(bob, call(&["alice"]));
    assert_eq!(m.log(bob), ["CALL_DIALING"]);
    m.advance(10_000);
    let alice = m.add(termphone::ids::DEV_APP_ID, "terminal", "alice", "a1");
    m.login(alice);
    assert_eq!(m.log(alice)[3..], ["SDK_READY", RINGS, "SYNCED"]);
    m.advance(20_000);
    assert_eq!(m.log(alice), ["ON_CALL_CANCELED timeout"]);
    assert_eq!(m.log(bob), ["NO_RESP alice", "ON_CALL_CANCELED timeout"]);
}

#[test]
fn a_ringing_device_that_disconnects_leaves_the_others_ringing() {
    let (mut m, bob, a) = bob_and_three_alices();
    m.command(bob, call(&["alice"]));
    for d in a {
        m.take(d);
    }
    m.relay_up = false;
    m.cut(a[0]);
    m.take(a[0]);
    m.command(a[1], accept());
    assert_eq!(m.log(a[1]), ["ON_CALL_BEGIN"]);
    assert_eq!(m.log(a[2]), ["ON_CALL_CANCELED answered_elsewhere on a2"]);
}

/// The duration is of the call, not of its ringing: the caller's counts
/// from the answer as the callee's does, whoever hangs up.
#[test]
fn the_duration_counts_from_the_answer_for_the_caller_too() {
    for caller_hangs_up in [true, false] {
        let mut m = Mesh::dev();
        let bob = m.online("bob", "b1");
        let alice = m.online("alice", "a1");
        m.command(bob, call(&["alice"]));
        m.advance(20_000);
        m.command(alice, accept());
        m.take(bob);
        m.take(alice);
        m.advance(5_400);
        let (hangs_up, other) = match caller_hangs_up {
            true => (bob, alice),
            false => (alice, bob),
        };
        m.command(hangs_up, hangup());
        assert_eq!(m.log(hangs_up), ["CALLING_END 5s"]);
        assert_eq!(m.log(other).last().unwrap(), "CALLING_END 5s");
    }
}

#[test]
fn either_party_hangs_up_and_both_see_the_duration() {
    let mut m = Mesh::dev();
    let bob = m.online("bob", "b1");
    let alice = m.online("alice", "a1");
    m.command(bob, call(&["alice"]));
    m.command(alice, accept());
    m.take(bob);
    m.take(alice);
    m.advance(65_400);
    m.command(alice, hangup());
    assert_eq!(m.log(alice), ["CALLING_END 65s"]);
    assert_eq!(m.log(bob), ["USER_LEAVE alice", "CALLING_END 65s"]);
    // Both are free again.
    m.command(alice, call(&["bob"]));
    assert_eq!(m.log(bob), ["ON_CALL_RECEIVED from alice"]);
}

/// The message of the one event `events` holds, an `ERROR`.
fn error_message(events: &[Event]) -> &str {
    match events {
        [Event::Error { message, .. }] => message,
        other => panic!("not one ERROR: {other:?}"),
    }
}

/// Every invitation and hangup that cannot do anything is answered, and
/// says what to do instead: nothing stays silent.
#[test]
fn an_invitation_or_hangup_that_changes_nothing_is_answered() {
    let mut m = Mesh::dev();
    let alice = m.online("alice", "a1");
    let bob = m.online("bob", "b1");
    m.command(alice, call(&["bob"]));
    m.take(alice);
    m.take(bob);
    m.command(bob, hangup());
    let message = error_message(&m.take(bob)).to_owned();
    assert!(
        message.contains("accept") && message.contains("reject"),
        "{message}"
    );
    m.command(bob, accept());
    m.take(alice);
    m.take(bob);
    let invite = |users: &[&str]| {
        Command::Call(CallCommand::InviteUser {
            users: users.iter().map(|u| user(u)).collect(),
        })
    };
    m.command(alice, invite(&[]));
    assert_eq!(m.log(alice), ["ERROR 6017 inviteUser"]);
    m.command(alice, invite(&["alice"]));
    assert_eq!(m.log(alice), ["ERROR 6101 inviteUser"]);
    m.command(alice, invite(&["bob"]));
    let message = error_message(&m.take(alice)).to_owned();
    assert!(message.contains("bob already in the call"), "{message}");
    m.command(
        alice,
        Command::Call(CallCommand::Hangup {
            call_id: Some("nope".into()),
        }),
    );
    let message = error_message(&m.take(alice)).to_owned();
    assert_eq!(message, "this device is not in call \"nope\"");
    assert_eq!(m.log(bob), Vec::<String>::new(), "the call goes on");
}

#[test]
fn commands_that_make_no_sense_are_refused() {
    let mut m = Mesh::dev();
    let alice = m.online("alice", "a1");
    let bob = m.online("bob", "b1");
    m.command(alice, call(&["alice"]));
    assert_eq!(m.log(alice), ["ERROR 6101 call"]);
    m.command(alice, accept());
    assert_eq!(m.log(alice), ["ERROR 6103 accept"]);
    m.command(alice, hangup());
    assert_eq!(m.log(alice), ["ERROR 6103 hangup"]);
    m.command(alice, call(&["bob"]));
    m.take(alice);
    m.command(alice, call(&["carol"]));
    assert_eq!(m.log(alice), ["ERROR 6102 call"]);
    m.command(
        bob,
        Command::Call(CallCommand::Accept {
            call_id: Some("nope".into()),
            end_current: false,
        }),
    );
    assert_eq!(m.log(bob)[1..], ["ERROR 6103 accept"]);
}

#[test]
fn a_group_call_with_accept_reject_invite_and_leave() {
    let mut m = Mesh::dev();
    let alice = m.online("alice", "a1");
    let bob = m.online("bob", "b1");
    let carol = m.online("carol", "c1");
    let dave = m.online("dave", "d1");
    m.command(alice, call(&["bob", "carol"]));
    assert_eq!(m.log(alice), ["CALL_DIALING"]);
    match &m.take(bob)[..] {
        [
            Event::OnCallReceived {
                user_id_list,
                is_from_group: true,
                ..
            },
        ] => {
            assert_eq!(user_id_list, &["carol"], "the others invited with bob");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(m.log(carol), ["ON_CALL_RECEIVED from alice"]);

    m.command(bob, accept());
    assert_eq!(m.log(bob), ["ON_CALL_BEGIN"]);
    assert_eq!(
        m.log(alice),
        ["USER_ACCEPT bob", "USER_ENTER bob", "ON_CALL_BEGIN"]
    );
    assert_eq!(m.log(carol), ["USER_ACCEPT bob"]);

    m.command(carol, reject());
    assert_eq!(m.log(carol), ["ON_CALL_CANCELED declined"]);
    assert_eq!(m.log(alice), ["REJECT carol"]);
    assert_eq!(m.log(bob), ["REJECT carol"]);

    m.command(
        bob,
        Command::Call(CallCommand::InviteUser {
            users: vec![user("dave")],
        }),
    );
    assert_eq!(m.log(dave), ["ON_CALL_RECEIVED from alice"]);
    assert_eq!(m.log(alice), ["GROUP_CALL_INVITEE_LIST_UPDATE dave"]);
    assert_eq!(m.log(bob), ["GROUP_CALL_INVITEE_LIST_UPDATE dave"]);

    m.command(dave, accept());
    assert_eq!(m.log(dave), ["ON_CALL_BEGIN"]);
    assert_eq!(m.log(alice), ["USER_ACCEPT dave", "USER_ENTER dave"]);
    assert_eq!(m.log(bob), ["USER_ACCEPT dave", "USER_ENTER dave"]);

    m.advance(3_000);
    m.command(alice, hangup());
    assert_eq!(m.log(alice), ["CALLING_END 3s"]);
    assert_eq!(m.log(bob), ["USER_LEAVE alice"]);
    assert_eq!(m.log(dave), ["USER_LEAVE alice"]);

    // Fewer than two participants remain: the call ends for the last one.
    m.command(bob, hangup());
    assert_eq!(m.log(bob), ["CALLING_END 3s"]);
    assert_eq!(m.log(dave), ["USER_LEAVE bob", "CALLING_END 3s"]);
}

#[test]
fn a_group_invitee_that_does_not_answer_is_reported_to_everyone() {
    let mut m = Mesh::dev();
    let alice = m.online("alice", "a1");
    let bob = m.online("bob", "b1");
    let carol = m.online("carol", "c1");
    m.command(alice, call(&["bob", "carol"]));
    m.command(bob, accept());
    for d in [alice, bob, carol] {
        m.take(d);
    }
    m.advance(30_000);
    assert_eq!(m.log(carol), ["ON_CALL_CANCELED timeout"]);
    assert_eq!(m.log(alice), ["NO_RESP carol"]);
    assert_eq!(m.log(bob), ["NO_RESP carol"]);
}

#[test]
fn join_a_running_group_call_by_room() {
    let mut m = Mesh::dev();
    let alice = m.online("alice", "a1");
    let bob = m.online("bob", "b1");
    let erin = m.online("erin", "e1");
    m.command(alice, call(&["bob", "carol"]));
    let room = match &m.take(alice)[0] {
        Event::CallDialing {
            room_id,
            user_id_list,
            is_from_group,
            ..
        } => {
            assert_eq!(user_id_list, &["bob", "carol"]);
            assert!(is_from_group);
            *room_id
        }
        other => panic!("{other:?}"),
    };
    assert!(room >= 1);
    m.command(bob, accept());
    m.take(alice);
    m.take(bob);
    m.command(
        erin,
        Command::Call(CallCommand::JoinInGroupCall {
            room,
            role: Role::Anchor,
        }),
    );
    // Her history names who was in the call as she joined it.
    match &m.take(erin)[..] {
        [Event::OnCallBegin { record, .. }] => assert_eq!(record.peers, ["alice", "bob"]),
        other => panic!("{other:?}"),
    }
    assert_eq!(m.log(alice), ["USER_ENTER erin"]);
    assert_eq!(m.log(bob), ["USER_ENTER erin"]);
    // carol never answers: everyone in the call hears so, with the caller
    // named as its sponsor, erin too though the call never rang for her.
    m.advance(30_000);
    for device in [alice, bob, erin] {
        match &m.take(device)[..] {
            [Event::NoResp { sponsor, .. }] => assert_eq!(sponsor.as_str(), "alice"),
            other => panic!("{other:?}"),
        }
    }
    m.command(
        erin,
        Command::Call(CallCommand::JoinInGroupCall {
            room: room.wrapping_add(1).max(1),
            role: Role::Anchor,
        }),
    );
    assert_eq!(m.log(erin), ["ERROR 6102 joinInGroupCall"]);
    // The others' history has erin too, who took part without an invitation.
    for (device, others) in [
        (alice, &["bob", "carol", "erin"][..]),
        (bob, &["alice", "erin"]),
    ] {
        m.command(device, hangup());
        let ended = m.take(device).into_iter().find_map(|e| match e {
            Event::CallingEnd { record, .. } => Some(record.peers),
            _ => None,
        });
        let mut peers: Vec<String> = (ended.expect("CALLING_END").iter())
            .map(|u| u.to_string())
            .collect();
        peers.sort();
        assert_eq!(peers, others);
    }
}

#[test]
fn a_kicked_out_device_leaves_its_call() {
    let mut config = RelayConfig::default();
    config.apps[0].max_devices_per_platform = 1;
    let mut m = Mesh::new(&config);
    let bob = m.online("bob", "b1");
    let alice = m.online("alice", "a1");
    m.command(bob, call(&["alice"]));
    m.command(alice, accept());
    m.take(bob);
    m.take(alice);
    let _newer = m.online("alice", "a2");
    let log = m.log(alice);
    assert_eq!(log[0], "KICKED_OUT");
    assert!(log.contains(&"CALLING_END 0s".to_string()), "{log:?}");
    assert_eq!(m.log(bob), ["USER_LEAVE alice", "CALLING_END 0s"]);
}

#[test]
fn a_dropped_participant_has_90_seconds_to_come_back() {
    let mut m = Mesh::dev();
    let bob = m.online("bob", "b1");
    let alice = m.online("alice", "a1");
    m.command(bob, call(&["alice"]));
    m.command(alice, accept());
    m.take(bob);
    m.take(alice);
    // Back within the grace period: still in the call.
    m.cut(alice);
    m.advance(1_000);
    assert!(m.log(bob).is_empty());
    m.command(alice, hangup());
    assert_eq!(m.log(bob), ["USER_LEAVE alice", "CALLING_END 1s"]);

    // Gone for longer: removed after 90 s.
    m.command(bob, call(&["alice"]));
    m.command(alice, accept());
    m.take(bob);
    m.take(alice);
    m.relay_up = false;
    m.cut(alice);
    m.advance(89_000);
    assert!(m.log(bob).is_empty());
    m.advance(2_000);
    assert_eq!(m.log(bob), ["USER_LEAVE alice", "CALLING_END 90s"]);
}

#[test]
fn the_participant_limit_is_a_relay_setting() {
    let config = RelayConfig {
        max_call_participants: 3,
        ..RelayConfig::default()
    };
    let mut m = Mesh::new(&config);
    let alice = m.online("alice", "a1");
    m.command(alice, call(&["b", "c", "d"]));
    assert_eq!(m.log(alice), ["ERROR 6104 groupCall"]);
    m.command(alice, call(&["b", "c"]));
    assert_eq!(m.log(alice), ["CALL_DIALING"]);
}

#[test]
fn nine_participants_fit_by_default() {
    let mut m = Mesh::dev();
    let host = m.online("host", "h");
    let guests: Vec<usize> = (1..=8).map(|k| m.online(&format!("g{k}"), "d")).collect();
    let names: Vec<String> = (1..=8).map(|k| format!("g{k}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    m.command(host, call(&refs));
    for &g in &guests {
        m.command(g, accept());
        assert_eq!(m.log(g).last().unwrap(), "ON_CALL_BEGIN");
    }
    let log = m.log(host);
    assert_eq!(
        log.iter().filter(|l| l.starts_with("USER_ENTER")).count(),
        8
    );
}

#[test]
fn a_device_away_while_its_call_stops_hears_it_on_return() {
    let (mut m, bob, a) = bob_and_three_alices();
    m.command(bob, call(&["alice"]));
    for d in a {
        m.take(d);
    }
    m.relay_up = false;
    m.cut(a[0]);
    m.take(a[0]);
    m.command(a[1], accept());
    m.relay_up = true;
    m.advance(6_000);
    assert_eq!(
        m.log(a[0]),
        [
            "CONNECTION_CHANGED",
            "ON_CALL_CANCELED answered_elsewhere on a2",
            "SYNCED"
        ]
    );
}

#[test]
fn a_device_whose_session_expired_drops_its_calls() {
    let mut m = Mesh::dev();
    let bob = m.online("bob", "b1");
    let alice = m.online("alice", "a1");
    m.command(bob, call(&["alice"]));
    m.command(alice, accept());
    m.take(alice);
    m.take(bob);
    m.relay_up = false;
    m.cut(alice);
    m.advance(95_000);
    m.relay_up = true;
    m.advance(6_000);
    // alice's engine ends the call itself when it learns, at its first
    // retry after the relay is back (97.75 s), that its session is gone;
    // `connected` follows once the silent re-login has succeeded.
    assert_eq!(
        m.log(alice),
        [
            "CONNECTION_CHANGED",
            "ERROR 6200 -",
            "CALLING_END 97s",
            "CONNECTION_CHANGED",
            "SYNCED"
        ]
    );
    assert_eq!(m.log(bob), ["USER_LEAVE alice", "CALLING_END 90s"]);
}

#[test]
fn presence_shows_who_is_in_a_call() {
    let mut m = Mesh::dev();
    let watcher = m.online("carol", "c1");
    m.command(watcher, Command::GetUsers { subscribe: true });
    let bob = m.online("bob", "b1");
    let alice = m.online("alice", "a1");
    m.take(watcher);
    let in_call = |m: &mut Mesh| -> Vec<(String, bool)> {
        m.take(watcher)
            .into_iter()
            .filter_map(|e| match e {
                Event::UserStatusChanged { user } => Some((user.user.to_string(), user.in_call)),
                _ => None,
            })
            .collect()
    };
    m.command(bob, call(&["alice"]));
    assert_eq!(
        in_call(&mut m),
        [("bob".to_string(), true)],
        "the caller is in the call at once"
    );
    m.command(alice, accept());
    assert_eq!(in_call(&mut m), [("alice".to_string(), true)]);
    m.command(alice, hangup());
    let mut left = in_call(&mut m);
    left.sort();
    assert_eq!(
        left,
        [("alice".to_string(), false), ("bob".to_string(), false)]
    );
}

#[test]
fn media_follows_who_is_in_the_call_and_on_which_connection() {
    use termphone::protocol::MediaPeer;

    let mut m = Mesh::dev();
    let bob = m.online("bob", "b1");
    let alice = m.online("alice", "a1");
    m.command(bob, call(&["alice"]));
    assert!(m.nodes[bob].media.is_empty(), "no media while it rings");
    m.command(alice, accept());
    let call_id = m.last_call_id(bob);
    m.take(bob);
    let room = *m.media_rooms.keys().next().expect("a room");
    let conns = |m: &Mesh| {
        m.media_rooms[&room]
            .iter()
            .map(|(c, _)| *c)
            .collect::<Vec<_>>()
    };
    assert_eq!(conns(&m).len(), 2);
    let alice_conn = m.nodes[alice].conn.unwrap();
    assert_eq!(
        m.nodes[bob].media,
        [
            MediaCommand::Start {
                me: UserId::parse("bob").unwrap(),
                call_id,
                room
            },
            MediaCommand::Peers {
                room,
                peers: vec![MediaPeer {
                    source: alice_conn as u32,
                    user: UserId::parse("alice").unwrap()
                }]
            }
        ]
    );

    // alice mutes: bob hears of it, alice's media thread is told.
    m.command(alice, Command::Call(CallCommand::CloseMicrophone));
    assert_eq!(m.log(bob), ["USER_AUDIO_AVAILABLE alice false"]);
    assert_eq!(m.nodes[alice].media.last(), Some(&MediaCommand::Mute(true)));

    // bob asks for the call's figures: his media thread is asked, the
    // relay is not.
    m.command(bob, Command::Call(CallCommand::GetMediaStats));
    assert_eq!(m.nodes[bob].media.last(), Some(&MediaCommand::Stats));
    assert!(m.log(bob).is_empty());

    // alice's link drops and comes back: her new connection takes her place.
    m.cut(alice);
    m.advance(2_000);
    let new_conn = m.nodes[alice].conn.unwrap();
    assert_ne!(new_conn, alice_conn);
    assert!(conns(&m).contains(&new_conn) && !conns(&m).contains(&alice_conn));
    assert!(matches!(
        m.nodes[bob].media.last(),
        Some(MediaCommand::Peers { peers, .. }) if peers[0].source == new_conn as u32
    ));

    // The call ends: media stops on both sides and the room closes.
    m.command(bob, Command::Call(CallCommand::Hangup { call_id: None }));
    assert!(m.media_rooms.is_empty());
    assert_eq!(m.nodes[bob].media.last(), Some(&MediaCommand::Stop));
    assert_eq!(m.nodes[alice].media.last(), Some(&MediaCommand::Stop));

    // After the call there are no figures to ask for.
    m.command(bob, Command::Call(CallCommand::GetMediaStats));
    assert_eq!(m.log(bob), ["CALLING_END 2s", "ERROR 6103 getMediaStats"]);
}
