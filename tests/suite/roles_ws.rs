//! Roles in group calls (SPEC 8.3) end to end: headless processes on a
//! real relay. An audience member hears the anchors' voice and its own
//! tone reaches nobody, until `switchRole` makes it an anchor.

use serde_json::{Value, json};

use crate::common::headless::Headless;
use crate::common::net::{relay_at, test_config};

/// `user`'s level in the next USER_VOICE_VOLUME `device` prints (absent: None).
async fn level_of(device: &mut Headless, user: &str) -> Option<u64> {
    let v = device.expect("USER_VOICE_VOLUME").await;
    (v["volumeMap"].as_array().unwrap().iter())
        .find(|e| e["userID"] == user)
        .and_then(|e| e["volume"].as_u64())
}

/// Waits until `device` hears `user` louder than 60.
async fn hears(device: &mut Headless, user: &str) {
    while level_of(device, user).await.is_none_or(|l| l <= 60) {}
}

#[tokio::test]
async fn the_audience_hears_the_anchors_and_speaks_after_switch_role() {
    let _turn = crate::common::REAL_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let url = relay.url();
    let spawn = |user: &str, tone: &str| {
        Headless::spawn(
            dir.path(),
            &["--relay", &url, "--user", user, "--audio-in", tone],
        )
    };
    let mut bob = spawn("bob", "tone:440");
    let mut alice = spawn("alice", "tone:660");
    let mut dave = spawn("dave", "tone:880");
    for d in [&mut bob, &mut alice, &mut dave] {
        d.expect("SDK_READY").await;
    }
    bob.send(json!({"cmd": "groupCall", "userIDList": ["alice"]}))
        .await;
    let room = bob.expect("CALL_DIALING").await["roomID"].clone();
    alice.expect("ON_CALL_RECEIVED").await;
    alice.send(json!({"cmd": "accept"})).await;
    let call_id = alice.expect("ON_CALL_BEGIN").await["callId"].clone();
    bob.expect("ON_CALL_BEGIN").await;

    dave.send(json!({"cmd": "joinInGroupCall", "roomID": room, "role": "audience"}))
        .await;
    assert_eq!(dave.expect("ON_CALL_BEGIN").await["callId"], call_id);
    for d in [&mut bob, &mut alice] {
        let entered = d.expect("USER_ENTER").await;
        assert_eq!(
            (&entered["callId"], &entered["userID"], &entered["role"]),
            (&call_id, &json!("dave"), &json!("audience")),
            "{entered}"
        );
    }
    // dave hears both anchors; neither hears him: he is nobody's peer.
    hears(&mut dave, "bob").await;
    hears(&mut dave, "alice").await;
    hears(&mut bob, "alice").await;
    for _ in 0..10 {
        assert_eq!(level_of(&mut bob, "dave").await, None);
    }
    dave.send(json!({"cmd": "sendDTMF", "digits": "1"})).await;
    assert_eq!(dave.expect("ERROR").await["code"], 6111);

    dave.send(json!({"cmd": "switchRole", "role": "anchor"}))
        .await;
    for d in [&mut bob, &mut alice, &mut dave] {
        let changed: Value = d.expect("ROLE_CHANGED").await;
        assert_eq!(
            (&changed["callId"], &changed["userID"], &changed["role"]),
            (&call_id, &json!("dave"), &json!("anchor")),
            "{changed}"
        );
    }
    hears(&mut bob, "dave").await;
    hears(&mut alice, "dave").await;
    bob.send(json!({"cmd": "hangup"})).await;
    bob.expect("CALLING_END").await;
    // Two participants remain: the call goes on between alice and dave.
    assert_eq!(alice.expect("USER_LEAVE").await["userID"], "bob");
    hears(&mut alice, "dave").await;
}

#[tokio::test]
async fn switch_role_outside_a_group_call_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let url = relay.url();
    let mut bob = Headless::spawn(dir.path(), &["--relay", &url, "--user", "bob"]);
    let mut alice = Headless::spawn(dir.path(), &["--relay", &url, "--user", "alice"]);
    bob.expect("SDK_READY").await;
    alice.expect("SDK_READY").await;
    bob.send(json!({"cmd": "switchRole", "role": "audience"}))
        .await;
    let e = bob.expect("ERROR").await;
    assert_eq!(
        (&e["code"], &e["cmd"]),
        (&json!(6103), &json!("switchRole"))
    );
    bob.send(json!({"cmd": "call", "userID": "alice"})).await;
    let room = bob.expect("CALL_DIALING").await["roomID"].clone();
    alice.expect("ON_CALL_RECEIVED").await;
    alice.send(json!({"cmd": "accept"})).await;
    bob.expect("ON_CALL_BEGIN").await;
    bob.send(json!({"cmd": "switchRole", "role": "audience"}))
        .await;
    assert_eq!(bob.expect("ERROR").await["code"], 6105);
    let mut carol = Headless::spawn(dir.path(), &["--relay", &url, "--user", "carol"]);
    carol.expect("SDK_READY").await;
    carol
        .send(json!({"cmd": "joinInGroupCall", "roomID": room, "role": "audience"}))
        .await;
    assert_eq!(carol.expect("ERROR").await["code"], 6105);
    carol
        .send(json!({"cmd": "joinInGroupCall", "roomID": room, "role": "listener"}))
        .await;
    assert_eq!(carol.expect("ERROR").await["code"], 6017);
}
