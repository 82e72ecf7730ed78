//! SPEC section 8.2 end to end: a real relay on 127.0.0.1:0 and every
//! device a `termphone headless` process. `userData`, auto-answer (flag and
//! command), hold with the voice it cuts, and blind transfer.

use serde_json::{Value, json};

use crate::common::headless::{Headless, volume_of};
use crate::common::net::{relay_at, test_config};

struct World {
    dir: tempfile::TempDir,
    relay: termphone::relay::RelayHandle,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
        World { dir, relay }
    }

    /// A logged-in device of `user`, with extra flags.
    async fn device(&self, user: &str, device: &str, extra: &[&str]) -> Headless {
        let url = self.relay.url();
        let mut args = vec!["--relay", &url, "--user", user, "--device", device];
        args.extend_from_slice(extra);
        let mut h = Headless::spawn(self.dir.path(), &args);
        h.expect("SDK_READY").await;
        h
    }
}

/// bob calls alice and she answers.
async fn connect(bob: &mut Headless, alice: &mut Headless) -> Value {
    bob.send(json!({"cmd": "call", "userID": "alice"})).await;
    alice.expect("ON_CALL_RECEIVED").await;
    alice.send(json!({"cmd": "accept"})).await;
    alice.expect("ON_CALL_BEGIN").await;
    bob.expect("ON_CALL_BEGIN").await
}

#[tokio::test]
async fn user_data_reaches_the_callee_and_over_one_kib_is_refused() {
    let w = World::new().await;
    let mut bob = w.device("bob", "b1", &[]).await;
    let mut alice = w.device("alice", "a1", &[]).await;
    bob.send(json!({"cmd": "call", "userID": "alice", "userData": "order 7 ✓"}))
        .await;
    bob.expect("CALL_DIALING").await;
    let rang = alice.expect("ON_CALL_RECEIVED").await;
    assert_eq!(rang["userData"], "order 7 ✓", "{rang}");
    assert!(rang.get("transferredBy").is_none(), "{rang}");
    bob.send(json!({"cmd": "hangup"})).await;
    alice.expect("ON_CALL_CANCELED").await;
    bob.expect("ON_CALL_CANCELED").await;

    bob.send(json!({"cmd": "call", "userID": "alice", "userData": "x".repeat(1025)}))
        .await;
    let e = bob.expect("ERROR").await;
    assert_eq!(
        (&e["code"], &e["cmd"]),
        (&json!(6106), &json!("call")),
        "{e}"
    );
    assert!(e["message"].as_str().unwrap().contains("1024"), "{e}");

    bob.send(json!({"cmd": "groupCall", "userIDList": ["alice"]}))
        .await;
    let rang = alice.expect("ON_CALL_RECEIVED").await;
    assert!(
        rang.get("userData").is_none(),
        "absent when not given: {rang}"
    );
}

#[tokio::test]
async fn the_auto_answer_flag_answers_after_its_delay_and_first_answer_wins() {
    let w = World::new().await;
    let mut bob = w.device("bob", "b1", &[]).await;
    let mut a1 = w
        .device("alice", "a1", &["--multi-device", "--auto-answer=300"])
        .await;
    let mut a2 = w.device("alice", "a2", &["--multi-device"]).await;
    bob.send(json!({"cmd": "call", "userID": "alice"})).await;
    a1.expect("ON_CALL_RECEIVED").await;
    a2.expect("ON_CALL_RECEIVED").await;
    // Nobody sends accept: a1's engine does, after 300 ms.
    assert_eq!(a1.expect("ON_CALL_BEGIN").await["callRole"], "called");
    let stopped = a2.expect("ON_CALL_CANCELED").await;
    assert_eq!(
        (&stopped["reason"], &stopped["deviceID"]),
        (&json!("answered_elsewhere"), &json!("a1")),
        "{stopped}"
    );
    assert_eq!(bob.expect("USER_ACCEPT").await["userID"], "alice");
    bob.expect("ON_CALL_BEGIN").await;
}

#[tokio::test]
async fn set_auto_answer_answers_at_once_and_turns_off() {
    let w = World::new().await;
    let mut bob = w.device("bob", "b1", &[]).await;
    let mut alice = w.device("alice", "a1", &[]).await;
    alice
        .send(json!({"cmd": "setAutoAnswer", "enable": true}))
        .await;
    bob.send(json!({"cmd": "call", "userID": "alice"})).await;
    alice.expect("ON_CALL_RECEIVED").await;
    alice.expect("ON_CALL_BEGIN").await;
    bob.expect("ON_CALL_BEGIN").await;
    bob.send(json!({"cmd": "hangup"})).await;
    alice.expect("CALLING_END").await;
    alice
        .send(json!({"cmd": "setAutoAnswer", "enable": false, "delayMs": 0}))
        .await;
    // Commands reach the engine in order: once USERS is back, auto-answer
    // is off there (bob's next call could otherwise overtake the command).
    alice.send(json!({"cmd": "getUsers"})).await;
    alice.expect("USERS").await;
    bob.send(json!({"cmd": "call", "userID": "alice", "timeout": 1}))
        .await;
    alice.expect("ON_CALL_RECEIVED").await;
    assert_eq!(alice.expect("ON_CALL_CANCELED").await["reason"], "timeout");
    assert_eq!(bob.expect("NO_RESP").await["userIDList"], json!(["alice"]));
}

