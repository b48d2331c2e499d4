//! TLS for the client APIs (gRPC, HTTP) and the peer transport, with rustls and its `ring`
//! provider (no OpenSSL; no cmake/nasm build step as aws-lc would need).
//!
//! * **Files, etcd's way.** A side (client or peer) is configured by [`TlsFiles`]: a PEM
//!   certificate chain, its PEM private key, optionally a PEM bundle of trusted CAs and whether
//!   to require client certificates signed by them (`--client-cert-auth`,
//!   `--peer-client-cert-auth`). Without a certificate the side is plain TCP, the default.
//! * **Reload without restart.** The certificate and key are served by [`ReloadingCert`],
//!   which looks at the files' modification time and length at most once per
//!   [`CERT_RELOAD_CHECK`] (on a handshake, so an idle node does no work) and re-reads them
//!   when either changed. A pair that does not load (a half-written file, a key that does not
//!   match) is logged and the previous pair kept; the next change is tried again. Trusted CAs
//!   are read once at start: changing them needs a restart.
//! * **Handshakes are bounded.** A [`ServerTls`] lets at most [`TLS_HANDSHAKES_IN_PROGRESS_MAX`]
//!   handshakes run at once (more connections are closed at once) and gives each one
//!   [`TLS_HANDSHAKE_TIMEOUT`], so a slow or half-open client cannot hold a slot for ever,
//!   and bytes that are not a ClientHello close only that connection.
//! * **Plain stays plain.** The plain path never goes through this module's types with a cost:
//!   [`ServerStream`] is an enum (a branch per poll, no copy, no allocation), and the gRPC
//!   server is generic over its stream.

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// How long a client may take to finish its TLS handshake before we close it (the default of
/// the cluster file's `tls.handshake_timeout_ms`).
pub const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// [`TLS_HANDSHAKE_TIMEOUT_MS`] as a duration.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS);
/// TLS handshakes one listener runs at once; a connection beyond it is closed at once.
pub const TLS_HANDSHAKES_IN_PROGRESS_MAX: usize = 128;
/// The certificate files are looked at no more often than this.
pub const CERT_RELOAD_CHECK: Duration = Duration::from_secs(1);
/// ALPN of the gRPC port.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN of the HTTP/JSON port.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
/// ALPN of the peer transport (its own framing).
pub const ALPN_PEER: &[u8] = b"synod-peer/3";

/// One side's TLS files (etcd's `--cert-file`, `--key-file`, `--trusted-ca-file`,
/// `--client-cert-auth`, and their `--peer-` twins).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsFiles {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub trusted_ca_file: Option<PathBuf>,
    /// Refuse clients without a certificate signed by `trusted_ca_file`.
    pub client_cert_auth: bool,
    /// With client cert auth: also refuse a client certificate whose subject CN is not this
    /// (etcd's `--peer-cert-allowed-cn`; used on the peer port only).
    pub allowed_cn: Option<String>,
}

/// Why TLS could not be set up. Messages name the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("{0}")]
    Invalid(String),
}

impl TlsFiles {
    /// Whether this side speaks TLS at all.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }

    /// Checks that the fields fit together (not that the files load: [`ServerTls::new`]).
    pub fn check(&self, side: &str) -> Result<(), String> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(format!(
                    "{side}: a certificate needs its key and a key its certificate"
                ));
            }
            _ => {}
        }
        if self.client_cert_auth && self.trusted_ca_file.is_none() {
            return Err(format!(
                "{side}: client certificate auth needs a trusted CA file"
            ));
        }
        if self.allowed_cn.is_some() && !self.client_cert_auth {
            return Err(format!(
                "{side}: an allowed CN needs client certificate auth"
            ));
        }
        if !self.enabled() && (self.trusted_ca_file.is_some() || self.client_cert_auth) {
            return Err(format!(
                "{side}: a trusted CA or client cert auth needs a certificate"
            ));
        }
        Ok(())
    }
}

/// The one crypto provider every config here uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Every certificate of a PEM file, in order.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// A root store of every certificate in a PEM bundle.
pub fn load_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::Invalid(format!("{}: {e}", path.display())))?;
    }
    Ok(Arc::new(roots))
}

