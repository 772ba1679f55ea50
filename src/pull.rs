//! `pull`: copies an image from a registry into an OCI image layout, verifying every blob's
//! size and sha256 before it is renamed into place, resuming partial blobs and reusing present ones.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::{StreamExt as _, TryStreamExt as _};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _, BufWriter};

use crate::registry::auth::Credentials;
use crate::registry::client::{Client, Manifest};
use crate::registry::digest::{Algorithm, Digest, Verifier};
use crate::registry::manifest::{
    self, Descriptor, ImageIndex, ImageManifest, Platform, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX,
    OCI_MANIFEST,
};
use crate::registry::reference::Reference;
use crate::registry::RegistryError;

/// The index.json annotation that names an image in a layout (`skopeo … oci:DIR:TAG`).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_VERSION: &str = "1.0.0";
/// Prefix of a blob still downloading; kept across runs so the next pull resumes it.
const PARTIAL_PREFIX: &str = ".partial-";
/// Indexes may nest; real ones go one level deep, so a deeper chain is a loop or an attack.
const MAX_INDEX_DEPTH: usize = 4;
/// Large writes amortize the blocking-pool hop tokio's file I/O takes per write.
const WRITE_BUFFER: usize = 1 << 20;

const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker media types of image content and their OCI equivalents (the blobs' bytes are the same).
const DOCKER_TO_OCI: [(&str, &str); 5] = [
    ("application/vnd.docker.container.image.v1+json", OCI_CONFIG),
    (
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.oci.image.layer.v1.tar",
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.oci.image.layer.v1.tar+gzip",
    ),
    (
        "application/vnd.docker.image.rootfs.foreign.diff.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
    ),
    (
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    ),
];

/// How manifests are written into the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Docker v2s2 manifests and manifest lists are rewritten with OCI media types (new
    /// digests; config and layer bytes unchanged), so every OCI layout reader finds them.
    #[default]
    Oci,
    /// The registry's manifest bytes and digests, Docker media types included.
    Preserve,
}

/// Which manifests of a multi-platform index to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformChoice {
    /// This host's platform.
    Host,
    One(Platform),
    /// The whole index with every child manifest and its blobs.
    All,
}

#[derive(Debug, Clone)]
pub struct PullOptions {
    pub platform: PlatformChoice,
    /// Blobs downloaded at the same time.
    pub concurrency: usize,
    /// Re-hash blobs already in the layout instead of trusting their size.
    pub verify_existing: bool,
    /// Tries per blob when a transfer breaks off; each one resumes where the last stopped.
    pub attempts: u32,
    pub format: Format,
    /// Also copy the image's referrers (signatures, SBOMs, attestations: manifests whose
    /// `subject` is one of the pulled manifests), listed in index.json without a ref name.
    pub referrers: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            platform: PlatformChoice::Host,
            concurrency: 4,
            verify_existing: false,
            attempts: 3,
            format: Format::Oci,
            referrers: false,
        }
    }
}

/// What a pull wrote.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The manifest (or, with `All`, index) that index.json now names.
    pub digest: Digest,
    /// Its digest at the registry; differs from `digest` when it was converted to OCI.
    pub source_digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// The `org.opencontainers.image.ref.name` it is filed under.
    pub ref_name: Option<String>,
    pub blobs_fetched: usize,
    pub blobs_reused: usize,
    /// Referrers copied (with `referrers`), as index.json lists them.
    pub referrers: Vec<Digest>,
    /// Referrers listed by the registry but not copied, with why (gone from the repository, or
    /// not an image manifest or index).
    pub referrers_skipped: Vec<(Digest, String)>,
}

/// How a blob came to be in the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    Downloaded,
    /// Continued from `from` bytes a previous (interrupted) run left behind.
    Resumed {
        from: u64,
    },
    /// Already in the layout.
    Reused,
}

/// Receives transfer events; the CLI draws bars or prints lines from them.
pub trait Progress: Send + Sync {
    /// A blob transfer begins; `from` bytes are already on disk from an earlier run.
    fn blob_start(&self, _digest: &Digest, _size: u64, _from: u64) {}
    fn blob_bytes(&self, _digest: &Digest, _n: u64) {}
    /// The transfer goes on from `from` (0: from scratch) because of `why`.
    fn blob_restart(&self, _digest: &Digest, _from: u64, _why: &str) {}
    fn blob_done(&self, _digest: &Digest, _size: u64, _how: Fetched) {}
    /// The pull is over (done or failed): whatever was drawn must be settled, so lines printed
    /// next start on a line of their own.
    fn finish(&self) {}
}

/// Progress that reports nothing.
pub struct Silent;

