//! Roles in group calls (SPEC 8.3) on virtual time: an audience member
//! hears the anchors and sends nothing, does not count against the
//! participant limit but against its own, and `switchRole` moves a
//! participant between the two, which everyone in the call hears.

use termphone::client::engine::{CallCommand, Command, MediaCommand};
use termphone::client::event::Digit;
use termphone::config::RelayConfig;
use termphone::ids::UserId;
use termphone::protocol::Role;

use crate::common::mesh::Mesh;

fn user(u: &str) -> UserId {
    UserId::parse(u).unwrap()
}

fn accept() -> Command {
    Command::Call(CallCommand::Accept {
        call_id: None,
        end_current: false,
    })
}

fn join(room: u32, role: Role) -> Command {
    Command::Call(CallCommand::JoinInGroupCall { room, role })
}

fn switch(role: Role) -> Command {
    Command::Call(CallCommand::SwitchRole { role })
}

fn dtmf(keys: &str) -> Command {
    Command::Call(CallCommand::SendDtmf {
        digits: Digit::parse_all(keys).unwrap(),
    })
}

/// bob's group call with alice and carol, both in; the room's id.
fn group_call(m: &mut Mesh) -> (usize, usize, usize, u32) {
    let bob = m.online("bob", "b1");
    let alice = m.online("alice", "a1");
    let carol = m.online("carol", "c1");
    m.command(
        bob,
        Command::Call(CallCommand::place(
            vec![user("alice"), user("carol")],
            true,
            None,
        )),
    );
    m.command(alice, accept());
    m.command(carol, accept());
    let room = *m.media_rooms.keys().next().expect("a room");
    for d in [bob, alice, carol] {
        m.take(d);
    }
    (bob, alice, carol, room)
}

/// Who the relay lets speak in `room`: its members less its audience.
fn speakers(m: &Mesh, room: u32) -> Vec<String> {
    let audience = &m.media_audience[&room];
    let mut users: Vec<String> = (m.media_rooms[&room].iter())
        .filter(|(c, _)| !audience.contains(c))
        .map(|(_, u)| u.to_string())
        .collect();
    users.sort();
    users
}

#[test]
fn an_audience_member_hears_the_anchors_and_sends_nothing() {
    let mut m = Mesh::dev();
    m.with_media(0.0, 1);
    let (bob, alice, carol, room) = group_call(&mut m);
    let dave = m.online("dave", "d1");
    m.command(dave, join(room, Role::Audience));
    assert_eq!(m.log(dave), ["ON_CALL_BEGIN"]);
    for d in [bob, alice, carol] {
        assert_eq!(m.log(d), ["USER_ENTER dave (audience)"], "device {d}");
    }
    assert_eq!(m.media_rooms[&room].len(), 4, "dave hears the room");
    assert_eq!(speakers(&m, room), ["alice", "bob", "carol"]);
    // His engine tells his media to listen only: it sends no frame.
    assert!(m.nodes[dave].media.contains(&MediaCommand::Listen(true)));
    m.advance(1_000);
    let sent = &m.media.as_ref().unwrap().sent;
    assert_eq!(sent.get(&dave), None, "dave sent {sent:?}");
    assert!(sent[&bob] >= 50);
    // He hears an anchor's digits; he cannot send his own.
    m.command(bob, dtmf("7"));
    m.advance(500);
    assert_eq!(m.log(dave), ["DTMF_RECEIVED 7 from bob"]);
    m.command(dave, dtmf("1"));
    assert_eq!(m.log(dave), ["ERROR 6111 sendDTMF"]);
    // USER_ENTER's JSON names the role.
    let erin = m.online("erin", "e1");
    m.command(erin, join(room, Role::Anchor));
    let entered = serde_json::to_value(m.take(bob).pop().unwrap()).unwrap();
    assert_eq!(
        (&entered["event"], &entered["userID"], &entered["role"]),
        (
            &serde_json::json!("USER_ENTER"),
            &serde_json::json!("erin"),
            &serde_json::json!("anchor")
        )
    );
}

