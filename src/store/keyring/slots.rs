//! `Indexed`: the `Backend` for keyrings that only get, set and delete named entries (keyutils,
//! macOS Keychain, Windows Credential Manager): an index entry per namespace, values split to fit.

use super::chunk::{self, ChunkError};
use super::{Backend, Bytes};
use crate::store::StoreError;

/// A keyring seen as flat named entries.
pub trait Slots {
    fn name(&self) -> &'static str;
    /// The most bytes one entry holds (Windows: 2560).
    fn max_value(&self) -> usize;
    fn read(&self, key: &str) -> Result<Option<Bytes>, StoreError>;
    fn write(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Removes `key`; a missing key is not an error.
    fn remove(&self, key: &str) -> Result<(), StoreError>;
}

/// Entry keys: `secret:NS/NAME` (plus `#TAG.N` parts), `index:NS` (the JSON list of names
/// in NS) and `namespaces` (the JSON list of namespaces). Names and namespaces are
/// DNS-1123 names, so `/`, `:` and `#` cannot occur inside them.
pub struct Indexed<S> {
    slots: S,
}

const NAMESPACES: &str = "namespaces";

fn secret_key(namespace: &str, name: &str) -> String {
    format!("secret:{namespace}/{name}")
}

fn index_key(namespace: &str) -> String {
    format!("index:{namespace}")
}

impl<S: Slots> Indexed<S> {
    pub fn new(slots: S) -> Self {
        Self { slots }
    }

    pub fn slots(&self) -> &S {
        &self.slots
    }

    fn chunk_error(&self, key: &str, e: ChunkError) -> StoreError {
        StoreError::Invalid(format!("{}: entry {key:?}: {e}", self.slots.name()))
    }

    /// The whole value under `key`, joined from its parts when it was split.
    fn read_value(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let Some(head) = self.slots.read(key)? else {
            return Ok(None);
        };
        let joined = chunk::join::<Joined>(&head, |suffix| {
            self.slots
                .read(&format!("{key}{suffix}"))
                .map_err(Joined::Store)
        });
        match joined {
            Ok(v) => Ok(Some(v)),
            Err(Joined::Store(e)) => Err(e),
            Err(Joined::Chunk(e)) => Err(self.chunk_error(key, e)),
        }
    }

    /// Writes parts first and the head last, so the head switch commits the new value;
    /// then drops the parts of the value it replaced.
    fn write_value(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let old = self.old_parts(key);
        let split =
            chunk::split(value, self.slots.max_value()).map_err(|e| self.chunk_error(key, e))?;
        for (suffix, part) in &split.parts {
            self.slots.write(&format!("{key}{suffix}"), part)?;
        }
        self.slots.write(key, &split.head)?;
        for suffix in old {
            if !split.parts.iter().any(|(s, _)| s == &suffix) {
                // Leftover parts waste space but are never read again.
                let _ = self.slots.remove(&format!("{key}{suffix}"));
            }
        }
        Ok(())
    }

    fn remove_value(&self, key: &str) -> Result<(), StoreError> {
        let old = self.old_parts(key);
        self.slots.remove(key)?;
        for suffix in old {
            let _ = self.slots.remove(&format!("{key}{suffix}"));
        }
        Ok(())
    }

