//! Where a fill's bytes come from in a fleet: the shared bucket when it holds the blob, else
//! the replica that holds the blob's lease (streamed while it fills, resumed from the upstream
//! or the bucket if that replica dies), else the upstream under this replica's own lease; the
//! upload of a verified blob to the bucket afterwards; and the peer endpoint other replicas
//! stream from.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderMap, Response, StatusCode};

use super::error::FillError;
use super::fill::Download;
use super::fleet::{Fleet, Lease, LeaseOutcome, PEER_PATH};
use super::response::{oci_error, serve_file, Body};
use super::server::Proxy;
use super::upstream::{Picked, Upstream};
use crate::registry::auth::Credentials;
use crate::registry::digest::Digest;

/// How long a follower keeps trying to find the blob (a peer, the bucket, or a lease of its
/// own) before its fill fails; a dead leader's lease expires well within it.
const FOLLOW_DEADLINE: Duration = Duration::from_secs(30);
const RETRY: Duration = Duration::from_millis(300);

/// A fill's source in a fleet.
pub(super) enum Source {
    /// From the upstream, as the fleet's one fetch (with the lease, when there is a database).
    Upstream(Option<Lease>),
    /// Already shared: from the bucket.
    Bucket(Download),
    /// Streamed from the replica filling it; a lease this fill took over lands in the slot.
    Peer(Download, Arc<Mutex<Option<Lease>>>),
    /// The requester may not have it, or nothing could be reached.
    Failed(FillError),
}

impl Proxy {
    pub fn fleet(&self) -> Option<&Arc<Fleet>> {
        self.fleet.get()
    }

    /// Whether another replica confirmed this link recently (then it is ours too).
    pub(super) async fn shared_link(
        &self,
        identity: &str,
        upstream: &str,
        repo: &str,
        d: &Digest,
    ) -> bool {
        let Some(fleet) = self.fleet() else {
            return false;
        };
        let key = super::grants::Grants::key(identity, upstream, repo, d);
        match fleet.shared_link(&key, self.grants.ttl()).await {
            Some(at) => {
                self.grants.learn(key, at);
                true
            }
            None => false,
        }
    }