impl Progress for Silent {}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PullError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "blob {digest}: the content does not match its digest (it hashes to {actual}); \
         the download was deleted"
    )]
    DigestMismatch { digest: Digest, actual: Digest },
    #[error(
        "blob {digest}: the registry sent {got} bytes where the manifest says {expected}; \
         the download was deleted"
    )]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        got: String,
    },
    #[error("{what}: the referring descriptor says {expected} bytes, the registry sent {actual}")]
    ManifestSize {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{what}: not a manifest that can be pulled: {reason}")]
    BadManifest { what: String, reason: String },
    #[error("{reference} has no image for platform {wanted} (it has: {available})")]
    NoPlatform {
        reference: String,
        wanted: String,
        available: String,
    },
    #[error("{digest}: only sha256 content can be verified")]
    UnsupportedDigest { digest: Digest },
    #[error("{}: not an OCI image layout: {reason}", path.display())]
    Layout { path: PathBuf, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PullError + '_ {
    move |source| PullError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The API host for a reference's registry: Docker Hub's API lives at `registry-1.docker.io`.
pub fn api_host(reference: &Reference) -> &str {
    if reference.is_docker_hub() {
        "registry-1.docker.io"
    } else {
        reference.registry()
    }
}

/// Pulls `reference` into the OCI layout at `dir` (created when missing) and files it in
/// index.json under its tag, replacing an older entry of that name and keeping all others.
pub async fn pull(
    client: &Client,
    creds: Option<&Credentials>,
    reference: &Reference,
    dir: &Path,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<Pulled, PullError> {
    let src = Source {
        client,
        creds,
        repo: reference.repository(),
    };
    let top = client
        .get_manifest(
            reference.repository(),
            reference.reference_str(),
            None,
            creds,
        )
        .await
        .map_err(|e| at_digest(e, reference.repository(), reference.reference_str()))?;
    let what = format!("{}/{}", client.host(), reference.repository());
    // What the reference names at the registry: signatures usually refer to it (an index).
    let top_digest = top.digest.clone();
    let mut plan = Plan {
        format: opts.format,
        ..Plan::default()
    };
    let (chosen, platform) = match &opts.platform {
        PlatformChoice::All => (top, None),
        PlatformChoice::Host => src.resolve(top, &Platform::host(), reference).await?,
        PlatformChoice::One(p) => src.resolve(top, p, reference).await?,
    };
    let landed = src.gather(&chosen, &what, &mut plan, 0).await?;
    let found = if opts.referrers {
        let mut subjects = vec![top_digest];
        subjects.extend(plan.gathered.iter().cloned());
        src.referrers(subjects, &what, &mut plan).await?
    } else {
        Referrers::default()
    };

    // Only now touch DIR: a pull that fails to resolve leaves no empty layout behind.
    let layout = Layout::open(dir)?;
    let job = Job {
        src: &src,
        layout: &layout,
        opts,
        progress,
    };

    let outcomes: Vec<Fetched> = futures_util::stream::iter(plan.blobs.iter())
        .map(|d| job.fetch_blob(d))
        .buffer_unordered(opts.concurrency.max(1))
        .try_collect()
        .await?;
    // Manifests land after the blobs they name (children before their index), so a layout
    // never refers to a missing blob.
    for (digest, bytes) in &plan.manifests {
        layout.write_small_blob(digest, bytes)?;
    }

    let media_type = landed.media_type;
    let ref_name = match (reference.tag(), reference.digest()) {
        (Some(tag), _) => Some(tag.to_string()),
        (None, Some(_)) => None,
        (None, None) => Some(reference.reference_str().to_string()),
    };
    let mut desc = json!({
        "mediaType": media_type,
        "digest": landed.digest.as_str(),
        "size": landed.bytes.len(),
    });
    if let Some(p) = &platform {
        desc["platform"] = platform_json(p);
    }
    if let Some(name) = &ref_name {
        desc["annotations"] = json!({ REF_NAME: name });
    }
    let mut entries = vec![IndexEntry {
        desc,
        ref_name: ref_name.clone(),
        digest: landed.digest.clone(),
    }];
    let referrers = found.entries.iter().map(|e| e.digest.clone()).collect();
    entries.extend(found.entries);
    layout.file_in_index(entries)?;
    Ok(Pulled {
        digest: landed.digest,
        source_digest: chosen.digest,
        media_type,
        size: landed.bytes.len() as u64,
        ref_name,
        blobs_fetched: outcomes.iter().filter(|o| **o != Fetched::Reused).count(),
        blobs_reused: outcomes.iter().filter(|o| **o == Fetched::Reused).count(),
        referrers,
        referrers_skipped: found.skipped,
    })
}

/// One index.json entry: its descriptor, the ref name it is filed under, its digest.
struct IndexEntry {
    desc: Value,
    ref_name: Option<String>,
    digest: Digest,
}

/// The referrers a pull copies, as index.json entries, and those it leaves out with why.
#[derive(Default)]
struct Referrers {
    entries: Vec<IndexEntry>,
    skipped: Vec<(Digest, String)>,
}

/// A referrer's index.json descriptor: what the registry's listing says of it (`artifactType`
/// and annotations included, a ref name never: it is no tag), with the digest and size it landed
/// under.
fn referrer_descriptor(listed: &Value, landed: &Landed) -> Value {
    let mut desc = json!({
        "mediaType": landed.media_type,
        "digest": landed.digest.as_str(),
        "size": landed.bytes.len(),
    });
    if let Some(t) = listed.get("artifactType").and_then(Value::as_str) {
        desc["artifactType"] = json!(t);
    }
    if let Some(a) = listed.get("annotations").and_then(Value::as_object) {
        let mut a = a.clone();
        a.remove(REF_NAME);
        if !a.is_empty() {
            desc["annotations"] = Value::Object(a);
        }
    }
    desc
}

/// What one pull writes: manifest bytes (verified already, or converted from verified ones),
/// children before the index naming them, and the blobs they name.
#[derive(Default)]
struct Plan {
    format: Format,
    manifests: Vec<(Digest, bytes::Bytes)>,
    /// Each gathered manifest, by its registry digest, as it lands in the layout.
    landed: HashMap<Digest, Landed>,
    blobs: Vec<BlobRef>,
    seen: HashSet<Digest>,
    /// Registry digests of the gathered manifests, in the order gathered.
    gathered: Vec<Digest>,
}

/// A manifest as written into the layout.
#[derive(Clone)]
struct Landed {
    digest: Digest,
    media_type: String,
    bytes: bytes::Bytes,
    /// Its size at the registry (before any conversion).
    source_size: u64,
}

impl Plan {
    fn add_blob(&mut self, digest: Digest, size: u64) {
        // Layers repeat within an image (empty layers) and across platforms; fetch each once.
        if self.seen.insert(digest.clone()) {
            self.blobs.push(BlobRef { digest, size });
        }
    }
}

struct BlobRef {
    digest: Digest,
    size: u64,
}

/// Where manifests and blobs come from.
struct Source<'a> {
    client: &'a Client,
    creds: Option<&'a Credentials>,
    repo: &'a str,
}

/// Blob downloads into one layout.
struct Job<'a> {
    src: &'a Source<'a>,
    layout: &'a Layout,
    opts: &'a PullOptions,
    progress: &'a dyn Progress,
}

impl Source<'_> {
    /// `host/repository`, as messages name it.
    fn name(&self) -> String {
        format!("{}/{}", self.client.host(), self.repo)
    }

    /// Follows indexes down to the manifest for `want`, returning it and the platform it serves.
    async fn resolve(
        &self,
        mut current: Manifest,
        want: &Platform,
        reference: &Reference,
    ) -> Result<(Manifest, Option<Platform>), PullError> {
        let mut platform = None;
        for _ in 0..MAX_INDEX_DEPTH {
            if !manifest::is_index(&media_type_of(&current)?) {
                return Ok((current, platform));
            }
            let index: ImageIndex = parse_json(&current, &self.name())?;
            let Some(entry) = manifest::select(&index, want) else {
                let mut available: Vec<String> = index
                    .manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref().map(ToString::to_string))
                    .collect();
                available.dedup();
                return Err(PullError::NoPlatform {
                    reference: reference.to_string(),
                    wanted: want.to_string(),
                    available: if available.is_empty() {
                        "no platform entries".into()
                    } else {
                        available.join(", ")
                    },
                });
            };
            platform = entry.platform.clone();
            current = self.child(entry).await?;
        }
        Err(PullError::BadManifest {
            what: format!("{}/{}@{}", self.client.host(), self.repo, current.digest),
            reason: format!("indexes nested more than {MAX_INDEX_DEPTH} deep"),
        })
    }

    /// Records `m` and everything it refers to: child manifests of an index (fetched now)
    /// and the config and layers of an image manifest. Returns `m` as it lands in the layout:
    /// converted to OCI when the plan asks for it, with an index's entries following its children.
    async fn gather(
        &self,
        m: &Manifest,
        what: &str,
        plan: &mut Plan,
        depth: usize,
    ) -> Result<Landed, PullError> {
        if let Some(landed) = plan.landed.get(&m.digest) {
            return Ok(landed.clone());
        }
        let media_type = media_type_of(m)?;
        let whole = format!("{what}@{}", m.digest);
        let convert = plan.format == Format::Oci;
        let landed = if manifest::is_index(&media_type) {
            if depth >= MAX_INDEX_DEPTH {
                return Err(PullError::BadManifest {
                    what: whole,
                    reason: format!("indexes nested more than {MAX_INDEX_DEPTH} deep"),
                });
            }
            let index: ImageIndex = parse_json(m, what)?;
            let mut children = Vec::with_capacity(index.manifests.len());
            for entry in &index.manifests {
                // An index may list a manifest twice; it is fetched and written once.
                let digest = descriptor_digest(entry, &whole)?;
                if let Some(landed) = plan.landed.get(&digest) {
                    if landed.source_size != entry.size {
                        return Err(PullError::ManifestSize {
                            what: format!("{what}@{digest}"),
                            expected: entry.size,
                            actual: landed.source_size,
                        });
                    }
                    children.push(landed.clone());
                    continue;
                }
                let child = self.child(entry).await?;
                children.push(Box::pin(self.gather(&child, what, plan, depth + 1)).await?);
            }
            let to_oci = convert && media_type == DOCKER_LIST;
            let unchanged =
                !to_oci
                    && index.manifests.iter().zip(&children).all(|(e, c)| {
                        e.digest == c.digest.as_str() && e.media_type == c.media_type
                    });
            if unchanged {
                Landed {
                    digest: m.digest.clone(),
                    media_type,
                    bytes: m.bytes.clone(),
                    source_size: m.bytes.len() as u64,
                }
            } else {
                let media_type = if to_oci { OCI_INDEX.into() } else { media_type };
                let bytes = rewrite_index(m, &whole, &media_type, &children)?;
                Landed {
                    digest: Digest::of_bytes(&bytes),
                    media_type,
                    bytes,
                    source_size: m.bytes.len() as u64,
                }
            }
        } else {
            let image: ImageManifest = parse_json(m, what)?;
            for d in std::iter::once(&image.config).chain(&image.layers) {
                let digest = descriptor_digest(d, &whole)?;
                plan.add_blob(digest, d.size);
            }
            if convert && media_type == DOCKER_MANIFEST {
                let bytes = manifest_to_oci(m, &whole)?;
                Landed {
                    digest: Digest::of_bytes(&bytes),
                    media_type: OCI_MANIFEST.into(),
                    bytes,
                    source_size: m.bytes.len() as u64,
                }
            } else {
                Landed {
                    digest: m.digest.clone(),
                    media_type,
                    bytes: m.bytes.clone(),
                    source_size: m.bytes.len() as u64,
                }
            }
        };
        if plan.seen.insert(landed.digest.clone()) {
            plan.manifests
                .push((landed.digest.clone(), landed.bytes.clone()));
        }
        plan.landed.insert(m.digest.clone(), landed.clone());
        plan.gathered.push(m.digest.clone());
        Ok(landed)
    }

    /// The referrers of each of `subjects` (the registry's referrers API, or its `<alg>-<hex>`
    /// tag), gathered into `plan` with their blobs as the registry has them: never converted, as
    /// a signature names the digest it signed. Referrers of referrers are not followed.
    async fn referrers(
        &self,
        subjects: Vec<Digest>,
        what: &str,
        plan: &mut Plan,
    ) -> Result<Referrers, PullError> {
        plan.format = Format::Preserve;
        let mut found = Referrers::default();
        let mut listed = HashSet::new();
        let mut asked = HashSet::new();
        for subject in subjects {
            if !asked.insert(subject.clone()) {
                continue;
            }
            let descriptors = self
                .client
                .referrers(self.repo, &subject, self.creds)
                .await?;
            for v in descriptors {
                let whole = format!("{what}@{subject} (referrers)");
                let entry: Descriptor =
                    serde_json::from_value(v.clone()).map_err(|e| PullError::BadManifest {
                        what: whole.clone(),
                        reason: format!("referrer descriptor: {e}"),
                    })?;
                let digest = descriptor_digest(&entry, &whole)?;
                // Listed under two subjects, or itself a pulled manifest: once is enough.
                if plan.landed.contains_key(&digest) || !listed.insert(digest.clone()) {
                    continue;
                }
                let pullable = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];
                if !pullable.contains(&entry.media_type.as_str()) {
                    let why = format!("{:?} is not an image manifest or index", entry.media_type);
                    found.skipped.push((digest, why));
                    continue;
                }
                let m = match self.child(&entry).await {
                    Ok(m) => m,
                    // A fallback tag may still list an artifact deleted since.
                    Err(PullError::Registry(RegistryError::NotFound { .. })) => {
                        let why = "listed, but gone from the repository".to_string();
                        found.skipped.push((digest, why));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let landed = self.gather(&m, what, plan, 0).await?;
                found.entries.push(IndexEntry {
                    desc: referrer_descriptor(&v, &landed),
                    ref_name: None,
                    digest: landed.digest,
                });
            }
        }
        Ok(found)
    }

    /// Fetches the manifest an index entry names (the client verifies its digest) and checks its size.
    async fn child(&self, entry: &Descriptor) -> Result<Manifest, PullError> {
        let what = format!("{}/{}@{}", self.client.host(), self.repo, entry.digest);
        let digest = descriptor_digest(entry, &what)?;
        let m = self
            .client
            .get_manifest(self.repo, digest.as_str(), None, self.creds)
            .await
            .map_err(|e| at_digest(e, self.repo, digest.as_str()))?;
        if m.bytes.len() as u64 != entry.size {
            return Err(PullError::ManifestSize {
                what,
                expected: entry.size,
                actual: m.bytes.len() as u64,
            });
        }
        Ok(m)
    }
}

