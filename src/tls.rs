//! Transport security at the edge: `wss://` for the relay and its clients.
//!
//! The relay serves TLS (rustls, TLS 1.3 and 1.2) with a certificate from
//! `relay.tls_cert`/`relay.tls_key`, or one it makes itself on first start
//! and keeps beside its database. Clients verify a certificate that chains
//! to a public root (webpki-roots) as usual; any other certificate is
//! pinned by its SHA-256 fingerprint: given (`--relay-fingerprint`), or
//! trusted on first use and remembered in `known_relays` in the data
//! directory. Neither core knows whether its link is encrypted: both shells
//! read and write a [`Stream`], plain or TLS.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The self-signed certificate and its key, beside the relay's database.
pub const SELF_SIGNED_CERT: &str = "relay-cert.pem";
pub const SELF_SIGNED_KEY: &str = "relay-key.pem";

/// The file in a client's data directory that remembers the certificate of
/// every relay trusted on first use.
pub const KNOWN_RELAYS: &str = "known_relays";

// ---------------------------------------------------------------------------
// Fingerprints

/// The SHA-256 of a certificate (its DER), the identity a client pins.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of(cert: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(cert).into())
    }
}

impl fmt::Display for Fingerprint {
    /// `AB:CD:…`, 32 upper-case hex pairs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = String;

    /// 32 bytes in hex, with or without colons (or spaces), any case, with
    /// an optional `SHA256:` in front.
    fn from_str(s: &str) -> Result<Fingerprint, String> {
        let bad = || {
            format!(
                "{s:?} is not a SHA-256 certificate fingerprint: give 32 bytes in hex, \
                 e.g. AB:CD:…:EF, as `termphone relay --print-fingerprint` prints it"
            )
        };
        let trimmed = s.trim();
        let body = ["SHA256:", "sha256:", "SHA-256:", "sha-256:"]
            .iter()
            .find_map(|p| trimmed.strip_prefix(p))
            .unwrap_or(trimmed);
        let hex: Vec<u8> = body.bytes().filter(|b| !matches!(b, b':' | b' ')).collect();
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.chunks(2).enumerate() {
            let text = std::str::from_utf8(pair).map_err(|_| bad())?;
            out[i] = u8::from_str_radix(text, 16).map_err(|_| bad())?;
        }
        Ok(Fingerprint(out))
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

// ---------------------------------------------------------------------------
// One stream type for both shells

/// A TCP connection, plain or under TLS (either side).
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

// ---------------------------------------------------------------------------
// The relay's side

/// Why the relay cannot serve TLS; each names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "relay.tls_cert {0}: cannot read it ({1}); give the path of a PEM certificate (chain), \
         or leave tls_cert and tls_key unset for a self-signed certificate"
    )]
    ReadCert(PathBuf, io::Error),
    #[error(
        "relay.tls_key {0}: cannot read it ({1}); give the path of the certificate's PEM private key, \
         readable by the relay"
    )]
    ReadKey(PathBuf, io::Error),
    #[error(
        "{0}: no PEM certificate in it ({1}); it must hold -----BEGIN CERTIFICATE----- sections"
    )]
    BadCert(PathBuf, String),
    #[error(
        "{0}: no PEM private key in it ({1}); it must hold a -----BEGIN PRIVATE KEY----- \
         (or RSA/EC PRIVATE KEY) section"
    )]
    BadKey(PathBuf, String),
    #[error(
        "relay.tls_cert {cert} and relay.tls_key {key} do not go together: {why}; \
         give the key the certificate was issued for"
    )]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        why: String,
    },
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(String),
    #[error(
        "cannot keep the self-signed certificate in {0}: {1}; the relay needs that directory writable"
    )]
    Write(PathBuf, io::Error),
}

