//! The last content requests (manifests and blobs) for the admin API's recent pulls: kept in
//! memory and broadcast live; each names the namespace and image, never a credential.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::broadcast;

const KEEP: usize = 1000;

#[derive(Debug, Clone, Serialize)]
pub struct PullRecord {
    /// Formatted (RFC 3339) only when read: recording sits on every content request.
    #[serde(serialize_with = "rfc3339")]
    pub time: std::time::SystemTime,
    pub namespace: String,
    /// The proxy client (when client auth is on and it logged in).
    pub client: Option<String>,
    /// `repository` as the client named it (with any upstream prefix).
    pub image: String,
    /// The tag or digest asked for.
    pub reference: String,
    pub kind: &'static str,
    pub status: u16,
    pub bytes: u64,
    /// `hit`, `miss`, or `-` when not known.
    pub cache: &'static str,
    pub duration_ms: u64,
}

/// The namespace (and proxy client, if any) a content request was served for (set by dispatch).
#[derive(Debug, Clone)]
pub struct PullNamespace(pub String, pub Option<String>);

/// Whether a response came from the cache (set by the stages that know).
#[derive(Debug, Clone, Copy)]
pub struct CacheOutcome(pub &'static str);

/// An image a namespace pulled through the proxy (since it started).
#[derive(Debug, Clone, Serialize)]
pub struct PulledImage {
    pub image: String,
    pub last_pulled: String,
    pub pulls: u64,
}

/// namespace → image → (last pulled, manifest pulls)
type PulledByNamespace = std::collections::HashMap<
    String,
    std::collections::BTreeMap<String, (std::time::SystemTime, u64)>,
>;

fn rfc3339<S: serde::Serializer>(t: &std::time::SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_seconds(*t))
}

pub struct RecentPulls {
    ring: Mutex<VecDeque<PullRecord>>,
    images: Mutex<PulledByNamespace>,
    tx: broadcast::Sender<PullRecord>,
}

impl Default for RecentPulls {
    fn default() -> Self {
        Self {
            ring: Mutex::new(VecDeque::new()),
            images: Mutex::new(Default::default()),
            tx: broadcast::channel(256).0,
        }
    }
}

impl RecentPulls {
    pub fn record(&self, r: PullRecord) {
        if r.kind == "manifest" && r.status < 400 {
            let mut images = self.images.lock().unwrap_or_else(|p| p.into_inner());
            let per_ns = images.entry(r.namespace.clone()).or_default();
            if per_ns.len() < 10_000 || per_ns.contains_key(&r.image) {
                let e = per_ns.entry(r.image.clone()).or_insert((r.time, 0));
                e.0 = r.time;
                e.1 += 1;
            }
        }
        {
            let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
            if ring.len() >= KEEP {
                ring.pop_front();
            }
            ring.push_back(r.clone());
        }
        // Nobody listening is fine.
        let _ = self.tx.send(r);
    }

    /// The newest `n` records, newest first; only `namespace`'s when given.
    pub fn last(&self, n: usize, namespace: Option<&str>) -> Vec<PullRecord> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter()
            .rev()
            .filter(|r| namespace.is_none_or(|ns| r.namespace == ns))
            .take(n)
            .cloned()
            .collect()
    }

    /// The images `namespace` pulled, by name.
    pub fn images(&self, namespace: &str) -> Vec<PulledImage> {
        let images = self.images.lock().unwrap_or_else(|p| p.into_inner());
        images
            .get(namespace)
            .map(|m| {
                m.iter()
                    .map(|(image, (last, n))| PulledImage {
                        image: image.clone(),
                        last_pulled: humantime::format_rfc3339_seconds(*last).to_string(),
                        pulls: *n,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<PullRecord> {
        self.tx.subscribe()
    }
}

/// `/v2/<image>/(manifests|blobs)/<reference>` → (image, reference, kind).
pub fn split_path(path: &str) -> Option<(String, String, &'static str)> {
    let rest = path.strip_prefix("/v2/")?;
    for (marker, kind) in [("/manifests/", "manifest"), ("/blobs/", "blob")] {
        if let Some((image, reference)) = rest.rsplit_once(marker) {
            return Some((image.to_string(), reference.to_string(), kind));
        }
    }
    None
}
