//! The client's side: which certificate a relay must present (public
//! roots, a pin, or trust on first use kept in `known_relays`), and the
//! connection that checks it.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;

use super::{Fingerprint, Stream, VERSIONS, create_private_dir, provider, write_private};

/// Which certificates a client accepts from its relay, besides those a
/// public root vouches for.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    /// `--relay-fingerprint` / `client.relay_fingerprint`: only this one.
    pub pin: Option<Fingerprint>,
    /// What was trusted on first use.
    pub known: KnownRelays,
}

impl Trust {
    pub fn new(pin: Option<Fingerprint>, known: KnownRelays) -> Trust {
        Trust { pin, known }
    }
}

/// The relays trusted on first use: the `known_relays` file of a data
/// directory (one `ADDRESS FINGERPRINT` line per relay), or, without one,
/// this process's memory.
#[derive(Clone, Debug, Default)]
pub struct KnownRelays {
    file: Option<PathBuf>,
    memory: Arc<Mutex<HashMap<String, Fingerprint>>>,
}

impl KnownRelays {
    pub fn in_file(path: PathBuf) -> KnownRelays {
        KnownRelays {
            file: Some(path),
            memory: Default::default(),
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// What is remembered for `address`.
    pub fn get(&self, address: &str) -> Option<Fingerprint> {
        match &self.file {
            Some(path) => read_known(path).remove(address)?.ok(),
            None => self
                .memory
                .lock()
                .expect("not poisoned")
                .get(address)
                .copied(),
        }
    }

    /// The line for `address`, when there is one but it holds no
    /// fingerprint (edited by hand, cut short): nothing can be trusted for
    /// that relay then, and nothing should be trusted anew either.
    pub fn unreadable(&self, address: &str) -> Option<String> {
        let path = self.file.as_ref()?;
        let line = read_known(path).remove(address)?.err()?;
        Some(format!(
            "the line for {address} in {} is not a SHA-256 fingerprint ({line:?}), so this \
             device cannot tell whether the relay there is the one it trusted: fix the line, \
             or delete it to trust the relay anew on first use",
            path.display()
        ))
    }

    /// Remembers `fingerprint` for `address`, replacing what was there.
    pub fn remember(&self, address: &str, fingerprint: Fingerprint) -> io::Result<()> {
        let Some(path) = &self.file else {
            self.memory
                .lock()
                .expect("not poisoned")
                .insert(address.to_owned(), fingerprint);
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            create_private_dir(dir)?;
        }
        // Two devices trusting relays at once each read, add and write the
        // file: one at a time, or one's line is lost.
        let lock = std::fs::File::options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path.with_extension("lock"))?;
        lock.lock()?;
        let mut known = read_known(path);
        if known
            .get(address)
            .is_some_and(|f| f.as_ref() == Ok(&fingerprint))
        {
            return Ok(());
        }
        known.insert(address.to_owned(), Ok(fingerprint));
        let mut lines: Vec<String> = known
            .iter()
            .map(|(a, f)| match f {
                Ok(f) => format!("{a} {f}\n"),
                Err(line) => format!("{a} {line}\n"),
            })
            .collect();
        lines.sort();
        let text = format!(
            "# Relays this data directory trusts: ADDRESS SHA-256 of its certificate.\n\
             # termphone adds a relay on first use; delete a line to trust that relay anew.\n{}",
            lines.concat()
        );
        write_private(path, text.as_bytes())
    }
}

/// Each address's fingerprint, or the text that stands for it where that
/// is not one.
fn read_known(path: &Path) -> HashMap<String, Result<Fingerprint, String>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashMap::new();
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (address, fp) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            let fp = fp.trim();
            (address.to_owned(), fp.parse().map_err(|_| fp.to_owned()))
        })
        .collect()
}

/// A relay URL taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayUrl {
    pub tls: bool,
    /// As written, without brackets around an IPv6 address.
    pub host: String,
    pub port: u16,
}

