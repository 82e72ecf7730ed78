//! UserSig: the login ticket, HMAC-SHA256 over (app, user, issue time, lifetime).
//!
//! A ticket is base64url (no padding) of a small JSON object:
//! `{"v":1,"app":1400000000,"user":"alice","iat":1700000000,"ttl":86400,"sig":"..."}`
//! where `sig` is base64url of HMAC-SHA256, keyed by the app's secret, over
//! the canonical text `termphone-usersig:v1\napp:..\nuser:..\niat:..\nttl:..\n`.
//! Signing a canonical text rather than the JSON keeps the signature
//! independent of field order and whitespace.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::{Error, ErrorCode};
use crate::ids::{AppId, UserId};

/// The secret of the development app: fine on a laptop, refused by the relay
/// on any non-loopback address.
pub const DEV_SECRET: &str = "termphone-development-secret-not-for-deployment";

/// Lifetime of a ticket minted without `--expire`: 7 days, like the vendor's sample.
pub const DEFAULT_LIFETIME_SECS: u64 = 7 * 24 * 3600;

/// The shortest secret an app may have: HMAC keys shorter than this are
/// guessable, and the relay refuses them (`relay.apps`).
pub const MIN_SECRET_BYTES: usize = 16;

const TICKET_VERSION: u32 = 1;

/// The signed claims of a ticket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub app: AppId,
    pub user: UserId,
    pub issued_at: u64,
    pub lifetime: u64,
}

impl Ticket {
    /// Unix seconds at which the ticket stops being accepted.
    pub fn expires_at(&self) -> u64 {
        self.issued_at.saturating_add(self.lifetime)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    v: u32,
    app: AppId,
    user: String,
    iat: u64,
    ttl: u64,
    sig: String,
}

fn mac(secret: &str, app: AppId, user: &str, iat: u64, ttl: u64) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(
        format!(
            "termphone-usersig:v{TICKET_VERSION}\napp:{app}\nuser:{user}\niat:{iat}\nttl:{ttl}\n"
        )
        .as_bytes(),
    );
    mac
}

/// Mints a ticket, as the vendor's GenerateTestUserSig does.
pub fn mint(secret: &str, ticket: &Ticket) -> String {
    let sig = mac(
        secret,
        ticket.app,
        ticket.user.as_str(),
        ticket.issued_at,
        ticket.lifetime,
    )
    .finalize()
    .into_bytes();
    let wire = Wire {
        v: TICKET_VERSION,
        app: ticket.app,
        user: ticket.user.to_string(),
        iat: ticket.issued_at,
        ttl: ticket.lifetime,
        sig: URL_SAFE_NO_PAD.encode(sig),
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wire).expect("ticket serializes"))
}

/// How far ahead of the relay's clock a ticket's issue time may be: a
/// minting machine's clock a little ahead is normal, a ticket dated months
/// ahead would outlive the lifetime the relay allows.
pub const MAX_CLOCK_AHEAD_SECS: u64 = 600;

