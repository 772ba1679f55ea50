//! The encrypted file store, the embedded default: one file per namespace, each sealed
//! with its own data key (XChaCha20-Poly1305), data keys wrapped by a master key kept apart.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::master_key::MasterKey;
use super::model::StoredSecret;
use super::sealed::{new_data_key, open_namespace, seal_namespace, Sealed};
use super::{SecretStore, StoreError};
use crate::fsutil::{create_private_dir, write_atomic, LockGuard};
use crate::secret::Limits;

const FORMAT: &str = "pullsecret-namespace-v1";
const DIR: &str = "secrets-v1";
const EXT: &str = "enc";

/// Where the file store keeps data and its master key.
#[derive(Debug, Clone)]
pub struct StorePaths {
    /// Holds `secrets-v1/<namespace>.enc`.
    pub data_dir: PathBuf,
    /// The master key file (used when no OS keyring holds the key).
    pub key_file: PathBuf,
}

impl StorePaths {
    /// `$PULLSECRET_STORE_DIR` or `$XDG_DATA_HOME/pullsecret`; key at
    /// `$PULLSECRET_MASTER_KEY_FILE` or `$XDG_CONFIG_HOME/pullsecret/master.key`.
    pub fn from_env(store_dir: Option<&Path>) -> Self {
        let xdg = crate::config::xdg_dir;
        let data_dir = store_dir
            .map(Path::to_path_buf)
            .or_else(|| {
                std::env::var_os("PULLSECRET_STORE_DIR")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| xdg("XDG_DATA_HOME", ".local/share").join("pullsecret"));
        let key_file = std::env::var_os("PULLSECRET_MASTER_KEY_FILE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                xdg("XDG_CONFIG_HOME", ".config")
                    .join("pullsecret")
                    .join("master.key")
            });
        Self { data_dir, key_file }
    }
}

/// The sealed file for one namespace.
#[derive(Serialize, Deserialize)]
struct NamespaceFile {
    format: String,
    namespace: String,
    key_id: String,
    wrapped_key: String,
    data: String,
}

/// A namespace's secrets with its (unwrapped) data key.
type Opened = (Vec<StoredSecret>, Zeroizing<Vec<u8>>);

pub struct FileStore {
    paths: StorePaths,
    limits: Limits,
    /// The master key once read: with the key in the OS keyring, each read is a D-Bus round trip,
    /// and one `get` would otherwise read it for every namespace list.
    key: std::sync::OnceLock<std::sync::Arc<MasterKey>>,
}

impl FileStore {
    pub fn new(paths: StorePaths, limits: Limits) -> Self {
        Self {
            paths,
            limits,
            key: std::sync::OnceLock::new(),
        }
    }

    pub fn paths(&self) -> &StorePaths {
        &self.paths
    }

    fn dir(&self) -> PathBuf {
        self.paths.data_dir.join(DIR)
    }

    fn ns_path(&self, namespace: &str) -> PathBuf {
        self.dir().join(format!("{namespace}.{EXT}"))
    }