impl RelayUrl {
    pub fn parse(url: &str) -> Result<RelayUrl, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("wss://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("ws://") {
            (false, rest)
        } else {
            return Err(format!(
                "{url:?} must be a ws://HOST:PORT or wss://HOST:PORT address"
            ));
        };
        let host_port = rest.split('/').next().unwrap_or_default();
        let with_port = || {
            format!("{url:?} must be a ws://HOST:PORT or wss://HOST:PORT address, with the port")
        };
        let (host, port) = host_port.rsplit_once(':').ok_or_else(with_port)?;
        let port = match port.parse::<u32>() {
            Ok(port) => u16::try_from(port).ok().filter(|p| *p > 0).ok_or_else(|| {
                format!("{url:?}: port {port} is not a port; ports are 1 to 65535")
            })?,
            Err(_) => return Err(with_port()),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(with_port());
        }
        Ok(RelayUrl {
            tls,
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// `HOST:PORT`, the key of `known_relays`.
    pub fn address(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("[{ip}]:{}", self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }
}

/// A relay presented a certificate other than the one this client trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub address: String,
    pub trusted: Fingerprint,
    pub presented: Fingerprint,
    /// Where the trusted one comes from, for the message.
    pub source: String,
    /// The `known_relays` file it was remembered in, if it was.
    pub file: Option<PathBuf>,
}

impl Mismatch {
    pub fn message(&self) -> String {
        format!(
            "the relay at {} presented a certificate with SHA-256 {}, but this device trusts {} \
             for that address ({}); it does not connect, since someone may be intercepting the link. \
             If the relay's certificate was changed on purpose, ask its operator for the new \
             fingerprint (termphone relay --print-fingerprint) and start again with \
             --relay-fingerprint NEW (or client.relay_fingerprint = \"NEW\" in the config){}",
            self.address,
            self.presented,
            self.trusted,
            self.source,
            match &self.file {
                Some(file) => format!(
                    ", which this device then remembers in place of the old one in {}",
                    file.display()
                ),
                None => String::new(),
            }
        )
    }
}

/// Why a connection attempt failed.
#[derive(Debug)]
pub enum ConnectError {
    /// Try again later.
    Unreachable(String),
    /// Do not try again: the relay is not the one this device trusts.
    Mismatch(Mismatch),
    /// Do not try again: what this device trusts for the relay cannot be
    /// read.
    Untrusted(String),
}

/// A client's open link, and what it should tell its user about it.
pub struct Connected<S> {
    pub ws: S,
    /// A plaintext link that leaves this machine: everything on it can be
    /// read on the way.
    pub plaintext_off_loopback: Option<SocketAddr>,
}

/// What the verifier saw, for the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// Trusted on first use: remember it once the link is up.
    FirstUse(Fingerprint),
    /// Pinned and presented: remember it (it replaces an older one).
    Pinned(Fingerprint),
    Mismatch {
        trusted: Fingerprint,
        presented: Fingerprint,
    },
}

/// Expected certificate of one connection attempt.
#[derive(Clone, Copy, Debug)]
enum Expect {
    Pin(Fingerprint),
    Known(Fingerprint),
    FirstUse,
}

#[derive(Debug)]
struct RelayVerifier {
    public: Arc<rustls::client::WebPkiServerVerifier>,
    expect: Expect,
    seen: Mutex<Option<Seen>>,
}

fn public_roots() -> Arc<rustls::client::WebPkiServerVerifier> {
    static VERIFIER: OnceLock<Arc<rustls::client::WebPkiServerVerifier>> = OnceLock::new();
    VERIFIER
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .expect("the built-in roots are valid")
        })
        .clone()
}

impl ServerCertVerifier for RelayVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = Fingerprint::of(end_entity);
        let record = |seen: Seen| *self.seen.lock().expect("not poisoned") = Some(seen);
        let mismatch = |trusted: Fingerprint| {
            record(Seen::Mismatch { trusted, presented });
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        };
        // A pin is the whole answer: that certificate and no other.
        if let Expect::Pin(pin) = self.expect {
            if pin != presented {
                return mismatch(pin);
            }
            record(Seen::Pinned(presented));
            return Ok(ServerCertVerified::assertion());
        }
        match self.public.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => Ok(verified),
            // Not from a public root: a self-signed (or private CA's)
            // certificate, trusted by its fingerprint. openssl's `req -x509`
            // marks its certificates CA:TRUE, which no public root vouches
            // for as a server's either.
            Err(rustls::Error::InvalidCertificate(e)) if vouched_for_by_nobody(&e) => match self
                .expect
            {
                Expect::Known(known) if known == presented => Ok(ServerCertVerified::assertion()),
                Expect::Known(known) => mismatch(known),
                _ => {
                    record(Seen::FirstUse(presented));
                    Ok(ServerCertVerified::assertion())
                }
            },
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A certificate that no public root vouches for, and that is otherwise
/// well formed: to be trusted by its fingerprint or not at all.
fn vouched_for_by_nobody(e: &CertificateError) -> bool {
    match e {
        CertificateError::UnknownIssuer => true,
        CertificateError::Other(other) => matches!(
            other.0.downcast_ref::<webpki::Error>(),
            Some(webpki::Error::CaUsedAsEndEntity)
        ),
        _ => false,
    }
}

/// What a failed connection says when something answered at the relay's
/// address, but not as a relay (another server, or `ws://` and `wss://`
/// mixed up): no relay can be started there.
const NOT_A_RELAY: &str = "answers, but not as a relay";

/// How the WebSocket handshake over a new connection failed.
pub enum HandshakeError {
    /// The connection closed (or was reset) before anything answered:
    /// nothing says what is at the address.
    Closed(String),
    /// Something answered, not as a relay.
    Answered(String),
}

/// What a connection that closed before anything answered says: not that
/// the address holds no relay, which nothing showed.
fn closed_unanswered(e: &dyn fmt::Display, address: &str) -> String {
    format!(
        "{e}: {address} took the connection and closed it before anything answered \
         (a proxy or firewall in front of a relay that is down?)"
    )
}

/// Whether a connection failure's message says something answered at the
/// relay's address, but not as a relay ([`connect`]'s words).
pub fn answered_but_not_as_a_relay(message: &str) -> bool {
    message.contains(NOT_A_RELAY)
}

