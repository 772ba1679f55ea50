//! The proxy's optional TLS listener: certificate and key from PEM files or a stored `tls` secret.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::ExposeSecret;

use super::config::TlsConfig;
use super::error::SetupError;
use crate::secret::RefResolver;
use crate::store::{SecretData, SecretStore, StoreRefs};

/// Builds the acceptor (HTTP/2 and HTTP/1.1 by ALPN).
pub fn acceptor(
    cfg: &TlsConfig,
    store: &dyn SecretStore,
    namespace: &str,
) -> Result<tokio_rustls::TlsAcceptor, SetupError> {
    let (cert_pem, key_pem) = match (&cfg.cert, &cfg.key, &cfg.secret) {
        (Some(c), Some(k), None) => (
            std::fs::read(c)
                .map_err(|e| SetupError::new(format!("tls.cert {}", c.display()), e))?,
            zeroize::Zeroizing::new(
                std::fs::read(k)
                    .map_err(|e| SetupError::new(format!("tls.key {}", k.display()), e))?,
            )
            .to_vec(),
        ),
        (None, None, Some(spec)) => {
            let crate::secret::SecretName {
                namespace: ns,
                name,
            } = crate::secret::SecretName::parse(spec, namespace);
            let s = store
                .get(&ns, &name)
                .map_err(|e| SetupError::new(format!("tls.secret {ns}/{name}"), e))?
                .ok_or_else(|| {
                    SetupError::new(format!("tls.secret {ns}/{name}"), "does not exist")
                })?;
            let SecretData::Tls { cert, key } = &s.data else {
                return Err(SetupError::new(
                    format!("tls.secret {ns}/{name}"),
                    "is not a tls secret",
                ));
            };
            let refs = StoreRefs(store);
            let key = RefResolver::with_store(&refs)
                .resolve_value(key)
                .map_err(|e| SetupError::new(format!("tls.secret {ns}/{name}"), e))?;
            (
                cert.as_bytes().to_vec(),
                key.expose_secret().as_bytes().to_vec(),
            )
        }
        _ => {
            return Err(SetupError::new(
                "[tls]",
                "needs either cert and key, or secret",
            ))
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| SetupError::new("tls certificate", e))?;
    if certs.is_empty() {
        return Err(SetupError::new(
            "tls certificate",
            "no PEM certificate found",
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| SetupError::new("tls key", "no PEM private key found"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SetupError::new("tls", e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| SetupError::new("tls", e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
