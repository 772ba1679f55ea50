//! Cached list answers (tag lists, referrers): fresh within the upstream's `tag_ttl`, else asked
//! again with the requester's credentials; the last answer served stale, with `Warning`, while
//! the upstream is unavailable.

use http::{header, HeaderValue, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::blob_store::ListRecord;
use super::response::{upstream_error, Body};
use super::server::Proxy;
use super::tags::STALE_WARNING;
use super::upstream::Upstream;
use crate::registry::RegistryError;
use crate::store::now_unix;

impl Proxy {
    /// The list of `kind` under `key` rendered by `render`: cached, or from `fetch`; `unknown`
    /// is the OCI code of an upstream 404.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn cached_list<T: Serialize + DeserializeOwned>(
        &self,
        up: &Upstream,
        repo: &str,
        kind: &'static str,
        key: &[&str],
        fetch: impl std::future::Future<Output = Result<Vec<T>, RegistryError>>,
        render: impl Fn(&[T]) -> Response<Body>,
        unknown: &'static str,
    ) -> Response<Body> {
        let cached: Option<ListRecord<T>> = self.store.get_list(kind, key);
        let now = now_unix();
        if let Some(rec) = &cached {
            if now.saturating_sub(rec.checked) < up.cfg.tag_ttl.as_secs() {
                self.hit(kind);
                return render(&rec.items);
            }
        }
        self.miss(kind);
        self.count_upstream(&up.cfg.name);
        match fetch.await {
            Ok(items) => {
                let rec = ListRecord {
                    items,
                    checked: now,
                };
                if let Err(e) = self.store.put_list(kind, key, &rec) {
                    tracing::warn!(error = %e, kind, "caching a list answer failed");
                }
                render(&rec.items)
            }
            Err(e) => {
                self.metrics
                    .upstream_errors
                    .get_or_create(&self.metrics.upstream(&up.cfg.name))
                    .inc();
                match cached {
                    Some(rec) if e.upstream_unavailable() => {
                        self.metrics.stale_serves.inc();
                        tracing::warn!(upstream = %up.cfg.name, %repo, kind, error = %e, "upstream unavailable; serving the cached list (stale)");
                        let mut r = render(&rec.items);
                        r.headers_mut()
                            .insert(header::WARNING, HeaderValue::from_static(STALE_WARNING));
                        r
                    }
                    _ => upstream_error(&e, unknown),
                }
            }
        }
    }
}