#[test]
fn switch_role_is_heard_by_everyone_and_moves_the_voice() {
    let mut m = Mesh::dev();
    m.with_media(0.0, 2);
    let (bob, alice, carol, room) = group_call(&mut m);
    let dave = m.online("dave", "d1");
    m.command(dave, join(room, Role::Audience));
    for d in [bob, alice, carol, dave] {
        m.take(d);
    }
    m.command(dave, switch(Role::Anchor));
    for d in [bob, alice, carol, dave] {
        assert_eq!(m.log(d), ["ROLE_CHANGED dave Anchor"], "device {d}");
    }
    assert_eq!(speakers(&m, room), ["alice", "bob", "carol", "dave"]);
    m.command(dave, dtmf("5"));
    m.advance(500);
    for d in [bob, alice, carol] {
        assert_eq!(m.log(d), ["DTMF_RECEIVED 5 from dave"], "device {d}");
    }
    // carol steps down: she still hears, nobody hears her.
    m.command(carol, switch(Role::Audience));
    for d in [bob, alice, carol, dave] {
        assert_eq!(m.log(d), ["ROLE_CHANGED carol Audience"], "device {d}");
    }
    assert_eq!(speakers(&m, room), ["alice", "bob", "dave"]);
    m.command(bob, dtmf("9"));
    m.advance(500);
    assert_eq!(m.log(carol), ["DTMF_RECEIVED 9 from bob"]);
    // The same role again changes nothing.
    m.command(carol, switch(Role::Audience));
    assert!(m.log(bob).is_empty() && m.log(carol).is_empty());
}

#[test]
fn the_audience_has_its_own_limit_and_anchors_theirs() {
    let config = RelayConfig {
        max_call_participants: 3,
        max_call_audience: 1,
        ..RelayConfig::default()
    };
    let mut m = Mesh::new(&config);
    let (_bob, _alice, carol, room) = group_call(&mut m);
    let dave = m.online("dave", "d1");
    let erin = m.online("erin", "e1");
    // Three anchors fill the call; the audience does not count.
    m.command(dave, join(room, Role::Anchor));
    assert_eq!(m.log(dave), ["ERROR 6104 joinInGroupCall"]);
    m.command(dave, join(room, Role::Audience));
    assert_eq!(m.log(dave), ["ON_CALL_BEGIN"]);
    m.command(erin, join(room, Role::Audience));
    assert_eq!(m.log(erin), ["ERROR 6104 joinInGroupCall"]);
    // No room on stage for dave, nor in the audience for carol.
    m.command(dave, switch(Role::Anchor));
    assert_eq!(m.log(dave), ["ERROR 6104 switchRole"]);
    m.command(carol, switch(Role::Audience));
    assert_eq!(
        m.log(carol),
        ["USER_ENTER dave (audience)", "ERROR 6104 switchRole"]
    );
}

#[test]
fn roles_are_for_group_calls_and_connected_ones() {
    let mut m = Mesh::dev();
    let bob = m.online("bob", "b1");
    let alice = m.online("alice", "a1");
    let carol = m.online("carol", "c1");
    m.command(bob, switch(Role::Audience));
    assert_eq!(m.log(bob), ["ERROR 6103 switchRole"]);
    m.command(
        bob,
        Command::Call(CallCommand::place(vec![user("alice")], false, None)),
    );
    m.command(alice, accept());
    let room = *m.media_rooms.keys().next().unwrap();
    m.take(bob);
    m.command(bob, switch(Role::Audience));
    assert_eq!(m.log(bob), ["ERROR 6105 switchRole"]);
    m.command(carol, join(room, Role::Audience));
    assert_eq!(m.log(carol), ["ERROR 6105 joinInGroupCall"]);
}

#[test]
fn an_audience_member_that_restarts_still_only_listens() {
    let mut m = Mesh::dev();
    let (bob, _alice, _carol, room) = group_call(&mut m);
    let dave = m.online("dave", "d1");
    m.command(dave, join(room, Role::Audience));
    m.take(bob);
    m.restart(dave);
    m.advance(1_000);
    let media = &m.nodes[dave].media;
    let start = (media.iter())
        .rposition(|c| matches!(c, MediaCommand::Start { .. }))
        .expect("media starts again");
    assert_eq!(media[start + 1], MediaCommand::Listen(true));
    assert_eq!(speakers(&m, room), ["alice", "bob", "carol"]);
    assert!(m.log(bob).is_empty(), "nothing changed for the others");
}
