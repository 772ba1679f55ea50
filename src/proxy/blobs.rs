//! Blobs: the decision for one blob request (cached and linked, filling, needs confirmation,
//! refused), fills and their queue, and streaming for hyper and the sendfile fast path.

use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderMap, Response, StatusCode};
use http_body_util::BodyExt;

use super::error::FillError;
use super::fill::{Download, Fill, Joined};
use super::fill_queue::Ticket;
use super::fleet_source::Source;
use super::grants::Link;
use super::response::{
    blob_head, echo_ns, error_response, hv, oci_error, queue_full, serve_file, stream_fill,
    upstream_error, BlobHead, Body, QueueFull,
};
use super::route::{route, Route};
use super::server::Proxy;
use super::upstream::{Picked, Requester, Upstream};
use crate::registry::digest::Digest;

/// The requester address of the proxy's own background work (`warm`).
pub(super) const LOCAL: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// Where a blob stands for one requester: the one decision both transports act on.
pub enum BlobPlan {
    /// In the cache and linked (fresh) to this requester.
    Cached { file: std::fs::File, size: u64 },
    /// In the cache, but this requester's link is missing or stale: the upstream must confirm.
    Unconfirmed,
    /// Being filled; `own` when the fill runs for this same requester (no confirmation needed).
    Filling { fill: Arc<Fill>, own: bool },
    /// Neither cached nor filling (when the caller did not ask to start a fill).
    Missing,
    /// Refused before the upstream: the fill queue is full, or the cache failed.
    Refused(Response<Body>),
}

/// A blob the sendfile path sends, with the complete head hyper would send for it.
pub struct FastHit {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub source: FastSource,
    pub pin: super::evict::Pin,
}

/// Where the sendfile path's bytes come from.
pub enum FastSource {
    /// A verified blob in the cache, of this size.
    Cached(std::fs::File, u64),
    /// A blob being filled for this requester, of this size.
    Filling(super::fill::FillReader, u64),
    /// The fill this request led failed before a byte: the error body to send.
    Failed(bytes::Bytes),
}