#[tokio::test]
async fn hold_cuts_the_voice_both_ways_and_unhold_brings_it_back() {
    let _turn = crate::common::REAL_TIME.lock().await;
    let w = World::new().await;
    let mut bob = w.device("bob", "b1", &["--audio-in", "tone:660"]).await;
    // alice's other device, not in the call, hears her holds too.
    let mut a2 = w.device("alice", "a2", &[]).await;
    let mut alice = w.device("alice", "a1", &["--audio-in", "tone:440"]).await;
    connect(&mut bob, &mut alice).await;
    volume_of(&mut bob, "alice", |l| l > 60).await;
    volume_of(&mut alice, "bob", |l| l > 60).await;

    alice.send(json!({"cmd": "hold"})).await;
    for d in [&mut alice, &mut bob, &mut a2] {
        let held = d.expect("CALL_HOLD_CHANGED").await;
        assert_eq!(
            (&held["userID"], &held["onHold"]),
            (&json!("alice"), &json!(true)),
            "{held}"
        );
        assert!(held["callId"].is_string(), "{held}");
    }
    // Neither hears the other any more.
    volume_of(&mut bob, "alice", |l| l == 0).await;
    volume_of(&mut alice, "bob", |l| l == 0).await;

    alice.send(json!({"cmd": "unhold"})).await;
    for d in [&mut alice, &mut bob, &mut a2] {
        assert_eq!(d.expect("CALL_HOLD_CHANGED").await["onHold"], false);
    }
    volume_of(&mut bob, "alice", |l| l > 60).await;
    volume_of(&mut alice, "bob", |l| l > 60).await;
    bob.send(json!({"cmd": "hangup"})).await;
    alice.expect("CALLING_END").await;
}

#[tokio::test]
async fn hold_outside_a_connected_call_is_refused() {
    let w = World::new().await;
    let mut bob = w.device("bob", "b1", &[]).await;
    let _alice = w.device("alice", "a1", &[]).await;
    bob.send(json!({"cmd": "hold"})).await;
    let e = bob.expect("ERROR").await;
    assert_eq!(
        (&e["code"], &e["cmd"]),
        (&json!(6103), &json!("hold")),
        "{e}"
    );
    bob.send(json!({"cmd": "call", "userID": "alice"})).await;
    bob.expect("CALL_DIALING").await;
    bob.send(json!({"cmd": "unhold"})).await;
    let e = bob.expect("ERROR").await;
    assert_eq!(
        (&e["code"], &e["cmd"]),
        (&json!(6107), &json!("unhold")),
        "{e}"
    );
}

#[tokio::test]
async fn a_blind_transfer_connects_the_other_party_with_the_target() {
    let w = World::new().await;
    let mut bob = w.device("bob", "b1", &[]).await;
    let mut alice = w.device("alice", "a1", &[]).await;
    let mut carol = w.device("carol", "c1", &[]).await;
    let begun = connect(&mut bob, &mut alice).await;
    let call_id = begun["callId"].clone();

    alice
        .send(json!({"cmd": "transferCall", "userID": "carol"}))
        .await;
    assert_eq!(alice.expect("CALLING_END").await["callId"], call_id);
    let moved = bob.expect("CALL_TRANSFERRED").await;
    assert_eq!(
        (&moved["callId"], &moved["by"], &moved["to"]),
        (&call_id, &json!("alice"), &json!("carol")),
        "{moved}"
    );
    assert_eq!(bob.expect("USER_LEAVE").await["userID"], "alice");
    let rang = carol.expect("ON_CALL_RECEIVED").await;
    assert_eq!(
        (&rang["callId"], &rang["sponsor"], &rang["transferredBy"]),
        (&call_id, &json!("bob"), &json!("alice")),
        "{rang}"
    );
    carol.send(json!({"cmd": "accept"})).await;
    carol.expect("ON_CALL_BEGIN").await;
    assert_eq!(bob.expect("USER_ACCEPT").await["userID"], "carol");
    assert_eq!(bob.expect("ON_CALL_BEGIN").await["callId"], call_id);
    carol.send(json!({"cmd": "hangup"})).await;
    bob.expect("CALLING_END").await;
}

