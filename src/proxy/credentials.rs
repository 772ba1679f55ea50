//! Upstream credentials for a requester (cached per store generation) and link confirmation:
//! whether a requester may see cached content, asked of the upstream with its own credentials.

use std::sync::Arc;

use http::StatusCode;

use super::error::ProxyError;
use super::grants::Link;
use super::response::upstream_failure;
use super::server::Proxy;
use super::upstream::{Picked, Requester, Upstream};
use crate::registry::digest::Digest;

impl Proxy {
    pub(super) async fn credentials(
        &self,
        up: &Arc<Upstream>,
        who: &Requester,
        repo: &str,
    ) -> Result<Option<Picked>, ProxyError> {
        let ui = self
            .upstreams
            .iter()
            .position(|u| Arc::ptr_eq(u, up))
            .unwrap_or(usize::MAX);
        let generation = self.secrets.generation();
        if let Some(picked) = self.creds_cache.get(ui, who, repo, generation) {
            return Ok(picked);
        }
        let up2 = up.clone();
        let store = self.secrets.clone();
        let who2 = who.clone();
        let repo2 = repo.to_string();
        let r = tokio::task::spawn_blocking(move || up2.credentials(store.as_ref(), &who2, &repo2))
            .await;
        match r {
            Ok(Ok(picked)) => {
                self.creds_cache
                    .put(ui, who, repo, generation, picked.clone());
                Ok(picked)
            }
            // The reason (which secret, which namespace, what to run) is for the operator's
            // log; the client learns only that credentials are missing.
            Ok(Err(e)) => {
                tracing::warn!(error = %e, namespace = %who.namespace, %repo, "no credentials for upstream");
                Err(ProxyError::new(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    "the proxy has no usable credentials for this upstream",
                ))
            }
            Err(e) => {
                tracing::warn!(error = %e, "credential lookup failed");
                Err(ProxyError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "UNKNOWN",
                    "credential lookup failed",
                ))
            }
        }
    }

    /// Whether `who` may see cached `digest` in `repo`: a fresh link, or the upstream confirms
    /// it now with `who`'s own credentials. `Err` carries the upstream's refusal.
    pub(super) async fn confirm(
        &self,
        up: &Upstream,
        repo: &str,
        digest: &Digest,
        picked: Option<&Picked>,
        manifest: bool,
    ) -> Result<(), ProxyError> {
        let identity = picked.map_or("anonymous", |p| p.grant.as_str());
        let link = self.grants.check(identity, &up.cfg.name, repo, digest);
        if link == Link::Fresh || self.shared_link(identity, &up.cfg.name, repo, digest).await {
            return Ok(());
        }
        let creds = picked.map(|p| &p.creds);
        self.count_upstream(&up.cfg.name);
        let found = if manifest {
            up.client
                .head_manifest(repo, digest.as_str(), None, creds)
                .await
                .map(|h| h.is_some())
        } else {
            up.client
                .head_blob(repo, digest, creds)
                .await
                .map(|h| h.is_some())
        };
        match found {
            Ok(true) => {
                self.grants.add(identity, &up.cfg.name, repo, digest);
                Ok(())
            }
            Ok(false) => Err(ProxyError::new(
                StatusCode::NOT_FOUND,
                if manifest {
                    "MANIFEST_UNKNOWN"
                } else {
                    "BLOB_UNKNOWN"
                },
                "unknown to the upstream for this repository",
            )),
            // An upstream that is down cannot confirm; a link confirmed before still stands.
            Err(e) if e.upstream_unavailable() && link == Link::Expired => Ok(()),
            Err(e) => {
                self.metrics
                    .upstream_errors
                    .get_or_create(&self.metrics.upstream(&up.cfg.name))
                    .inc();
                Err(upstream_failure(
                    &e,
                    if manifest {
                        "MANIFEST_UNKNOWN"
                    } else {
                        "BLOB_UNKNOWN"
                    },
                ))
            }
        }
    }
}
