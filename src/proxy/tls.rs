//! The proxy's optional TLS listener: certificate and key from PEM files or a stored `tls` secret.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::ExposeSecret;

use super::config::TlsConfig;
use crate::secret::RefResolver;
use crate::store::{SecretData, SecretStore, StoreRefs};

/// Builds the acceptor (HTTP/2 and HTTP/1.1 by ALPN).
pub fn acceptor(
    cfg: &TlsConfig,
    store: &dyn SecretStore,
    namespace: &str,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    let (cert_pem, key_pem) = match (&cfg.cert, &cfg.key, &cfg.secret) {
        (Some(c), Some(k), None) => (
            std::fs::read(c).map_err(|e| format!("tls.cert {}: {e}", c.display()))?,
            zeroize::Zeroizing::new(
                std::fs::read(k).map_err(|e| format!("tls.key {}: {e}", k.display()))?,
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
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("tls.secret {ns}/{name} does not exist"))?;
            let SecretData::Tls { cert, key } = &s.data else {
                return Err(format!("tls.secret {ns}/{name} is not a tls secret"));
            };
            let refs = StoreRefs(store);
            let key = RefResolver::with_store(&refs)
                .resolve_value(key)
                .map_err(|e| e.to_string())?;
            (
                cert.as_bytes().to_vec(),
                key.expose_secret().as_bytes().to_vec(),
            )
        }
        _ => return Err("[tls] needs either cert and key, or secret".into()),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls certificate: {e}"))?;
    if certs.is_empty() {
        return Err("tls certificate: no PEM certificate found".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| "tls key: no PEM private key found".to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
