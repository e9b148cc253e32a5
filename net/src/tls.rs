//! TLS server configuration from PEM files (rustls with the aws-lc-rs provider), reloadable.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::NetError;

/// Installs aws-lc-rs as the process-wide rustls provider. Safe to call more than once.
pub fn install_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Loads a certificate chain and private key from PEM files into a server configuration.
pub fn load_server_config(
    cert: &Path,
    key: &Path,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, NetError> {
    install_provider();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| NetError::Tls(format!("certificate file: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| NetError::Tls(format!("certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(NetError::Tls(
            "certificate file holds no certificate".into(),
        ));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| NetError::Tls(format!("key file: {e}")))?;
    let mut cfg = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| NetError::Tls(e.to_string()))?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// A TLS configuration that can be reloaded from its files (for example on SIGHUP) while
/// connections are being accepted. New handshakes use the newest configuration.
#[derive(Clone)]
pub struct ReloadableTls {
    cert: PathBuf,
    key: PathBuf,
    alpn: Vec<Vec<u8>>,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl ReloadableTls {
    /// Loads the files once; fails if they are invalid.
    pub fn load(cert: &Path, key: &Path, alpn: &[&[u8]]) -> Result<Self, NetError> {
        let cfg = load_server_config(cert, key, alpn)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            alpn: alpn.iter().map(|p| p.to_vec()).collect(),
            current: Arc::new(RwLock::new(cfg)),
        })
    }

    /// Re-reads the files. On error the previous configuration stays in use.
    pub fn reload(&self) -> Result<(), NetError> {
        let alpn: Vec<&[u8]> = self.alpn.iter().map(Vec::as_slice).collect();
        let cfg = load_server_config(&self.cert, &self.key, &alpn)?;
        *self.current.write() = cfg;
        Ok(())
    }

    /// An acceptor for the current configuration.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.read().clone())
    }

    /// Reloads on every SIGHUP until `shutdown` fires. Failures keep the old certificate.
    #[cfg(unix)]
    pub async fn reload_on_sighup(self, shutdown: crate::shutdown::Shutdown) {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                got = hup.recv() => {
                    if got.is_none() { return; }
                    match self.reload() {
                        Ok(()) => tracing::info!("tls certificate reloaded"),
                        Err(e) => tracing::warn!(error = %e, "tls reload failed, keeping the old certificate"),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn loads_pem_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_cert(dir.path(), "localhost");
        let tls = ReloadableTls::load(&cert, &key, &[b"http/1.1"]).unwrap();
        std::fs::write(&cert, "not a pem").unwrap();
        assert!(
            tls.reload().is_err(),
            "garbage must not replace a good certificate"
        );
        let _ = tls.acceptor();
        assert!(load_server_config(&dir.path().join("missing.pem"), &key, &[]).is_err());
    }
}