impl Job<'_> {
    /// Puts one blob into the layout: reused when present, else downloaded into a partial file
    /// (resumed when an earlier run left one), verified, and renamed into place.
    async fn fetch_blob(&self, blob: &BlobRef) -> Result<Fetched, PullError> {
        let digest = &blob.digest;
        if digest.algorithm() != Algorithm::Sha256 {
            return Err(PullError::UnsupportedDigest {
                digest: digest.clone(),
            });
        }
        if self.reusable(blob).await? {
            self.progress.blob_done(digest, blob.size, Fetched::Reused);
            return Ok(Fetched::Reused);
        }
        let partial = self.layout.partial_path(digest);
        let locked = lock_partial(&partial).await?;
        // Another pull into the same layout may have finished it while we waited for the lock;
        // the partial we locked is then one we just created, empty.
        if self.reusable(blob).await? {
            let _ = std::fs::remove_file(&partial);
            drop(locked);
            self.progress.blob_done(digest, blob.size, Fetched::Reused);
            return Ok(Fetched::Reused);
        }
        let mut file = tokio::fs::File::from_std(locked);
        let mut download = Download {
            job: self,
            blob,
            path: &partial,
            file: &mut file,
            verifier: Verifier::new(),
            have: 0,
        };
        let result = download.run().await;
        match result {
            Ok(how) => {
                file.sync_all().await.map_err(io_err(&partial))?;
                // Renamed while still locked: a waiting pull then finds the blob, not a partial.
                let dest = self.layout.blob_path(digest);
                std::fs::rename(&partial, &dest).map_err(io_err(&dest))?;
                drop(file);
                self.progress.blob_done(digest, blob.size, how);
                Ok(how)
            }
            Err(e) => {
                let bad_content = matches!(
                    e,
                    PullError::DigestMismatch { .. } | PullError::SizeMismatch { .. }
                );
                // Bad content must not survive to be resumed or reused; an empty partial is
                // worth nothing to the next run. Anything else is kept for it to resume.
                let empty = file.metadata().await.is_ok_and(|m| m.len() == 0);
                if bad_content || empty {
                    let _ = std::fs::remove_file(&partial);
                }
                drop(file);
                Err(e)
            }
        }
    }

    /// Whether the layout already holds this blob: right size, and right digest when asked to check.
    /// A file of the wrong size or content is removed, since its name promises content it lacks.
    async fn reusable(&self, blob: &BlobRef) -> Result<bool, PullError> {
        let path = self.layout.blob_path(&blob.digest);
        // A link is never followed: its target is not content this layout verified.
        let meta = match tokio::fs::symlink_metadata(&path).await {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let good = meta.is_file()
            && meta.len() == blob.size
            && (!self.opts.verify_existing || hash_file(&path).await? == blob.digest);
        if !good && (meta.is_file() || meta.file_type().is_symlink()) {
            // Removes the link itself, never what it points to.
            tokio::fs::remove_file(&path).await.map_err(io_err(&path))?;
        }
        Ok(good)
    }
}

