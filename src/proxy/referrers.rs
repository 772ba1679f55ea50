//! Referrers (OCI 1.1): `GET /v2/<name>/referrers/<digest>[?artifactType=]` as an image index, from the upstream's API or its referrers tag, cached and served stale like tag lists.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use super::blob_store::ListRecord;
use super::response::{bytes_response, error_response, upstream_error, Body};
use super::server::Proxy;
use super::tags::{cache_identity, STALE_WARNING};
use super::upstream::Requester;
use crate::registry::digest::Digest;
use crate::registry::manifest::OCI_INDEX;
use crate::store::now_unix;

/// `kind` of cached referrer lists in the blob store.
const REFERRERS: &str = "referrers";

impl Proxy {
    pub(super) async fn referrers(
        &self,
        ui: usize,
        repo: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
        who: &Requester,
    ) -> Response<Body> {
        let up = self.upstreams[ui].clone();
        let picked = match self.credentials(&up, who, repo).await {
            Ok(p) => p,
            Err(e) => return error_response(&e),
        };
        let identity = cache_identity(picked.as_ref());
        let key = [
            up.cfg.name.as_str(),
            repo,
            identity.as_str(),
            subject.as_str(),
        ];
        let cached: Option<ListRecord<serde_json::Value>> = self.store.get_list(REFERRERS, &key);
        let now = now_unix();
        if let Some(rec) = &cached {
            if now.saturating_sub(rec.checked) < up.cfg.tag_ttl.as_secs() {
                self.hit(REFERRERS);
                return index(&rec.items, artifact_type);
            }
        }
        self.miss(REFERRERS);
        self.count_upstream(&up.cfg.name);
        let listed = up
            .client
            .referrers(repo, subject, picked.as_ref().map(|p| &p.creds))
            .await;
        match listed {
            Ok(items) => {
                let rec = ListRecord {
                    items,
                    checked: now,
                };
                if let Err(e) = self.store.put_list(REFERRERS, &key, &rec) {
                    tracing::warn!(error = %e, "caching referrers failed");
                }
                index(&rec.items, artifact_type)
            }
            Err(e) => {
                self.metrics
                    .upstream_errors
                    .get_or_create(&self.metrics.upstream(&up.cfg.name))
                    .inc();
                match cached {
                    Some(rec) if e.upstream_unavailable() => {
                        self.metrics.stale_serves.inc();
                        tracing::warn!(upstream = %up.cfg.name, %repo, %subject, error = %e, "upstream unavailable; serving cached referrers (stale)");
                        let mut r = index(&rec.items, artifact_type);
                        r.headers_mut()
                            .insert(header::WARNING, HeaderValue::from_static(STALE_WARNING));
                        r
                    }
                    _ => upstream_error(&e, "MANIFEST_UNKNOWN"),
                }
            }
        }
    }
}

/// An image index of `items` (those of `artifact_type` when given, with `OCI-Filters-Applied`).
fn index(items: &[serde_json::Value], artifact_type: Option<&str>) -> Response<Body> {
    let shown: Vec<&serde_json::Value> = items
        .iter()
        .filter(|d| {
            artifact_type.is_none_or(|t| d.get("artifactType").and_then(|a| a.as_str()) == Some(t))
        })
        .collect();
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": shown,
    })
    .to_string();
    let mut r = bytes_response(StatusCode::OK, Bytes::from(body), OCI_INDEX, false);
    if artifact_type.is_some() {
        r.headers_mut().insert(
            "oci-filters-applied",
            HeaderValue::from_static("artifactType"),
        );
    }
    r
}
