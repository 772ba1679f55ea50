//! Prefetch on manifest: when a client gets an image manifest, its config and layers start
//! filling at once, with that client's own credentials (so the links are its own), bounded by
//! `[prefetch] max_concurrent`; a client that then asks joins the running fill.

use std::sync::Arc;

use super::blobs::{BlobPlan, LOCAL};
use super::manifests::ManifestDoc;
use super::server::Proxy;
use super::upstream::Requester;
use crate::registry::digest::Digest;
use crate::registry::manifest::{is_index, ImageManifest};

impl Proxy {
    /// Starts fills for what `doc` (an image manifest) names and the cache lacks.
    pub(super) fn prefetch(
        self: &Arc<Self>,
        ui: usize,
        repo: &str,
        doc: &ManifestDoc,
        who: &Requester,
    ) {
        if !self.settings.prefetch || who.background || doc.stale || is_index(&doc.media_type) {
            return;
        }
        let Ok(image) = serde_json::from_slice::<ImageManifest>(&doc.bytes) else {
            return;
        };
        let wanted: Vec<Digest> = std::iter::once(&image.config)
            .chain(image.layers.iter())
            .filter_map(|d| Digest::parse(&d.digest).ok())
            .filter(|d| !self.store.has_blob(d) && self.fills.get(d).is_none())
            .collect();
        if wanted.is_empty() {
            return;
        }
        let (this, who, repo) = (self.clone(), who.clone(), repo.to_string());
        tokio::spawn(async move {
            let up = this.upstreams[ui].clone();
            let Ok(picked) = this.credentials(&up, &who, &repo).await else {
                return;
            };
            for d in wanted {
                // Bounded: beyond the limit, the client's own requests fetch the rest.
                let Ok(permit) = this.prefetch_slots.clone().try_acquire_owned() else {
                    tracing::debug!(%repo, "prefetch limit reached; the rest waits for clients");
                    break;
                };
                let BlobPlan::Filling { fill, own: true } =
                    this.plan_blob(&up, &repo, &d, picked.as_ref(), LOCAL, true)
                else {
                    continue;
                };
                lock(&this.prefetched).insert(d.clone(), 0);
                let this = this.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Ok(n) = fill.subscribe().finished().await {
                        this.metrics.prefetch_bytes.inc_by(n);
                        if let Some(size) = lock(&this.prefetched).get_mut(&d) {
                            *size = n;
                        }
                    }
                });
            }
        });
    }

    /// A client asked for `digest`: if it was prefetched, its bytes were worth fetching.
    pub(super) fn prefetch_used(&self, digest: &Digest, size: Option<u64>) {
        // Nothing to look up (and no lock to take on the blob path) when prefetch is off.
        if !self.settings.prefetch {
            return;
        }
        if let Some(known) = lock(&self.prefetched).remove(digest) {
            let n = if known > 0 { known } else { size.unwrap_or(0) };
            self.metrics.prefetch_used_bytes.inc_by(n);
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
