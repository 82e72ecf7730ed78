//! DTMF (SPEC 8.2) on virtual time, through the media path: `sendDTMF`
//! goes out as RFC 4733 telephone events beside the voice, the relay's
//! routes carry them (losing some), and every other participant hears each
//! digit once and in order as `DTMF_RECEIVED`.

use termphone::client::engine::{CallCommand, Command};
use termphone::client::event::{Digit, Event};
use termphone::ids::UserId;

use crate::common::mesh::Mesh;

const DIGITS: &str = "1234567890*#";

fn user(u: &str) -> UserId {
    UserId::parse(u).unwrap()
}

fn dtmf(keys: &str) -> Command {
    Command::Call(CallCommand::SendDtmf {
        digits: Digit::parse_all(keys).unwrap(),
    })
}

fn accept() -> Command {
    Command::Call(CallCommand::Accept {
        call_id: None,
        end_current: false,
    })
}

/// bob calls alice over a network that loses `loss_percent` of the media;
/// she answers, and the media runs for a moment. Also gives the callId.
fn connected(loss_percent: f64, seed: u64) -> (Mesh, usize, usize, String) {
    let mut m = Mesh::dev();
    m.with_media(loss_percent, seed);
    let bob = m.online("bob", "b1");
    let alice = m.online("alice", "a1");
    m.command(
        bob,
        Command::Call(CallCommand::place(vec![user("alice")], false, None)),
    );
    m.command(alice, accept());
    m.advance(100);
    let call_id = m.last_call_id(alice);
    m.take(bob);
    m.take(alice);
    (m, bob, alice, call_id)
}

/// The digits device `i` heard since last asked, as one string, checking
/// each event's sender and call.
fn digits_heard(m: &mut Mesh, i: usize, from: &str, call_id: &str) -> String {
    m.take(i)
        .into_iter()
        .filter_map(|e| match e {
            Event::DtmfReceived {
                call_id: c,
                user_id,
                digit,
            } => {
                assert_eq!((c.as_str(), user_id.as_str()), (call_id, from));
                Some(digit.key())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn digits_arrive_once_each_and_in_order() {
    let (mut m, bob, alice, call_id) = connected(0.0, 1);
    m.command(bob, dtmf(DIGITS));
    m.advance(3_000);
    assert_eq!(digits_heard(&mut m, alice, "bob", &call_id), DIGITS);
    assert!(m.log(bob).is_empty(), "the sender hears no DTMF_RECEIVED");
    // Both ways, and A-D too.
    m.command(alice, dtmf("ABCD"));
    m.advance(1_000);
    assert_eq!(digits_heard(&mut m, bob, "alice", &call_id), "ABCD");
}

#[test]
fn digits_survive_ten_percent_loss_once_each_and_in_order() {
    let mut lost = 0;
    for seed in 0..12 {
        let (mut m, bob, alice, call_id) = connected(10.0, seed);
        m.command(bob, dtmf(DIGITS));
        m.advance(3_000);
        assert_eq!(
            digits_heard(&mut m, alice, "bob", &call_id),
            DIGITS,
            "seed {seed}"
        );
        lost += m.media.as_ref().unwrap().lost;
    }
    assert!(lost > 100, "the network did lose frames: {lost}");
}

#[test]
fn digits_sent_in_several_commands_queue_up_in_order() {
    let (mut m, bob, alice, call_id) = connected(10.0, 99);
    for keys in ["12", "3", "45#"] {
        m.command(bob, dtmf(keys));
    }
    m.advance(2_000);
    assert_eq!(digits_heard(&mut m, alice, "bob", &call_id), "12345#");
}

#[test]
fn in_a_group_call_every_other_participant_hears_the_digits() {
    let mut m = Mesh::dev();
    m.with_media(0.0, 3);
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
    m.advance(100);
    let call_id = m.last_call_id(carol);
    for d in [bob, alice, carol] {
        m.take(d);
    }
    m.command(carol, dtmf("42"));
    m.advance(1_000);
    assert_eq!(digits_heard(&mut m, bob, "carol", &call_id), "42");
    assert_eq!(digits_heard(&mut m, alice, "carol", &call_id), "42");
    assert!(m.log(carol).is_empty());
}

#[test]
fn send_dtmf_needs_a_connected_call_this_device_does_not_hold() {
    let mut m = Mesh::dev();
    m.with_media(0.0, 4);
    let bob = m.online("bob", "b1");
    let alice = m.online("alice", "a1");
    m.command(bob, dtmf("1"));
    assert_eq!(m.log(bob), ["ERROR 6103 sendDTMF"]);
    m.command(
        bob,
        Command::Call(CallCommand::place(vec![user("alice")], false, None)),
    );
    m.command(bob, dtmf("1"));
    assert_eq!(m.log(bob), ["CALL_DIALING", "ERROR 6107 sendDTMF"]);
    m.command(alice, accept());
    m.command(bob, Command::Call(CallCommand::Hold { call_id: None }));
    m.take(bob);
    m.take(alice);
    m.command(bob, dtmf("1"));
    assert_eq!(m.log(bob), ["ERROR 6107 sendDTMF"]);
    // alice holds, not bob: his digits go out, and reach nobody while
    // the relay routes none of his media.
    m.command(bob, Command::Call(CallCommand::Unhold { call_id: None }));
    m.command(alice, Command::Call(CallCommand::Hold { call_id: None }));
    m.take(bob);
    m.take(alice);
    m.command(bob, dtmf("1"));
    m.advance(1_000);
    assert!(m.log(bob).is_empty());
    assert!(m.log(alice).is_empty(), "a held call is never heard");
}

/// A hold while digits are still going out stops them: the others hear
/// those sent before it, and the sender is told which never went out,
/// rather than the relay dropping them unheard.
#[test]
fn a_hold_stops_the_digits_still_to_go_out_and_names_them() {
    let (mut m, bob, alice, call_id) = connected(0.0, 6);
    m.command(bob, dtmf("0123456789"));
    m.advance(500);
    m.command(bob, Command::Call(CallCommand::Hold { call_id: None }));
    m.advance(2_000);
    let heard = digits_heard(&mut m, alice, "bob", &call_id);
    assert!(!heard.is_empty() && heard.len() < 10, "{heard}");
    let refused: Vec<String> = m
        .take(bob)
        .into_iter()
        .filter_map(|e| match e {
            Event::Error {
                code: 6107,
                message,
                ..
            } => Some(message),
            _ => None,
        })
        .collect();
    let unsent = &"0123456789"[heard.len()..];
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].contains(&format!("before {unsent} went out")),
        "{refused:?}"
    );
}

#[test]
fn a_flood_of_digits_is_refused_past_the_queue() {
    let (mut m, bob, _alice, _) = connected(0.0, 5);
    for _ in 0..4 {
        m.command(bob, dtmf(&"1".repeat(32)));
    }
    assert!(m.log(bob).is_empty());
    m.command(bob, dtmf("2"));
    assert_eq!(m.log(bob), ["ERROR 90010 sendDTMF"]);
}
