//! Manifests: by digest from the cache (kept in memory once read), by tag with TTL revalidation
//! and stale serving when the upstream is down.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Response};

use super::blob_store::TagRecord;
use super::error::ProxyError;
use super::grants::Link;
use super::response::{accept_header, error_response, manifest_response, upstream_failure, Body};
use super::route::ManifestRef;
use super::server::Proxy;
use super::tags::STALE_WARNING;
use super::upstream::{Picked, Requester, Upstream};
use crate::registry::client::ManifestHead;
use crate::registry::digest::Digest;
use crate::registry::RegistryError;
use crate::store::now_unix;

pub(super) const MANIFEST_MEMORY_ENTRIES: usize = 4096;

/// A manifest as the stages hand it on: to an HTTP answer, to `warm`, to the read API.
pub struct ManifestDoc {
    pub media_type: String,
    pub bytes: Bytes,
    pub digest: Digest,
    /// Served from the cache because the upstream is down: nothing to prefetch from it now.
    pub stale: bool,
}

impl Proxy {
    /// hyper's manifest path: `manifest_doc`, rendered.
    pub(super) async fn manifest(
        self: &Arc<Self>,
        ui: usize,
        repo: &str,
        reference: &ManifestRef,
        headers: &HeaderMap,
        head: bool,
        who: &Requester,
    ) -> Response<Body> {
        // Go clients send one Accept header per media type; all of them go upstream.
        let accept = accept_header(headers);
        match self
            .manifest_doc(ui, repo, reference, accept.as_deref(), who)
            .await
        {
            Ok(m) => {
                let stale = m.stale;
                let mut r = manifest_response(m.bytes, &m.media_type, &m.digest, head);
                if stale {
                    r.headers_mut().insert(
                        http::header::WARNING,
                        http::HeaderValue::from_static(STALE_WARNING),
                    );
                }
                r
            }
            Err(e) => error_response(&e),
        }
    }

    /// The manifest `reference` names for `who`: from the cache when this requester is linked
    /// to it (and, for a tag, within its TTL), else from the upstream with `who`'s credentials;
    /// a tag's last digest when the upstream is down.
    pub(super) async fn manifest_doc(
        self: &Arc<Self>,
        ui: usize,
        repo: &str,
        reference: &ManifestRef,
        accept: Option<&str>,
        who: &Requester,
    ) -> Result<ManifestDoc, ProxyError> {
        let doc = self
            .fetch_manifest(ui, repo, reference, accept, who)
            .await?;
        self.prefetch(ui, repo, &doc, who);
        Ok(doc)
    }

