//! Keyrings reached through keyring-core's store crates as flat entries: the macOS Keychain
//! and the Windows Credential Manager (each compiled only for its own target).

use std::sync::Arc;

use keyring_core::{CredentialStore, Error as KeyringError};
use zeroize::Zeroizing;

use super::slots::Slots;
use super::Bytes;
use crate::store::StoreError;

/// Every entry is created under this keyring-core service; the entry key is the user.
const SERVICE: &str = "pullsecret";

/// Windows' CRED_MAX_CREDENTIAL_BLOB_SIZE: longer values are split (see `chunk`).
pub const WINCRED_MAX_BLOB: usize = 5 * 512;

/// A keyring-core credential store seen as flat entries.
pub struct NativeSlots {
    store: Arc<CredentialStore>,
    backend: &'static str,
    max: usize,
}

impl NativeSlots {
    pub fn new(store: Arc<CredentialStore>, backend: &'static str, max: usize) -> Self {
        Self {
            store,
            backend,
            max,
        }
    }

    fn entry(&self, key: &str) -> Result<keyring_core::Entry, StoreError> {
        self.store
            .build(SERVICE, key, None)
            .map_err(|e| self.error(key, e))
    }

    /// Maps keyring-core errors; none of them carry secret bytes we would print
    /// (`BadEncoding`/`BadDataFormat` hold the data, so only their kind is named).
    fn error(&self, key: &str, e: KeyringError) -> StoreError {
        let reason = match e {
            KeyringError::NoStorageAccess(err) => {
                return StoreError::Unavailable {
                    backend: self.backend,
                    reason: format!("access to the keyring was refused ({err})"),
                    fix: unlock_fix(self.backend).to_string(),
                }
            }
            KeyringError::PlatformFailure(err) => format!("platform failure: {err}"),
            KeyringError::BadEncoding(_) | KeyringError::BadDataFormat(..) => {
                "unreadable entry data".to_string()
            }
            KeyringError::TooLong(what, limit) => format!("{what} longer than {limit}"),
            other => other.to_string(),
        };
        StoreError::Invalid(format!("{}: entry {key:?}: {reason}", self.backend))
    }
}

fn unlock_fix(backend: &str) -> &'static str {
    match backend {
        "keychain" => "unlock the login keychain (security unlock-keychain) and allow pullsecret access, or set store = \"file\"",
        _ => "sign in to the Windows account whose Credential Manager holds the secrets, or set store = \"file\"",
    }
}

impl Slots for NativeSlots {
    fn name(&self) -> &'static str {
        self.backend
    }

    fn max_value(&self) -> usize {
        self.max
    }

    fn read(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        match self.entry(key)?.get_secret() {
            Ok(v) => Ok(Some(Zeroizing::new(v))),
            Err(KeyringError::NoEntry) => Ok(None),
            Err(e) => Err(self.error(key, e)),
        }
    }

    fn write(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.entry(key)?
            .set_secret(value)
            .map_err(|e| self.error(key, e))
    }

    fn remove(&self, key: &str) -> Result<(), StoreError> {
        match self.entry(key)?.delete_credential() {
            Ok(()) | Err(KeyringError::NoEntry) => Ok(()),
            Err(e) => Err(self.error(key, e)),
        }
    }
}

/// The login keychain, through apple-native-keyring-store.
#[cfg(target_os = "macos")]
pub fn keychain() -> Result<NativeSlots, StoreError> {
    let store = apple_native_keyring_store::keychain::Store::new().map_err(|e| {
        StoreError::Unavailable {
            backend: "keychain",
            reason: e.to_string(),
            fix: unlock_fix("keychain").to_string(),
        }
    })?;
    // Keychain items hold far more than any secret the limits allow.
    Ok(NativeSlots::new(store, "keychain", usize::MAX))
}

/// The Windows Credential Manager, through windows-native-keyring-store.
#[cfg(windows)]
pub fn wincred() -> Result<NativeSlots, StoreError> {
    let store =
        windows_native_keyring_store::Store::new().map_err(|e| StoreError::Unavailable {
            backend: "wincred",
            reason: e.to_string(),
            fix: unlock_fix("wincred").to_string(),
        })?;
    Ok(NativeSlots::new(store, "wincred", WINCRED_MAX_BLOB))
}

#[cfg(test)]
mod tests {
    use keyring_core::api::CredentialStoreApi;

    use super::*;
    use crate::secret::Limits;
    use crate::store::keyring::slots::Indexed;
    use crate::store::keyring::KeyringStore;
    use crate::store::SecretStore;

    /// keyring-core's own in-memory mock store stands in for the Windows store (which
    /// cannot run here), with the Windows entry limit.
    #[test]
    fn keyring_core_store_with_the_windows_limit() {
        let mock = keyring_core::mock::Store::new().expect("mock store");
        let slots = NativeSlots::new(mock.clone(), "wincred", WINCRED_MAX_BLOB);
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = Limits {
            max_secret_bytes: 16_384,
            ..Limits::default()
        };
        let s = KeyringStore::new(Indexed::new(slots), limits, dir.path().into());
        let token = "j".repeat(12_000);
        s.put(
            crate::store::keyring::tests::registry("default", "acr", &token),
            false,
        )
        .expect("put");
        for key in ["secret:default/acr", "index:default", "namespaces"] {
            let e = mock.build(SERVICE, key, None).expect("entry");
            let v = e.get_secret().expect("stored");
            assert!(v.len() <= WINCRED_MAX_BLOB, "{key}: {} bytes", v.len());
        }
        let got = s.get("default", "acr").expect("get").expect("found");
        assert_eq!(got.stored_size(), "acr.example".len() + 1 + 12_000);
        s.delete("default", &["acr".into()]).expect("delete");
        assert!(s.list(None).expect("list").is_empty());
        assert!(matches!(
            mock.build(SERVICE, "secret:default/acr", None)
                .expect("entry")
                .get_secret(),
            Err(KeyringError::NoEntry)
        ));
    }
}
