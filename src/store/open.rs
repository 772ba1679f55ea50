//! Which store to open (a keyring or the encrypted file store): `store = auto|file|secret-service|keyutils|keychain|wincred` from
//! `PULLSECRET_STORE` or the config file, and the reason `pullsecret doctor` shows.

use super::{FileStore, SecretStore, StoreError, StorePaths};
use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreKind {
    /// The Secret Service when it answers on the session bus, else the file store.
    Auto,
    File,
    SecretService,
    Keyutils,
    Keychain,
    Wincred,
}

const NAMES: &[(&str, StoreKind)] = &[
    ("auto", StoreKind::Auto),
    ("file", StoreKind::File),
    ("secret-service", StoreKind::SecretService),
    ("keyutils", StoreKind::Keyutils),
    ("keychain", StoreKind::Keychain),
    ("wincred", StoreKind::Wincred),
];

impl StoreKind {
    pub fn parse(s: &str) -> Option<Self> {
        NAMES.iter().find(|(n, _)| *n == s).map(|(_, k)| *k)
    }

    pub fn as_str(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("auto", |(n, _)| n)
    }
}

/// The open store and why it is the one in use.
pub struct OpenedStore {
    pub store: Box<dyn SecretStore>,
    pub why: String,
}

/// Opens the configured store. A backend named explicitly is used or reported as an
/// error with its cause and fix; only `auto` ever falls back to the file store.
///
/// The file store is opened without touching D-Bus; `auto` probes the bus only when
/// `DBUS_SESSION_BUS_ADDRESS` is set, so the helper stays fast on headless hosts.
pub fn open_store(config: &Config, paths: &StorePaths) -> Result<OpenedStore, StoreError> {
    if let Some((store, why)) = open_state(config, paths)? {
        return Ok(OpenedStore {
            store: Box::new(store),
            why,
        });
    }
    let (value, source) = config.store_setting();
    let kind = StoreKind::parse(&value).ok_or_else(|| {
        let names: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
        StoreError::Invalid(format!(
            "unknown store {value:?} (from {source}); use one of {}",
            names.join(", ")
        ))
    })?;
    let file = |why: String| OpenedStore {
        store: Box::new(FileStore::new(paths.clone(), config.limits)),
        why,
    };
    let chosen = format!("store = {:?} from {source}", kind.as_str());
    match kind {
        StoreKind::File => Ok(file(chosen)),
        StoreKind::Auto => Ok(match auto_keyring(config, paths) {
            Ok(store) => OpenedStore {
                store,
                why: format!("{chosen}: the Secret Service answered on the D-Bus session bus"),
            },
            Err(reason) => file(format!("{chosen}: {reason}, so the encrypted file store")),
        }),
        StoreKind::SecretService => Ok(OpenedStore {
            store: secret_service(config, paths)?,
            why: chosen,
        }),
        StoreKind::Keyutils => Ok(OpenedStore {
            store: keyutils(config, paths)?,
            why: chosen,
        }),
        StoreKind::Keychain => Ok(OpenedStore {
            store: keychain(config, paths)?,
            why: chosen,
        }),
        StoreKind::Wincred => Ok(OpenedStore {
            store: wincred(config, paths)?,
            why: chosen,
        }),
    }
}

/// Why `auto` found no keyring to use (the reason `pullsecret doctor` shows).
#[derive(Debug, thiserror::Error)]
enum NoKeyring {
    #[error("{0}")]
    NoAnswer(String),
    #[cfg_attr(target_os = "linux", allow(dead_code))]
    #[error("there is no Secret Service on this platform")]
    Platform,
}

/// Where keyring stores keep the lock that serializes their writers.
fn lock_dir(paths: &StorePaths) -> std::path::PathBuf {
    paths.data_dir.join("keyring-v1")
}

fn not_here(backend: &'static str, platform: &str) -> StoreError {
    StoreError::Unavailable {
        backend,
        reason: format!("{backend} exists only on {platform}"),
        fix: "set store = \"auto\" or \"file\" (or PULLSECRET_STORE)".into(),
    }
}

#[cfg(target_os = "linux")]
fn auto_keyring(config: &Config, paths: &StorePaths) -> Result<Box<dyn SecretStore>, NoKeyring> {
    use super::keyring::secret_service::SecretService;
    let ss = SecretService::probe(super::keyring::probe_timeout())
        .map_err(|n| NoKeyring::NoAnswer(n.reason))?;
    Ok(Box::new(super::keyring::KeyringStore::new(
        ss,
        config.limits,
        lock_dir(paths),
    )))
}

#[cfg(not(target_os = "linux"))]
fn auto_keyring(_: &Config, _: &StorePaths) -> Result<Box<dyn SecretStore>, NoKeyring> {
    Err(NoKeyring::Platform)
}