/// One blob's transfer into its locked partial file; `have` bytes of it are on disk and hashed.
struct Download<'a, 'j> {
    job: &'a Job<'j>,
    blob: &'a BlobRef,
    path: &'a Path,
    file: &'a mut tokio::fs::File,
    verifier: Verifier,
    have: u64,
}

enum Step {
    Complete,
    /// The server answered another range than the one asked for; start over at 0.
    StartOver,
}

impl Download<'_, '_> {
    async fn run(&mut self) -> Result<Fetched, PullError> {
        let digest = &self.blob.digest;
        let size = self.blob.size;
        self.rehash().await?;
        let resumed_from = self.have;
        self.job.progress.blob_start(digest, size, resumed_from);
        let mut attempt = 0;
        let mut retried_resume = false;
        loop {
            let step = if self.have < size {
                self.transfer().await
            } else {
                Ok(Step::Complete)
            };
            match step {
                Ok(Step::Complete) => {
                    let actual = std::mem::take(&mut self.verifier).finish();
                    if self.have == size && actual == *digest {
                        return Ok(if resumed_from > 0 {
                            Fetched::Resumed { from: resumed_from }
                        } else {
                            Fetched::Downloaded
                        });
                    }
                    // A prefix left by an earlier run may be what is wrong: one fresh try.
                    if resumed_from > 0 && !retried_resume {
                        retried_resume = true;
                        self.start_over("the resumed download did not verify")
                            .await?;
                        continue;
                    }
                    return Err(PullError::DigestMismatch {
                        digest: digest.clone(),
                        actual,
                    });
                }
                Ok(Step::StartOver) => {
                    self.start_over("the registry answered another range")
                        .await?;
                }
                Err(PullError::Registry(e))
                    if e.upstream_unavailable() && attempt + 1 < self.job.opts.attempts =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(250 << attempt.min(4))).await;
                    // Re-read what reached the disk: the hash must cover exactly the file's bytes.
                    self.rehash().await?;
                    self.job
                        .progress
                        .blob_restart(digest, self.have, &e.to_string());
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One GET from `have` onwards, streamed into the file and the verifier. A server that
    /// ignores Range answers 200 with the whole blob, which is taken from byte 0.
    async fn transfer(&mut self) -> Result<Step, PullError> {
        let job = self.job;
        let src = job.src;
        let digest = &self.blob.digest;
        let size = self.blob.size;
        let mut resp = src
            .client
            .get_blob(src.repo, digest, self.have, src.creds)
            .await?;
        if self.have > 0 {
            match resp.status().as_u16() {
                206 if range_start(resp.headers()) == Some(self.have) => {}
                // Another range than asked for: ask again from the start.
                206 => return Ok(Step::StartOver),
                _ => {
                    self.start_over("the registry ignored the Range request")
                        .await?
                }
            }
        }
        let what = format!("blob {}@{digest}", src.repo);
        let (path, verifier, have) = (self.path, &mut self.verifier, &mut self.have);
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, &mut *self.file);
        let streamed: Result<(), PullError> = async {
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| RegistryError::network(src.client.host(), &what, &e))?
            {
                let n = chunk.len() as u64;
                if *have + n > size {
                    return Err(PullError::SizeMismatch {
                        digest: digest.clone(),
                        expected: size,
                        got: format!("more than {size}"),
                    });
                }
                out.write_all(&chunk).await.map_err(io_err(path))?;
                verifier.update(&chunk);
                *have += n;
                job.progress.blob_bytes(digest, n);
            }
            Ok(())
        }
        .await;
        // What was hashed must reach the disk, so the partial stays a prefix the next try can hash.
        let flushed = out.flush().await.map_err(io_err(path));
        streamed?;
        flushed?;
        if self.have != size {
            return Err(PullError::SizeMismatch {
                digest: digest.clone(),
                expected: size,
                got: self.have.to_string(),
            });
        }
        Ok(Step::Complete)
    }