fn load_certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = load_certs(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
    CertifiedKey::from_der(chain, key_der, provider)
        .map_err(|e| TlsError::Invalid(format!("{} with {}: {e}", cert.display(), key.display())))
}

/// What says a file changed: its modification time and length.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// A certificate and key re-read from their files when they change (see the module doc).
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    /// A std mutex: held for a metadata call at most once a second, never across an await.
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    current: Arc<CertifiedKey>,
    stamps: (Stamp, Stamp),
    checked: Instant,
}

impl ReloadingCert {
    /// Loads the pair now, so a bad file fails the start instead of every handshake.
    pub fn new(cert: &Path, key: &Path, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let stamps = (stamp(cert), stamp(key));
        let current = Arc::new(load_certified_key(cert, key, &provider)?);
        Ok(ReloadingCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            state: Mutex::new(Loaded {
                current,
                stamps,
                checked: Instant::now(),
            }),
        })
    }

    /// The pair to present now, re-read first if the files changed.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.checked.elapsed() >= CERT_RELOAD_CHECK {
            st.checked = Instant::now();
            let stamps = (stamp(&self.cert), stamp(&self.key));
            if stamps != st.stamps {
                // Remember the stamps even when loading fails: a writer halfway through
                // changes them again when it finishes, and a broken pair is not retried
                // (and logged) every second.
                st.stamps = stamps;
                match load_certified_key(&self.cert, &self.key, &self.provider) {
                    Ok(k) => {
                        st.current = Arc::new(k);
                        tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                    }
                    Err(e) => tracing::warn!(
                        error = %e,
                        "TLS certificate files changed but do not load; keeping the previous pair"
                    ),
                }
            }
        }
        st.current.clone()
    }
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl rustls::client::ResolvesClientCert for ReloadingCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn required<'a>(p: &'a Option<PathBuf>, what: &str) -> Result<&'a Path, TlsError> {
    p.as_deref()
        .ok_or_else(|| TlsError::Invalid(format!("TLS needs {what}")))
}