    /// Waits until no fill or upload to the fleet's bucket is under way (for `proxy warm`,
    /// which exits when it is done), at most `limit`.
    pub async fn settle_fleet(&self, limit: Duration) {
        let Some(fleet) = self.fleet() else { return };
        let deadline = Instant::now() + limit;
        while fleet.busy() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Joins this proxy to a fleet (once, at start).
    pub fn attach_fleet(self: &Arc<Self>, fleet: Fleet) {
        let fleet = Arc::new(fleet);
        if self.fleet.set(fleet.clone()).is_err() {
            return;
        }
        // Uses matter only where a database records them.
        if fleet.coordinated() {
            self.lru.track_use();
        }
        if let Some(k) = fleet.derived_key(b"proxy-tokens") {
            self.tokens.share_key(k);
        }
        if fleet.coordinated() {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            self.grants.share_with(Box::new(move |key| {
                let _ = tx.send(key);
            }));
            let f = fleet.clone();
            tokio::spawn(async move { f.share_links(rx).await });
        }
        let this = self.clone();
        tokio::spawn(async move {
            let used = || {
                let (mut used, pinned) = this.lru.take_used();
                used.extend(this.fills.digests());
                (used, pinned)
            };
            fleet.maintain(used).await;
        });
    }

    /// Chooses where a fill for `digest` reads from. Content from anywhere but the upstream
    /// reaches this requester only after the upstream confirms it may see it.
    pub(super) async fn fleet_source(
        self: &Arc<Self>,
        up: &Arc<Upstream>,
        repo: &str,
        digest: &Digest,
        picked: Option<&Picked>,
    ) -> Source {
        let Some(fleet) = self.fleet().cloned() else {
            return Source::Upstream(None);
        };
        let deadline = Instant::now() + FOLLOW_DEADLINE;
        let mut confirmed = false;
        loop {
            if let Some(shared) = &fleet.shared {
                if let Ok(Some(_)) = shared.head(digest).await {
                    if !confirmed {
                        if let Err(e) = self.confirm(up, repo, digest, picked, false).await {
                            return Source::Failed(e);
                        }
                    }
                    match shared.download(digest, 0).await {
                        Ok(d) => {
                            self.metrics.shared_fills.inc();
                            fleet.used(digest);
                            return Source::Bucket(d);
                        }
                        Err(e) => {
                            tracing::warn!(%digest, error = %e, "fleet: the bucket listed the blob but did not serve it; using the upstream");
                            return Source::Upstream(None);
                        }
                    }
                }
            }
            if !fleet.coordinated() {
                return Source::Upstream(None);
            }
            match fleet.take_lease(digest).await {
                Ok(LeaseOutcome::Mine(lease)) => return Source::Upstream(Some(lease)),
                Ok(LeaseOutcome::Held { address }) => {
                    if !confirmed {
                        if let Err(e) = self.confirm(up, repo, digest, picked, false).await {
                            return Source::Failed(e);
                        }
                        confirmed = true;
                    }
                    match fleet.peer_get(&address, digest, 0).await {
                        Ok(resp) => {
                            self.metrics.peer_fills.inc();
                            let slot = Arc::new(Mutex::new(None));
                            let creds = picked.map(|p| p.creds.clone());
                            let d =
                                self.follow(resp, address, up, repo, digest, creds, slot.clone());
                            return Source::Peer(d, slot);
                        }
                        Err(e) => {
                            tracing::debug!(%digest, error = %e, "fleet: the lease holder did not serve the blob yet");
                        }
                    }
                }
                Err(e) => {
                    // Without the database, one fetch per replica is the best there is.
                    tracing::warn!(%digest, error = %e, "fleet: no lease (database unreachable); filling from the upstream alone");
                    return Source::Upstream(None);
                }
            }
            if Instant::now() >= deadline {
                return Source::Failed(FillError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UNAVAILABLE",
                    "another replica holds this blob's fill but does not serve it; retry",
                ));
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// A download that streams a peer's fill and, if the peer goes away, resumes at the same
    /// offset from whichever source the fleet offers next: another peer, the bucket, or the
    /// upstream under a lease this replica takes over.
    #[allow(clippy::too_many_arguments)]
    fn follow(
        self: &Arc<Self>,
        first: reqwest::Response,
        address: String,
        up: &Arc<Upstream>,
        repo: &str,
        digest: &Digest,
        creds: Option<Credentials>,
        slot: Arc<Mutex<Option<Lease>>>,
    ) -> Download {
        let total = first.content_length();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, FillError>>(16);
        let (this, up, repo, digest) = (self.clone(), up.clone(), repo.to_string(), digest.clone());
        tokio::spawn(async move {
            let mut offset = 0u64;
            let mut source = Some(first);
            let mut address = address;
            let deadline_after = |_: ()| Instant::now() + FOLLOW_DEADLINE;
            let mut deadline = deadline_after(());
            loop {
                if let Some(resp) = source.take() {
                    let mut chunks = resp.bytes_stream();
                    let mut broke = false;
                    while let Some(c) = chunks.next().await {
                        match c {
                            Ok(b) => {
                                offset += b.len() as u64;
                                if tx.send(Ok(b)).await.is_err() {
                                    return;
                                }
                            }
                            Err(_) => {
                                broke = true;
                                break;
                            }
                        }
                    }
                    if !broke && total.is_none_or(|t| offset >= t) {
                        return;
                    }
                    tracing::warn!(%digest, offset, "fleet: the replica filling this blob went away; resuming");
                    deadline = deadline_after(());
                }
                let Some(fleet) = this.fleet().cloned() else {
                    return;
                };
                if let Some(shared) = &fleet.shared {
                    if let Ok(Some(_)) = shared.head(&digest).await {
                        match shared.download(&digest, offset).await {
                            Ok(d) => {
                                pump(d.chunks, &tx).await;
                                return;
                            }
                            Err(e) => {
                                let _ = tx.send(Err(e)).await;
                                return;
                            }
                        }
                    }
                }
                match fleet.take_lease(&digest).await {
                    Ok(LeaseOutcome::Mine(lease)) => {
                        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(lease);
                        tracing::info!(%digest, offset, "fleet: took over the fill from the upstream");
                        this.count_upstream(&up.cfg.name);
                        match up
                            .client
                            .get_blob(&repo, &digest, offset, creds.as_ref())
                            .await
                        {
                            Ok(resp) => {
                                // An upstream that ignores Range sends everything: skip what we have.
                                let mut skip = if resp.status().as_u16() == 206 {
                                    0
                                } else {
                                    offset
                                };
                                let chunks = resp
                                    .bytes_stream()
                                    .map(move |r| {
                                        r.map(|b| {
                                            let n = usize::try_from(skip)
                                                .unwrap_or(usize::MAX)
                                                .min(b.len());
                                            skip -= n as u64;
                                            b.slice(n..)
                                        })
                                        .map_err(|e| {
                                            FillError::transfer(
                                                crate::registry::http::describe_reqwest(&e),
                                            )
                                        })
                                    })
                                    .boxed();
                                pump(chunks, &tx).await;
                            }
                            Err(e) => {
                                let _ = tx.send(Err(FillError::upstream(&e, "BLOB_UNKNOWN"))).await;
                            }
                        }
                        return;
                    }
                    Ok(LeaseOutcome::Held { address: a }) => {
                        if let Ok(resp) = fleet.peer_get(&a, &digest, offset).await {
                            address = a;
                            source = Some(resp);
                            continue;
                        }
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(FillError::transfer(format!(
                                "the replica filling this blob went away and the database did not answer: {e}"
                            ))))
                            .await;
                        return;
                    }
                }
                if Instant::now() >= deadline {
                    let _ = tx
                        .send(Err(FillError::transfer(format!(
                            "the replica filling this blob ({address}) went away"
                        ))))
                        .await;
                    return;
                }
                tokio::time::sleep(RETRY).await;
            }
        });
        let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
        .boxed();
        Download {
            total,
            chunks,
            rest: Vec::new(),
        }
    }

    /// After a verified fill: puts the blob in the bucket (unless it came from there, or from
    /// a peer that will upload it), records it, then gives up the lease.
    pub(super) async fn after_fill(
        &self,
        digest: &Digest,
        size: u64,
        upload: bool,
        lease: Option<Lease>,
    ) {
        let Some(fleet) = self.fleet() else { return };
        if let (true, Some(shared)) = (upload, &fleet.shared) {
            let path = self.store.blob_path(digest);
            match shared.upload(digest, &path).await {
                Ok(()) => {
                    self.metrics.shared_uploads.inc();
                    fleet.stored(digest, size).await;
                }
                Err(e) => {
                    self.metrics.shared_upload_errors.inc();
                    tracing::warn!(%digest, error = %e, "fleet: upload to the shared bucket failed; the blob stays in this replica's cache");
                }
            }
        }
        if let Some(l) = lease {
            l.release().await;
        }
    }

    /// The peer endpoint: a blob this replica is filling (or holds), for another replica of the
    /// fleet only. Anyone else gets 401 and learns nothing.
    pub(super) async fn peer_blob(&self, path: &str, headers: &HeaderMap) -> Response<Body> {
        let refuse = || {
            oci_error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "authentication required",
            )
        };
        let Some(fleet) = self.fleet() else {
            return oci_error(StatusCode::NOT_FOUND, "NOT_FOUND", "not a fleet replica");
        };
        let Some(digest) = path
            .strip_prefix(PEER_PATH)
            .and_then(|d| Digest::parse(d).ok())
        else {
            return refuse();
        };
        let auth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !fleet.peer_authorized(&digest, auth) {
            return refuse();
        }
        let range = headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if let Some(fill) = self.fills.get(&digest) {
            return super::response::stream_fill(fill.subscribe(), &digest, range.as_deref()).await;
        }
        match self.store.open_blob(&digest) {
            Ok((file, size)) => {
                let pin = self.lru.pin(&digest);
                serve_file(file, size, &digest, range.as_deref(), false, pin).await
            }
            Err(_) => oci_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", "not here"),
        }
    }
}

async fn pump(
    mut chunks: super::fill::Chunks,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, FillError>>,
) {
    while let Some(c) = chunks.next().await {
        let stop = c.is_err();
        if tx.send(c).await.is_err() || stop {
            return;
        }
    }
}
