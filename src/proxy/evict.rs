//! Least-recently-used eviction of cached blobs under `cache.max_size`; blobs being served
//! are pinned, and blobs being filled are not in the cache yet, so neither is ever evicted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::blob_store::BlobStore;
use crate::registry::digest::Digest;

#[derive(Default)]
struct State {
    /// size and last-use tick per cached blob
    entries: HashMap<Digest, (u64, u64)>,
    total: u64,
    tick: u64,
    in_use: HashMap<Digest, usize>,
    /// Digests of pinned images: never evicted.
    pinned: std::collections::HashSet<Digest>,
    /// Fleet mode: digests used since the fleet last asked (for the shared bucket's LRU).
    recent: Option<std::collections::HashSet<Digest>>,
}

pub struct Lru {
    max: Option<u64>,
    state: Mutex<State>,
}

/// Keeps a blob from eviction while a response streams it.
pub struct Pin {
    lru: Arc<Lru>,
    digest: Digest,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut s = self.lru.lock();
        if let Some(n) = s.in_use.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                s.in_use.remove(&self.digest);
            }
        }
    }
}

impl Lru {
    /// Scans the cache; older files (by mtime) count as less recently used.
    pub fn load(store: &BlobStore, max: Option<u64>) -> Self {
        let mut found: Vec<(std::time::SystemTime, Digest, u64)> = Vec::new();
        if let Ok(entries) = std::fs::read_dir(store.root().join("blobs/sha256")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                let (Ok(d), Ok(m)) = (Digest::parse(&format!("sha256:{name}")), e.metadata())
                else {
                    continue;
                };
                found.push((m.modified().unwrap_or(std::time::UNIX_EPOCH), d, m.len()));
            }
        }
        found.sort_by_key(|(t, _, _)| *t);
        let mut state = State::default();
        for (_, d, size) in found {
            state.tick += 1;
            state.total += size;
            state.entries.insert(d, (size, state.tick));
        }
        let lru = Self {
            max,
            state: Mutex::new(state),
        };
        lru.set_pinned(&store.pins());
        lru
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the set of pinned digests (from the store's pins).
    pub fn set_pinned(&self, pins: &[super::blob_store::Pin]) {
        let set = pins
            .iter()
            .flat_map(|p| p.digests.iter())
            .filter_map(|d| Digest::parse(d).ok())
            .collect();
        self.lock().pinned = set;
    }

    /// Fleet mode: starts noting which blobs are used, for `take_used`.
    pub fn track_use(&self) {
        self.lock().recent.get_or_insert_with(Default::default);
    }

    /// Blobs used since the last call, those being read now, and pinned ones.
    pub fn take_used(&self) -> (Vec<Digest>, Vec<Digest>) {
        let mut s = self.lock();
        let mut used: Vec<Digest> = s
            .recent
            .as_mut()
            .map(|r| r.drain().collect())
            .unwrap_or_default();
        used.extend(s.in_use.keys().cloned());
        (used, s.pinned.iter().cloned().collect())
    }

    pub fn usage(&self) -> (u64, u64) {
        let s = self.lock();
        (s.total, s.entries.len() as u64)
    }

    /// Marks a use and pins the blob for the life of the returned guard.
    pub fn pin(self: &Arc<Self>, d: &Digest) -> Pin {
        let mut s = self.lock();
        s.tick += 1;
        let tick = s.tick;
        if let Some(e) = s.entries.get_mut(d) {
            e.1 = tick;
        }
        *s.in_use.entry(d.clone()).or_default() += 1;
        if let Some(r) = s.recent.as_mut() {
            r.insert(d.clone());
        }
        Pin {
            lru: self.clone(),
            digest: d.clone(),
        }
    }

    /// Records a new blob and returns the blobs to delete to get back under the limit.
    pub fn inserted(&self, d: &Digest, size: u64) -> Vec<Digest> {
        let mut s = self.lock();
        s.tick += 1;
        let tick = s.tick;
        if let Some(old) = s.entries.insert(d.clone(), (size, tick)) {
            s.total -= old.0;
        }
        s.total += size;
        let Some(max) = self.max else {
            return Vec::new();
        };
        let mut victims = Vec::new();
        if s.total <= max {
            return victims;
        }
        let mut order: Vec<(u64, Digest, u64)> = s
            .entries
            .iter()
            .filter(|(k, _)| *k != d && !s.in_use.contains_key(*k) && !s.pinned.contains(*k))
            .map(|(k, (size, t))| (*t, k.clone(), *size))
            .collect();
        order.sort_by_key(|(t, _, _)| *t);
        let mut total = s.total;
        for (_, k, size) in order {
            if total <= max {
                break;
            }
            total -= size;
            victims.push(k);
        }
        for v in &victims {
            if let Some((size, _)) = s.entries.remove(v) {
                s.total -= size;
            }
        }
        victims
    }
}

/// `50GiB`, `512MiB`, `10GB`, `1048576` → bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024f64.powi(4),
        _ => return None,
    };
    Some((n * mult) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(i: u8) -> Digest {
        Digest::of_bytes(&[i])
    }

    #[test]
    fn evicts_least_recently_used_but_never_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let lru = Arc::new(Lru::load(&store, Some(300)));
        assert!(lru.inserted(&d(1), 100).is_empty());
        assert!(lru.inserted(&d(2), 100).is_empty());
        assert!(lru.inserted(&d(3), 100).is_empty());
        let _pin = lru.pin(&d(1)); // d1 now most recent and pinned
        let victims = lru.inserted(&d(4), 100);
        assert_eq!(victims, vec![d(2)]);
        let victims = lru.inserted(&d(5), 150);
        assert_eq!(victims, vec![d(3), d(4)]);
        assert_eq!(lru.usage(), (250, 2));
    }

    #[test]
    fn pinned_images_are_never_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let pin = crate::proxy::blob_store::Pin {
            upstream: "up".into(),
            repository: "app".into(),
            digest: d(1).to_string(),
            digests: vec![d(1).to_string()],
        };
        store.put_pins(&[pin]).unwrap();
        let lru = Arc::new(Lru::load(&store, Some(200)));
        assert!(lru.inserted(&d(1), 100).is_empty());
        assert!(lru.inserted(&d(2), 100).is_empty());
        // d1 is the least recently used, but pinned: d2 goes.
        assert_eq!(lru.inserted(&d(3), 100), vec![d(2)]);
        lru.set_pinned(&[]);
        assert_eq!(lru.inserted(&d(4), 100), vec![d(1)]);
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("50GiB"), Some(50 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("1.5 MB"), Some(1_500_000));
        assert_eq!(parse_size("42"), Some(42));
        assert_eq!(parse_size("12 parsecs"), None);
    }
}