    /// Hashes the bytes already in the partial file (what an earlier run or attempt left)
    /// and positions at its end; more bytes than the blob has means it is not this blob's prefix.
    async fn rehash(&mut self) -> Result<(), PullError> {
        let len = self.file.metadata().await.map_err(io_err(self.path))?.len();
        if len > self.blob.size {
            return self.truncate().await;
        }
        self.file
            .seek(io::SeekFrom::Start(0))
            .await
            .map_err(io_err(self.path))?;
        let mut verifier = Verifier::new();
        let mut buf = vec![0u8; WRITE_BUFFER];
        let mut have = 0u64;
        loop {
            let n = self.file.read(&mut buf).await.map_err(io_err(self.path))?;
            if n == 0 {
                break;
            }
            verifier.update(&buf[..n]);
            have += n as u64;
        }
        self.verifier = verifier;
        self.have = have;
        Ok(())
    }

    async fn start_over(&mut self, why: &str) -> Result<(), PullError> {
        self.truncate().await?;
        self.job.progress.blob_restart(&self.blob.digest, 0, why);
        Ok(())
    }

    async fn truncate(&mut self) -> Result<(), PullError> {
        self.file.set_len(0).await.map_err(io_err(self.path))?;
        self.file
            .seek(io::SeekFrom::Start(0))
            .await
            .map_err(io_err(self.path))?;
        self.verifier = Verifier::new();
        self.have = 0;
        Ok(())
    }
}

