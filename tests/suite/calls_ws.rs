//! The main call flows end to end: a real relay on 127.0.0.1:0 and every
//! device a `termphone headless` process.

use serde_json::{Value, json};

use crate::common::headless::Headless;
use crate::common::net::{relay_at, test_config};

struct World {
    _dir: tempfile::TempDir,
    relay: termphone::relay::RelayHandle,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
        World { _dir: dir, relay }
    }

    /// A logged-in device (with multi-device ability when `multi`).
    async fn device(&self, user: &str, device: &str, multi: bool) -> Headless {
        let url = self.relay.url();
        let mut args = vec!["--relay", &url, "--user", user, "--device", device];
        if multi {
            args.push("--multi-device");
        }
        let mut h = Headless::spawn(self._dir.path(), &args);
        h.expect("SDK_READY").await;
        h
    }
}

async fn reason(h: &mut Headless) -> String {
    let e = h.expect("ON_CALL_CANCELED").await;
    e["reason"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_device_rings_one_answers_the_others_stop() {
    let w = World::new().await;
    let mut bob = w.device("bob", "b1", false).await;
    let mut a1 = w.device("alice", "a1", true).await;
    let mut a2 = w.device("alice", "a2", true).await;
    let mut a3 = w.device("alice", "a3", true).await;
    bob.send(json!({"cmd": "call", "userID": "alice"})).await;
    let dialing = bob.expect("CALL_DIALING").await;
    for a in [&mut a1, &mut a2, &mut a3] {
        let rang: Value = a.expect("ON_CALL_RECEIVED").await;
        assert_eq!(rang["callId"], dialing["callId"]);
        assert_eq!(rang["roomID"], dialing["roomID"]);
        assert_eq!(
            (rang["sponsor"].clone(), rang["callRole"].clone()),
            (json!("bob"), json!("called"))
        );
        assert_eq!(rang["isFromGroup"], false);
        assert_eq!(rang["callMediaType"], 1);
    }
    a2.send(json!({"cmd": "accept"})).await;
    assert_eq!(a2.expect("ON_CALL_BEGIN").await["callRole"], "called");
    // The others name the device that answered, and keep it in their history.
    for a in [&mut a1, &mut a3] {
        let stopped = a.expect("ON_CALL_CANCELED").await;
        assert_eq!(
            (
                &stopped["reason"],
                &stopped["deviceID"],
                &stopped["platform"]
            ),
            (
                &json!("answered_elsewhere"),
                &json!("a2"),
                &json!("terminal")
            ),
            "{stopped}"
        );
    }
    a3.send(json!({"cmd": "getCallHistory"})).await;
    let history = a3.expect("CALL_HISTORY").await;
    assert_eq!(
        (
            &history["calls"][0]["outcome"],
            &history["calls"][0]["deviceID"]
        ),
        (&json!("answered_elsewhere"), &json!("a2")),
        "{history}"
    );
    assert_eq!(bob.expect("USER_ACCEPT").await["userID"], "alice");
    assert_eq!(bob.expect("ON_CALL_BEGIN").await["callRole"], "caller");

    bob.send(json!({"cmd": "hangup"})).await;
    assert!(bob.expect("CALLING_END").await["totalTime"].is_u64());
    assert_eq!(a2.expect("USER_LEAVE").await["userID"], "bob");
    a2.expect("CALLING_END").await;
}

#[tokio::test]
async fn only_the_latest_login_rings_without_multi_device() {
    let w = World::new().await;
    let mut bob = w.device("bob", "b1", false).await;
    let mut old = w.device("alice", "a1", false).await;
    let mut new = w.device("alice", "a2", false).await;
    bob.send(json!({"cmd": "call", "userID": "alice", "timeout": 1}))
        .await;
    new.expect("ON_CALL_RECEIVED").await;
    assert_eq!(reason(&mut new).await, "timeout");
    // The older device saw no ring at all before the timeout ended the call.
    old.send(json!({"cmd": "wait", "event": "ON_CALL_RECEIVED", "timeout_ms": 50}))
        .await;
    assert_eq!(old.expect("ERROR").await["code"], 6012);
    let no_resp = bob.expect("NO_RESP").await;
    assert_eq!(no_resp["userIDList"], json!(["alice"]));
    assert_eq!(reason(&mut bob).await, "timeout");
}

#[tokio::test]
async fn a_decline_stops_every_device_and_tells_the_caller() {
    let w = World::new().await;
    let mut bob = w.device("bob", "b1", false).await;
    let mut a1 = w.device("alice", "a1", true).await;
    let mut a2 = w.device("alice", "a2", true).await;
    bob.send(json!({"cmd": "call", "userID": "alice"})).await;
    a1.expect("ON_CALL_RECEIVED").await;
    a2.expect("ON_CALL_RECEIVED").await;
    a1.send(json!({"cmd": "reject"})).await;
    let declined = a1.expect("ON_CALL_CANCELED").await;
    assert_eq!(declined["reason"], "declined");
    assert!(declined.get("deviceID").is_none(), "{declined}");
    let elsewhere = a2.expect("ON_CALL_CANCELED").await;
    assert_eq!(
        (&elsewhere["reason"], &elsewhere["deviceID"]),
        (&json!("declined_elsewhere"), &json!("a1"))
    );
    assert_eq!(bob.expect("REJECT").await["userID"], "alice");
    assert_eq!(reason(&mut bob).await, "declined");
}

#[tokio::test]
async fn cancel_and_busy() {
    let w = World::new().await;
    let mut bob = w.device("bob", "b1", false).await;
    let mut alice = w.device("alice", "a1", false).await;
    let mut carol = w.device("carol", "c1", false).await;

    bob.send(json!({"cmd": "call", "userID": "alice"})).await;
    alice.expect("ON_CALL_RECEIVED").await;
    bob.send(json!({"cmd": "hangup"})).await;
    assert_eq!(reason(&mut bob).await, "caller_canceled");
    assert_eq!(reason(&mut alice).await, "caller_canceled");

    bob.send(json!({"cmd": "call", "userID": "alice"})).await;
    alice.expect("ON_CALL_RECEIVED").await;
    alice.send(json!({"cmd": "accept"})).await;
    alice.expect("ON_CALL_BEGIN").await;
    carol.send(json!({"cmd": "call", "userID": "alice"})).await;
    assert_eq!(carol.expect("LINE_BUSY").await["userID"], "alice");
    assert_eq!(reason(&mut carol).await, "busy");

    carol.send(json!({"cmd": "call", "userID": "carol"})).await;
    let e = carol.expect("ERROR").await;
    assert_eq!(
        (e["code"].clone(), e["cmd"].clone()),
        (json!(6101), json!("call"))
    );
}

#[tokio::test]
async fn a_group_call_over_the_wire() {
    let w = World::new().await;
    let mut alice = w.device("alice", "a1", false).await;
    let mut bob = w.device("bob", "b1", false).await;
    let mut carol = w.device("carol", "c1", false).await;
    let mut dave = w.device("dave", "d1", false).await;
    alice
        .send(json!({"cmd": "groupCall", "userIDList": ["bob", "carol"]}))
        .await;
    let room = alice.expect("CALL_DIALING").await["roomID"].clone();
    let rang = bob.expect("ON_CALL_RECEIVED").await;
    assert_eq!(
        (rang["isFromGroup"].clone(), rang["userIDList"].clone()),
        (json!(true), json!(["carol"]))
    );
    carol.expect("ON_CALL_RECEIVED").await;
    bob.send(json!({"cmd": "accept"})).await;
    bob.expect("ON_CALL_BEGIN").await;
    alice.expect("ON_CALL_BEGIN").await;
    carol.send(json!({"cmd": "reject"})).await;
    assert_eq!(alice.expect("REJECT").await["userID"], "carol");
    dave.send(json!({"cmd": "joinInGroupCall", "roomID": room}))
        .await;
    dave.expect("ON_CALL_BEGIN").await;
    assert_eq!(alice.expect("USER_ENTER").await["userID"], "dave");
    assert_eq!(bob.expect("USER_ENTER").await["userID"], "dave");
}

#[tokio::test]
async fn call_history_marks_missed_calls_and_survives_a_restart() {
    let w = World::new().await;
    let mut bob = w.device("bob", "b1", false).await;
    let mut alice = w.device("alice", "a1", false).await;

    bob.send(json!({"cmd": "call", "userID": "alice", "timeout": 1}))
        .await;
    alice.expect("ON_CALL_RECEIVED").await;
    assert_eq!(reason(&mut alice).await, "timeout");
    bob.expect("ON_CALL_CANCELED").await;

    bob.send(json!({"cmd": "call", "userID": "alice"})).await;
    alice.expect("ON_CALL_RECEIVED").await;
    alice.send(json!({"cmd": "accept"})).await;
    alice.expect("ON_CALL_BEGIN").await;
    alice.send(json!({"cmd": "hangup"})).await;
    alice.expect("CALLING_END").await;
    // Each device records a call when it hears the call end.
    bob.expect("CALLING_END").await;

    let summary = |v: &Value| -> Vec<(String, bool, Value)> {
        v["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["outcome"].as_str().unwrap().to_owned(),
                    c["missed"].as_bool().unwrap(),
                    c["userIDList"].clone(),
                )
            })
            .collect()
    };
    alice.send(json!({"cmd": "getCallHistory"})).await;
    let expected = vec![
        ("answered".to_owned(), false, json!(["bob"])),
        ("missed".to_owned(), true, json!(["bob"])),
    ];
    assert_eq!(summary(&alice.expect("CALL_HISTORY").await), expected);
    bob.send(json!({"cmd": "getCallHistory", "count": 1})).await;
    let bobs = bob.expect("CALL_HISTORY").await;
    assert_eq!(
        summary(&bobs),
        vec![("answered".to_owned(), false, json!(["alice"]))]
    );

    // The same device, restarted, still has its history without asking the relay.
    alice.send(json!({"cmd": "quit"})).await;
    alice.exits_cleanly().await;
    let mut again = w.device("alice", "a1", false).await;
    again.send(json!({"cmd": "getCallHistory"})).await;
    assert_eq!(summary(&again.expect("CALL_HISTORY").await), expected);
}