/// Opens a link to the relay at `url` (TCP, then TLS for `wss://`, then the
/// WebSocket handshake through `handshake`), checking its certificate
/// against `trust`. Remembers a certificate trusted on first use once the
/// link is up.
pub async fn connect<S, F, Fut>(
    url: &str,
    trust: &Trust,
    handshake: F,
) -> Result<Connected<S>, ConnectError>
where
    F: FnOnce(Stream) -> Fut,
    Fut: std::future::Future<Output = Result<S, HandshakeError>>,
{
    let unreachable = |e: &dyn fmt::Display| ConnectError::Unreachable(format!("{url}: {e}"));
    let parsed = RelayUrl::parse(url).map_err(ConnectError::Unreachable)?;
    let tcp = TcpStream::connect((parsed.host.as_str(), parsed.port))
        .await
        .map_err(|e| unreachable(&e))?;
    let _ = tcp.set_nodelay(true);
    let address = parsed.address();
    if !parsed.tls {
        let peer = tcp.peer_addr().ok();
        let ws = handshake(Stream::Plain(tcp)).await.map_err(|e| match e {
            HandshakeError::Closed(e) => unreachable(&closed_unanswered(&e, &address)),
            HandshakeError::Answered(e) => unreachable(&format!(
                "{e}: {address} {NOT_A_RELAY} over ws://; \
                 a relay with TLS is reached at wss://{address}"
            )),
        })?;
        return Ok(Connected {
            ws,
            plaintext_off_loopback: peer.filter(|p| !p.ip().is_loopback()),
        });
    }
    let file = trust.known.path().map(Path::to_path_buf);
    if trust.pin.is_none()
        && let Some(why) = trust.known.unreadable(&address)
    {
        return Err(ConnectError::Untrusted(why));
    }
    let (expect, source) = match (trust.pin, trust.known.get(&address)) {
        (Some(pin), _) => (
            Expect::Pin(pin),
            "given by --relay-fingerprint or client.relay_fingerprint".to_owned(),
        ),
        (None, Some(known)) => (
            Expect::Known(known),
            match trust.known.path() {
                Some(path) => format!("trusted on first use, remembered in {}", path.display()),
                None => "trusted on first use by this process".to_owned(),
            },
        ),
        (None, None) => (Expect::FirstUse, String::new()),
    };
    let verifier = Arc::new(RelayVerifier {
        public: public_roots(),
        expect,
        seen: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .expect("ring supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let name = ServerName::try_from(parsed.host.clone()).map_err(|e| unreachable(&e))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tls = connector.connect(name, tcp).await;
    let seen = *verifier.seen.lock().expect("not poisoned");
    let tls = match (tls, seen) {
        (_, Some(Seen::Mismatch { trusted, presented })) => {
            return Err(ConnectError::Mismatch(Mismatch {
                address: format!("wss://{address}"),
                trusted,
                presented,
                source,
                file,
            }));
        }
        (Ok(tls), _) => tls,
        (Err(e), _) if spoke_tls(&e) => {
            return Err(unreachable(&format!(
                "TLS: {e}: {address} speaks TLS, but the link could not be made safe \
                 (a certificate that has expired or names another host: renew it, or pin a \
                 self-signed one with --relay-fingerprint; or no TLS version both take: \
                 termphone speaks TLS 1.2 and 1.3)"
            )));
        }
        (Err(e), _) => {
            return Err(unreachable(&format!(
                "TLS: {e}: {address} {NOT_A_RELAY} over wss:// (it does not speak TLS); \
                 a relay without it is reached at ws://{address}"
            )));
        }
    };
    let ws = handshake(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(tls))))
        .await
        .map_err(|e| match e {
            HandshakeError::Closed(e) => unreachable(&closed_unanswered(&e, &address)),
            HandshakeError::Answered(e) => unreachable(&e),
        })?;
    if let Some(Seen::FirstUse(fp)) = seen {
        // As ssh says it adds a host: the one moment to compare the
        // fingerprint with the relay's, by a channel of one's own.
        tracing::warn!(
            "trusted {address}'s certificate on first use, SHA-256 {fp}; \
             remembered in known_relays (compare it with termphone relay --print-fingerprint)"
        );
    }
    if let Some(Seen::FirstUse(fp) | Seen::Pinned(fp)) = seen
        && let Err(e) = trust.known.remember(&address, fp)
    {
        tracing::warn!(error = %e, "cannot remember the relay's certificate");
    }
    Ok(Connected {
        ws,
        plaintext_off_loopback: None,
    })
}

/// The peer closed or reset the connection: it said nothing.
pub fn closed_early(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | UnexpectedEof | BrokenPipe
    )
}

/// A TLS handshake that failed on what the peer said in TLS (its
/// certificate, or an alert): something there speaks TLS.
fn spoke_tls(e: &std::io::Error) -> bool {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    matches!(
        tls,
        Some(
            rustls::Error::InvalidCertificate(_)
                | rustls::Error::AlertReceived(_)
                | rustls::Error::PeerIncompatible(_)
        )
    )
}
