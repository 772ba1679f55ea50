//! Manifests: by digest from the cache (kept in memory once read), by tag with TTL revalidation
//! and stale serving when the upstream is down.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};

use super::blob_store::TagRecord;
use super::grants::Link;
use super::response::{accept_header, manifest_response, oci_error, upstream_error, Body};
use super::route::ManifestRef;
use super::server::Proxy;
use super::upstream::{Picked, Requester, Upstream};
use crate::registry::digest::Digest;
use crate::registry::RegistryError;
use crate::store::now_unix;

pub(super) const MANIFEST_MEMORY_ENTRIES: usize = 4096;

impl Proxy {
    pub(super) async fn manifest(
        &self,
        ui: usize,
        repo: &str,
        reference: &ManifestRef,
        headers: &HeaderMap,
        head: bool,
        who: &Requester,
    ) -> Response<Body> {
        let up = self.upstreams[ui].clone();
        // Go clients send one Accept header per media type; all of them go upstream.
        let accept = accept_header(headers);
        let picked = match self.credentials(&up, who, repo).await {
            Ok(p) => p,
            Err(r) => return r,
        };
        match reference {
            ManifestRef::Digest(d) => {
                if self.store.manifest_meta(d).is_some() {
                    if let Err(r) = self.confirm(&up, repo, d, picked.as_ref(), true).await {
                        return r;
                    }
                    if let Some(r) = self.cached_manifest(d, head) {
                        self.hit("manifest");
                        return r;
                    }
                }
                self.miss("manifest");
                self.count_upstream(&up.cfg.name);
                match up
                    .client
                    .get_manifest(
                        repo,
                        d.as_str(),
                        accept.as_deref(),
                        picked.as_ref().map(|p| &p.creds),
                    )
                    .await
                {
                    Ok(m) => {
                        self.store_manifest(&up, repo, &m, picked.as_ref());
                        manifest_response(m.bytes, &m.media_type, &m.digest, head)
                    }
                    Err(e) => {
                        self.metrics
                            .upstream_errors
                            .get_or_create(&self.metrics.upstream(&up.cfg.name))
                            .inc();
                        upstream_error(&e, "MANIFEST_UNKNOWN")
                    }
                }
            }
            ManifestRef::Tag(tag) => {
                self.manifest_by_tag(&up, repo, tag, accept.as_deref(), head, picked.as_ref())
                    .await
            }
        }
    }

    pub(super) fn store_manifest(
        &self,
        up: &Upstream,
        repo: &str,
        m: &crate::registry::client::Manifest,
        picked: Option<&Picked>,
    ) {
        match self.store.put_manifest(&m.digest, &m.bytes, &m.media_type) {
            Ok(()) => self.remember(&m.digest, m.bytes.len() as u64),
            Err(e) => tracing::warn!(error = %e, "caching manifest failed"),
        }
        self.grants.add(
            picked.map_or("anonymous", |p| p.grant.as_str()),
            &up.cfg.name,
            repo,
            &m.digest,
        );
    }

