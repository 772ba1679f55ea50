//! The master key that wraps each namespace's data key, kept apart from the data: in the OS
//! keyring (Secret Service) when one answered when the key was made, else a 0600 key file.
//! A marker file beside the key file records which, so a later session never guesses.

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
        Self::decode(path, &text).map(Some)
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

    /// Loads the key from where the marker says it is: the keyring, or the key file.
    pub fn load_any(path: &Path, data_dir: &Path) -> Result<Option<Self>, StoreError> {
        if !marker(path).exists() {
            return Self::load(path);
        }
        let text = keyring_read(path, data_dir)?;
        let Some(text) = text else { return Ok(None) };
        Self::decode(path, &text).map(Some)
    }

    /// Creates a key: in the Secret Service when it answers quickly (and
    /// `PULLSECRET_MASTER_KEY_STORE` is not `file`), else in the key file.
    pub fn create_any(path: &Path, data_dir: &Path) -> Result<Self, StoreError> {
        let want_keyring =
            std::env::var("PULLSECRET_MASTER_KEY_STORE").map_or(true, |v| v != "file");
        if want_keyring {
            if let Some(k) = keyring_create(path, data_dir)? {
                return Ok(k);
            }
        }
        Self::create(path)
    }

    /// The key a reference (`vault://…`, `env://VAR`, …) resolves to: base64 of 32 bytes.
    pub fn from_reference(reference: &str) -> Result<Self, StoreError> {
        // Never the text itself in errors: a key pasted where a reference belongs would leak.
        let what = Path::new("(PULLSECRET_MASTER_KEY_REF / [state] master_key)");
        let err = |reason: String| StoreError::MasterKey {
            path: what.to_path_buf(),
            reason,
        };
        let r = crate::secret::SecretRef::parse(reference)
            .map_err(|e| err(e.to_string()))?
            .ok_or_else(|| {
                err("not a reference (env://, file://, vault://, cmd://, op://)".into())
            })?;
        let value = crate::secret::RefResolver::default()
            .resolve(&r)
            .map_err(|e| err(e.to_string()))?;
        use secrecy::ExposeSecret;
        Self::decode(what, value.expose_secret())
    }

    fn decode(path: &Path, text: &str) -> Result<Self, StoreError> {
        let err = |reason: String| StoreError::MasterKey {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = Zeroizing::new(
            B64.decode(text.trim())
                .map_err(|_| err("not a base64 key".into()))?,
        );
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| err("not a 32-byte key".into()))?;
        Ok(Self {
            key: Zeroizing::new(key),
        })
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

/// `master.key.location`: present when the key lives in the Secret Service.
pub fn marker(path: &Path) -> std::path::PathBuf {
    path.with_extension("key.location")
}

#[cfg(target_os = "linux")]
fn keyring_read(path: &Path, data_dir: &Path) -> Result<Option<String>, StoreError> {
    use super::keyring::secret_service::SecretService;
    let ss = SecretService::connect().map_err(|e| StoreError::MasterKey {
        path: marker(path),
        reason: format!("the master key is in the Secret Service, which cannot be reached: {e}"),
    })?;
    let bytes = ss.read_master_key(&data_dir.display().to_string())?;
    Ok(bytes.map(|b| String::from_utf8_lossy(&b).to_string()))
}

#[cfg(not(target_os = "linux"))]
fn keyring_read(path: &Path, _data_dir: &Path) -> Result<Option<String>, StoreError> {
    Err(StoreError::MasterKey {
        path: marker(path),
        reason: "the master key is in a Secret Service, which this platform lacks".into(),
    })
}

/// Stores a fresh key in the Secret Service if one answers in time (200 ms unless
/// `PULLSECRET_PROBE_MS` says otherwise); `None` otherwise.
#[cfg(target_os = "linux")]
fn keyring_create(path: &Path, data_dir: &Path) -> Result<Option<MasterKey>, StoreError> {
    use super::keyring::secret_service::SecretService;
    let Ok(ss) = SecretService::probe(super::keyring::probe_timeout()) else {
        return Ok(None);
    };
    let key = random_key()?;
    let text = Zeroizing::new(B64.encode(*key));
    if ss
        .write_master_key(&data_dir.display().to_string(), text.as_bytes())
        .is_err()
    {
        return Ok(None);
    }
    if let Some(dir) = path.parent() {
        create_private_dir(dir).map_err(StoreError::io(dir))?;
    }
    write_atomic(&marker(path), b"secret-service\n").map_err(StoreError::io(marker(path)))?;
    Ok(Some(MasterKey { key }))
}

#[cfg(not(target_os = "linux"))]
fn keyring_create(_path: &Path, _data_dir: &Path) -> Result<Option<MasterKey>, StoreError> {
    Ok(None)
}
