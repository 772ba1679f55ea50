//! Range requests to the upstream: the further parts of a parallel fill (a large blob over
//! several connections), and a client's Range past what a running fill has written, answered by
//! its own upstream request at once.

use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use super::error::FillError;
use super::fill::{Fill, Segment};
use super::response::{parse_range, upstream_error, BlobHead, Body};
use super::server::Proxy;
use super::upstream::{Picked, Upstream};
use crate::registry::digest::Digest;

/// A response's body as fill chunks, counted as upstream bytes.
pub(super) fn chunks_of(
    resp: reqwest::Response,
    counter: prometheus_client::metrics::counter::Counter,
    cap: Option<Arc<crate::registry::rate_cap::RateCap>>,
) -> super::fill::Chunks {
    let chunks = resp
        .bytes_stream()
        .map_err(|e| FillError::transfer(crate::registry::http::describe_reqwest(&e)))
        .inspect_ok(move |b| {
            counter.inc_by(b.len() as u64);
        });
    match cap {
        // Reading no faster than the cap slows the upstream down through TCP's window.
        Some(cap) => chunks
            .then(move |r| {
                let cap = cap.clone();
                async move {
                    if let Ok(b) = &r {
                        cap.take(b.len() as f64).await;
                    }
                    r
                }
            })
            .boxed(),
        None => chunks.boxed(),
    }
}

impl Proxy {
    /// A Range past what the running fill has written, answered at once by its own upstream
    /// Range request (lazy-pull snapshotters read a layer's end first); not cached, the fill goes
    /// on. `None` when the fill already holds the range (or the range is not one we answer).
    pub(super) async fn range_ahead(
        &self,
        up: &Arc<Upstream>,
        repo: &str,
        digest: &Digest,
        picked: Option<&Picked>,
        fill: &Fill,
        range: &str,
    ) -> Option<Response<Body>> {
        let total = match fill.total() {
            Some(t) => t,
            None => fill.subscribe().started().await.ok()??,
        };
        let Some(Ok((start, end))) = parse_range(range, Some(total)) else {
            return None;
        };
        // The last written byte is held back until the digest verifies.
        if fill.written() > end + 1 {
            return None;
        }
        if let Some(r) = self
            .range_from_bucket(up, repo, digest, picked, start, end, total)
            .await
        {
            return Some(r);
        }
        self.count_upstream(&up.cfg.name);
        let creds = picked.map(|p| &p.creds);
        let resp = match up
            .client
            .get_blob_range(repo, digest, start, end, creds)
            .await
        {
            Ok(r) => r,
            Err(e) => return Some(upstream_error(&e, "BLOB_UNKNOWN")),
        };
        // A registry that ignores Range sends it all: skip to `start` ourselves.
        let skip = if resp.status() == reqwest::StatusCode::PARTIAL_CONTENT {
            0
        } else {
            start
        };
        let len = end + 1 - start;
        let body = futures_util::stream::unfold(
            (Box::pin(resp.bytes_stream()), skip, len),
            |(mut stream, mut skip, mut left)| async move {
                while left > 0 {
                    let chunk = match stream.next().await? {
                        Ok(c) => c,
                        Err(e) => {
                            return Some((Err(std::io::Error::other(e)), (stream, 0, 0)));
                        }
                    };
                    let mut c = chunk;
                    if skip > 0 {
                        let n = (skip as usize).min(c.len());
                        c = c.slice(n..);
                        skip -= n as u64;
                    }
                    if c.is_empty() {
                        continue;
                    }
                    let take = (left as usize).min(c.len());
                    left -= take as u64;
                    return Some((Ok(Frame::data(c.slice(..take))), (stream, skip, left)));
                }
                None
            },
        );
        let mut r = BlobHead {
            status: StatusCode::PARTIAL_CONTENT,
            digest,
            length: Some(len),
            content_range: Some(format!("bytes {start}-{end}/{total}")),
        }
        .response(BodyExt::boxed(StreamBody::new(body)));
        r.extensions_mut()
            .insert(super::recent::CacheOutcome("miss"));
        Some(r)
    }

    /// In a fleet, a range of a blob the shared bucket holds comes from there (nearer than the
    /// upstream), once the upstream has confirmed this requester may read it. `None`: no
    /// bucket, or it lacks the blob; the caller asks the upstream.
    #[allow(clippy::too_many_arguments)]
    async fn range_from_bucket(
        &self,
        up: &Arc<Upstream>,
        repo: &str,
        digest: &Digest,
        picked: Option<&Picked>,
        start: u64,
        end: u64,
        total: u64,
    ) -> Option<Response<Body>> {
        let shared = self.fleet()?.shared.as_ref()?;
        // Only a blob the bucket holds (a failed look-up means: ask the upstream).
        shared.head(digest).await.ok()??;
        if let Err(e) = self.confirm(up, repo, digest, picked, false).await {
            return Some(super::response::error_response(&e));
        }
        let mut stream = shared.range(digest, start, end).await.ok()?;
        self.metrics.shared_ranges.inc();
        // The object store's stream is not `Sync`, which a response body must be: relay it.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(8);
        tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                if tx.send(item).await.is_err() {
                    break;
                }
            }
        });
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item.map(Frame::data), rx))
        });
        let mut r = BlobHead {
            status: StatusCode::PARTIAL_CONTENT,
            digest,
            length: Some(end + 1 - start),
            content_range: Some(format!("bytes {start}-{end}/{total}")),
        }
        .response(BodyExt::boxed(StreamBody::new(body)));
        r.extensions_mut()
            .insert(super::recent::CacheOutcome("miss"));
        Some(r)
    }

    /// The further parts of a large blob, each over its own connection (`Range`), for a parallel
    /// fill; empty (one connection after all) unless every part answered 206 with its length.
    pub(super) async fn range_parts(
        &self,
        up: &Arc<Upstream>,
        repo: &str,
        digest: &Digest,
        creds: Option<&crate::registry::auth::Credentials>,
        total: u64,
        counter: &prometheus_client::metrics::counter::Counter,
    ) -> Vec<Segment> {
        let n = self.settings.parallel_connections as u64;
        let part = total.div_ceil(n);
        let wanted: Vec<(u64, u64)> = (1..n)
            .map(|k| (k * part, ((k + 1) * part).min(total)))
            .filter(|(start, end)| start < end)
            .collect();
        let asks = wanted.iter().map(|(start, end)| {
            self.count_upstream(&up.cfg.name);
            up.client
                .get_blob_range(repo, digest, *start, end - 1, creds)
        });
        let answers = futures_util::future::join_all(asks).await;
        let mut parts = Vec::new();
        for ((start, end), answer) in wanted.into_iter().zip(answers) {
            match answer {
                Ok(resp)
                    if resp.status() == reqwest::StatusCode::PARTIAL_CONTENT
                        && resp.content_length() == Some(end - start) =>
                {
                    parts.push(Segment {
                        offset: start,
                        len: end - start,
                        chunks: chunks_of(resp, counter.clone(), up.bytes_cap.clone()),
                    });
                }
                _ => {
                    tracing::debug!(%digest, "a range part was refused; fetching over one connection");
                    return Vec::new();
                }
            }
        }
        parts
    }
}