/// Verifies a ticket for a login of `user` to `app` at unix time `now`.
///
/// The signature is checked before expiry, in constant time, so a forged
/// ticket learns nothing from the answer beyond "forged".
pub fn verify(
    secret: &str,
    token: &str,
    app: AppId,
    user: &UserId,
    now: u64,
) -> Result<Ticket, Error> {
    let invalid = |why: &str| {
        Error::new(
            ErrorCode::UserSigInvalid,
            format!(
                "the UserSig is not a termphone ticket ({why}); mint one with \
                 `termphone usersig --user {user} --app {app} --secret SECRET` \
                 (the app's secret, as the relay's config has it)"
            ),
        )
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(token.trim())
        .map_err(|_| invalid("not base64url"))?;
    let wire: Wire = serde_json::from_slice(&bytes).map_err(|_| invalid("not a ticket object"))?;
    if wire.v != TICKET_VERSION {
        return Err(invalid("unknown ticket version"));
    }
    let sig = URL_SAFE_NO_PAD
        .decode(&wire.sig)
        .map_err(|_| invalid("signature is not base64url"))?;
    if wire.app != app {
        return Err(Error::new(
            ErrorCode::UserSigWrongApp,
            format!(
                "the UserSig was issued for SDKAppID {}, not {app}",
                wire.app
            ),
        ));
    }
    if wire.user != user.as_str() {
        return Err(Error::new(
            ErrorCode::UserSigWrongUser,
            format!(
                "the UserSig was issued to {:?}, not {:?}",
                wire.user,
                user.as_str()
            ),
        ));
    }
    mac(secret, wire.app, &wire.user, wire.iat, wire.ttl)
        .verify_slice(&sig)
        .map_err(|_| {
            Error::new(
                ErrorCode::UserSigForged,
                format!(
                    "the UserSig's signature does not match the secret of SDKAppID {app}: \
                     mint it with that app's secret (`termphone usersig --user {user} --app {app} \
                     --secret SECRET`, or client.secret in the config); without one, termphone \
                     signs with the public development secret, which only the development app takes"
                ),
            )
        })?;
    let ticket = Ticket {
        app,
        user: user.clone(),
        issued_at: wire.iat,
        lifetime: wire.ttl,
    };
    if ticket.issued_at > now.saturating_add(MAX_CLOCK_AHEAD_SECS) {
        return Err(Error::new(
            ErrorCode::UserSigInvalid,
            format!(
                "the UserSig was issued {} s in the future: the clock of whatever minted it is \
                 ahead; set it right and mint a fresh one",
                ticket.issued_at - now
            ),
        ));
    }
    if now >= ticket.expires_at() {
        return Err(Error::new(
            ErrorCode::UserSigExpiredRelay,
            format!(
                "the UserSig expired {} s ago; mint a fresh one",
                now - ticket.expires_at()
            ),
        ));
    }
    Ok(ticket)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef-test-secret";
    const NOW: u64 = 1_800_000_000;

    fn alice() -> UserId {
        UserId::parse("alice").unwrap()
    }

    fn ticket() -> Ticket {
        Ticket {
            app: 7,
            user: alice(),
            issued_at: NOW - 10,
            lifetime: 3600,
        }
    }

    fn decode(token: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token).unwrap()).unwrap()
    }

    fn encode(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn round_trip() {
        let token = mint(SECRET, &ticket());
        assert_eq!(verify(SECRET, &token, 7, &alice(), NOW).unwrap(), ticket());
    }

    #[test]
    fn tampering_with_any_signed_field_is_forgery() {
        let token = mint(SECRET, &ticket());
        for (field, value) in [
            ("iat", serde_json::json!(NOW)),
            ("ttl", serde_json::json!(999_999)),
        ] {
            let mut v = decode(&token);
            v[field] = value;
            let err = verify(SECRET, &encode(&v), 7, &alice(), NOW).unwrap_err();
            assert_eq!(err.code, ErrorCode::UserSigForged, "tampered {field}");
        }
        // Changing app or user to the login's values is still caught by the signature.
        let mut v = decode(&token);
        v["app"] = serde_json::json!(8);
        let err = verify(SECRET, &encode(&v), 8, &alice(), NOW).unwrap_err();
        assert_eq!(err.code, ErrorCode::UserSigForged);
        let mut v = decode(&token);
        v["user"] = serde_json::json!("bob");
        let bob = UserId::parse("bob").unwrap();
        let err = verify(SECRET, &encode(&v), 7, &bob, NOW).unwrap_err();
        assert_eq!(err.code, ErrorCode::UserSigForged);
        // A flipped signature byte.
        let mut v = decode(&token);
        let mut sig = URL_SAFE_NO_PAD.decode(v["sig"].as_str().unwrap()).unwrap();
        sig[0] ^= 1;
        v["sig"] = serde_json::json!(URL_SAFE_NO_PAD.encode(sig));
        let err = verify(SECRET, &encode(&v), 7, &alice(), NOW).unwrap_err();
        assert_eq!(err.code, ErrorCode::UserSigForged);
    }

    /// A ticket signed with another secret (most often the development
    /// one, for a team's app) is forged, and the refusal says how to mint
    /// the right one.
    #[test]
    fn another_secret_is_forgery() {
        let token = mint("another-secret-entirely", &ticket());
        let err = verify(SECRET, &token, 7, &alice(), NOW).unwrap_err();
        assert_eq!(err.code, ErrorCode::UserSigForged);
        assert!(err.message.contains("--app 7 --secret"), "{}", err.message);
    }

    #[test]
    fn wrong_app_and_wrong_user_are_named() {
        let token = mint(SECRET, &ticket());
        assert_eq!(
            verify(SECRET, &token, 8, &alice(), NOW).unwrap_err().code,
            ErrorCode::UserSigWrongApp
        );
        let bob = UserId::parse("bob").unwrap();
        let e = verify(SECRET, &token, 7, &bob, NOW).unwrap_err();
        assert_eq!(e.code, ErrorCode::UserSigWrongUser);
        assert_eq!(
            e.message,
            "the UserSig was issued to \"alice\", not \"bob\""
        );
    }

    /// A ticket dated 200 days ahead stayed good for 207 days, past any
    /// `max_ticket_lifetime_secs`; a clock a few minutes ahead is normal.
    #[test]
    fn a_ticket_from_the_future_is_refused_past_the_clock_skew_allowed() {
        let ahead = |secs| {
            let t = Ticket {
                issued_at: NOW + secs,
                ..ticket()
            };
            verify(SECRET, &mint(SECRET, &t), 7, &alice(), NOW)
        };
        assert!(ahead(MAX_CLOCK_AHEAD_SECS).is_ok());
        let err = ahead(200 * 86_400).unwrap_err();
        assert_eq!(err.code, ErrorCode::UserSigInvalid);
        assert!(
            err.message.contains("issued 17280000 s in the future"),
            "{}",
            err.message
        );
    }

    #[test]
    fn expiry_follows_the_injected_clock() {
        let t = ticket();
        let token = mint(SECRET, &t);
        assert!(verify(SECRET, &token, 7, &alice(), t.expires_at() - 1).is_ok());
        let err = verify(SECRET, &token, 7, &alice(), t.expires_at()).unwrap_err();
        assert_eq!(err.code, ErrorCode::UserSigExpiredRelay);
        assert_eq!(err.code.code(), 70001);
    }

    #[test]
    fn garbage_is_invalid_not_a_panic() {
        for token in [
            "",
            "%%%",
            "bm90IGpzb24",
            &encode(&serde_json::json!({"v": 1})),
        ] {
            let err = verify(SECRET, token, 7, &alice(), NOW).unwrap_err();
            assert_eq!(err.code, ErrorCode::UserSigInvalid, "{token:?}");
        }
    }
}
