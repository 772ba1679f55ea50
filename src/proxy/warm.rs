//! `proxy warm`: prefetches images as the proxy's own background work, through the manifests
//! and blobs stages.

use super::error::SetupError;
use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, Response};
use http_body_util::BodyExt;

use super::response::{hv, Body};
use super::route::ManifestRef;
use super::server::Proxy;
use super::upstream::Requester;
use crate::registry::digest::Digest;

/// The requester address of the proxy's own background work (`warm`).
pub(super) const LOCAL: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// What `warm` fetched.
#[derive(Debug, Default)]
pub struct Warmed {
    pub manifests: usize,
    pub blobs: usize,
    pub bytes: u64,
}

pub(super) async fn drain(resp: Response<Body>) -> (u16, Bytes) {
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (status, body)
}

pub(super) async fn drain_count(resp: Response<Body>) -> Result<(u16, u64), std::io::Error> {
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Some(d) = frame.data_ref() {
            n += d.len() as u64;
        }
    }
    Ok((status, n))
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
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, hv(ACCEPT));
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
            let resp = self.manifest(ui, repo, &r, &headers, false, &who).await;
            let media_type = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let (status, body) = drain(resp).await;
            if status != 200 {
                return Err(SetupError::new(
                    format!("manifest {repo}:{}", r.as_str()),
                    format!("{status} {}", String::from_utf8_lossy(&body)),
                ));
            }
            out.manifests += 1;
            progress(&format!(
                "manifest {repo}@{} ({media_type})",
                Digest::of_bytes(&body)
            ));
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
                let resp = self
                    .blob(ui, repo, &d, &HeaderMap::new(), false, &who, LOCAL)
                    .await;
                let (status, n) = drain_count(resp)
                    .await
                    .map_err(|e| SetupError::new(format!("blob {d}"), e))?;
                if status != 200 {
                    return Err(SetupError::new(format!("blob {d}"), status));
                }
                // A body ends once verified; the fill commits to the cache just after.
                if let Some(fill) = self.fills.get(&d) {
                    fill.subscribe().settled().await;
                }
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
