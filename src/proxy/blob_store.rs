//! The on-disk cache: an OCI image layout under `<cache>/v1` (blobs by digest, written
//! only after verification), manifest media types, tag → digest records, and cached list
//! answers (tag lists, referrers) per upstream, repository and credential identity.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::fsutil::{create_private_dir, tighten_tree, write_atomic};
use crate::registry::digest::Digest;

const VERSION_DIR: &str = "v1";

pub struct BlobStore {
    root: PathBuf,
}

/// What we remember about a cached manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestMeta {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub size: u64,
}

/// A tag's last known digest and when the upstream last confirmed it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct TagRecord {
    pub digest: String,
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub size: u64,
    /// Unix seconds of the last upstream confirmation.
    pub checked: u64,
    /// Which tag this is (records from before these fields have them empty): what purge finds.
    #[serde(default)]
    pub upstream: String,
    #[serde(default)]
    pub repository: String,
    #[serde(default)]
    pub tag: String,
}

/// An image kept from eviction: its manifest and every blob it names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pin {
    pub upstream: String,
    pub repository: String,
    pub digest: String,
    /// The manifest, its config and layers (and an index's platform manifests and theirs).
    pub digests: Vec<String>,
}

/// A cached list answer (tags, referrer descriptors) and when the upstream last gave it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ListRecord<T> {
    pub items: Vec<T>,
    /// Unix seconds of the upstream's answer.
    pub checked: u64,
}