    pub(super) async fn manifest_by_tag(
        &self,
        up: &Arc<Upstream>,
        repo: &str,
        tag: &str,
        accept: Option<&str>,
        head: bool,
        picked: Option<&Picked>,
    ) -> Response<Body> {
        let accept_key = accept.unwrap_or("");
        let identity = picked.map_or("anonymous", |p| p.grant.as_str());
        let cached = self.store.get_tag(&up.cfg.name, repo, tag, accept_key);
        let cached_digest = cached
            .as_ref()
            .and_then(|c| Digest::parse(&c.digest).ok())
            .filter(|d| self.store.has_blob(d));
        let now = now_unix();
        if let (Some(rec), Some(d)) = (&cached, &cached_digest) {
            // Within the TTL, and only for a requester already linked to this content.
            let fresh_tag = now.saturating_sub(rec.checked) < up.cfg.tag_ttl.as_secs();
            if fresh_tag && self.grants.check(identity, &up.cfg.name, repo, d) == Link::Fresh {
                if let Some(r) = self.cached_manifest(d, head) {
                    self.hit("manifest");
                    return r;
                }
            }
        }
        let creds = picked.map(|p| &p.creds);
        // Revalidate with HEAD: free on Docker Hub's rate limit, unlike GET.
        self.count_upstream(&up.cfg.name);
        let head_result = up.client.head_manifest(repo, tag, accept, creds).await;
        match head_result {
            Ok(Some(h)) => {
                if let (Some(hd), Some(d), Some(rec)) = (&h.digest, &cached_digest, &cached) {
                    if hd == d {
                        let rec = TagRecord {
                            checked: now,
                            ..rec.clone()
                        };
                        let _ = self
                            .store
                            .put_tag(&up.cfg.name, repo, tag, accept_key, &rec);
                        // The HEAD with this requester's credentials is the confirmation.
                        self.grants.add(identity, &up.cfg.name, repo, d);
                        if let Some(r) = self.cached_manifest(d, head) {
                            self.hit("manifest");
                            return r;
                        }
                    }
                }
                self.miss("manifest");
                self.count_upstream(&up.cfg.name);
                match up.client.get_manifest(repo, tag, accept, creds).await {
                    Ok(m) => {
                        let rec = TagRecord {
                            digest: m.digest.to_string(),
                            media_type: m.media_type.clone(),
                            size: m.bytes.len() as u64,
                            checked: now,
                        };
                        self.store_manifest(up, repo, &m, picked);
                        if let Err(e) =
                            self.store
                                .put_tag(&up.cfg.name, repo, tag, accept_key, &rec)
                        {
                            tracing::warn!(error = %e, "caching tag failed");
                        }
                        manifest_response(m.bytes, &m.media_type, &m.digest, head)
                    }
                    Err(e) => self.stale_or_error(
                        &e,
                        up,
                        repo,
                        tag,
                        cached_digest.as_ref(),
                        head,
                        identity,
                    ),
                }
            }
            Ok(None) => oci_error(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                &format!("manifest unknown to {}", up.names.host),
            ),
            Err(e) => {
                self.stale_or_error(&e, up, repo, tag, cached_digest.as_ref(), head, identity)
            }
        }
    }

    /// On an unwell upstream, the last known digest for a tag is served (logged once per tag) to
    /// requesters that were linked to it before.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn stale_or_error(
        &self,
        e: &RegistryError,
        up: &Upstream,
        repo: &str,
        tag: &str,
        cached: Option<&Digest>,
        head: bool,
        identity: &str,
    ) -> Response<Body> {
        self.metrics
            .upstream_errors
            .get_or_create(&self.metrics.upstream(&up.cfg.name))
            .inc();
        if e.upstream_unavailable() {
            if let Some(d) = cached {
                if self.grants.check(identity, &up.cfg.name, repo, d) != Link::None {
                    if let Some(r) = self.cached_manifest(d, head) {
                        self.metrics.stale_serves.inc();
                        let key = format!("{}/{repo}:{tag}", up.cfg.name);
                        let first = self
                            .stale_logged
                            .lock()
                            .map(|mut s| s.insert(key.clone()))
                            .unwrap_or(false);
                        if first {
                            tracing::warn!(tag = %key, error = %e, "upstream unavailable; serving the cached tag (stale)");
                        }
                        return r;
                    }
                }
            }
        }
        upstream_error(e, "MANIFEST_UNKNOWN")
    }

    pub(super) fn cached_manifest(&self, d: &Digest, head: bool) -> Option<Response<Body>> {
        // Small and hot: kept in memory after the first read.
        if let Some((media_type, bytes)) = self
            .manifests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(d)
        {
            return Some(manifest_response(bytes.clone(), media_type, d, head));
        }
        let meta = self.store.manifest_meta(d)?;
        let bytes = Bytes::from(std::fs::read(self.store.blob_path(d)).ok()?);
        let _pin = self.lru.pin(d);
        let mut mem = self.manifests.lock().unwrap_or_else(|e| e.into_inner());
        if mem.len() >= MANIFEST_MEMORY_ENTRIES {
            mem.clear();
        }
        mem.insert(d.clone(), (meta.media_type.clone(), bytes.clone()));
        Some(manifest_response(bytes, &meta.media_type, d, head))
    }
}