impl Proxy {
    /// The blob decision: cached and linked, cached but unconfirmed, filling (and whose), or
    /// missing; with `start_fill` a miss leads a new fill (or takes a place in the queue).
    pub(super) fn plan_blob(
        self: &Arc<Self>,
        up: &Arc<Upstream>,
        repo: &str,
        digest: &Digest,
        picked: Option<&Picked>,
        peer: std::net::IpAddr,
        start_fill: bool,
    ) -> BlobPlan {
        let identity = picked.map_or("anonymous", |p| p.grant.as_str());
        // Twice at most: a fill may commit between the cache check and the join.
        for _ in 0..2 {
            if let Ok(file) = std::fs::File::open(self.store.blob_path(digest)) {
                if self.grants.check(identity, &up.cfg.name, repo, digest) != Link::Fresh {
                    return BlobPlan::Unconfirmed;
                }
                return match file.metadata() {
                    Ok(m) => BlobPlan::Cached {
                        size: m.len(),
                        file,
                    },
                    Err(_) => BlobPlan::Unconfirmed,
                };
            }
            // Whose fill this would be; not built on the warm hit above.
            let owner = format!("{}|{repo}|{identity}", up.cfg.name);
            if let Some(fill) = self.fills.get(digest) {
                let own = fill.owner == owner;
                return BlobPlan::Filling { fill, own };
            }
            if !start_fill {
                return BlobPlan::Missing;
            }
            let ticket = match self.queue_place(digest, peer) {
                Ok(t) => t,
                Err(QueueFull) => return BlobPlan::Refused(queue_full()),
            };
            match self.join_fill(up, repo, digest, picked.cloned(), identity, &owner, ticket) {
                Ok(Some((fill, leader))) => {
                    let own = leader || fill.owner == owner;
                    return BlobPlan::Filling { fill, own };
                }
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(%digest, error = %e, "cache: cannot start a fill");
                    return BlobPlan::Refused(oci_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "UNKNOWN",
                        "cache write failed",
                    ));
                }
            }
        }
        // Committed and evicted again in between: rare; the client retries.
        BlobPlan::Refused(oci_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "blob left the cache while being requested; retry",
        ))
    }

    /// hyper's blob path: acts on `plan_blob`, confirming with the upstream where the plan says
    /// this requester's right to the bytes is not yet known.
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
            Err(e) => return error_response(&e),
        };
        // A HEAD never starts a fill.
        match self.plan_blob(&up, repo, digest, picked.as_ref(), peer, !head) {
            BlobPlan::Cached { size, file } => {
                if !head {
                    self.prefetch_used(digest, Some(size));
                }
                self.serve_cached(digest, (file, size), range.as_deref(), head)
                    .await
            }
            BlobPlan::Unconfirmed => {
                if let Err(r) = self
                    .confirm(&up, repo, digest, picked.as_ref(), false)
                    .await
                {
                    return error_response(&r);
                }
                match self.store.open_blob(digest) {
                    Ok(found) => {
                        self.serve_cached(digest, found, range.as_deref(), head)
                            .await
                    }
                    Err(_) => oci_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "UNAVAILABLE",
                        "blob left the cache while being requested; retry",
                    ),
                }
            }
            BlobPlan::Filling { .. } | BlobPlan::Missing if head => {
                // A HEAD for an uncached blob answers what the upstream says.
                self.count_upstream(&up.cfg.name);
                let creds = picked.as_ref().map(|p| &p.creds);
                match up.client.head_blob(repo, digest, creds).await {
                    Ok(Some(size)) => blob_head(digest, size),
                    Ok(None) => oci_error(
                        StatusCode::NOT_FOUND,
                        "BLOB_UNKNOWN",
                        "blob unknown to registry",
                    ),
                    Err(e) => upstream_error(&e, "BLOB_UNKNOWN"),
                }
            }
            BlobPlan::Filling { fill, own } => {
                if !own {
                    // Someone else's download: this requester must be entitled to it first.
                    if let Err(r) = self
                        .confirm(&up, repo, digest, picked.as_ref(), false)
                        .await
                    {
                        return error_response(&r);
                    }
                }
                if let Some(r) = range.as_deref() {
                    // A range past what the fill has written gets its own upstream request.
                    if let Some(resp) = self
                        .range_ahead(&up, repo, digest, picked.as_ref(), &fill, r)
                        .await
                    {
                        return resp;
                    }
                }
                self.miss("blob");
                self.prefetch_used(digest, fill.total());
                let mut r = stream_fill(fill.subscribe(), digest, range.as_deref()).await;
                r.extensions_mut()
                    .insert(super::recent::CacheOutcome("miss"));
                r
            }
            // Only a HEAD leaves a miss without a fill, and it is answered above.
            BlobPlan::Missing => oci_error(
                StatusCode::NOT_FOUND,
                "BLOB_UNKNOWN",
                "blob unknown to registry",
            ),
            BlobPlan::Refused(r) => r,
        }
    }

    /// `warm`'s blob: the same decision as a client's GET, as background work; the blob's size
    /// once it is in the cache.
    pub(super) async fn warm_blob(
        self: &Arc<Self>,
        ui: usize,
        repo: &str,
        digest: &Digest,
        who: &Requester,
    ) -> Result<u64, FillError> {
        let up = self.upstreams[ui].clone();
        let picked = self.credentials(&up, who, repo).await?;
        match self.plan_blob(&up, repo, digest, picked.as_ref(), LOCAL, true) {
            BlobPlan::Cached { size, .. } => {
                self.hit("blob");
                Ok(size)
            }
            BlobPlan::Unconfirmed => {
                self.confirm(&up, repo, digest, picked.as_ref(), false)
                    .await?;
                self.hit("blob");
                std::fs::metadata(self.store.blob_path(digest))
                    .map(|m| m.len())
                    .map_err(|e| FillError::transfer(format!("cache: {e}")))
            }
            BlobPlan::Filling { fill, own } => {
                if !own {
                    self.confirm(&up, repo, digest, picked.as_ref(), false)
                        .await?;
                }
                self.miss("blob");
                fill.subscribe().finished().await
            }
            BlobPlan::Missing => Err(FillError::new(
                StatusCode::NOT_FOUND,
                "BLOB_UNKNOWN",
                "blob unknown to registry",
            )),
            BlobPlan::Refused(r) => Err(FillError::new(
                r.status(),
                "UNAVAILABLE",
                "refused before reaching the upstream",
            )),
        }
    }

    /// Serves a cached blob this requester may see (from `plan_blob`, or confirmed).
    async fn serve_cached(
        &self,
        digest: &Digest,
        (file, size): (std::fs::File, u64),
        range: Option<&str>,
        head: bool,
    ) -> Response<Body> {
        self.hit("blob");
        let pin = self.lru.pin(digest);
        let mut resp = serve_file(file, size, digest, range, head, pin).await;
        resp.extensions_mut()
            .insert(super::recent::CacheOutcome("hit"));
        if !head {
            self.metrics.cache_hit_bytes.inc_by(
                resp.headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            );
        }
        resp
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
        picked: Option<Picked>,
        identity: &str,
        owner: &str,
        ticket: Option<Ticket>,
    ) -> std::io::Result<Option<(Arc<super::fill::Fill>, bool)>> {
        let creds = picked.as_ref().map(|p| p.creds.clone());
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
        // A short-lived process (`proxy warm`) waits for this, upload included, before exiting.
        let work = self.fleet().map(|f| f.work());
        tokio::spawn(async move {
            let _work = work;
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
                            let gone = Err(FillError::transfer("every client left before the download started"));
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
            // In a fleet the bytes may come from the shared bucket or another replica.
            let (source, upload, lease, taken) = match this
                .fleet_source(&up, &repo, &digest, picked.as_ref())
                .await
            {
                Source::Upstream(lease) => (None, true, lease, None),
                Source::Bucket(d) => (Some(Ok(d)), false, None, None),
                Source::Peer(d, slot) => (Some(Ok(d)), false, None, Some(slot)),
                Source::Failed(e) => (Some(Err(e)), false, None, None),
            };
            let download = match source {
                Some(d) => d,
                None => {
                    this.upstream_download(&up, &repo, &digest, creds.as_ref(), &bytes_counter)
                        .await
                }
            };
            // The upstream served these verified bytes to this requester: link it before the
            // file appears, so the next request finds both.
            let verified = || this.grants.add(&identity, &name, &repo, &digest);
            let committed = |size| this.remember(&digest, size);
            let result = this
                .fills
                .drive(driver, download, final_path, verified, committed)
                .await;
            // A follower that took over a dead replica's lease uploads, as the leader would have.
            let taken =
                taken.and_then(|slot| slot.lock().unwrap_or_else(|e| e.into_inner()).take());
            let upload = upload || taken.is_some();
            let lease = lease.or(taken);
            match &result {
                Ok(n) => this.after_fill(&digest, *n, upload, lease).await,
                Err(_) => {
                    if let Some(l) = lease {
                        l.release().await;
                    }
                }
            }
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

    /// The upstream's bytes for a fill: one GET, plus ranged parts over further connections
    /// when the blob is large and the upstream answers ranges.
    async fn upstream_download(
        self: &Arc<Self>,
        up: &Arc<Upstream>,
        repo: &str,
        digest: &Digest,
        creds: Option<&crate::registry::auth::Credentials>,
        bytes_counter: &prometheus_client::metrics::counter::Counter,
    ) -> Result<Download, FillError> {
        match up.client.get_blob(repo, digest, 0, creds).await {
            Ok(resp) => {
                let total = resp.content_length();
                let ranges = resp
                    .headers()
                    .get(reqwest::header::ACCEPT_RANGES)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"bytes"));
                let s = &self.settings;
                let rest = match total {
                    Some(t)
                        if ranges && s.parallel_connections > 1 && t >= s.parallel_min_bytes =>
                    {
                        self.range_parts(up, repo, digest, creds, t, bytes_counter)
                            .await
                    }
                    _ => Vec::new(),
                };
                Ok(Download {
                    total,
                    chunks: super::ranges::chunks_of(
                        resp,
                        bytes_counter.clone(),
                        up.bytes_cap.clone(),
                    ),
                    rest,
                })
            }
            Err(e) => Err(FillError::upstream(&e, "BLOB_UNKNOWN")),
        }
    }

    /// The sendfile path's use of the same decision, for a client with no credentials of its
    /// own (client auth off): a cached, linked blob, or a fill this requester leads or owns.
    /// Anything else (`None`) is hyper's to answer. Logged and counted like hyper's requests.
    pub async fn fast_blob(
        self: &Arc<Self>,
        path: &str,
        query: Option<&str>,
        peer: std::net::IpAddr,
    ) -> Option<FastHit> {
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
        let pin = self.lru.pin(&digest);
        let (status, mut headers, source) =
            match self.plan_blob(&up, &repo, &digest, picked.as_ref(), peer, true) {
                BlobPlan::Cached { file, size } => {
                    self.prefetch_used(&digest, Some(size));
                    self.hit("blob");
                    self.metrics.cache_hit_bytes.inc_by(size);
                    (
                        StatusCode::OK,
                        BlobHead::full(&digest, size).headers(),
                        FastSource::Cached(file, size),
                    )
                }
                BlobPlan::Filling { fill, own: true } => {
                    self.prefetch_used(&digest, fill.total());
                    let mut reader = fill.subscribe();
                    let answer = match reader.started().await {
                        Ok(Some(size)) => (
                            StatusCode::OK,
                            BlobHead::full(&digest, size).headers(),
                            FastSource::Filling(reader, size),
                        ),
                        // No Content-Length: hyper streams it (joining this same fill).
                        Ok(None) => return None,
                        // The fill is over; answering here keeps a retry from fetching again.
                        Err(e) => {
                            let (parts, body) = error_response(&e).into_parts();
                            let body = body.collect().await.ok()?.to_bytes();
                            let mut h = parts.headers;
                            h.insert(header::CONTENT_LENGTH, hv(&body.len().to_string()));
                            (parts.status, h, FastSource::Failed(body))
                        }
                    };
                    self.miss("blob");
                    answer
                }
                // Confirmation, someone else's fill, refusals: hyper's path.
                _ => return None,
            };
        echo_ns(&mut headers, ns.as_deref());
        let mut log = self.request_log("GET", path, query);
        log.cache = Some(match &source {
            FastSource::Cached(..) => "hit",
            _ => "miss",
        });
        let sendfile = status == StatusCode::OK;
        log.finish(self, &mut headers, "blob", status.as_u16(), sendfile);
        Some(FastHit {
            status,
            headers,
            source,
            pin,
        })
    }
}
