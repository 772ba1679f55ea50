//! The master key that wraps each namespace's data key: a 0600 file kept apart from the data.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::StoreError;
use crate::fsutil::{create_private_dir, write_atomic};

pub struct MasterKey {
    key: Zeroizing<[u8; 32]>,
}

impl MasterKey {
    /// Loads the key at `path`; `None` when there is no file.
    pub fn load(path: &Path) -> Result<Option<Self>, StoreError> {
        let err = |reason: String| StoreError::MasterKey {
            path: path.to_path_buf(),
            reason,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => Zeroizing::new(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(e.to_string())),
        };
        let mode = std::fs::metadata(path)
            .map_err(|e| err(e.to_string()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(err(format!(
                "readable by group or others (mode {:o}); run: chmod 600 {}",
                mode & 0o777,
                path.display()
            )));
        }
        let bytes = Zeroizing::new(
            B64.decode(text.trim())
                .map_err(|_| err("not a base64 key".into()))?,
        );
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| err("not a 32-byte key".into()))?;
        Ok(Some(Self {
            key: Zeroizing::new(key),
        }))
    }

    /// Creates a fresh random key at `path` (0600, parent 0700). Callers hold the store lock.
    pub fn create(path: &Path) -> Result<Self, StoreError> {
        let key = random_key()?;
        if let Some(dir) = path.parent() {
            create_private_dir(dir).map_err(StoreError::io(dir))?;
        }
        let text = Zeroizing::new(format!("{}\n", B64.encode(*key)));
        write_atomic(path, text.as_bytes()).map_err(StoreError::io(path))?;
        Ok(Self { key })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.key[..]
    }

    /// A short public fingerprint, stored beside the data to tell "wrong key" from "damaged file".
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"pullsecret-master-key-id");
        h.update(&self.key[..]);
        hex::encode(&h.finalize()[..6])
    }
}

pub fn random_key() -> Result<Zeroizing<[u8; 32]>, StoreError> {
    let mut k = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut k[..])
        .map_err(|e| StoreError::Invalid(format!("OS random source: {e}")))?;
    Ok(k)
}
