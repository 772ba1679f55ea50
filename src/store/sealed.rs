//! Sealing one namespace's secrets: the data sealed with the namespace's own data key
//! (XChaCha20-Poly1305), the data key wrapped by the master key; shared by the file store
//! and the PostgreSQL store so both keep the same design.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::master_key::MasterKey;
use super::model::{Record, StoredSecret};
use super::StoreError;

#[derive(Serialize, Deserialize, Default)]
struct NamespacePlain {
    secrets: Vec<Record>,
}

/// A namespace's sealed form: the wrapped data key and the sealed data.
pub struct Sealed {
    pub wrapped_key: Vec<u8>,
    pub data: Vec<u8>,
}

/// A fresh random data key for a new namespace.
pub fn new_data_key() -> Result<Zeroizing<Vec<u8>>, StoreError> {
    Ok(Zeroizing::new(super::master_key::random_key()?.to_vec()))
}

/// Seals `secrets` with `data_key`, and wraps `data_key` with the master key.
pub fn seal_namespace(
    namespace: &str,
    key: &MasterKey,
    data_key: &[u8],
    secrets: &[StoredSecret],
) -> Result<Sealed, StoreError> {
    let plain = NamespacePlain {
        secrets: secrets.iter().map(Record::from_secret).collect(),
    };
    let bytes =
        Zeroizing::new(serde_json::to_vec(&plain).map_err(|e| StoreError::Invalid(e.to_string()))?);
    Ok(Sealed {
        wrapped_key: seal(key.bytes(), data_key, &aad("dk", namespace))?,
        data: seal(data_key, &bytes, &aad("data", namespace))?,
    })
}

/// Opens a sealed namespace: its secrets and its data key, or why not (never the contents).
pub fn open_namespace(
    namespace: &str,
    key: &MasterKey,
    sealed: &Sealed,
) -> Result<(Vec<StoredSecret>, Zeroizing<Vec<u8>>), String> {
    let data_key = Zeroizing::new(
        open(key.bytes(), &sealed.wrapped_key, &aad("dk", namespace))
            .map_err(|()| "wrapped key does not open".to_string())?,
    );
    let plain = Zeroizing::new(
        open(&data_key, &sealed.data, &aad("data", namespace))
            .map_err(|()| "data does not open (damaged data)".to_string())?,
    );
    let parsed: NamespacePlain =
        serde_json::from_slice(&plain).map_err(|_| "decrypted data is not valid".to_string())?;
    let mut secrets = Vec::with_capacity(parsed.secrets.len());
    for record in parsed.secrets {
        secrets.push(record.into_secret(namespace).map_err(|r| r.to_string())?);
    }
    Ok((secrets, data_key))
}

fn aad(what: &str, namespace: &str) -> Vec<u8> {
    format!("pullsecret/{what}/v1/{namespace}").into_bytes()
}

/// nonce (24 bytes) || ciphertext+tag
fn seal(key: &[u8], plain: &[u8], aad: &[u8]) -> Result<Vec<u8>, StoreError> {
    let cipher = XChaCha20Poly1305::new_from_slice(key)
        .map_err(|_| StoreError::Invalid("bad key length".into()))?;
    let mut nonce = [0u8; 24];
    getrandom::fill(&mut nonce)
        .map_err(|e| StoreError::Invalid(format!("OS random source: {e}")))?;
    let ct = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
        .map_err(|_| StoreError::Invalid("encryption failed".into()))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    Ok(out)
}

fn open(key: &[u8], sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, ()> {
    if sealed.len() < 24 {
        return Err(());
    }
    let cipher = XChaCha20Poly1305::new_from_slice(key).map_err(|_| ())?;
    let (nonce, ct) = sealed.split_at(24);
    cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .map_err(|_| ())
}
