//! OS keyring stores: `KeyringStore` gives any keyring `Backend` the `SecretStore` semantics
//! (namespaces, all-or-nothing updates, limits); the backends live in the files beside it.

mod chunk;
pub mod native;
pub mod slots;

#[cfg(target_os = "linux")]
pub mod keyutils;
#[cfg(target_os = "linux")]
pub mod secret_service;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::model::{Record, StoredSecret};
use super::{validate_namespace, SecretStore, StoreError};
use crate::fsutil::{create_private_dir, LockGuard};
use crate::secret::{validate_name, Limits};

/// How long `auto` waits for the Secret Service before using the file store by default.
pub const AUTO_PROBE: Duration = Duration::from_millis(200);

/// How long to wait for the Secret Service: `PULLSECRET_PROBE_MS` (1 to 60000, for slow or
/// loaded machines) or [`AUTO_PROBE`].
pub fn probe_timeout() -> Duration {
    std::env::var("PULLSECRET_PROBE_MS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| (1..=60_000).contains(ms))
        .map_or(AUTO_PROBE, Duration::from_millis)
}

/// A value as a keyring backend holds it.
pub type Bytes = Zeroizing<Vec<u8>>;

/// What a keyring must offer: entries addressed by namespace and name, each holding one
/// secret's bytes, and a way to find every entry of a namespace.
pub trait Backend {
    /// `secret-service`, `keyutils`, …
    fn name(&self) -> &'static str;

    /// The stored bytes of every secret in `namespace`, or in all namespaces.
    fn load(&self, namespace: Option<&str>) -> Result<Vec<Bytes>, StoreError>;

    /// Creates or replaces the entry for `namespace`/`name`.
    fn write(&self, namespace: &str, name: &str, value: &[u8]) -> Result<(), StoreError>;

    /// Removes the entry for `namespace`/`name`; a missing entry is not an error.
    fn remove(&self, namespace: &str, name: &str) -> Result<(), StoreError>;

    /// Records that `namespace` now holds exactly `names`, in this order. Backends that can
    /// search by attribute need nothing here; the others keep an index entry.
    fn set_names(&self, _namespace: &str, _names: &[String]) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A `SecretStore` over a keyring backend.
pub struct KeyringStore<B> {
    backend: B,
    limits: Limits,
    /// Serializes our own writers: keyrings have no transactions, so an update is a
    /// read-modify-write that two processes must not interleave.
    lock: PathBuf,
}

/// One stored secret: the file store's `Record` plus the namespace it belongs to, so an
/// entry found by a search (which returns values, not names) says where it belongs.
#[derive(Serialize)]
struct EnvelopeOut<'a> {
    namespace: &'a str,
    #[serde(flatten)]
    record: &'a Record,
}

#[derive(Deserialize)]
struct EnvelopeIn {
    namespace: String,
    #[serde(flatten)]
    record: Record,
}

impl<B: Backend> KeyringStore<B> {
    /// `lock_dir` holds the lock file that serializes writers (the store's data directory).
    pub fn new(backend: B, limits: Limits, lock_dir: PathBuf) -> Self {
        let lock = lock_dir.join(format!("{}.lock", backend.name()));
        Self {
            backend,
            limits,
            lock,
        }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    fn decode(&self, value: &[u8], namespace: Option<&str>) -> Result<StoredSecret, StoreError> {
        let damaged = || {
            StoreError::Invalid(format!(
                "{}: an entry{} is not a pullsecret secret (damaged or written by another program); delete it with the keyring's own tool",
                self.backend.name(),
                namespace.map(|ns| format!(" in namespace {ns:?}")).unwrap_or_default()
            ))
        };
        let env: EnvelopeIn = serde_json::from_slice(value).map_err(|_| damaged())?;
        if namespace.is_some_and(|ns| ns != env.namespace) {
            return Err(damaged());
        }
        let ns = env.namespace.clone();
        env.record
            .into_secret(&ns)
            .map_err(|reason| StoreError::Invalid(format!("{}: {reason}", self.backend.name())))
    }

    fn encode(namespace: &str, secret: &StoredSecret) -> Result<Bytes, StoreError> {
        let record = Record::from_secret(secret);
        let out = EnvelopeOut {
            namespace,
            record: &record,
        };
        serde_json::to_vec(&out)
            .map(Zeroizing::new)
            .map_err(|e| StoreError::Invalid(e.to_string()))
    }

    /// Applies the planned writes, index change and removals in that order (so a reader
    /// never finds an index naming an entry not yet written); on any failure undoes what
    /// was applied, newest first, and returns the failure.
    fn apply(&self, namespace: &str, plan: Plan) -> Result<(), StoreError> {
        let mut undo: Vec<Undo> = Vec::new();
        let result = (|| {
            for (name, value) in &plan.writes {
                self.backend.write(namespace, name, value)?;
                undo.push(Undo::Restore {
                    name: name.clone(),
                    old: plan.before.get(name).cloned(),
                });
            }
            if plan.names_before != plan.names_after {
                self.backend.set_names(namespace, &plan.names_after)?;
                undo.push(Undo::Names);
            }
            for name in &plan.removes {
                self.backend.remove(namespace, name)?;
                undo.push(Undo::Restore {
                    name: name.clone(),
                    old: plan.before.get(name).cloned(),
                });
            }
            Ok(())
        })();
        if let Err(e) = result {
            for step in undo.into_iter().rev() {
                let undone = match &step {
                    Undo::Restore { name, old: Some(v) } => self.backend.write(namespace, name, v),
                    Undo::Restore { name, old: None } => self.backend.remove(namespace, name),
                    Undo::Names => self.backend.set_names(namespace, &plan.names_before),
                };
                if let Err(u) = undone {
                    // Names only: the values never reach logs.
                    tracing::error!(backend = self.backend.name(), namespace, error = %u, "rolling back a failed update left the namespace partly changed");
                }
            }
            return Err(e);
        }
        Ok(())
    }
}

struct Plan {
    before: BTreeMap<String, Bytes>,
    writes: Vec<(String, Bytes)>,
    removes: Vec<String>,
    names_before: Vec<String>,
    names_after: Vec<String>,
}

enum Undo {
    Restore { name: String, old: Option<Bytes> },
    Names,
}

impl<B: Backend> SecretStore for KeyringStore<B> {
    fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    fn list(&self, namespace: Option<&str>) -> Result<Vec<StoredSecret>, StoreError> {
        if let Some(ns) = namespace {
            validate_namespace(ns)?;
        }
        let values = self.backend.load(namespace)?;
        values.iter().map(|v| self.decode(v, namespace)).collect()
    }

    fn update(
        &self,
        namespace: &str,
        edit: &mut dyn FnMut(&mut Vec<StoredSecret>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        validate_namespace(namespace)?;
        if let Some(dir) = self.lock.parent() {
            create_private_dir(dir).map_err(StoreError::io(dir))?;
        }
        let _lock = LockGuard::exclusive(&self.lock).map_err(StoreError::io(&self.lock))?;

        let mut before = BTreeMap::new();
        let mut secrets = Vec::new();
        let mut names_before = Vec::new();
        for value in self.backend.load(Some(namespace))? {
            let s = self.decode(&value, Some(namespace))?;
            names_before.push(s.name.clone());
            before.insert(s.name.clone(), value);
            secrets.push(s);
        }
        let count_before = secrets.len();
        edit(&mut secrets)?;
        super::check_limits(&self.limits, namespace, count_before, &secrets)?;

        let mut writes = Vec::new();
        let mut names_after: Vec<String> = Vec::new();
        for s in &secrets {
            validate_name(&s.name)?;
            if names_after.contains(&s.name) {
                return Err(StoreError::AlreadyExists {
                    namespace: namespace.to_string(),
                    name: s.name.clone(),
                });
            }
            names_after.push(s.name.clone());
            let value = Self::encode(namespace, s)?;
            if before.get(&s.name).map(|v| &v[..]) != Some(&value[..]) {
                writes.push((s.name.clone(), value));
            }
        }
        let removes = names_before
            .iter()
            .filter(|n| !names_after.contains(n))
            .cloned()
            .collect();
        self.apply(
            namespace,
            Plan {
                before,
                writes,
                removes,
                names_before,
                names_after,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use secrecy::SecretString;

    use super::*;
    use crate::secret::SecretValue;
    use crate::store::{Scope, SecretData};

    /// An in-memory backend that can be told to fail one operation, to prove rollback.
    #[derive(Default)]
    struct Memory {
        entries: RefCell<BTreeMap<(String, String), Vec<u8>>>,
        fail_on: RefCell<Option<String>>,
    }

    impl Memory {
        fn check(&self, name: &str) -> Result<(), StoreError> {
            if self.fail_on.borrow().as_deref() == Some(name) {
                return Err(StoreError::Unavailable {
                    backend: "memory",
                    reason: "injected".into(),
                    fix: "none".into(),
                });
            }
            Ok(())
        }
    }

    impl Backend for Memory {
        fn name(&self) -> &'static str {
            "memory"
        }
        fn load(&self, namespace: Option<&str>) -> Result<Vec<Bytes>, StoreError> {
            Ok(self
                .entries
                .borrow()
                .iter()
                .filter(|((ns, _), _)| namespace.is_none_or(|n| n == ns))
                .map(|(_, v)| Zeroizing::new(v.clone()))
                .collect())
        }
        fn write(&self, namespace: &str, name: &str, value: &[u8]) -> Result<(), StoreError> {
            self.check(name)?;
            self.entries
                .borrow_mut()
                .insert((namespace.into(), name.into()), value.to_vec());
            Ok(())
        }
        fn remove(&self, namespace: &str, name: &str) -> Result<(), StoreError> {
            self.check(name)?;
            self.entries
                .borrow_mut()
                .remove(&(namespace.into(), name.into()));
            Ok(())
        }
    }

    pub(crate) fn registry(ns: &str, name: &str, password: &str) -> StoredSecret {
        StoredSecret {
            name: name.into(),
            namespace: ns.into(),
            scope: Scope::Namespace,
            created: 1,
            origin: crate::store::Origin::Created,
            data: SecretData::DockerRegistry {
                server: format!("{name}.example"),
                username: "u".into(),
                password: SecretValue::Literal(SecretString::from(password.to_string())),
                email: None,
                also: Vec::new(),
            },
        }
    }

    fn store() -> (KeyringStore<Memory>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        (
            KeyringStore::new(
                Memory::default(),
                Limits::default(),
                dir.path().to_path_buf(),
            ),
            dir,
        )
    }

    fn snapshot(s: &KeyringStore<Memory>) -> BTreeMap<(String, String), Vec<u8>> {
        s.backend().entries.borrow().clone()
    }

    #[test]
    fn put_list_get_delete_by_namespace() {
        let (s, _d) = store();
        s.put(registry("a", "one", "p1"), false).expect("put");
        s.put(registry("b", "two", "p2"), false).expect("put");
        assert_eq!(s.list(Some("a")).expect("list").len(), 1);
        assert_eq!(s.list(None).expect("list").len(), 2);
        let got = s.get("b", "two").expect("get").expect("found");
        assert_eq!(got.namespace, "b");
        assert!(matches!(
            s.put(registry("a", "one", "x"), false),
            Err(StoreError::AlreadyExists { .. })
        ));
        s.delete("a", &["one".into()]).expect("delete");
        assert!(s.list(Some("a")).expect("list").is_empty());
    }

    #[test]
    fn further_registries_survive_the_keyring() {
        let (s, _d) = store();
        let mut two = registry("ns", "multi", "p1");
        if let SecretData::DockerRegistry { also, .. } = &mut two.data {
            also.push(crate::store::RegistryEntry {
                server: "other.example".into(),
                username: "v".into(),
                password: SecretValue::Literal(SecretString::from("p2".to_string())),
                email: Some("v@example.com".into()),
            });
        }
        s.put(two, false).expect("put");
        let got = s.get("ns", "multi").expect("get").expect("found");
        let entries = got.registries();
        assert_eq!(got.servers(), ["multi.example", "other.example"]);
        assert_eq!(entries[1].username, "v");
        assert_eq!(entries[1].email.as_deref(), Some("v@example.com"));
        assert!(
            matches!(&entries[1].password, SecretValue::Literal(p) if secrecy::ExposeSecret::expose_secret(p) == "p2")
        );
    }

    #[test]
    fn a_failed_update_changes_nothing() {
        let (s, _d) = store();
        s.put(registry("ns", "keep", "old"), false).expect("put");
        s.put(registry("ns", "gone", "old"), false).expect("put");
        let before = snapshot(&s);
        *s.backend().fail_on.borrow_mut() = Some("gone".into());
        let r = s.update("ns", &mut |v| {
            v.retain(|x| x.name != "gone");
            v[0] = registry("ns", "keep", "new");
            v.push(registry("ns", "added", "new"));
            Ok(())
        });
        assert!(r.is_err());
        assert_eq!(
            snapshot(&s),
            before,
            "the writes before the failed removal were undone"
        );
    }

    #[test]
    fn limits_and_duplicates_are_refused() {
        let (s, _d) = store();
        let big = "x".repeat(Limits::default().max_secret_bytes + 1);
        assert!(matches!(
            s.put(registry("ns", "big", &big), false),
            Err(StoreError::Limit(_))
        ));
        let r = s.update("ns", &mut |v| {
            v.push(registry("ns", "dup", "1"));
            v.push(registry("ns", "dup", "2"));
            Ok(())
        });
        assert!(matches!(r, Err(StoreError::AlreadyExists { .. })));
        assert!(snapshot(&s).is_empty());
    }

    #[test]
    fn stored_bytes_are_the_record_json_with_its_namespace() {
        let (s, _d) = store();
        s.put(registry("ns", "one", "pw"), false).expect("put");
        let entries = snapshot(&s);
        let v: serde_json::Value =
            serde_json::from_slice(&entries[&("ns".to_string(), "one".to_string())]).expect("json");
        assert_eq!(v["namespace"], "ns");
        assert_eq!(v["name"], "one");
        assert_eq!(v["type"], "kubernetes.io/dockerconfigjson");
        assert_eq!(v["data"]["password"], "pw");
    }
}
