//! Referrers (OCI 1.1): `GET /v2/<name>/referrers/<digest>[?artifactType=]` as an image index, from the upstream's API or its referrers tag, cached and served stale like tag lists.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use super::response::{bytes_response, error_response, Body};
use super::server::Proxy;
use super::tags::cache_identity;
use super::upstream::Requester;
use crate::registry::digest::Digest;
use crate::registry::manifest::OCI_INDEX;

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
        let fetch = up
            .client
            .referrers(repo, subject, picked.as_ref().map(|p| &p.creds));
        self.cached_list(
            &up,
            repo,
            REFERRERS,
            &key,
            fetch,
            |items| index(items, artifact_type),
            "MANIFEST_UNKNOWN",
        )
        .await
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
