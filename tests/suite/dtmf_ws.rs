//! DTMF end to end (SPEC 8.2): headless processes on a real relay that
//! loses 10% of the media it forwards. Every digit of `1234567890*#`
//! reaches the other party once, in order, as `DTMF_RECEIVED`.

use std::time::Duration;

use serde_json::{Value, json};

use termphone::config::RelayConfig;
use termphone::relay::media::Impairment;

use crate::common::headless::Headless;
use crate::common::net::{relay_at, test_config};

const DIGITS: &str = "1234567890*#";

/// The next `count` DTMF_RECEIVED events, as one string of keys, checking
/// each one's sender and call.
async fn digits(device: &mut Headless, count: usize, from: &str, call_id: &Value) -> String {
    let mut keys = String::new();
    for _ in 0..count {
        let e = device.expect("DTMF_RECEIVED").await;
        assert_eq!((&e["userID"], &e["callId"]), (&json!(from), call_id), "{e}");
        keys.push_str(e["digit"].as_str().unwrap());
    }
    keys
}

/// No event named `name` for `quiet`.
async fn none_for(device: &mut Headless, name: &str, quiet: Duration) {
    let until = tokio::time::Instant::now() + quiet;
    while let Ok(Some(e)) = tokio::time::timeout_at(until, device.next()).await {
        assert_ne!(e["event"], name, "{e}");
    }
}

#[tokio::test]
async fn every_digit_arrives_once_and_in_order_at_ten_percent_loss() {
    let dir = tempfile::tempdir().unwrap();
    let config = RelayConfig {
        impairment: Impairment {
            loss_percent: 10.0,
            ..Impairment::default()
        },
        ..test_config()
    };
    let relay = relay_at(&config, &dir.path().join("r.db")).await;
    let url = relay.url();
    let spawn = |user: &str| Headless::spawn(dir.path(), &["--relay", &url, "--user", user]);
    let (mut bob, mut alice) = (spawn("bob"), spawn("alice"));
    bob.expect("SDK_READY").await;
    alice.expect("SDK_READY").await;
    bob.send(json!({"cmd": "call", "userID": "alice"})).await;
    alice.expect("ON_CALL_RECEIVED").await;
    alice.send(json!({"cmd": "accept"})).await;
    let call_id = alice.expect("ON_CALL_BEGIN").await["callId"].clone();
    bob.expect("ON_CALL_BEGIN").await;
    // Both media threads run once each reports a level.
    alice.expect("USER_VOICE_VOLUME").await;
    bob.expect("USER_VOICE_VOLUME").await;

    for round in 0..3 {
        bob.send(json!({"cmd": "sendDTMF", "digits": DIGITS})).await;
        assert_eq!(
            digits(&mut alice, DIGITS.len(), "bob", &call_id).await,
            DIGITS,
            "round {round}"
        );
    }
    // Nothing twice: the redundant packets of the last digit stay quiet.
    none_for(&mut alice, "DTMF_RECEIVED", Duration::from_millis(500)).await;
    // And the other way, A to D.
    alice
        .send(json!({"cmd": "sendDTMF", "digits": "ABCD"}))
        .await;
    assert_eq!(digits(&mut bob, 4, "alice", &call_id).await, "ABCD");
    none_for(&mut bob, "DTMF_RECEIVED", Duration::from_millis(300)).await;
    relay.shutdown().await;
}

#[tokio::test]
async fn bad_digits_and_no_call_are_refused_with_their_codes() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let url = relay.url();
    let mut bob = Headless::spawn(dir.path(), &["--relay", &url, "--user", "bob"]);
    bob.expect("SDK_READY").await;
    for (line, code) in [
        (json!({"cmd": "sendDTMF", "digits": "12x"}), 6110),
        (json!({"cmd": "sendDTMF", "digits": "1".repeat(33)}), 6110),
        (json!({"cmd": "sendDTMF", "digits": "1"}), 6103),
    ] {
        bob.send(line).await;
        let e = bob.expect("ERROR").await;
        assert_eq!(
            (&e["code"], &e["cmd"]),
            (&json!(code), &json!("sendDTMF")),
            "{e}"
        );
    }
}