/// The first byte of a 206's `Content-Range: bytes START-END/TOTAL`.
fn range_start(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    let v = headers.get(reqwest::header::CONTENT_RANGE)?.to_str().ok()?;
    let range = v.trim().strip_prefix("bytes")?.trim_start();
    range.split('-').next()?.trim().parse().ok()
}

/// Opens (creating) the partial file and takes an exclusive lock on it, so two pulls into one
/// layout never write the same blob; retries when the file was replaced while we waited.
async fn lock_partial(path: &Path) -> Result<File, PullError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<File, PullError> {
        loop {
            use std::os::unix::fs::OpenOptionsExt as _;
            let opened = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&owned);
            let file = match opened {
                Ok(f) => f,
                // A link planted where our partial goes: remove the link, not its target.
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                    std::fs::remove_file(&owned).map_err(io_err(&owned))?;
                    continue;
                }
                Err(e) => return Err(io_err(&owned)(e)),
            };
            if !file.metadata().map_err(io_err(&owned))?.is_file() {
                return Err(PullError::Layout {
                    path: owned.clone(),
                    reason: "a partial download's name is taken by something not a file".into(),
                });
            }
            file.lock().map_err(io_err(&owned))?;
            // A holder that finished renamed or deleted the file we locked; lock the new one.
            use std::os::unix::fs::MetadataExt as _;
            let ours = file.metadata().map_err(io_err(&owned))?;
            match std::fs::metadata(&owned) {
                Ok(now) if now.ino() == ours.ino() && now.dev() == ours.dev() => return Ok(file),
                _ => continue,
            }
        }
    })
    .await
    .map_err(|e| PullError::Io {
        path: path.to_path_buf(),
        source: io::Error::other(e.to_string()),
    })?
}

async fn hash_file(path: &Path) -> Result<Digest, PullError> {
    let mut file = tokio::fs::File::open(path).await.map_err(io_err(path))?;
    let mut verifier = Verifier::new();
    let mut buf = vec![0u8; WRITE_BUFFER];
    loop {
        let n = file.read(&mut buf).await.map_err(io_err(path))?;
        if n == 0 {
            return Ok(verifier.finish());
        }
        verifier.update(&buf[..n]);
    }
}

/// The client names a manifest `repo:reference` in its errors; a digest reads `repo@digest`,
/// as everywhere else.
fn at_digest(mut e: RegistryError, repo: &str, reference: &str) -> RegistryError {
    if !reference.contains(':') {
        return e;
    }
    let (wrong, right) = (format!("{repo}:{reference}"), format!("{repo}@{reference}"));
    match &mut e {
        RegistryError::Unauthorized { what, .. }
        | RegistryError::NotFound { what, .. }
        | RegistryError::Status { what, .. }
        | RegistryError::Network { what, .. }
        | RegistryError::DigestMismatch { what, .. }
        | RegistryError::UnsupportedManifest { what, .. }
        | RegistryError::TooLarge { what, .. } => *what = what.replace(&wrong, &right),
        _ => {}
    }
    e
}

fn descriptor_digest(d: &Descriptor, what: &str) -> Result<Digest, PullError> {
    Digest::parse(&d.digest).map_err(|e| PullError::BadManifest {
        what: what.to_string(),
        reason: format!("descriptor digest: {e}"),
    })
}

/// A Docker v2s2 manifest with OCI media types: the manifest's own, its config's and its layers'.
/// Descriptors already of OCI (or other) types are kept; a Docker type without an OCI
/// equivalent (a plugin config, say) is refused rather than mislabelled.
fn manifest_to_oci(m: &Manifest, what: &str) -> Result<bytes::Bytes, PullError> {
    let bad = |reason: String| PullError::BadManifest {
        what: what.to_string(),
        reason,
    };
    let mut v: Value =
        serde_json::from_slice(&m.bytes).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let convert = |d: &mut Value| -> Result<(), PullError> {
        let Some(t) = d.get("mediaType").and_then(Value::as_str) else {
            return Ok(());
        };
        if let Some((_, oci)) = DOCKER_TO_OCI.iter().find(|(docker, _)| *docker == t) {
            d["mediaType"] = json!(oci);
        } else if t.starts_with("application/vnd.docker.") {
            return Err(bad(format!(
                "{t} has no OCI equivalent (pull with --format preserve to keep it)"
            )));
        }
        Ok(())
    };
    let Some(obj) = v.as_object_mut() else {
        return Err(bad("not a JSON object".into()));
    };
    obj.insert("mediaType".into(), json!(OCI_MANIFEST));
    if let Some(config) = obj.get_mut("config") {
        convert(config)?;
    }
    if let Some(layers) = obj.get_mut("layers").and_then(Value::as_array_mut) {
        for l in layers {
            convert(l)?;
        }
    }
    serde_json::to_vec(&v)
        .map(bytes::Bytes::from)
        .map_err(|e| bad(e.to_string()))
}