impl BlobStore {
    /// Opens (creating) the layout and removes temp files a crash left behind.
    pub fn open(cache_dir: &Path) -> std::io::Result<Self> {
        let root = cache_dir.join(VERSION_DIR);
        create_private_dir(cache_dir)?;
        for d in [
            "blobs/sha256",
            "tmp",
            "meta/manifests",
            "meta/tags",
            "meta/links",
            "meta/lists",
        ] {
            create_private_dir(&root.join(d))?;
        }
        // A cache made by an older version (or by hand) may be readable by others.
        tighten_tree(cache_dir)?;
        let layout = root.join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = root.join("index.json");
        if !index.exists() {
            write_atomic(&index, br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#)?;
        }
        // A fill interrupted by a crash is never trusted: its bytes were not verified. Temp
        // files are named `<hex>.<pid>`; a live process's (a running proxy, while `warm`,
        // `gc` or `status` opens the same cache) are its fills in progress and stay.
        for e in std::fs::read_dir(root.join("tmp"))?.flatten() {
            let name = e.file_name();
            let owner = name
                .to_str()
                .and_then(|n| n.rsplit_once('.'))
                .and_then(|(_, pid)| pid.parse::<i32>().ok());
            if owner.is_some_and(|pid| pid != std::process::id() as i32 && process_alive(pid)) {
                continue;
            }
            let _ = std::fs::remove_file(e.path());
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Where a verified blob lives. `Digest` only holds validated hex, so this stays inside the cache.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    /// The cached blob `d`, opened, and its size.
    pub fn open_blob(&self, d: &Digest) -> std::io::Result<(std::fs::File, u64)> {
        let file = std::fs::File::open(self.blob_path(d))?;
        let size = file.metadata()?.len();
        Ok((file, size))
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Stores a verified manifest and its media type.
    pub fn put_manifest(&self, d: &Digest, bytes: &[u8], media_type: &str) -> std::io::Result<()> {
        let meta = ManifestMeta {
            media_type: media_type.to_string(),
            size: bytes.len() as u64,
        };
        // Meta first: a manifest blob without meta would be served without its type.
        write_atomic(
            &self.manifest_meta_path(d),
            &serde_json::to_vec(&meta).map_err(std::io::Error::other)?,
        )?;
        let p = self.blob_path(d);
        if !p.exists() {
            write_atomic(&p, bytes)?;
        }
        Ok(())
    }

    pub fn manifest_meta(&self, d: &Digest) -> Option<ManifestMeta> {
        let bytes = std::fs::read(self.manifest_meta_path(d)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn manifest_meta_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("meta/manifests")
            .join(format!("{}.json", d.hex()))
    }

    pub fn get_tag(
        &self,
        upstream: &str,
        repo: &str,
        tag: &str,
        accept: &str,
    ) -> Option<TagRecord> {
        let bytes = std::fs::read(self.tag_path(upstream, repo, tag, accept)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn put_tag(
        &self,
        upstream: &str,
        repo: &str,
        tag: &str,
        accept: &str,
        rec: &TagRecord,
    ) -> std::io::Result<()> {
        let rec = TagRecord {
            upstream: upstream.to_string(),
            repository: repo.to_string(),
            tag: tag.to_string(),
            ..rec.clone()
        };
        write_atomic(
            &self.tag_path(upstream, repo, tag, accept),
            &serde_json::to_vec(&rec).map_err(std::io::Error::other)?,
        )
    }

    /// Forgets the cached tags of `upstream`/`repo` (one `tag`, or all): the next pull asks the
    /// upstream again. Content stays (other tags and repositories may share it) until evicted.
    pub fn purge_tags(&self, upstream: &str, repo: &str, tag: Option<&str>) -> usize {
        let mut n = 0;
        let Ok(entries) = std::fs::read_dir(self.root.join("meta/tags")) else {
            return 0;
        };
        for e in entries.flatten() {
            let Ok(bytes) = std::fs::read(e.path()) else {
                continue;
            };
            let Ok(rec) = serde_json::from_slice::<TagRecord>(&bytes) else {
                continue;
            };
            if rec.upstream == upstream
                && rec.repository == repo
                && tag.is_none_or(|t| t == rec.tag)
                && std::fs::remove_file(e.path()).is_ok()
            {
                n += 1;
            }
        }
        n
    }

    /// Pinned images (`meta/pins.json`).
    pub fn pins(&self) -> Vec<Pin> {
        std::fs::read(self.root.join("meta/pins.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn put_pins(&self, pins: &[Pin]) -> std::io::Result<()> {
        write_atomic(
            &self.root.join("meta/pins.json"),
            &serde_json::to_vec_pretty(pins).map_err(std::io::Error::other)?,
        )
    }

    /// Tag records are named by a hash: repository names never become paths.
    fn tag_path(&self, upstream: &str, repo: &str, tag: &str, accept: &str) -> PathBuf {
        self.root.join("meta/tags").join(format!(
            "{}.json",
            hashed_key(&[upstream, repo, tag, accept])
        ))
    }

    /// The cached list of `kind` (`tags`, `referrers`) under `key` (upstream, repository,
    /// credential identity, …).
    pub fn get_list<T: serde::de::DeserializeOwned>(
        &self,
        kind: &str,
        key: &[&str],
    ) -> Option<ListRecord<T>> {
        let bytes = std::fs::read(self.list_path(kind, key)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn put_list<T: Serialize>(
        &self,
        kind: &str,
        key: &[&str],
        rec: &ListRecord<T>,
    ) -> std::io::Result<()> {
        write_atomic(
            &self.list_path(kind, key),
            &serde_json::to_vec(rec).map_err(std::io::Error::other)?,
        )
    }

    /// Named by a hash like tag records.
    fn list_path(&self, kind: &str, key: &[&str]) -> PathBuf {
        let parts: Vec<&str> = std::iter::once(kind).chain(key.iter().copied()).collect();
        self.root
            .join("meta/lists")
            .join(format!("{}.json", hashed_key(&parts)))
    }

    /// Total bytes and count of cached blobs.
    pub fn usage(&self) -> (u64, u64) {
        let mut bytes = 0;
        let mut count = 0;
        if let Ok(entries) = std::fs::read_dir(self.root.join("blobs/sha256")) {
            for e in entries.flatten() {
                if let Ok(m) = e.metadata() {
                    bytes += m.len();
                    count += 1;
                }
            }
        }
        (bytes, count)
    }
}

/// Whether process `pid` exists (signal 0 checks without sending anything).
#[allow(unsafe_code)]
fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 performs only the existence and permission check.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The hex SHA-256 of `parts`, each followed by a NUL (so no two lists of parts collide): the
/// name of a record whose parts (repositories, identities) must not show in paths or tables.
pub fn hashed_key(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex::encode(h.finalize())
}