    fn namespaces(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io(&dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(StoreError::io(&dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(ns) = name.strip_suffix(&format!(".{EXT}")) {
                if !ns.starts_with('.') {
                    out.push(ns.to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// The master key, or `None` when no key exists yet (and no data needs one).
    fn master_key(&self) -> Result<Option<std::sync::Arc<MasterKey>>, StoreError> {
        if let Some(k) = self.key.get() {
            return Ok(Some(k.clone()));
        }
        match MasterKey::load_any(&self.paths.key_file, &self.paths.data_dir)? {
            Some(k) => Ok(Some(self.key.get_or_init(|| k.into()).clone())),
            None if self.namespaces()?.is_empty() => Ok(None),
            None => Err(StoreError::MasterKeyMissing {
                key: self.paths.key_file.clone(),
                data: self.dir(),
            }),
        }
    }

    /// Fails when any namespace file was sealed with another master key than `key`. Files that
    /// do not parse say nothing about the key and are left to the reads that need them.
    fn check_key_matches(&self, key: &MasterKey) -> Result<(), StoreError> {
        for ns in self.namespaces()? {
            let path = self.ns_path(&ns);
            let Ok(text) = std::fs::read(&path) else {
                continue;
            };
            let Ok(file) = serde_json::from_slice::<NamespaceFile>(&text) else {
                continue;
            };
            if file.key_id != key.id() {
                return Err(StoreError::Decrypt {
                    namespace: ns,
                    path,
                    reason: self.wrong_key_reason(&file.key_id, key),
                });
            }
        }
        Ok(())
    }

    fn wrong_key_reason(&self, sealed_with: &str, key: &MasterKey) -> String {
        format!(
            "it was sealed with master key {sealed_with} but {} holds key {} (wrong master key)",
            self.paths.key_file.display(),
            key.id()
        )
    }

    fn read_ns(&self, namespace: &str, key: &MasterKey) -> Result<Option<Opened>, StoreError> {
        let path = self.ns_path(namespace);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(&path)(e)),
        };
        let decrypt_err = |reason: &str| StoreError::Decrypt {
            namespace: namespace.to_string(),
            path: path.clone(),
            reason: reason.to_string(),
        };
        let file: NamespaceFile = serde_json::from_slice(&text)
            .map_err(|_| decrypt_err("not a pullsecret namespace file"))?;
        if file.format != FORMAT || file.namespace != namespace {
            return Err(decrypt_err("unexpected format or namespace"));
        }
        if file.key_id != key.id() {
            return Err(decrypt_err(&self.wrong_key_reason(&file.key_id, key)));
        }
        let sealed = Sealed {
            wrapped_key: B64
                .decode(&file.wrapped_key)
                .map_err(|_| decrypt_err("damaged wrapped key"))?,
            data: B64
                .decode(&file.data)
                .map_err(|_| decrypt_err("damaged data"))?,
        };
        let (secrets, data_key) =
            open_namespace(namespace, key, &sealed).map_err(|r| decrypt_err(&r))?;
        Ok(Some((secrets, data_key)))
    }

    fn write_ns(
        &self,
        namespace: &str,
        key: &MasterKey,
        data_key: &[u8],
        secrets: &[StoredSecret],
    ) -> Result<(), StoreError> {
        let path = self.ns_path(namespace);
        let sealed = seal_namespace(namespace, key, data_key, secrets)?;
        let file = NamespaceFile {
            format: FORMAT.to_string(),
            namespace: namespace.to_string(),
            key_id: key.id(),
            wrapped_key: B64.encode(&sealed.wrapped_key),
            data: B64.encode(&sealed.data),
        };
        let out =
            serde_json::to_vec_pretty(&file).map_err(|e| StoreError::Invalid(e.to_string()))?;
        write_atomic(&path, &out).map_err(StoreError::io(&path))
    }
}

impl SecretStore for FileStore {
    fn backend_name(&self) -> &'static str {
        "file"
    }

    fn namespaces(&self) -> Result<Vec<String>, StoreError> {
        let mut out = FileStore::namespaces(self)?;
        out.sort();
        Ok(out)
    }

    fn delete_namespace(&self, namespace: &str) -> Result<(), StoreError> {
        super::validate_namespace(namespace)?;
        let lock_path = self.dir().join(".lock");
        let _lock = LockGuard::exclusive(&lock_path).map_err(StoreError::io(&lock_path))?;
        let path = self.ns_path(namespace);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(&path)(e)),
        }
        // The directory entry's removal is durable only once the directory is synced.
        std::fs::File::open(self.dir())
            .and_then(|d| d.sync_all())
            .map_err(StoreError::io(self.dir()))
    }

    fn generation(&self) -> Option<u128> {
        // Every write renames a file into this directory, which moves its mtime (ns resolution).
        let m = std::fs::metadata(self.dir()).ok()?.modified().ok()?;
        Some(m.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos())
    }

    fn list(&self, namespace: Option<&str>) -> Result<Vec<StoredSecret>, StoreError> {
        let namespaces = match namespace {
            Some(ns) => {
                super::validate_namespace(ns)?;
                vec![ns.to_string()]
            }
            None => self.namespaces()?,
        };
        let Some(key) = self.master_key()? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        if namespace.is_some() {
            for ns in namespaces {
                if let Some((secrets, _)) = self.read_ns(&ns, &key)? {
                    out.extend(secrets);
                }
            }
            return Ok(out);
        }
        // Across namespaces, one damaged file must not hide every other namespace: it is
        // skipped with a warning. When none opens, the first error says why (a wrong key).
        let mut first_err = None;
        let mut opened = 0usize;
        for ns in namespaces {
            match self.read_ns(&ns, &key) {
                Ok(Some((secrets, _))) => {
                    opened += 1;
                    out.extend(secrets);
                }
                Ok(None) => {}
                Err(e) => {
                    warn_skipped(&ns, &self.ns_path(&ns), &e);
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) if opened == 0 => Err(e),
            _ => Ok(out),
        }
    }

    fn update(
        &self,
        namespace: &str,
        edit: &mut dyn FnMut(&mut Vec<StoredSecret>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        super::validate_namespace(namespace)?;
        create_private_dir(&self.dir()).map_err(StoreError::io(self.dir()))?;
        let lock_path = self.dir().join(".lock");
        let _lock = LockGuard::exclusive(&lock_path).map_err(StoreError::io(&lock_path))?;
        // Creating the key under the lock keeps concurrent first writers on one key.
        let key = match self.master_key()? {
            Some(k) => k,
            None => {
                let k = MasterKey::create_any(&self.paths.key_file, &self.paths.data_dir)?;
                self.key.get_or_init(|| k.into()).clone()
            }
        };
        let (mut secrets, data_key) = match self.read_ns(namespace, &key)? {
            Some(found) => found,
            None => {
                // A new namespace: a wrong key would seal it apart from the rest, splitting the store.
                self.check_key_matches(&key)?;
                (Vec::new(), new_data_key()?)
            }
        };
        let before = secrets.len();
        edit(&mut secrets)?;
        super::check_limits(&self.limits, namespace, before, &secrets)?;
        self.write_ns(namespace, &key, &data_key, &secrets)
    }
}

/// Logs (once per file and process) that a namespace is left out of an all-namespaces read.
/// The error names the file and the reason, never its contents.
fn warn_skipped(namespace: &str, path: &Path, e: &StoreError) {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static WARNED: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    let first = WARNED
        .get_or_init(Default::default)
        .lock()
        .map_or(true, |mut w| w.insert(path.to_path_buf()));
    if first {
        tracing::warn!("skipping namespace {namespace:?} in lookups across namespaces: {e}");
    }
}
