//! TLS on both ports (`[server.tls] cert`, `key`: PEM files). The gRPC port hands the
//! pair to tonic; the HTTP collector is served over `tokio-rustls` with the same
//! pair. Both files are read and checked when the server starts, so a wrong path or a
//! key that does not match the certificate stops `tessera serve` with a message
//! naming the file, before any port accepts a connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The certificate chain and key files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The loaded pair, ready for both ports.
#[derive(Clone)]
pub struct Tls {
    /// PEM text, for tonic.
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// For the HTTP port.
    pub acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

/// Why the certificate and key cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a PEM {what}: {message}", path.display())]
    NotPem {
        what: &'static str,
        path: std::path::PathBuf,
        message: String,
    },
    #[error("{}: no certificate (expected -----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate { path: std::path::PathBuf },
    #[error("{} and {} do not form a usable pair: {source}", cert.display(), key.display())]
    Pair {
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS: {0}")]
    Protocol(#[source] rustls::Error),
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

impl Tls {
    /// Reads and checks the pair.
    pub fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        // Several crypto back ends are linked (object-store clients bring their own):
        // name the process default that tonic's acceptor uses. Fails harmlessly when
        // one is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cert_pem = read(&files.cert, "certificate")?;
        let key_pem = read(&files.key, "key")?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::NotPem {
                what: "certificate chain",
                path: files.cert.clone(),
                message: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(TlsError::NoCertificate {
                path: files.cert.clone(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::NotPem {
            what: "private key",
            path: files.key.clone(),
            message: e.to_string(),
        })?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Protocol)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::Pair {
            cert: files.cert.clone(),
            key: files.key.clone(),
            source,
        })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            cert_pem,
            key_pem,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// tonic's configuration for the gRPC port.
    pub fn grpc(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(
            &self.cert_pem,
            &self.key_pem,
        ))
    }
}

/// Serves `app` over TLS on `listener` until `stop` turns true; then stops accepting
/// and waits (up to 30 s) for requests in flight, so that the collector is shut down
/// only after every acknowledged batch has reached it.
pub async fn serve_https(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    acceptor: tokio_rustls::TlsAcceptor,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("accepting an HTTPS connection failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                // The caller's address, as `into_make_service_with_connect_info` gives it.
                let app = app.clone().layer(axum::Extension(axum::extract::ConnectInfo(peer)));
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, "TLS handshake failed: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    let conn = builder
                        .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), service)
                        .into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(%peer, "HTTPS connection ended: {e}");
                    }
                });
            }
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTPS connections still open after 30 s; closing them");
    }
    Ok(())
}