    async fn fetch_manifest(
        &self,
        ui: usize,
        repo: &str,
        reference: &ManifestRef,
        accept: Option<&str>,
        who: &Requester,
    ) -> Result<ManifestDoc, ProxyError> {
        let up = self.upstreams[ui].clone();
        let picked = self.credentials(&up, who, repo).await?;
        match reference {
            ManifestRef::Digest(d) => {
                // In a fleet, another replica's fetch may serve here (the link check below
                // still applies).
                if self.store.manifest_meta(d).is_some() || self.fetch_shared_manifest(d).await {
                    self.confirm(&up, repo, d, picked.as_ref(), true).await?;
                    if let Some(m) = self.cached_manifest(d) {
                        self.hit("manifest");
                        return Ok(m);
                    }
                }
                self.miss("manifest");
                self.count_upstream(&up.cfg.name);
                let fetched = up
                    .client
                    .get_manifest(repo, d.as_str(), accept, picked.as_ref().map(|p| &p.creds))
                    .await;
                match fetched {
                    Ok(m) => {
                        self.store_manifest(&up, repo, &m, picked.as_ref());
                        Ok(ManifestDoc {
                            media_type: m.media_type,
                            bytes: m.bytes,
                            digest: m.digest,
                            stale: false,
                        })
                    }
                    Err(e) => {
                        self.metrics
                            .upstream_errors
                            .get_or_create(&self.metrics.upstream(&up.cfg.name))
                            .inc();
                        Err(upstream_failure(&e, "MANIFEST_UNKNOWN"))
                    }
                }
            }
            ManifestRef::Tag(tag) => {
                self.manifest_by_tag(&up, repo, tag, accept, picked.as_ref())
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
        self.share_manifest(&m.digest, &m.media_type, &m.bytes);
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
        picked: Option<&Picked>,
    ) -> Result<ManifestDoc, ProxyError> {
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
                if let Some(m) = self.cached_manifest(d) {
                    self.hit("manifest");
                    return Ok(m);
                }
            }
        }
        // A replica of the same fleet may have resolved it within the TTL.
        if let Some(m) = self
            .shared_tag_doc(up, repo, tag, accept_key, identity)
            .await
        {
            self.hit("manifest");
            return Ok(m);
        }
        let creds = picked.map(|p| &p.creds);
        // Revalidate with HEAD: free on Docker Hub's rate limit, unlike GET. It runs on its own
        // task, so a slow upstream's answer still reaches the breaker after `stale_after` has
        // sent the client the cached tag.
        self.count_upstream(&up.cfg.name);
        let revalidation = {
            let (up, repo, tag) = (up.clone(), repo.to_string(), tag.to_string());
            let (accept, creds) = (accept.map(str::to_string), creds.cloned());
            tokio::spawn(async move {
                up.client
                    .head_manifest(&repo, &tag, accept.as_deref(), creds.as_ref())
                    .await
            })
        };
        let mut revalidation = std::pin::pin!(revalidation);
        // With a cached digest, the client waits at most `stale_after` for the revalidation.
        let early = match &cached_digest {
            Some(_) => tokio::time::timeout(up.cfg.stale_after, &mut revalidation)
                .await
                .ok(),
            None => None,
        };
        let done = match (early, &cached_digest) {
            (Some(done), _) => done,
            (None, Some(d)) => {
                let late = format!(
                    "revalidation took longer than stale_after ({:?})",
                    up.cfg.stale_after
                );
                if let Some(m) = self.serve_stale(up, repo, tag, d, identity, &late) {
                    return Ok(m);
                }
                revalidation.await
            }
            (None, None) => revalidation.await,
        };
        self.after_head(
            up,
            repo,
            tag,
            accept,
            picked,
            &cached,
            cached_digest.as_ref(),
            done,
        )
        .await
    }

    /// The tag path once the revalidating HEAD has answered (or its task failed).
    #[allow(clippy::too_many_arguments)]
    async fn after_head(
        &self,
        up: &Arc<Upstream>,
        repo: &str,
        tag: &str,
        accept: Option<&str>,
        picked: Option<&Picked>,
        cached: &Option<TagRecord>,
        cached_digest: Option<&Digest>,
        done: Result<Result<Option<ManifestHead>, RegistryError>, tokio::task::JoinError>,
    ) -> Result<ManifestDoc, ProxyError> {
        let accept_key = accept.unwrap_or("");
        let identity = picked.map_or("anonymous", |p| p.grant.as_str());
        let creds = picked.map(|p| &p.creds);
        let now = now_unix();
        let head_result = done.map_err(|e| {
            ProxyError::new(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                format!("revalidating {repo}:{tag}: {e}"),
            )
        })?;
        match head_result {
            // A 404 to HEAD has no body to say why; the GET below brings the upstream's own code
            // (`NAME_UNKNOWN` for an unknown repository, `MANIFEST_UNKNOWN` for a tag).
            Ok(head) => {
                let head_digest = head.and_then(|h| h.digest);
                if let (Some(hd), Some(d), Some(rec)) = (&head_digest, cached_digest, cached) {
                    if hd == d {
                        let rec = TagRecord {
                            checked: now,
                            ..rec.clone()
                        };
                        let _ = self
                            .store
                            .put_tag(&up.cfg.name, repo, tag, accept_key, &rec);
                        self.share_tag(&up.cfg.name, repo, tag, accept_key, &rec);
                        // The HEAD with this requester's credentials is the confirmation.
                        self.grants.add(identity, &up.cfg.name, repo, d);
                        if let Some(m) = self.cached_manifest(d) {
                            self.hit("manifest");
                            return Ok(m);
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
                            ..Default::default()
                        };
                        self.store_manifest(up, repo, &m, picked);
                        self.share_tag(&up.cfg.name, repo, tag, accept_key, &rec);
                        if let Err(e) =
                            self.store
                                .put_tag(&up.cfg.name, repo, tag, accept_key, &rec)
                        {
                            tracing::warn!(error = %e, "caching tag failed");
                        }
                        Ok(ManifestDoc {
                            media_type: m.media_type,
                            bytes: m.bytes,
                            digest: m.digest,
                            stale: false,
                        })
                    }
                    Err(e) => self.stale_or_error(&e, up, repo, tag, cached_digest, identity),
                }
            }
            Err(e) => self.stale_or_error(&e, up, repo, tag, cached_digest, identity),
        }
    }

