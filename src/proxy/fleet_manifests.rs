//! Manifests and tag answers shared by a fleet: what one replica fetched or revalidated
//! upstream is written to PostgreSQL, and a replica that lacks a manifest or a fresh tag reads
//! it there before asking the upstream. Manifest GETs are what registries rate-limit, so a
//! fleet spends one where each replica would have spent its own. Nothing is read from the
//! database on a warm hit; a requester still needs a link (its own, or one a replica shared).

use bytes::Bytes;

use super::blob_store::TagRecord;
use super::grants::Link;
use super::manifests::ManifestDoc;
use super::server::Proxy;
use super::upstream::Upstream;
use crate::registry::digest::Digest;

/// The tag answer's name in the shared table: a hash, so the table names no repository.
fn tag_key(upstream: &str, repo: &str, tag: &str, accept: &str) -> String {
    super::blob_store::hashed_key(&["tag", upstream, repo, tag, accept])
}

impl Proxy {
    fn coordinated_fleet(&self) -> Option<std::sync::Arc<super::fleet::Fleet>> {
        self.fleet().filter(|f| f.coordinated()).cloned()
    }

    /// Shares a manifest this replica just fetched upstream.
    pub(super) fn share_manifest(&self, d: &Digest, media_type: &str, bytes: &Bytes) {
        let Some(fleet) = self.coordinated_fleet() else {
            return;
        };
        let (d, media_type, bytes) = (d.clone(), media_type.to_string(), bytes.to_vec());
        tokio::spawn(async move { fleet.manifest_put(&d, media_type, bytes).await });
    }

    /// Shares a tag answer the upstream just gave or confirmed.
    pub(super) fn share_tag(
        &self,
        upstream: &str,
        repo: &str,
        tag: &str,
        accept: &str,
        rec: &TagRecord,
    ) {
        let Some(fleet) = self.coordinated_fleet() else {
            return;
        };
        let key = tag_key(upstream, repo, tag, accept);
        let rec = rec.clone();
        tokio::spawn(async move {
            fleet
                .tag_put(key, rec.digest, rec.media_type, rec.size, rec.checked)
                .await
        });
    }

    /// Brings manifest `d` from the fleet into this replica's cache, checked against its
    /// digest; whether it is cached now.
    pub(super) async fn fetch_shared_manifest(&self, d: &Digest) -> bool {
        let Some(fleet) = self.coordinated_fleet() else {
            return false;
        };
        let Some((media_type, bytes)) = fleet.manifest_get(d).await else {
            return false;
        };
        if &Digest::of_bytes(&bytes) != d {
            tracing::warn!(%d, "fleet: a shared manifest does not match its digest; ignored");
            return false;
        }
        match self.store.put_manifest(d, &bytes, &media_type) {
            Ok(()) => {
                self.remember(d, bytes.len() as u64);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "caching manifest failed");
                false
            }
        }
    }

    /// A tag another replica resolved within the TTL, for a requester linked to its manifest
    /// (locally or through the fleet); kept as this replica's own tag record too.
    pub(super) async fn shared_tag_doc(
        &self,
        up: &Upstream,
        repo: &str,
        tag: &str,
        accept: &str,
        identity: &str,
    ) -> Option<ManifestDoc> {
        let fleet = self.coordinated_fleet()?;
        let name = &up.cfg.name;
        let (digest, media_type, size, checked) =
            fleet.tag_get(&tag_key(name, repo, tag, accept)).await?;
        let now = crate::store::now_unix();
        if now.saturating_sub(checked) >= up.cfg.tag_ttl.as_secs() {
            return None;
        }
        let d = Digest::parse(&digest).ok()?;
        if self.store.manifest_meta(&d).is_none() && !self.fetch_shared_manifest(&d).await {
            return None;
        }
        let linked = self.grants.check(identity, name, repo, &d) == Link::Fresh
            || self.shared_link(identity, name, repo, &d).await;
        if !linked {
            return None;
        }
        let rec = TagRecord {
            digest,
            media_type,
            size,
            checked,
            ..Default::default()
        };
        let _ = self.store.put_tag(name, repo, tag, accept, &rec);
        self.cached_manifest(&d)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tag_keys_differ_by_every_part() {
        let k = super::tag_key("up", "app", "v1", "");
        assert_ne!(k, super::tag_key("up", "app", "v2", ""));
        assert_ne!(k, super::tag_key("up", "ap", "pv1", ""));
        assert_ne!(k, super::tag_key("up2", "app", "v1", ""));
        assert_ne!(k, super::tag_key("up", "app", "v1", "application/json"));
    }
}