/// An index whose entries name `children` as they landed (digest, size, media type), under
/// `media_type`; other fields (platforms, annotations) are kept.
fn rewrite_index(
    m: &Manifest,
    what: &str,
    media_type: &str,
    children: &[Landed],
) -> Result<bytes::Bytes, PullError> {
    let bad = |reason: String| PullError::BadManifest {
        what: what.to_string(),
        reason,
    };
    let mut v: Value =
        serde_json::from_slice(&m.bytes).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let Some(obj) = v.as_object_mut() else {
        return Err(bad("not a JSON object".into()));
    };
    obj.insert("mediaType".into(), json!(media_type));
    let Some(entries) = obj.get_mut("manifests").and_then(Value::as_array_mut) else {
        return Err(bad("no manifests array".into()));
    };
    for (entry, child) in entries.iter_mut().zip(children) {
        entry["mediaType"] = json!(child.media_type);
        entry["digest"] = json!(child.digest.as_str());
        entry["size"] = json!(child.bytes.len());
    }
    serde_json::to_vec(&v)
        .map(bytes::Bytes::from)
        .map_err(|e| bad(e.to_string()))
}

/// The manifest's media type: the Content-Type the registry sent, else its own `mediaType`
/// field, else what its shape says (older manifests carry neither).
fn media_type_of(m: &Manifest) -> Result<String, PullError> {
    let header = m.media_type.split(';').next().unwrap_or("").trim();
    let known = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];
    if known.contains(&header) {
        return Ok(header.to_string());
    }
    let bad = |reason: String| PullError::BadManifest {
        what: m.digest.to_string(),
        reason,
    };
    let v: Value =
        serde_json::from_slice(&m.bytes).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let field = v.get("mediaType").and_then(Value::as_str).unwrap_or("");
    if known.contains(&field) {
        return Ok(field.to_string());
    }
    let schema1 = v.get("schemaVersion").and_then(Value::as_u64) == Some(1)
        || header.starts_with("application/vnd.docker.distribution.manifest.v1");
    if !field.is_empty() || schema1 {
        let t = if field.is_empty() { header } else { field };
        return Err(bad(format!(
            "unsupported media type {t:?} (docker schema 1 and non-image types are not pulled)"
        )));
    }
    if v.get("manifests").is_some() {
        Ok(OCI_INDEX.to_string())
    } else if v.get("config").is_some() {
        Ok(OCI_MANIFEST.to_string())
    } else {
        Err(bad("neither an image manifest nor an index".into()))
    }
}

/// Parses manifest `m` of `repo` (`host/repository`).
fn parse_json<T: serde::de::DeserializeOwned>(m: &Manifest, repo: &str) -> Result<T, PullError> {
    serde_json::from_slice(&m.bytes).map_err(|e| PullError::BadManifest {
        what: format!("{repo}@{}", m.digest),
        reason: e.to_string(),
    })
}

fn platform_json(p: &Platform) -> Value {
    let mut v = json!({"architecture": p.architecture, "os": p.os});
    if let Some(variant) = &p.variant {
        v["variant"] = json!(variant);
    }
    v
}

/// An OCI image layout directory: `oci-layout`, `index.json`, `blobs/sha256/`.
pub struct Layout {
    root: PathBuf,
    blobs: PathBuf,
}

