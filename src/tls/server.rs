//! The relay's side: its certificate (given, or made once and kept) and
//! the TLS acceptor.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;

use super::{
    Fingerprint, SELF_SIGNED_CERT, SELF_SIGNED_KEY, Stream, VERSIONS, create_private_dir, provider,
    write_private,
};

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