/// A rustls server configuration for `files`, offering `alpn`.
pub fn server_config(files: &TlsFiles, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let cert = required(&files.cert_file, "a certificate file")?;
    let key = required(&files.key_file, "a key file")?;
    let resolver = Arc::new(ReloadingCert::new(cert, key, provider.clone())?);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    let builder = if files.client_cert_auth {
        let ca = required(&files.trusted_ca_file, "a trusted CA file")?;
        let verifier = WebPkiClientVerifier::builder_with_provider(load_roots(ca)?, provider)
            .build()
            .map_err(|e| TlsError::Invalid(format!("{}: {e}", ca.display())))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A rustls client configuration for `files` (the peer side's dialer): servers must chain to
/// `trusted_ca_file`; our certificate is presented when a server asks for one.
pub fn client_config(files: &TlsFiles, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let ca = required(&files.trusted_ca_file, "a trusted CA file")?;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid(e.to_string()))?
        .with_root_certificates(load_roots(ca)?);
    let mut config = match (&files.cert_file, &files.key_file) {
        (Some(cert), Some(key)) => {
            builder.with_client_cert_resolver(Arc::new(ReloadingCert::new(cert, key, provider)?))
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The accepting side of one listener: its rustls config and the handshake bounds.
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    handshakes: Arc<Semaphore>,
    handshake_timeout: Duration,
}

impl ServerTls {
    pub fn new(files: &TlsFiles, alpn: &[&[u8]]) -> Result<Self, TlsError> {
        Ok(ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(server_config(files, alpn)?),
            handshakes: Arc::new(Semaphore::new(TLS_HANDSHAKES_IN_PROGRESS_MAX)),
            handshake_timeout: TLS_HANDSHAKE_TIMEOUT,
        })
    }

    /// Tests shorten the handshake timeout so a half-open client is closed quickly.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// Runs the server handshake on `tcp` within the bounds. `Err` says why it failed (the
    /// caller logs it with its own context; the connection is closed either way).
    pub async fn accept(
        &self,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::server::TlsStream<TcpStream>, String> {
        let Ok(_permit) = self.handshakes.clone().try_acquire_owned() else {
            return Err(format!(
                "{TLS_HANDSHAKES_IN_PROGRESS_MAX} TLS handshakes already in progress"
            ));
        };
        match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(tcp)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
            Err(_) => Err(format!(
                "no TLS handshake within {} ms",
                self.handshake_timeout.as_millis()
            )),
        }
    }

    /// [`ServerTls::accept`], logging a failure with the client's address.
    pub async fn accept_logged(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        what: &str,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        match self.accept(tcp).await {
            Ok(s) => Some(s),
            Err(error) => {
                tracing::info!(%peer, %error, "{what}: refused TLS connection");
                None
            }
        }
    }
}

/// One DER element: (tag, contents, what follows). `None` on truncated or oversized input.
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The subject common name of a DER certificate (RFC 5280 §4.1: the subject follows the
/// optional version, serial number, signature algorithm, issuer and validity). Only ever
/// given certificates rustls already verified against the trusted CA.
pub fn common_name(cert_der: &[u8]) -> Option<String> {
    /// id-at-commonName, 2.5.4.3.
    const CN_OID: [u8; 3] = [0x55, 0x04, 0x03];
    let (_, cert, _) = der_next(cert_der)?;
    let (_, tbs, _) = der_next(cert)?;
    let (tag, _, after_version) = der_next(tbs)?;
    let mut rest = if tag == 0xa0 { after_version } else { tbs };
    for _field in ["serialNumber", "signature", "issuer", "validity"] {
        rest = der_next(rest)?.2;
    }
    let (_, mut rdns, _) = der_next(rest)?;
    while !rdns.is_empty() {
        let (_, mut set, next) = der_next(rdns)?;
        rdns = next;
        while !set.is_empty() {
            let (_, attribute, next) = der_next(set)?;
            set = next;
            let (_, oid, value) = der_next(attribute)?;
            if oid == CN_OID {
                let (_, text, _) = der_next(value)?;
                return std::str::from_utf8(text).ok().map(str::to_string);
            }
        }
    }
    None
}

/// Why a verified client certificate is still refused by `allowed_cn`, if it is.
pub fn cn_refusal(conn: &rustls::ServerConnection, allowed_cn: Option<&str>) -> Option<String> {
    let allowed = allowed_cn?;
    let cn = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| common_name(cert));
    match cn {
        Some(cn) if cn == allowed => None,
        other => Some(format!(
            "certificate CN {other:?} is not the allowed CN {allowed:?}"
        )),
    }
}

/// An accepted client connection: plain TCP or TLS over it.
pub enum ServerStream {
    Plain(TcpStream),
    /// Boxed: a TLS session is kilobytes, and the plain variant should not pay for it.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ServerStream::Plain(s) => s.is_write_vectored(),
            ServerStream::Tls(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(cert: bool, key: bool, ca: bool, auth: bool) -> TlsFiles {
        let p = |on: bool, name: &str| on.then(|| PathBuf::from(name));
        TlsFiles {
            cert_file: p(cert, "c.pem"),
            key_file: p(key, "k.pem"),
            trusted_ca_file: p(ca, "ca.pem"),
            client_cert_auth: auth,
            allowed_cn: None,
        }
    }

    #[test]
    fn tls_files_that_do_not_fit_together_are_refused() {
        assert!(files(false, false, false, false).check("x").is_ok());
        assert!(files(true, true, false, false).check("x").is_ok());
        assert!(files(true, true, true, true).check("x").is_ok());
        assert!(files(true, false, false, false).check("x").is_err());
        assert!(files(false, true, false, false).check("x").is_err());
        assert!(files(true, true, false, true).check("x").is_err());
        assert!(files(false, false, true, false).check("x").is_err());
    }

    #[test]
    fn common_name_is_read_from_the_subject_and_bad_der_is_none() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "synod");
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "member-1");
        let cert = p.self_signed(&key).expect("cert");
        let der: &[u8] = cert.der();
        assert_eq!(common_name(der).as_deref(), Some("member-1"));
        assert_eq!(common_name(&der[..der.len() / 2]), None);
        assert_eq!(common_name(b"\x30\x84\xff\xff\xff\xff"), None);
        assert_eq!(common_name(&[]), None);
    }

    #[test]
    fn a_missing_certificate_file_is_named_in_the_error() {
        let e = ServerTls::new(&files(true, true, false, false), &[ALPN_H2])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("c.pem"), "{e}");
    }
}