    /// Part suffixes of the value now under `key` (none if whole, missing or unreadable).
    fn old_parts(&self, key: &str) -> Vec<String> {
        match self.slots.read(key) {
            Ok(Some(head)) => match chunk::parse_header(&head) {
                Ok(Some(h)) => (1..=h.count)
                    .map(|i| chunk::part_suffix(&h.tag, i))
                    .collect(),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    fn read_list(&self, key: &str) -> Result<Vec<String>, StoreError> {
        match self.read_value(key)? {
            None => Ok(Vec::new()),
            Some(v) => serde_json::from_slice(&v).map_err(|_| {
                StoreError::Invalid(format!(
                    "{}: index entry {key:?} is damaged",
                    self.slots.name()
                ))
            }),
        }
    }

    fn write_list(&self, key: &str, list: &[String]) -> Result<(), StoreError> {
        if list.is_empty() {
            return self.remove_value(key);
        }
        let bytes = serde_json::to_vec(list).map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.write_value(key, &bytes)
    }
}

enum Joined {
    Store(StoreError),
    Chunk(ChunkError),
}

impl From<ChunkError> for Joined {
    fn from(e: ChunkError) -> Self {
        Joined::Chunk(e)
    }
}

impl<S: Slots> Backend for Indexed<S> {
    fn name(&self) -> &'static str {
        self.slots.name()
    }

    fn load(&self, namespace: Option<&str>) -> Result<Vec<Bytes>, StoreError> {
        let namespaces = match namespace {
            Some(ns) => vec![ns.to_string()],
            None => self.read_list(NAMESPACES)?,
        };
        let mut out = Vec::new();
        for ns in namespaces {
            for name in self.read_list(&index_key(&ns))? {
                // An index names entries only after they were written; a missing one was
                // removed by a writer that failed half way, and is absent.
                if let Some(v) = self.read_value(&secret_key(&ns, &name))? {
                    out.push(v);
                }
            }
        }
        Ok(out)
    }

    fn write(&self, namespace: &str, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.write_value(&secret_key(namespace, name), value)
    }

    fn remove(&self, namespace: &str, name: &str) -> Result<(), StoreError> {
        self.remove_value(&secret_key(namespace, name))
    }

    fn set_names(&self, namespace: &str, names: &[String]) -> Result<(), StoreError> {
        let mut all = self.read_list(NAMESPACES)?;
        let listed = all.iter().any(|n| n == namespace);
        // Add a namespace before its index exists and drop it after its index is gone, so
        // the namespace list never misses a namespace that has secrets.
        if !names.is_empty() && !listed {
            all.push(namespace.to_string());
            all.sort();
            self.write_list(NAMESPACES, &all)?;
        }
        self.write_list(&index_key(namespace), names)?;
        if names.is_empty() && listed {
            all.retain(|n| n != namespace);
            self.write_list(NAMESPACES, &all)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use zeroize::Zeroizing;

    use super::*;
    use crate::secret::Limits;
    use crate::store::keyring::KeyringStore;
    use crate::store::SecretStore;

    #[derive(Default)]
    struct Map {
        entries: RefCell<BTreeMap<String, Vec<u8>>>,
        max: usize,
    }

    impl Slots for Map {
        fn name(&self) -> &'static str {
            "map"
        }
        fn max_value(&self) -> usize {
            self.max
        }
        fn read(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
            Ok(self.entries.borrow().get(key).cloned().map(Zeroizing::new))
        }
        fn write(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
            assert!(
                value.len() <= self.max,
                "{key}: {} bytes over the entry limit",
                value.len()
            );
            self.entries
                .borrow_mut()
                .insert(key.to_string(), value.to_vec());
            Ok(())
        }
        fn remove(&self, key: &str) -> Result<(), StoreError> {
            self.entries.borrow_mut().remove(key);
            Ok(())
        }
    }

    #[test]
    fn index_tracks_names_and_namespaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = KeyringStore::new(
            Indexed::new(Map {
                max: 2560,
                ..Default::default()
            }),
            Limits::default(),
            dir.path().into(),
        );
        s.put(super::super::tests::registry("a", "one", "p"), false)
            .expect("put");
        s.put(super::super::tests::registry("a", "two", "p"), false)
            .expect("put");
        s.put(super::super::tests::registry("b", "three", "p"), false)
            .expect("put");
        let keys: Vec<String> = s
            .backend()
            .slots()
            .entries
            .borrow()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            keys,
            [
                "index:a",
                "index:b",
                "namespaces",
                "secret:a/one",
                "secret:a/two",
                "secret:b/three"
            ]
        );
        let names: Vec<String> = s
            .list(None)
            .expect("list")
            .into_iter()
            .map(|x| format!("{}/{}", x.namespace, x.name))
            .collect();
        assert_eq!(names, ["a/one", "a/two", "b/three"]);
        s.delete("b", &["three".into()]).expect("delete");
        let keys: Vec<String> = s
            .backend()
            .slots()
            .entries
            .borrow()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            keys,
            ["index:a", "namespaces", "secret:a/one", "secret:a/two"]
        );
        assert_eq!(
            &s.backend().slots().entries.borrow()["namespaces"][..],
            br#"["a"]"#
        );
    }

    #[test]
    fn values_over_the_windows_limit_are_split_and_old_parts_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = Limits {
            max_secret_bytes: 20_000,
            ..Limits::default()
        };
        let s = KeyringStore::new(
            Indexed::new(Map {
                max: 2560,
                ..Default::default()
            }),
            limits,
            dir.path().into(),
        );
        let token = "t".repeat(9000);
        s.put(super::super::tests::registry("ns", "aad", &token), false)
            .expect("put");
        let parts = s
            .backend()
            .slots()
            .entries
            .borrow()
            .keys()
            .filter(|k| k.starts_with("secret:ns/aad#"))
            .count();
        assert_eq!(parts, 4);
        let got = s.get("ns", "aad").expect("get").expect("found");
        assert_eq!(got.stored_size(), "aad.example".len() + 1 + 9000);
        // Replacing with a different long value leaves only the new parts.
        s.put(
            super::super::tests::registry("ns", "aad", &"u".repeat(6000)),
            true,
        )
        .expect("put");
        let parts = s
            .backend()
            .slots()
            .entries
            .borrow()
            .keys()
            .filter(|k| k.starts_with("secret:ns/aad#"))
            .count();
        assert_eq!(parts, 3);
        s.delete("ns", &["aad".into()]).expect("delete");
        assert!(s.backend().slots().entries.borrow().is_empty());
    }
}
