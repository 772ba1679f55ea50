//! Blobs: the decision for one blob request (cached and linked, filling, needs confirmation,
//! refused), fills and their queue, and streaming for hyper and the sendfile fast path.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use super::fill::{Download, Joined};
use super::fill_queue::Ticket;
use super::grants::Link;
use super::metrics::RequestLabels;
use super::response::{
    blob_head, fill_error, fill_error_response, hv, oci_error, parse_range, queue_full,
    range_not_satisfiable, serve_file, upstream_error, Body, QueueFull, CHUNK,
};
use super::route::{route, Route};
use super::server::Proxy;
use super::upstream::{Picked, Requester, Upstream};
use crate::registry::digest::Digest;

/// Streams a (possibly still filling) blob to one client, honouring a single Range.
pub(super) async fn stream_fill(
    mut reader: super::fill::FillReader,
    digest: &Digest,
    range: Option<&str>,
) -> Response<Body> {
    let total = match reader.started().await {
        Ok(t) => t,
        Err(e) => return fill_error_response(&e),
    };
    let (status, start, end, content_range) =
        match (range.and_then(|r| parse_range(r, total)), total) {
            (Some(Ok((s, e))), Some(t)) => (
                StatusCode::PARTIAL_CONTENT,
                s,
                Some(e),
                Some(format!("bytes {s}-{e}/{t}")),
            ),
            (Some(Err(())), Some(t)) => return range_not_satisfiable(t),
            _ => (StatusCode::OK, 0, total.map(|t| t.saturating_sub(1)), None),
        };
    let limit = end.map(|e| e + 1);
    let stream =
        futures_util::stream::unfold((reader, start), move |(mut reader, offset)| async move {
            if limit.is_some_and(|l| offset >= l) {
                return None;
            }
            let max = limit.map_or(CHUNK, |l| ((l - offset) as usize).min(CHUNK));
            match reader.read_at(offset, max).await {
                Ok(Some(b)) => {
                    let n = b.len() as u64;
                    Some((Ok(Frame::data(b)), (reader, offset + n)))
                }
                Ok(None) => None,
                // An error frame aborts the connection: the client never sees a complete-looking body.
                Err(e) => Some((Err(std::io::Error::other(e)), (reader, u64::MAX))),
            }
        });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert("docker-content-digest", hv(digest.as_str()));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(e) = end {
        h.insert(header::CONTENT_LENGTH, hv(&(e + 1 - start).to_string()));
    }
    if let Some(cr) = content_range {
        h.insert(header::CONTENT_RANGE, hv(&cr));
    }
    resp
}