/// What the relay presents, ready to accept connections.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    /// Of the end-entity certificate: what clients pin.
    pub fingerprint: Fingerprint,
    /// Where the certificate came from, for the operator.
    pub cert_path: PathBuf,
    /// True when the relay made the certificate itself.
    pub self_signed: bool,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("fingerprint", &self.fingerprint)
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// The certificate of `relay.tls_cert`/`relay.tls_key` if given, else
    /// the self-signed one in `dir` (made there on first use, for `listen`
    /// and `localhost`).
    pub fn load(
        cert_key: Option<(&Path, &Path)>,
        dir: &Path,
        listen: SocketAddr,
    ) -> Result<ServerTls, TlsError> {
        let (cert_path, key_path, self_signed) = match cert_key {
            Some((cert, key)) => (cert.to_path_buf(), key.to_path_buf(), false),
            None => {
                let (cert, key) = ensure_self_signed(dir, listen)?;
                (cert, key, true)
            }
        };
        let cert_pem =
            std::fs::read(&cert_path).map_err(|e| TlsError::ReadCert(cert_path.clone(), e))?;
        let key_pem =
            std::fs::read(&key_path).map_err(|e| TlsError::ReadKey(key_path.clone(), e))?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::BadCert(cert_path.clone(), e.to_string()))?;
        let Some(leaf) = chain.first() else {
            return Err(TlsError::BadCert(cert_path, "the file is empty".into()));
        };
        let fingerprint = Fingerprint::of(leaf);
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| TlsError::BadKey(key_path.clone(), e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .expect("ring supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Mismatch {
                cert: cert_path.clone(),
                key: key_path.clone(),
                why: e.to_string(),
            })?;
        // termphone's clients do not resume sessions (each attempt checks
        // the certificate afresh), so tickets would be work for nothing.
        config.send_tls13_tickets = 0;
        Ok(ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            fingerprint,
            cert_path,
            self_signed,
        })
    }

    pub async fn accept(&self, stream: TcpStream) -> io::Result<Stream> {
        let tls = self.acceptor.accept(stream).await?;
        Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(tls))))
    }
}

/// The self-signed certificate and key in `dir`, made if absent: the
/// directory 0700, the key 0600, written before anything reads them.
fn ensure_self_signed(dir: &Path, listen: SocketAddr) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert = dir.join(SELF_SIGNED_CERT);
    let key = dir.join(SELF_SIGNED_KEY);
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    create_private_dir(dir).map_err(|e| TlsError::Write(dir.to_path_buf(), e))?;
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if !listen.ip().is_unspecified() && !listen.ip().is_loopback() {
        names.insert(0, listen.ip().to_string());
    }
    let mut params =
        rcgen::CertificateParams::new(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "termphone relay");
    let pair = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let made = params
        .self_signed(&pair)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    // The key first, and the certificate only once the key is in place: a
    // certificate alone on disk would be a certificate with no key.
    write_private(&key, pair.serialize_pem().as_bytes())
        .map_err(|e| TlsError::Write(key.clone(), e))?;
    write_private(&cert, made.pem().as_bytes()).map_err(|e| TlsError::Write(cert.clone(), e))?;
    tracing::info!(cert = %cert.display(), "made a self-signed certificate");
    Ok((cert, key))
}

/// Creates `dir` (and its parents) with mode 0700 if it does not exist.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Writes `bytes` to `path` through a temporary file of mode 0600, renamed
/// into place: no reader ever sees half a file, nobody else ever reads it.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

// ---------------------------------------------------------------------------
// The client's side

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
            Some(path) => read_known(path).remove(address),
            None => self
                .memory
                .lock()
                .expect("not poisoned")
                .get(address)
                .copied(),
        }
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
        let mut known = read_known(path);
        if known.get(address) == Some(&fingerprint) {
            return Ok(());
        }
        known.insert(address.to_owned(), fingerprint);
        let mut lines: Vec<String> = known.iter().map(|(a, f)| format!("{a} {f}\n")).collect();
        lines.sort();
        let text = format!(
            "# Relays this data directory trusts: ADDRESS SHA-256 of its certificate.\n\
             # termphone adds a relay on first use; delete a line to trust that relay anew.\n{}",
            lines.concat()
        );
        if let Some(dir) = path.parent() {
            create_private_dir(dir)?;
        }
        write_private(path, text.as_bytes())
    }
}

fn read_known(path: &Path) -> HashMap<String, Fingerprint> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashMap::new();
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let (address, fp) = l.trim().split_once(' ')?;
            Some((address.to_owned(), fp.parse().ok()?))
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
        let port = port.parse::<u16>().map_err(|_| with_port())?;
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
            // certificate, trusted by its fingerprint.
            Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => match self
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
    Fut: std::future::Future<Output = Result<S, String>>,
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
        let ws = handshake(Stream::Plain(tcp))
            .await
            .map_err(|e| unreachable(&e))?;
        return Ok(Connected {
            ws,
            plaintext_off_loopback: peer.filter(|p| !p.ip().is_loopback()),
        });
    }
    let file = trust.known.path().map(Path::to_path_buf);
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
        (Err(e), _) => return Err(unreachable(&format!("TLS: {e}"))),
    };
    let ws = handshake(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(tls))))
        .await
        .map_err(|e| unreachable(&e))?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
