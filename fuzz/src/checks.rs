//! What each fuzz target does with one input, shared by the cargo-fuzz
//! targets (`fuzz/fuzz_targets/*.rs`, nightly) and by the stable test that
//! replays the committed corpus (`tests/suite/fuzz_corpus.rs`, which
//! includes this file with `#[path]`). Every function takes arbitrary bytes
//! and must not panic: the code under test answers bad input with an
//! `Err`, so any panic is a bug. A few properties that must hold for the
//! inputs that are accepted are asserted as well. docs/fuzzing.md says how
//! to run the targets.

use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use termphone::config::Config;
use termphone::ids::{DEV_APP_ID, UserId};
use termphone::protocol::{ClientMsg, MediaHeader, ServerMsg, decode, encode, media_source};
use termphone::relay::media::{Impairment, MediaRouter};
use termphone::usersig::{DEV_SECRET, verify};

/// The target names, which are also the folders of `fuzz/corpus/`.
pub const TARGETS: [&str; 4] = [
    "protocol_decode",
    "media_frame",
    "usersig_verify",
    "config_parse",
];

/// Runs the target called `name` on `data`: whether the input was accepted
/// (see each function), or `None` for an unknown name.
pub fn run(name: &str, data: &[u8]) -> Option<bool> {
    Some(match name {
        "protocol_decode" => protocol_decode(data),
        "media_frame" => media_frame(data),
        "usersig_verify" => usersig_verify(data),
        "config_parse" => config_parse(data),
        _ => return None,
    })
}

/// A control frame, as the relay decodes a WebSocket text frame (and as the
/// client decodes the relay's). The bytes are made UTF-8 first, as the
/// WebSocket layer guarantees. A frame that decodes must encode again and
/// decode to the same message. True if it decodes as either side's message.
pub fn protocol_decode(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let mut accepted = false;
    if let Ok(msg) = decode::<ClientMsg>(&text) {
        accepted = true;
        let _ = msg.kind();
        let again = encode(&msg);
        assert_eq!(
            decode::<ClientMsg>(&again).ok().as_ref(),
            Some(&msg),
            "ClientMsg does not survive a round trip: {again}"
        );
    }
    if let Ok(msg) = decode::<ServerMsg>(&text) {
        accepted = true;
        let again = encode(&msg);
        assert_eq!(
            decode::<ServerMsg>(&again).ok().as_ref(),
            Some(&msg),
            "ServerMsg does not survive a round trip: {again}"
        );
    }
    accepted
}

/// A binary media frame: its header as `MediaHeader::decode` reads it, and
/// the relay's whole path for it, `MediaRouter::forward` from a connection
/// in a call with one other connection (in the frame's own room when the
/// header decodes, so that the frame is stamped and queued). True if the
/// header decodes.
pub fn media_frame(data: &[u8]) -> bool {
    let decoded = MediaHeader::decode(data);
    if let Ok((header, payload)) = &decoded {
        assert_eq!(
            header.encode(payload),
            data,
            "a decoded media frame encodes differently"
        );
    }
    let router = MediaRouter::new(Impairment::default());
    let mut sender = router.register(1);
    let _receiver = router.register(2);
    let room = decoded.as_ref().map_or(9, |(header, _)| header.room);
    let members = [
        (1, UserId::parse("alice").expect("valid user")),
        (2, UserId::parse("bob").expect("valid user")),
    ];
    router.set_room(room, &members, &[]);
    // The sender's port takes its route as its task would, polling it.
    assert!(sender.next().now_or_never().is_none(), "nothing to write");
    let forwarded = router.forward(&sender, Bytes::copy_from_slice(data));
    assert_eq!(
        forwarded.is_ok(),
        decoded.is_ok(),
        "forward and decode disagree"
    );
    let counts = router.stats.snapshot();
    let Ok((header, payload)) = decoded else {
        assert_eq!((counts.forwarded, counts.malformed), (0, 1));
        return false;
    };
    assert_eq!((counts.forwarded, counts.malformed), (1, 0));
    // What the receiver gets is stamped with the sender's source.
    let mut stamped = data.to_vec();
    MediaHeader::stamp_source(&mut stamped, media_source(1));
    let (again, again_payload) = MediaHeader::decode(&stamped).expect("stamped frame decodes");
    assert_eq!(again.source, 1);
    assert_eq!(
        (again.room, again.seq, again.timestamp),
        (header.room, header.seq, header.timestamp)
    );
    assert_eq!(again_payload, payload);
    true
}

/// "Now" for `usersig_verify`, in unix seconds; the corpus's valid tickets
/// were issued shortly before it.
pub const TICKET_NOW: u64 = 1_800_000_000;

/// A login ticket (UserSig) as the relay checks it, for user `alice` of the
/// development app, at three times: the epoch, `TICKET_NOW` and the end of
/// time. True if it is accepted at `TICKET_NOW`.
pub fn usersig_verify(data: &[u8]) -> bool {
    let token = String::from_utf8_lossy(data);
    let alice = UserId::parse("alice").expect("valid user");
    let mut accepted_now = false;
    for now in [0, TICKET_NOW, u64::MAX] {
        if let Ok(ticket) = verify(DEV_SECRET, &token, DEV_APP_ID, &alice, now) {
            assert_eq!((ticket.app, &ticket.user), (DEV_APP_ID, &alice));
            assert!(now < ticket.expires_at(), "an expired ticket was accepted");
            accepted_now |= now == TICKET_NOW;
        }
    }
    accepted_now
}

/// A config file, as `termphone` reads it at start.
///
/// `relay.listen` may be a host name, which `Config::parse` resolves: an
/// input whose `relay.listen` is a string other than an IP address and port
/// is skipped, so that the fuzzer never sends a DNS query. True if the
/// config is valid.
pub fn config_parse(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    if let Ok(doc) = toml::from_str::<toml::Table>(&text) {
        let listen = doc.get("relay").and_then(|relay| relay.get("listen"));
        if let Some(listen) = listen.and_then(|l| l.as_str())
            && listen.parse::<SocketAddr>().is_err()
        {
            return false;
        }
    }
    let Ok(config) = Config::parse(&text, "fuzz") else {
        return false;
    };
    let _ = config.media.codec();
    for app in &config.relay.apps {
        let _ = app.device_limit(&"terminal".parse().expect("valid platform"));
    }
    true
}
