//! Linux kernel keyutils: entries are `user` keys named `pullsecret:KEY` in the user keyring
//! (`@u`), which every process of the uid can reach, with or without a login session.

use linux_keyutils::{KeyError, KeyPermissionsBuilder, KeyRing, KeyRingIdentifier, Permission};
use zeroize::Zeroizing;

use super::slots::Slots;
use super::Bytes;
use crate::store::StoreError;

const BACKEND: &str = "keyutils";
const PREFIX: &str = "pullsecret:";
/// The kernel's limit on a `user` key's payload.
const MAX_USER_PAYLOAD: usize = 32_767;

/// The user keyring, opened.
///
/// Why not the session keyring (as linux-keyutils-keyring-store uses, with a link into
/// the persistent keyring): a process started outside a login session (a daemon, a CI
/// job, `keyctl session -`) has a session keyring of its own, so a helper run there would
/// not see what the CLI stored; and linking into the persistent keyring is denied on
/// hosts like this one. `@u` lives as long as the uid has processes.
pub struct Keyutils {
    ring: KeyRing,
}

impl Keyutils {
    pub fn open() -> Result<Self, StoreError> {
        let ring = KeyRing::from_special_id(KeyRingIdentifier::User, true).map_err(|e| StoreError::Unavailable {
            backend: BACKEND,
            reason: format!("the kernel refused the user keyring ({})", describe(e)),
            fix: "run where the keyctl/add_key system calls are allowed (container seccomp profiles often block them), or set store = \"file\"".into(),
        })?;
        Ok(Self { ring })
    }

    fn error(&self, key: &str, e: KeyError) -> StoreError {
        match e {
            KeyError::QuotaExceeded => StoreError::Unavailable {
                backend: BACKEND,
                reason: format!("the kernel key quota is used up writing {PREFIX}{key}"),
                fix: "delete unused keys (keyctl show @u) or raise kernel.keys.maxkeys / kernel.keys.maxbytes, or set store = \"file\"".into(),
            },
            KeyError::AccessDenied => StoreError::Unavailable {
                backend: BACKEND,
                reason: format!("access to {PREFIX}{key} in the user keyring was denied"),
                fix: "run as the uid that stored the secrets, or set store = \"file\"".into(),
            },
            other => StoreError::Invalid(format!("{BACKEND}: {PREFIX}{key}: {}", describe(other))),
        }
    }
}

fn describe(e: KeyError) -> String {
    format!("{e:?}")
}

impl Slots for Keyutils {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn max_value(&self) -> usize {
        MAX_USER_PAYLOAD
    }

    fn read(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let found = match self.ring.search(&format!("{PREFIX}{key}")) {
            Ok(k) => k,
            Err(KeyError::KeyDoesNotExist | KeyError::KeyExpired | KeyError::KeyRevoked) => {
                return Ok(None)
            }
            Err(e) => return Err(self.error(key, e)),
        };
        match found.read_to_vec() {
            Ok(v) => Ok(Some(Zeroizing::new(v))),
            // Removed between the search and the read.
            Err(KeyError::KeyDoesNotExist | KeyError::KeyExpired | KeyError::KeyRevoked) => {
                Ok(None)
            }
            Err(e) => Err(self.error(key, e)),
        }
    }

    fn write(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let k = self
            .ring
            .add_key(&format!("{PREFIX}{key}"), value)
            .map_err(|e| self.error(key, e))?;
        // By default only a possessor may read a key; a process whose session keyring does
        // not link @u is not one, so the uid itself gets read access too.
        let perms = KeyPermissionsBuilder::builder()
            .posessor(Permission::ALL)
            .user(Permission::ALL)
            .build();
        k.set_perms(perms).map_err(|e| self.error(key, e))
    }

    fn remove(&self, key: &str) -> Result<(), StoreError> {
        match self.ring.search(&format!("{PREFIX}{key}")) {
            // Unlinking makes it unreachable at once; the kernel frees it afterwards.
            Ok(k) => match self.ring.unlink_key(k) {
                Ok(()) | Err(KeyError::KeyDoesNotExist) => Ok(()),
                Err(e) => Err(self.error(key, e)),
            },
            Err(KeyError::KeyDoesNotExist | KeyError::KeyExpired | KeyError::KeyRevoked) => Ok(()),
            Err(e) => Err(self.error(key, e)),
        }
    }
}