impl Proxy {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn blob(
        self: &Arc<Self>,
        ui: usize,
        repo: &str,
        digest: &Digest,
        headers: &HeaderMap,
        head: bool,
        who: &Requester,
        peer: std::net::IpAddr,
    ) -> Response<Body> {
        let range = headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let up = self.upstreams[ui].clone();
        let picked = match self.credentials(&up, who, repo).await {
            Ok(p) => p,
            Err(r) => return r,
        };
        let identity = picked
            .as_ref()
            .map_or("anonymous".to_string(), |p| p.grant.clone());
        if let Some(r) = self
            .serve_cached(&up, repo, digest, picked.as_ref(), range.as_deref(), head)
            .await
        {
            return r;
        }
        let creds = picked.as_ref().map(|p| p.creds.clone());
        if head {
            // A HEAD for an uncached blob answers what the upstream says, without a fill.
            self.count_upstream(&up.cfg.name);
            return match up.client.head_blob(repo, digest, creds.as_ref()).await {
                Ok(Some(size)) => blob_head(digest, size),
                Ok(None) => oci_error(
                    StatusCode::NOT_FOUND,
                    "BLOB_UNKNOWN",
                    "blob unknown to registry",
                ),
                Err(e) => upstream_error(&e),
            };
        }
        self.miss("blob");
        let owner = format!("{}|{repo}|{identity}", up.cfg.name);
        let ticket = match self.queue_place(digest, peer) {
            Ok(t) => t,
            Err(QueueFull) => return queue_full(),
        };
        let fill = match self.join_fill(&up, repo, digest, creds, &identity, &owner, ticket) {
            // A fill committed between the cache check and the join.
            Ok(None) => {
                return self
                    .serve_cached(&up, repo, digest, picked.as_ref(), range.as_deref(), head)
                    .await
                    .unwrap_or_else(|| {
                        // Committed and evicted again in between: rare; the client retries.
                        oci_error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "UNAVAILABLE",
                            "blob left the cache while being requested; retry",
                        )
                    });
            }
            Ok(Some((f, false))) if f.owner != owner => {
                // Someone else's download: this requester must be entitled to it first.
                if let Err(r) = self
                    .confirm(&up, repo, digest, picked.as_ref(), false)
                    .await
                {
                    return r;
                }
                f
            }
            Ok(Some((f, _))) => f,
            Err(e) => {
                return oci_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "UNKNOWN",
                    &format!("cache: {e}"),
                )
            }
        };
        stream_fill(fill.subscribe(), digest, range.as_deref()).await
    }

    /// The cached blob for this requester (confirmed with the upstream unless already linked),
    /// or `None` when it is not in the cache.
    pub(super) async fn serve_cached(
        &self,
        up: &Arc<Upstream>,
        repo: &str,
        digest: &Digest,
        picked: Option<&Picked>,
        range: Option<&str>,
        head: bool,
    ) -> Option<Response<Body>> {
        let path = self.store.blob_path(digest);
        let len = tokio::fs::metadata(&path).await.ok()?.len();
        if let Err(r) = self.confirm(up, repo, digest, picked, false).await {
            return Some(r);
        }
        self.hit("blob");
        let pin = self.lru.pin(digest);
        let resp = serve_file(path, len, digest, range, head, pin).await;
        if !head {
            self.metrics.cache_hit_bytes.inc_by(
                resp.headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            );
        }
        Some(resp)
    }

    /// A place in the fill queue when a new fill for `digest` would have to wait for a slot;
    /// `QueueFull` when the queue or this client's share is full.
    pub(super) fn queue_place(
        &self,
        digest: &Digest,
        peer: std::net::IpAddr,
    ) -> Result<Option<Ticket>, QueueFull> {
        if self.fills.get(digest).is_some() || self.fill_slots.available_permits() > 0 {
            return Ok(None);
        }
        match self.fill_queue.admit(peer) {
            Some(t) => Ok(Some(t)),
            None => {
                tracing::warn!(%peer, %digest, "fill queue full; answering 503");
                Err(QueueFull)
            }
        }
    }

    /// Joins the fill for `digest`, starting it as `owner` when none runs: `(fill, leader)`, or
    /// `None` when the blob reached the cache since the caller looked. The download is its own
    /// task, so it completes even if every client goes away.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn join_fill(
        self: &Arc<Self>,
        up: &Arc<Upstream>,
        repo: &str,
        digest: &Digest,
        creds: Option<crate::registry::auth::Credentials>,
        identity: &str,
        owner: &str,
        ticket: Option<Ticket>,
    ) -> std::io::Result<Option<(Arc<super::fill::Fill>, bool)>> {
        let final_path = self.store.blob_path(digest);
        let (fill, driver) =
            match self
                .fills
                .join(digest, owner, &self.store.tmp_dir(), &final_path)?
            {
                Joined::Cached => return Ok(None),
                Joined::Follower(f) => return Ok(Some((f, false))),
                Joined::Leader(f, driver) => (f, driver),
            };
        let this = self.clone();
        let (up, repo, digest) = (up.clone(), repo.to_string(), digest.clone());
        let identity = identity.to_string();
        tokio::spawn(async move {
            let queued = ticket.is_some();
            let acquire = this.fill_slots.clone().acquire_owned();
            tokio::pin!(acquire);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let _slot = loop {
                tokio::select! {
                    s = &mut acquire => break s,
                    _ = tick.tick() => {
                        // A queued fill whose clients all left is not worth its place.
                        if queued && driver.abandoned() {
                            tracing::debug!(%digest, "queued fill abandoned by its clients; not started");
                            let gone = Err("every client left before the download started".to_string());
                            let _ = this.fills.drive(driver, gone, final_path, || {}, |_| {}).await;
                            return;
                        }
                    }
                }
            };
            // Running now: the place in the queue goes to the next one.
            drop(ticket);
            let name = up.cfg.name.clone();
            this.count_upstream(&name);
            let bytes_counter = this
                .metrics
                .upstream_bytes
                .get_or_create(&this.metrics.upstream(&name))
                .clone();
            let download = match up.client.get_blob(&repo, &digest, 0, creds.as_ref()).await {
                Ok(resp) => Ok(Download {
                    total: resp.content_length(),
                    chunks: resp
                        .bytes_stream()
                        .map_err(|e| crate::registry::http::describe_reqwest(&e))
                        .inspect_ok(move |b| {
                            bytes_counter.inc_by(b.len() as u64);
                        })
                        .boxed(),
                }),
                Err(e) => Err(fill_error(&e)),
            };
            // The upstream served these verified bytes to this requester: link it before the
            // file appears, so the next request finds both.
            let verified = || this.grants.add(&identity, &name, &repo, &digest);
            let committed = |size| this.remember(&digest, size);
            let result = this
                .fills
                .drive(driver, download, final_path, verified, committed)
                .await;
            if let Err(e) = result {
                this.metrics
                    .upstream_errors
                    .get_or_create(&this.metrics.upstream(&name))
                    .inc();
                tracing::warn!(%digest, error = %e, "blob fill failed");
            }
        });
        Ok(Some((fill, true)))
    }

    /// The fast path's check, for a client with no credentials of its own (client auth off): a
    /// cached blob linked (fresh) to the requester, or a miss whose fill this requester leads or
    /// owns. Counts the request as served when it says yes.
    pub async fn fast_blob(
        self: &Arc<Self>,
        path: &str,
        query: Option<&str>,
        peer: std::net::IpAddr,
    ) -> Option<super::fastpath::FastHit> {
        if self.settings.auth_enabled {
            return None;
        }
        let names: Vec<_> = self.upstreams.iter().map(|u| u.names.clone()).collect();
        let Ok(Route::Blob {
            upstream,
            repo,
            digest,
            ns,
        }) = route(path, query, &names, self.default_upstream)
        else {
            return None;
        };
        let up = self.upstreams[upstream].clone();
        let who = self.requester(None);
        let picked = self.credentials(&up, &who, &repo).await.ok()?;
        let identity = picked.as_ref().map_or("anonymous", |p| p.grant.as_str());
        let owner = format!("{}|{repo}|{identity}", up.cfg.name);
        let pin = self.lru.pin(&digest);
        let (source, size) = match std::fs::File::open(self.store.blob_path(&digest)) {
            Ok(file)
                if self.grants.check(identity, &up.cfg.name, &repo, &digest) == Link::Fresh =>
            {
                let size = file.metadata().ok()?.len();
                self.hit("blob");
                self.metrics.cache_hit_bytes.inc_by(size);
                (super::fastpath::Source::Cached(file), size)
            }
            Ok(_) => return None,
            // Not cached: lead the fill, or join one running for this same requester (others
            // need a confirmation first, which hyper's path does).
            Err(_) => {
                let creds = picked.as_ref().map(|p| p.creds.clone());
                // `None` (cached meanwhile): hyper's path serves it.
                let (fill, leader) = self
                    .join_fill(&up, &repo, &digest, creds, identity, &owner, {
                        // A full queue is answered by hyper's path (503 with Retry-After).
                        self.queue_place(&digest, peer).ok()?
                    })
                    .ok()??;
                if !leader && fill.owner != owner {
                    return None;
                }
                let mut reader = fill.subscribe();
                let hit = match reader.started().await {
                    Ok(Some(size)) => (super::fastpath::Source::Filling(reader), size),
                    // No Content-Length: hyper streams it (joining this same fill).
                    Ok(None) => return None,
                    // The fill is over; answering here keeps a retry from fetching again.
                    Err(e) => (super::fastpath::Source::Failed(fill_error_response(&e)), 0),
                };
                self.miss("blob");
                hit
            }
        };
        let request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let status = match &source {
            super::fastpath::Source::Failed(r) => r.status().as_u16(),
            _ => 200,
        };
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                route: "blob",
                status,
            })
            .inc();
        tracing::info!(
            request_id,
            method = "GET",
            path,
            query = query.unwrap_or(""),
            status,
            sendfile = status == 200,
            "request"
        );
        Some(super::fastpath::FastHit {
            source,
            size,
            digest: digest.to_string(),
            ns,
            request_id,
            pin,
        })
    }
}
