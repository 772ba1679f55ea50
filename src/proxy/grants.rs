//! Links between cached content and who may see it: (credential identity, upstream, repository,
//! digest), recorded when content is fetched with that identity or an upstream HEAD confirms it.
//! Content cached through one namespace reaches another only through such a link.

use std::collections::HashMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::registry::digest::Digest;

pub struct Grants {
    dir: PathBuf,
    ttl: Duration,
    mem: Mutex<HashMap<String, SystemTime>>,
    /// Fleet mode: told of every new link (by its key, a hash), to share it with the replicas.
    on_add: std::sync::OnceLock<Box<dyn Fn(String) + Send + Sync>>,
}

/// What we know about one link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Confirmed within the TTL.
    Fresh,
    /// Confirmed once, longer ago than the TTL: good enough while the upstream is down.
    Expired,
    None,
}

impl Grants {
    pub fn open(dir: PathBuf, ttl: Duration) -> std::io::Result<Self> {
        crate::fsutil::create_private_dir(&dir)?;
        Ok(Self {
            dir,
            ttl,
            mem: Mutex::new(HashMap::new()),
            on_add: std::sync::OnceLock::new(),
        })
    }

    /// The link's name: a hash of who, where and what, so a shared copy reveals none of them.
    pub fn key(identity: &str, upstream: &str, repo: &str, digest: &Digest) -> String {
        super::blob_store::hashed_key(&[identity, upstream, repo, digest.as_str()])
    }

    pub fn check(&self, identity: &str, upstream: &str, repo: &str, digest: &Digest) -> Link {
        let key = Self::key(identity, upstream, repo, digest);
        // One lock per statement: the guard of a lookup must be gone before the insert below
        // takes the lock again (a std mutex is not re-entrant; holding it would hang the worker).
        let remembered = self.lock().get(&key).copied();
        let seen = remembered.or_else(|| {
            let t = std::fs::metadata(self.dir.join(&key))
                .and_then(|m| m.modified())
                .ok()?;
            self.lock().insert(key.clone(), t);
            Some(t)
        });
        match seen {
            Some(t) if t.elapsed().unwrap_or_default() < self.ttl => Link::Fresh,
            Some(_) => Link::Expired,
            None => Link::None,
        }
    }

    pub fn add(&self, identity: &str, upstream: &str, repo: &str, digest: &Digest) {
        let key = Self::key(identity, upstream, repo, digest);
        let now = SystemTime::now();
        let path = self.dir.join(&key);
        // Recreate rather than touch so the mtime is now; failure only costs a later re-check.
        let opened = std::fs::File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path);
        if let Ok(f) = opened {
            let _ = f.set_modified(now);
        }
        self.lock().insert(key.clone(), now);
        if let Some(share) = self.on_add.get() {
            share(key);
        }
    }

    /// A link another replica confirmed at `at` (from the fleet's shared table).
    pub fn learn(&self, key: String, at: SystemTime) {
        self.lock().insert(key, at);
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Fleet mode: calls `share` with the key of every link added from now on.
    pub fn share_with(&self, share: Box<dyn Fn(String) + Send + Sync>) {
        let _ = self.on_add.set(share);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SystemTime>> {
        self.mem.lock().unwrap_or_else(|e| e.into_inner())
    }
}