    /// On an unwell upstream, the last known digest for a tag is served (logged once per tag) to
    /// requesters that were linked to it before.
    pub(super) fn stale_or_error(
        &self,
        e: &RegistryError,
        up: &Upstream,
        repo: &str,
        tag: &str,
        cached: Option<&Digest>,
        identity: &str,
    ) -> Result<ManifestDoc, ProxyError> {
        self.metrics
            .upstream_errors
            .get_or_create(&self.metrics.upstream(&up.cfg.name))
            .inc();
        if e.upstream_unavailable() {
            if let Some(m) = cached.and_then(|d| self.serve_stale(up, repo, tag, d, identity, e)) {
                return Ok(m);
            }
        }
        Err(upstream_failure(e, "MANIFEST_UNKNOWN"))
    }

    /// The cached manifest `d` of a tag, marked stale, for a requester linked to it before.
    fn serve_stale(
        &self,
        up: &Upstream,
        repo: &str,
        tag: &str,
        d: &Digest,
        identity: &str,
        why: &dyn std::fmt::Display,
    ) -> Option<ManifestDoc> {
        if self.grants.check(identity, &up.cfg.name, repo, d) == Link::None {
            return None;
        }
        let mut m = self.cached_manifest(d)?;
        m.stale = true;
        self.metrics.stale_serves.inc();
        let key = format!("{}/{repo}:{tag}", up.cfg.name);
        let first = self
            .stale_logged
            .lock()
            .map(|mut s| s.insert(key.clone()))
            .unwrap_or(false);
        if first {
            tracing::warn!(tag = %key, error = %why, "upstream unavailable; serving the cached tag (stale)");
        }
        Some(m)
    }

    pub(super) fn cached_manifest(&self, d: &Digest) -> Option<ManifestDoc> {
        // Small and hot: kept in memory after the first read.
        if let Some((media_type, bytes)) = self
            .manifests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(d)
        {
            return Some(ManifestDoc {
                media_type: media_type.clone(),
                bytes: bytes.clone(),
                digest: d.clone(),
                stale: false,
            });
        }
        let meta = self.store.manifest_meta(d)?;
        let bytes = Bytes::from(std::fs::read(self.store.blob_path(d)).ok()?);
        let _pin = self.lru.pin(d);
        let mut mem = self.manifests.lock().unwrap_or_else(|e| e.into_inner());
        if mem.len() >= MANIFEST_MEMORY_ENTRIES {
            mem.clear();
        }
        mem.insert(d.clone(), (meta.media_type.clone(), bytes.clone()));
        Some(ManifestDoc {
            media_type: meta.media_type,
            bytes,
            digest: d.clone(),
            stale: false,
        })
    }
}
