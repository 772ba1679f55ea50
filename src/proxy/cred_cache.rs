//! Recent credential lookups per (upstream, requester, repository), valid while the secret
//! store's generation is unchanged, so a warm request does not read the store.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::upstream::{Picked, Requester};

/// How long a lookup stands when the store reports generations (any write ends it sooner).
const TTL: Duration = Duration::from_secs(30);
/// Without generations (references such as `cmd://` change outside the store): briefly.
const TTL_UNVERSIONED: Duration = Duration::from_secs(2);
const MAX_ENTRIES: usize = 10_000;

/// (upstream index, requester, repository)
type Key = (usize, Requester, String);

struct Entry {
    picked: Option<Picked>,
    at: Instant,
    generation: Option<u128>,
}

#[derive(Default)]
pub struct CredentialCache {
    map: Mutex<HashMap<Key, Entry>>,
}

impl CredentialCache {
    /// The lookup cached for this key, if still valid at the store's `generation`.
    pub fn get(
        &self,
        upstream: usize,
        who: &Requester,
        repo: &str,
        generation: Option<u128>,
    ) -> Option<Option<Picked>> {
        let ttl = if generation.is_some() {
            TTL
        } else {
            TTL_UNVERSIONED
        };
        let key = (upstream, who.clone(), repo.to_string());
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&key)
            .filter(|c| c.generation == generation && c.at.elapsed() < ttl)
            .map(|c| c.picked.clone())
    }

    pub fn put(
        &self,
        upstream: usize,
        who: &Requester,
        repo: &str,
        generation: Option<u128>,
        picked: Option<Picked>,
    ) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > MAX_ENTRIES {
            map.clear();
        }
        map.insert(
            (upstream, who.clone(), repo.to_string()),
            Entry {
                picked,
                at: Instant::now(),
                generation,
            },
        );
    }
}