impl Layout {
    /// Opens `root`, creating the directories and `oci-layout` when missing; refuses a directory
    /// whose `oci-layout` says it is something else.
    pub fn open(root: &Path) -> Result<Self, PullError> {
        let blobs = root.join("blobs").join("sha256");
        // create_dir_all would follow a planted link and fill a directory outside the layout.
        for dir in [root.join("blobs"), blobs.clone()] {
            if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(not_following(&dir));
            }
        }
        std::fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
        let marker = root.join(LAYOUT_FILE);
        match read_nofollow(&marker) {
            Ok(bytes) => {
                let v: Value = serde_json::from_slice(&bytes).map_err(|e| PullError::Layout {
                    path: marker.clone(),
                    reason: format!("invalid JSON: {e}"),
                })?;
                let version = v
                    .get("imageLayoutVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !version.starts_with("1.") {
                    return Err(PullError::Layout {
                        path: marker,
                        reason: format!("unsupported imageLayoutVersion {version:?}"),
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let text = json!({ "imageLayoutVersion": LAYOUT_VERSION }).to_string();
                write_public_atomic(&marker, text.as_bytes())?;
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(not_following(&marker)),
            Err(e) => return Err(io_err(&marker)(e)),
        }
        Ok(Self {
            root: root.to_path_buf(),
            blobs,
        })
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    pub fn partial_path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(format!("{PARTIAL_PREFIX}{}", digest.hex()))
    }

    /// Writes a blob held in memory (a manifest, already verified), unless present.
    fn write_small_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<(), PullError> {
        let path = self.blob_path(digest);
        // A link is not the blob, whatever its target holds; the rename below replaces it.
        if std::fs::symlink_metadata(&path)
            .is_ok_and(|m| m.is_file() && m.len() == bytes.len() as u64)
        {
            return Ok(());
        }
        write_public_atomic(&path, bytes)
    }

    /// Adds each entry to index.json, replacing the entry filed under the same ref name (or,
    /// when there is none, an unnamed entry for the same digest) and keeping every other one.
    fn file_in_index(&self, entries: Vec<IndexEntry>) -> Result<(), PullError> {
        // Serializes read-modify-write with other pulls into this layout.
        let dir = File::open(&self.root).map_err(io_err(&self.root))?;
        dir.lock().map_err(io_err(&self.root))?;
        let path = self.root.join("index.json");
        let mut index = match read_nofollow(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<Value>(&bytes).map_err(|e| PullError::Layout {
                    path: path.clone(),
                    reason: format!("invalid JSON: {e}"),
                })?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(not_following(&path)),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let Some(manifests) = index.get_mut("manifests").and_then(Value::as_array_mut) else {
            return Err(PullError::Layout {
                path,
                reason: "index.json has no manifests array".into(),
            });
        };
        for IndexEntry {
            desc,
            ref_name,
            digest,
        } in entries
        {
            manifests.retain(|m| {
                let name = m
                    .get("annotations")
                    .and_then(|a| a.get(REF_NAME))
                    .and_then(Value::as_str);
                match ref_name.as_deref() {
                    Some(want) => name != Some(want),
                    None => {
                        name.is_some()
                            || m.get("digest").and_then(Value::as_str) != Some(digest.as_str())
                    }
                }
            });
            manifests.push(desc);
        }
        let text = serde_json::to_vec(&index).map_err(|e| PullError::Layout {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_public_atomic(&path, &text)?;
        File::open(&self.blobs)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.blobs))?;
        dir.sync_all().map_err(io_err(&self.root))
    }
}

/// Reads `path` unless it is a symbolic link (ELOOP is reported as refusing to follow it).
fn read_nofollow(path: &Path) -> Result<Vec<u8>, io::Error> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn not_following(path: &Path) -> PullError {
    PullError::Layout {
        path: path.to_path_buf(),
        reason: "it is a symbolic link; pull does not follow links it did not create".into(),
    }
}

/// Writes `path` atomically (temp file in the same directory, fsync, rename), world-readable:
/// layouts hold public content meant for other tools, unlike the secret files of `fsutil`.
fn write_public_atomic(path: &Path, bytes: &[u8]) -> Result<(), PullError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(dir)
        .map_err(io_err(dir))?;
    tmp.write_all(bytes).map_err(io_err(path))?;
    tmp.as_file().sync_all().map_err(io_err(path))?;
    tmp.persist(path).map_err(|e| io_err(path)(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(media_type: &str, body: &str) -> Manifest {
        Manifest {
            bytes: bytes::Bytes::copy_from_slice(body.as_bytes()),
            media_type: media_type.into(),
            digest: Digest::of_bytes(body.as_bytes()),
        }
    }

    #[test]
    fn media_type_from_header_field_or_shape() {
        assert_eq!(
            media_type_of(&manifest(OCI_INDEX, "{}")).unwrap(),
            OCI_INDEX
        );
        assert_eq!(
            media_type_of(&manifest(
                "",
                r#"{"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#
            ))
            .unwrap(),
            DOCKER_MANIFEST
        );
        assert_eq!(
            media_type_of(&manifest("application/json", r#"{"manifests":[]}"#)).unwrap(),
            OCI_INDEX
        );
        assert_eq!(
            media_type_of(&manifest("", r#"{"config":{}}"#)).unwrap(),
            OCI_MANIFEST
        );
        let schema1 = "application/vnd.docker.distribution.manifest.v1+prettyjws";
        assert!(matches!(
            media_type_of(&manifest(schema1, r#"{"schemaVersion":1}"#)),
            Err(PullError::BadManifest { .. })
        ));
        assert!(media_type_of(&manifest("", "not json")).is_err());
    }

    #[test]
    fn content_range_start() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(range_start(&h), None);
        h.insert(
            reqwest::header::CONTENT_RANGE,
            reqwest::header::HeaderValue::from_static("bytes 100-199/200"),
        );
        assert_eq!(range_start(&h), Some(100));
        h.insert(
            reqwest::header::CONTENT_RANGE,
            reqwest::header::HeaderValue::from_static("bytes */200"),
        );
        assert_eq!(range_start(&h), None);
    }

    #[test]
    fn index_keeps_other_names_and_replaces_the_same_one() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::open(dir.path()).unwrap();
        let d1 = Digest::of_bytes(b"one");
        let d2 = Digest::of_bytes(b"two");
        let d3 = Digest::of_bytes(b"three");
        let entry = |d: &Digest, name: &str| {
            vec![IndexEntry {
                desc: json!({"mediaType": OCI_MANIFEST, "digest": d.as_str(), "size": 3,
                             "annotations": {REF_NAME: name}}),
                ref_name: Some(name.to_string()),
                digest: d.clone(),
            }]
        };
        layout.file_in_index(entry(&d1, "a")).unwrap();
        layout.file_in_index(entry(&d2, "b")).unwrap();
        layout.file_in_index(entry(&d3, "a")).unwrap();
        let index: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        let got: Vec<(&str, &str)> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["annotations"][REF_NAME].as_str().unwrap(),
                    m["digest"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(got, vec![("b", d2.as_str()), ("a", d3.as_str())]);
        let marker = std::fs::read_to_string(dir.path().join(LAYOUT_FILE)).unwrap();
        assert_eq!(marker, r#"{"imageLayoutVersion":"1.0.0"}"#);
    }

    #[test]
    fn refuses_a_foreign_layout_version() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(LAYOUT_FILE),
            r#"{"imageLayoutVersion":"9.0"}"#,
        )
        .unwrap();
        assert!(matches!(
            Layout::open(dir.path()),
            Err(PullError::Layout { .. })
        ));
    }
}
