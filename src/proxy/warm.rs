//! `proxy warm`: prefetches images as the proxy's own background work, through the manifests
//! and blobs stages.

use std::collections::HashSet;
use std::sync::Arc;

use super::error::SetupError;
use super::route::ManifestRef;
use super::server::Proxy;
use super::upstream::Requester;
use crate::registry::digest::Digest;

/// What `warm` fetched.
#[derive(Debug, Default)]
pub struct Warmed {
    pub manifests: usize,
    pub blobs: usize,
    pub bytes: u64,
}

impl Proxy {
    /// Prefetches `repo:reference` on upstream `ui` into the cache as background work (which may
    /// use `global-private` secrets): the manifest, the chosen platforms' manifests of an index
    /// (all when `platforms` is empty), and every config and layer blob.
    pub async fn warm(
        self: &Arc<Self>,
        ui: usize,
        repo: &str,
        reference: &str,
        platforms: &[crate::registry::manifest::Platform],
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Warmed, SetupError> {
        use crate::registry::manifest::{is_index, ImageIndex, ImageManifest, ACCEPT};
        let who = Requester {
            namespace: self.settings.namespace.clone(),
            home: self.settings.namespace.clone(),
            background: true,
        };
        let mut out = Warmed::default();
        let first = match Digest::parse(reference) {
            Ok(d) => ManifestRef::Digest(d),
            Err(_) => ManifestRef::Tag(reference.to_string()),
        };
        let mut queue = vec![first];
        // An index may list a manifest twice, and platforms share layers: each digest once.
        let mut seen: HashSet<String> = HashSet::new();
        while let Some(r) = queue.pop() {
            if !seen.insert(r.as_str().to_string()) {
                continue;
            }
            let m = self
                .manifest_doc(ui, repo, &r, Some(ACCEPT), &who)
                .await
                .map_err(|e| {
                    SetupError::new(
                        format!("manifest {repo}:{}", r.as_str()),
                        format!("{} {e}", e.status.as_u16()),
                    )
                })?;
            let (media_type, body) = (m.media_type, m.bytes);
            out.manifests += 1;
            progress(&format!("manifest {repo}@{} ({media_type})", m.digest));
            if is_index(&media_type) {
                let index: ImageIndex = serde_json::from_slice(&body)
                    .map_err(|e| SetupError::new(format!("index {repo}:{}", r.as_str()), e))?;
                for m in index.manifests {
                    let wanted = platforms.is_empty()
                        || m.platform
                            .as_ref()
                            .is_some_and(|p| platforms.iter().any(|w| w.matches(p)));
                    if wanted {
                        queue.push(ManifestRef::Digest(
                            Digest::parse(&m.digest)
                                .map_err(|e| SetupError::new(format!("index {repo}"), e))?,
                        ));
                    }
                }
                continue;
            }
            let image: ImageManifest = serde_json::from_slice(&body)
                .map_err(|e| SetupError::new(format!("manifest {repo}:{}", r.as_str()), e))?;
            for desc in std::iter::once(&image.config).chain(image.layers.iter()) {
                let d = Digest::parse(&desc.digest)
                    .map_err(|e| SetupError::new(format!("manifest {repo}"), e))?;
                if !seen.insert(d.to_string()) {
                    continue;
                }
                let n = self.warm_blob(ui, repo, &d, &who).await.map_err(|e| {
                    SetupError::new(format!("blob {d}"), format!("{} {e}", e.status.as_u16()))
                })?;
                out.blobs += 1;
                out.bytes += n;
                progress(&format!("blob {d} {n} bytes"));
            }
        }
        Ok(out)
    }

    /// The upstream a registry host (or upstream name or alias) belongs to; no default: an
    /// image of a registry the config does not name is refused, not sent elsewhere.
    pub fn upstream_for(&self, registry: &str) -> Option<usize> {
        let hub = crate::secret::is_docker_hub_host(registry);
        self.upstreams.iter().position(|u| {
            u.names.name == registry
                || u.names.host == registry
                || u.names.aliases.iter().any(|a| a == registry)
                || (hub && u.names.docker_hub)
        })
    }

    /// Names of the configured upstreams, for messages.
    pub fn upstream_names(&self) -> Vec<String> {
        self.upstreams
            .iter()
            .map(|u| u.names.name.clone())
            .collect()
    }
}
