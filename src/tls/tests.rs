use std::path::Path;

use super::{Fingerprint, KNOWN_RELAYS, KnownRelays, RelayUrl, SELF_SIGNED_KEY, ServerTls};

#[test]
fn fingerprints_print_and_parse() {
    let fp = Fingerprint::of(b"certificate");
    let text = fp.to_string();
    assert_eq!(text.len(), 95);
    assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
    let bare = text.replace(':', "").to_lowercase();
    assert_eq!(bare.parse::<Fingerprint>().unwrap(), fp);
    assert_eq!(format!("SHA256:{bare}").parse::<Fingerprint>().unwrap(), fp);
    for bad in ["", "AB:CD", &format!("{text}:00"), &text.replace('A', "G")] {
        let e = bad.parse::<Fingerprint>().unwrap_err();
        assert!(e.contains("--print-fingerprint"), "{e}");
    }
}

#[test]
fn urls_name_their_address() {
    let u = RelayUrl::parse("wss://Relay.example:443/x").unwrap();
    assert_eq!((u.tls, u.address()), (true, "relay.example:443".into()));
    let u = RelayUrl::parse("ws://[::1]:7787").unwrap();
    assert_eq!(
        (u.tls, u.host.as_str(), u.address()),
        (false, "::1", "[::1]:7787".into())
    );
    assert!(RelayUrl::parse("http://x:1").is_err());
    assert!(
        RelayUrl::parse("wss://x")
            .unwrap_err()
            .contains("with the port")
    );
    assert!(RelayUrl::parse("wss://:80").is_err());
    for port in ["0", "99999"] {
        let e = RelayUrl::parse(&format!("ws://x:{port}")).unwrap_err();
        assert!(
            e.contains(&format!("port {port} is not a port; ports are 1 to 65535")),
            "{e}"
        );
    }
}

#[test]
fn the_self_signed_certificate_is_made_once_and_kept_private() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("relay");
    let listen = "127.0.0.1:0".parse().unwrap();
    let first = ServerTls::load(None, &dir, listen).unwrap();
    let again = ServerTls::load(None, &dir, listen).unwrap();
    assert!(first.self_signed);
    assert_eq!(first.fingerprint, again.fingerprint);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(SELF_SIGNED_KEY)), 0o600);
    let other = ServerTls::load(None, &home.path().join("other"), listen).unwrap();
    assert_ne!(other.fingerprint, first.fingerprint);
}

#[test]
fn bad_certificate_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let listen = "127.0.0.1:0".parse().unwrap();
    let missing = dir.path().join("missing.pem");
    let e = ServerTls::load(Some((&missing, &missing)), dir.path(), listen)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.pem") && e.contains("tls_cert"), "{e}");
    let made = ServerTls::load(None, dir.path(), listen).unwrap();
    let cert = made.cert_path.clone();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a key").unwrap();
    let e = ServerTls::load(Some((&cert, &garbage)), dir.path(), listen)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("garbage.pem") && e.contains("PRIVATE KEY"),
        "{e}"
    );
    let e = ServerTls::load(Some((&garbage, &garbage)), dir.path(), listen)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("garbage.pem") && e.contains("CERTIFICATE"),
        "{e}"
    );
    // Another relay's key for this certificate.
    let other = tempfile::tempdir().unwrap();
    ServerTls::load(None, other.path(), listen).unwrap();
    let e = ServerTls::load(
        Some((&cert, &other.path().join(SELF_SIGNED_KEY))),
        dir.path(),
        listen,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("do not go together"), "{e}");
}

#[test]
fn known_relays_are_remembered_in_their_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join(KNOWN_RELAYS);
    let known = KnownRelays::in_file(path.clone());
    assert_eq!(known.get("a:1"), None);
    let (one, two) = (Fingerprint::of(b"1"), Fingerprint::of(b"2"));
    known.remember("a:1", one).unwrap();
    known.remember("b:2", two).unwrap();
    let again = KnownRelays::in_file(path.clone());
    assert_eq!((again.get("a:1"), again.get("b:2")), (Some(one), Some(two)));
    again.remember("a:1", two).unwrap();
    assert_eq!(known.get("a:1"), Some(two));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

/// A line edited by hand: a tab between address and fingerprint is read
/// as a space is; a fingerprint cut short trusts nothing, anew or not, and
/// says which line to fix; the other lines still count, and stay.
#[test]
fn a_known_relays_line_that_is_no_fingerprint_trusts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(KNOWN_RELAYS);
    let one = Fingerprint::of(b"1");
    std::fs::write(&path, format!("a:1\t{one}\nb:2 00:7E:AF\n")).unwrap();
    let known = KnownRelays::in_file(path.clone());
    assert_eq!(known.get("a:1"), Some(one));
    assert_eq!(known.unreadable("a:1"), None);
    assert_eq!(known.get("b:2"), None);
    let why = known.unreadable("b:2").expect("the line named");
    assert!(why.contains("b:2") && why.contains("00:7E:AF"), "{why}");
    known.remember("c:3", one).unwrap();
    assert!(KnownRelays::in_file(path).unreadable("b:2").is_some());
}

/// Devices trusting relays on first use at the same moment each keep
/// their line: the file is read, added to and written one at a time.
#[test]
fn known_relays_remembered_at_once_are_all_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(KNOWN_RELAYS);
    let threads: Vec<_> = (0..8)
        .map(|k| {
            let path = path.clone();
            std::thread::spawn(move || {
                let known = KnownRelays::in_file(path);
                for n in 0..10 {
                    let address = format!("h{k}:{n}");
                    known
                        .remember(&address, Fingerprint::of(address.as_bytes()))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let known = KnownRelays::in_file(path);
    for k in 0..8 {
        for n in 0..10 {
            let address = format!("h{k}:{n}");
            assert_eq!(
                known.get(&address),
                Some(Fingerprint::of(address.as_bytes()))
            );
        }
    }
}