#[tokio::test]
async fn a_declined_transfer_ends_the_call_and_bad_targets_are_refused() {
    let w = World::new().await;
    let mut bob = w.device("bob", "b1", &[]).await;
    let mut alice = w.device("alice", "a1", &[]).await;
    let mut carol = w.device("carol", "c1", &[]).await;
    connect(&mut bob, &mut alice).await;
    for (target, code) in [("alice", 6109), ("bob", 6109)] {
        alice
            .send(json!({"cmd": "transferCall", "userID": target}))
            .await;
        let e = alice.expect("ERROR").await;
        assert_eq!(
            (&e["code"], &e["cmd"]),
            (&json!(code), &json!("transferCall")),
            "{e}"
        );
    }
    alice
        .send(json!({"cmd": "transferCall", "userID": "carol"}))
        .await;
    alice.expect("CALLING_END").await;
    carol.expect("ON_CALL_RECEIVED").await;
    carol.send(json!({"cmd": "reject"})).await;
    assert_eq!(carol.expect("ON_CALL_CANCELED").await["reason"], "declined");
    // bob's call's figures come once, after its end, as for any call.
    let mut seen = Vec::new();
    loop {
        let e = bob.next().await.unwrap();
        let name = e["event"].as_str().unwrap().to_owned();
        if name == "REJECT" {
            assert_eq!(e["userID"], "carol");
        }
        if name != "USER_VOICE_VOLUME" {
            seen.push(name.clone());
        }
        if name == "MEDIA_STATS" {
            break;
        }
    }
    let end = seen.iter().position(|n| n == "CALLING_END");
    assert_eq!(end, Some(seen.len() - 2), "{seen:?}");
    assert!(seen.contains(&"REJECT".to_owned()), "{seen:?}");
}

#[tokio::test]
async fn call_waiting_holds_the_first_call_and_unhold_swaps_back() {
    let w = World::new().await;
    let mut bob = w.device("bob", "b1", &[]).await;
    let mut carol = w.device("carol", "c1", &[]).await;
    let mut alice = w.device("alice", "a1", &["--call-waiting"]).await;
    let first = connect(&mut bob, &mut alice).await["callId"].clone();

    carol.send(json!({"cmd": "call", "userID": "alice"})).await;
    let second = carol.expect("CALL_DIALING").await["callId"].clone();
    let rang = alice.expect("ON_CALL_RECEIVED").await;
    assert_eq!(
        (&rang["callId"], &rang["sponsor"], &rang["waiting"]),
        (&second, &json!("carol"), &json!(true)),
        "{rang}"
    );
    alice.send(json!({"cmd": "accept", "callId": second})).await;
    for d in [&mut alice, &mut bob] {
        let held = d.expect("CALL_HOLD_CHANGED").await;
        assert_eq!(
            (&held["callId"], &held["userID"], &held["onHold"]),
            (&first, &json!("alice"), &json!(true)),
            "{held}"
        );
    }
    assert_eq!(alice.expect("ON_CALL_BEGIN").await["callId"], second);
    assert_eq!(carol.expect("USER_ACCEPT").await["userID"], "alice");
    carol.expect("ON_CALL_BEGIN").await;

    alice.send(json!({"cmd": "unhold", "callId": first})).await;
    let held = carol.expect("CALL_HOLD_CHANGED").await;
    assert_eq!((&held["callId"], &held["onHold"]), (&second, &json!(true)));
    let back = bob.expect("CALL_HOLD_CHANGED").await;
    assert_eq!((&back["callId"], &back["onHold"]), (&first, &json!(false)));

    // Ending carol's call with endCurrent-free hangup by id; bob stays.
    alice.send(json!({"cmd": "hangup", "callId": second})).await;
    assert_eq!(carol.expect("CALLING_END").await["callId"], second);
    alice.send(json!({"cmd": "hangup"})).await;
    assert_eq!(bob.expect("CALLING_END").await["callId"], first);
}

#[tokio::test]
async fn accept_end_current_hangs_up_and_without_call_waiting_it_is_busy() {
    let w = World::new().await;
    let mut bob = w.device("bob", "b1", &[]).await;
    let mut carol = w.device("carol", "c1", &[]).await;
    let mut alice = w.device("alice", "a1", &[]).await;
    connect(&mut bob, &mut alice).await;
    carol.send(json!({"cmd": "call", "userID": "alice"})).await;
    assert_eq!(carol.expect("LINE_BUSY").await["userID"], "alice");
    carol.expect("ON_CALL_CANCELED").await;

    alice
        .send(json!({"cmd": "enableCallWaiting", "enable": true}))
        .await;
    // Commands reach the engine, and the relay, in order.
    alice.send(json!({"cmd": "getUsers"})).await;
    alice.expect("USERS").await;
    carol.send(json!({"cmd": "call", "userID": "alice"})).await;
    assert_eq!(alice.expect("ON_CALL_RECEIVED").await["waiting"], true);
    alice
        .send(json!({"cmd": "accept", "endCurrent": true}))
        .await;
    alice.expect("CALLING_END").await;
    bob.expect("CALLING_END").await;
    alice.expect("ON_CALL_BEGIN").await;
    carol.expect("ON_CALL_BEGIN").await;
}
