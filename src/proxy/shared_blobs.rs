//! The shared blob bucket of a fleet (`[cache] backend = "s3"`, `"gcs"`, `"azure"` or
//! `"directory"`): blobs by digest in an object store behind `object_store`'s one trait. A key
//! appears only when a multipart upload of bytes already verified against their digest
//! completes, so nothing partial is ever visible. Each replica's cache directory stays its
//! read-through copy.

use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, WriteMultipart};
use secrecy::ExposeSecret;
use tokio::io::AsyncReadExt;

use super::config::CacheConfig;
use super::error::{FillError, SetupError};
use super::fill::Download;
use crate::registry::digest::Digest;
use crate::secret::{RefResolver, SecretRef};

/// Parts of an upload (S3 wants at least 5 MiB per part but the last).
const PART: usize = 8 << 20;

pub struct SharedBlobs {
    store: Box<dyn ObjectStore>,
    prefix: String,
    /// What the last request to the bucket found; a change is logged once.
    up: AtomicBool,
    pub bucket: String,
}

impl SharedBlobs {
    /// The bucket `[cache]` names when `backend = "s3"`; `None` for the local backend.
    pub fn from_config(
        cfg: &CacheConfig,
        refs: &dyn crate::secret::StoreLookup,
    ) -> Result<Option<Self>, SetupError> {
        let backend = match cfg.backend.as_deref() {
            None | Some("local") => return Ok(None),
            Some(b @ ("s3" | "gcs" | "azure" | "directory")) => b,
            Some(other) => {
                return Err(SetupError::new(
                    "cache.backend",
                    format!(
                        "{other:?} is not a backend; use \"local\", \"s3\", \"gcs\", \"azure\" or \"directory\""
                    ),
                ))
            }
        };
        let bucket = cfg.bucket.clone().ok_or_else(|| {
            SetupError::new(
                "cache.bucket",
                format!("required with backend = {backend:?} (for \"directory\": its path)"),
            )
        })?;
        let prefix = cfg
            .prefix
            .as_deref()
            .unwrap_or("")
            .trim_matches('/')
            .to_string();
        let store: Box<dyn ObjectStore> = match backend {
            "gcs" => Box::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(&bucket)
                    .build()
                    .map_err(|e| SetupError::new("cache (gcs)", e))?,
            ),
            "azure" => Box::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_container_name(&bucket)
                    .build()
                    .map_err(|e| SetupError::new("cache (azure)", e))?,
            ),
            // A directory every replica mounts (NFS, a shared volume): uploads are written to a
            // temp file and renamed into place when complete.
            "directory" => {
                crate::fsutil::create_private_dir(std::path::Path::new(&bucket))
                    .map_err(|e| SetupError::new(format!("cache.bucket {bucket}"), e))?;
                Box::new(
                    object_store::local::LocalFileSystem::new_with_prefix(&bucket)
                        .map_err(|e| SetupError::new(format!("cache.bucket {bucket}"), e))?,
                )
            }
            _ => Self::s3(cfg, &bucket, refs)?,
        };
        Ok(Some(Self {
            store,
            prefix,
            up: AtomicBool::new(true),
            bucket,
        }))
    }

    fn s3(
        cfg: &CacheConfig,
        bucket: &str,
        refs: &dyn crate::secret::StoreLookup,
    ) -> Result<Box<dyn ObjectStore>, SetupError> {
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(r) = &cfg.region {
            b = b.with_region(r);
        }
        if let Some(e) = &cfg.endpoint {
            b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
        }
        b = b.with_virtual_hosted_style_request(!cfg.path_style.unwrap_or(true));
        let resolver = RefResolver::with_store(refs);
        let resolve = |what: &str, spec: &str| -> Result<String, SetupError> {
            let r = SecretRef::parse(spec)
                .map_err(|e| SetupError::new(what, e))?
                .ok_or_else(|| {
                    SetupError::new(
                        what,
                        "must be a reference (env://VAR, file:///path, secret://ns/name/key), not a value",
                    )
                })?;
            resolver
                .resolve(&r)
                .map(|s| s.expose_secret().to_string())
                .map_err(|e| SetupError::new(what, e))
        };
        if let Some(spec) = &cfg.access_key_id {
            b = b.with_access_key_id(resolve("cache.access_key_id", spec)?);
        }
        if let Some(spec) = &cfg.secret_access_key {
            b = b.with_secret_access_key(resolve("cache.secret_access_key", spec)?);
        }
        let store = b.build().map_err(|e| SetupError::new("cache (s3)", e))?;
        Ok(Box::new(store))
    }

    fn key(&self, d: &Digest) -> ObjectPath {
        let rel = format!("blobs/{}/{}", d.algorithm().as_str(), d.hex());
        if self.prefix.is_empty() {
            ObjectPath::from(rel)
        } else {
            ObjectPath::from(format!("{}/{rel}", self.prefix))
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn saw(&self, ok: bool, what: &str, e: Option<&object_store::Error>) {
        let was = self.up.swap(ok, Ordering::Relaxed);
        if was && !ok {
            tracing::warn!(bucket = %self.bucket, error = %e.map(|e| e.to_string()).unwrap_or_default(), "object store unreachable ({what}); serving from the upstream without the shared cache until it answers");
        } else if !was && ok {
            tracing::info!(bucket = %self.bucket, "object store answers again; shared caching resumed");
        }
    }

    /// The blob's size when the bucket holds it; `Err` when the bucket did not answer.
    pub async fn head(&self, d: &Digest) -> Result<Option<u64>, String> {
        match self.store.head(&self.key(d)).await {
            Ok(m) => {
                self.saw(true, "head", None);
                Ok(Some(m.size))
            }
            Err(object_store::Error::NotFound { .. }) => {
                self.saw(true, "head", None);
                Ok(None)
            }
            Err(e) => {
                self.saw(false, "head", Some(&e));
                Err(e.to_string())
            }
        }
    }

    /// The blob's bytes from `offset` on, as a fill's source.
    pub async fn download(&self, d: &Digest, offset: u64) -> Result<Download, FillError> {
        let opts = GetOptions {
            range: (offset > 0).then_some(GetRange::Offset(offset)),
            ..GetOptions::default()
        };
        let got = self.store.get_opts(&self.key(d), opts).await.map_err(|e| {
            self.saw(false, "get", Some(&e));
            FillError::transfer(format!("shared cache: {e}"))
        })?;
        self.saw(true, "get", None);
        let total = got.meta.size;
        let chunks = got
            .into_stream()
            .map_err(|e| FillError::transfer(format!("shared cache: {e}")))
            .boxed();
        Ok(Download {
            total: Some(total),
            chunks,
            rest: Vec::new(),
        })
    }

    /// Bytes `start..=end` of the blob, for a client's Range while its copy is still filling.
    pub async fn range(
        &self,
        d: &Digest,
        start: u64,
        end: u64,
    ) -> Result<
        futures_util::stream::BoxStream<'static, Result<bytes::Bytes, std::io::Error>>,
        String,
    > {
        let opts = GetOptions {
            range: Some(GetRange::Bounded(start..end + 1)),
            ..GetOptions::default()
        };
        let got = self.store.get_opts(&self.key(d), opts).await.map_err(|e| {
            if !matches!(e, object_store::Error::NotFound { .. }) {
                self.saw(false, "get", Some(&e));
            }
            e.to_string()
        })?;
        self.saw(true, "get", None);
        Ok(got.into_stream().map_err(std::io::Error::other).boxed())
    }

    /// Uploads a verified blob from `path`; the key appears only when the upload completes.
    pub async fn upload(&self, d: &Digest, path: &std::path::Path) -> Result<(), String> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let upload = self.store.put_multipart(&self.key(d)).await.map_err(|e| {
            self.saw(false, "upload", Some(&e));
            e.to_string()
        })?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if n == 0 {
                break;
            }
            if let Err(e) = w.wait_for_capacity(4).await {
                self.saw(false, "upload", Some(&e));
                return Err(e.to_string());
            }
            w.write(&buf[..n]);
        }
        match w.finish().await {
            Ok(_) => {
                self.saw(true, "upload", None);
                Ok(())
            }
            Err(e) => {
                self.saw(false, "upload", Some(&e));
                Err(e.to_string())
            }
        }
    }

    pub async fn delete(&self, d: &Digest) -> Result<(), String> {
        match self.store.delete(&self.key(d)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}