#[cfg(target_os = "linux")]
fn secret_service(config: &Config, paths: &StorePaths) -> Result<Box<dyn SecretStore>, StoreError> {
    let ss = super::keyring::secret_service::SecretService::connect()?;
    Ok(Box::new(super::keyring::KeyringStore::new(
        ss,
        config.limits,
        lock_dir(paths),
    )))
}

#[cfg(not(target_os = "linux"))]
fn secret_service(_: &Config, _: &StorePaths) -> Result<Box<dyn SecretStore>, StoreError> {
    Err(not_here("secret-service", "Linux"))
}

#[cfg(target_os = "linux")]
fn keyutils(config: &Config, paths: &StorePaths) -> Result<Box<dyn SecretStore>, StoreError> {
    let slots = super::keyring::keyutils::Keyutils::open()?;
    Ok(Box::new(super::keyring::KeyringStore::new(
        super::keyring::slots::Indexed::new(slots),
        config.limits,
        lock_dir(paths),
    )))
}

#[cfg(not(target_os = "linux"))]
fn keyutils(_: &Config, _: &StorePaths) -> Result<Box<dyn SecretStore>, StoreError> {
    Err(not_here("keyutils", "Linux"))
}

#[cfg(target_os = "macos")]
fn keychain(config: &Config, paths: &StorePaths) -> Result<Box<dyn SecretStore>, StoreError> {
    let slots = super::keyring::native::keychain()?;
    Ok(Box::new(super::keyring::KeyringStore::new(
        super::keyring::slots::Indexed::new(slots),
        config.limits,
        lock_dir(paths),
    )))
}

#[cfg(not(target_os = "macos"))]
fn keychain(_: &Config, _: &StorePaths) -> Result<Box<dyn SecretStore>, StoreError> {
    Err(not_here("keychain", "macOS"))
}

#[cfg(windows)]
fn wincred(config: &Config, paths: &StorePaths) -> Result<Box<dyn SecretStore>, StoreError> {
    let slots = super::keyring::native::wincred()?;
    Ok(Box::new(super::keyring::KeyringStore::new(
        super::keyring::slots::Indexed::new(slots),
        config.limits,
        lock_dir(paths),
    )))
}

#[cfg(not(windows))]
fn wincred(_: &Config, _: &StorePaths) -> Result<Box<dyn SecretStore>, StoreError> {
    Err(not_here("wincred", "Windows"))
}

/// Fleet mode, when `[state]` or `--state` names a database: the PostgreSQL store, sealed with
/// the same master key the file store uses (`PULLSECRET_MASTER_KEY_FILE` or the OS keyring);
/// every replica must hold the same key. `None`: no shared state is configured.
pub fn open_state(
    config: &Config,
    paths: &StorePaths,
) -> Result<Option<(super::postgres::PgStore, String)>, StoreError> {
    let Some((url, source)) = config.state_url() else {
        return Ok(None);
    };
    let url = url.as_str();
    let db = super::database::Database::connect(url)?;
    let reference = std::env::var("PULLSECRET_MASTER_KEY_REF")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .or_else(|| config.state.master_key.clone());
    let key = match reference {
        Some(r) => super::master_key::MasterKey::from_reference(r.trim())?,
        None => match super::master_key::MasterKey::load_any(&paths.key_file, &paths.data_dir)? {
            Some(k) => k,
            // A new key only for an empty database: with namespaces there, a fresh key would
            // seal new ones apart from the rest (and a read-only command would write a key).
            None if database_is_empty(&db)? => {
                super::master_key::MasterKey::create_any(&paths.key_file, &paths.data_dir)?
            }
            None => {
                return Err(StoreError::MasterKeyMissing {
                    key: paths.key_file.clone(),
                    data: super::database::redact(url).into(),
                })
            }
        },
    };
    let why = format!(
        "state = {} from {source}: namespaces sealed in PostgreSQL with master key {}",
        super::database::redact(url),
        key.id()
    );
    Ok(Some((
        super::postgres::PgStore::open(db, key, config.limits)?,
        why,
    )))
}

/// Whether the shared state holds no namespace yet.
fn database_is_empty(db: &super::database::Database) -> Result<bool, StoreError> {
    let pool = db.pool().clone();
    db.run(async move {
        let c = pool
            .get()
            .await
            .map_err(|e| super::database::describe_pool(&e))?;
        let row = c
            .query_one("SELECT NOT EXISTS (SELECT 1 FROM namespaces)", &[])
            .await
            .map_err(|e| super::database::describe(&e))?;
        Ok::<bool, String>(row.get(0))
    })
    .map_err(|e| db.unavailable(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (n, k) in NAMES {
            assert_eq!(StoreKind::parse(n), Some(*k));
            assert_eq!(k.as_str(), *n);
        }
        assert_eq!(StoreKind::parse("gnome"), None);
    }
}
