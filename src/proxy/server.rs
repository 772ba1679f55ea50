//! The pull side of the distribution API: `/v2/`, manifests and blobs by GET and HEAD,
//! served from the cache or filled from the upstream; pushes refused.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;

use super::blob_store::{BlobStore, TagRecord};
use super::fill::{Download, Fills, Joined};
use super::route::{route, ManifestRef, Route};
use super::upstream::Upstream;
use crate::registry::auth::Credentials;
use crate::registry::digest::Digest;
use crate::registry::RegistryError;
use crate::store::{now_unix, SecretStore};

pub type Body = BoxBody<Bytes, std::io::Error>;

const CHUNK: usize = 256 * 1024;

/// Shared state of a running proxy.
pub struct Proxy {
    pub store: BlobStore,
    pub fills: Arc<Fills>,
    pub upstreams: Vec<Arc<Upstream>>,
    pub default_upstream: Option<usize>,
    pub secrets: Arc<dyn SecretStore + Send + Sync>,
    pub namespace: String,
    pub fill_slots: Arc<tokio::sync::Semaphore>,
    stale_logged: Mutex<HashSet<String>>,
}

impl Proxy {
    pub fn new(
        store: BlobStore,
        upstreams: Vec<Arc<Upstream>>,
        default_upstream: Option<usize>,
        secrets: Arc<dyn SecretStore + Send + Sync>,
        namespace: String,
        max_fills: usize,
    ) -> Self {
        Self {
            store,
            fills: Arc::new(Fills::default()),
            upstreams,
            default_upstream,
            secrets,
            namespace,
            fill_slots: Arc::new(tokio::sync::Semaphore::new(max_fills.max(1))),
            stale_logged: Mutex::new(HashSet::new()),
        }
    }

    pub async fn handle(self: Arc<Self>, req: Request<hyper::body::Incoming>) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query = req.uri().query().map(str::to_string);
        let resp = self
            .dispatch(&method, &path, query.as_deref(), req.headers())
            .await;
        tracing::info!(%method, %path, query = query.as_deref().unwrap_or(""), status = resp.status().as_u16(), "request");
        resp
    }

    async fn dispatch(
        self: &Arc<Self>,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Response<Body> {
        if path == "/healthz" || path == "/readyz" {
            return text(StatusCode::OK, "ok\n");
        }
        if !path.starts_with("/v2") {
            return oci_error(StatusCode::NOT_FOUND, "NOT_FOUND", "not found");
        }
        if method != Method::GET && method != Method::HEAD {
            return oci_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "this is a pull-through cache; pushes are not supported",
            );
        }
        let names: Vec<_> = self.upstreams.iter().map(|u| u.names.clone()).collect();
        let head = method == Method::HEAD;
        match route(path, query, &names, self.default_upstream) {
            Ok(Route::Base) => {
                let mut r = bytes_response(
                    StatusCode::OK,
                    Bytes::from_static(b"{}"),
                    "application/json",
                    head,
                );
                r.headers_mut().insert(
                    "docker-distribution-api-version",
                    HeaderValue::from_static("registry/2.0"),
                );
                r
            }
            Ok(Route::Manifest {
                upstream,
                repo,
                reference,
                ns,
            }) => {
                let mut r = self
                    .manifest(upstream, &repo, &reference, headers, head)
                    .await;
                echo_ns(&mut r, ns);
                r
            }
            Ok(Route::Blob {
                upstream,
                repo,
                digest,
                ns,
            }) => {
                let mut r = self.blob(upstream, &repo, &digest, headers, head).await;
                echo_ns(&mut r, ns);
                r
            }
            Err(e) => oci_error(
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
                e.code,
                &e.message,
            ),
        }
    }

    async fn credentials(&self, up: &Arc<Upstream>) -> Result<Option<Credentials>, Response<Body>> {
        let up2 = up.clone();
        let store = self.secrets.clone();
        let ns = self.namespace.clone();
        let r = tokio::task::spawn_blocking(move || up2.credentials(store.as_ref(), &ns)).await;
        match r {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "no credentials for upstream");
                Err(oci_error(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    &e.to_string(),
                ))
            }
            Err(e) => Err(oci_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                &e.to_string(),
            )),
        }
    }

    async fn manifest(
        &self,
        ui: usize,
        repo: &str,
        reference: &ManifestRef,
        headers: &HeaderMap,
        head: bool,
    ) -> Response<Body> {
        let up = self.upstreams[ui].clone();
        // Go clients send one Accept header per media type; all of them go upstream.
        let accept = accept_header(headers);
        match reference {
            ManifestRef::Digest(d) => {
                if let Some(r) = self.cached_manifest(d, head) {
                    return r;
                }
                let creds = match self.credentials(&up).await {
                    Ok(c) => c,
                    Err(r) => return r,
                };
                match up
                    .client
                    .get_manifest(repo, d.as_str(), accept.as_deref(), creds.as_ref())
                    .await
                {
                    Ok(m) => {
                        if let Err(e) = self.store.put_manifest(&m.digest, &m.bytes, &m.media_type)
                        {
                            tracing::warn!(error = %e, "caching manifest failed");
                        }
                        manifest_response(m.bytes, &m.media_type, &m.digest, head)
                    }
                    Err(e) => upstream_error(&e),
                }
            }
            ManifestRef::Tag(tag) => {
                self.manifest_by_tag(&up, repo, tag, accept.as_deref(), head)
                    .await
            }
        }
    }

    async fn manifest_by_tag(
        &self,
        up: &Arc<Upstream>,
        repo: &str,
        tag: &str,
        accept: Option<&str>,
        head: bool,
    ) -> Response<Body> {
        let accept_key = accept.unwrap_or("");
        let cached = self.store.get_tag(&up.cfg.name, repo, tag, accept_key);
        let cached_digest = cached
            .as_ref()
            .and_then(|c| Digest::parse(&c.digest).ok())
            .filter(|d| self.store.has_blob(d));
        let now = now_unix();
        if let (Some(rec), Some(d)) = (&cached, &cached_digest) {
            if now.saturating_sub(rec.checked) < up.cfg.tag_ttl.as_secs() {
                if let Some(r) = self.cached_manifest(d, head) {
                    return r;
                }
            }
        }
        let creds = match self.credentials(up).await {
            Ok(c) => c,
            Err(r) => return r,
        };
        // Revalidate with HEAD: free on Docker Hub's rate limit, unlike GET.
        let head_result = up
            .client
            .head_manifest(repo, tag, accept, creds.as_ref())
            .await;
        match head_result {
            Ok(Some(h)) => {
                if let (Some(hd), Some(d), Some(rec)) = (&h.digest, &cached_digest, &cached) {
                    if hd == d {
                        let rec = TagRecord {
                            checked: now,
                            ..rec.clone()
                        };
                        let _ = self
                            .store
                            .put_tag(&up.cfg.name, repo, tag, accept_key, &rec);
                        if let Some(r) = self.cached_manifest(d, head) {
                            return r;
                        }
                    }
                }
                match up
                    .client
                    .get_manifest(repo, tag, accept, creds.as_ref())
                    .await
                {
                    Ok(m) => {
                        let rec = TagRecord {
                            digest: m.digest.to_string(),
                            media_type: m.media_type.clone(),
                            size: m.bytes.len() as u64,
                            checked: now,
                        };
                        if let Err(e) = self
                            .store
                            .put_manifest(&m.digest, &m.bytes, &m.media_type)
                            .and_then(|_| {
                                self.store
                                    .put_tag(&up.cfg.name, repo, tag, accept_key, &rec)
                            })
                        {
                            tracing::warn!(error = %e, "caching manifest failed");
                        }
                        manifest_response(m.bytes, &m.media_type, &m.digest, head)
                    }
                    Err(e) => self.stale_or_error(&e, up, repo, tag, cached_digest.as_ref(), head),
                }
            }
            Ok(None) => oci_error(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                &format!("manifest unknown to {}", up.names.host),
            ),
            Err(e) => self.stale_or_error(&e, up, repo, tag, cached_digest.as_ref(), head),
        }
    }

    /// On an unwell upstream, the last known digest for a tag is served (logged once per tag).
    fn stale_or_error(
        &self,
        e: &RegistryError,
        up: &Upstream,
        repo: &str,
        tag: &str,
        cached: Option<&Digest>,
        head: bool,
    ) -> Response<Body> {
        if e.upstream_unavailable() {
            if let Some(d) = cached {
                if let Some(r) = self.cached_manifest(d, head) {
                    let key = format!("{}/{repo}:{tag}", up.cfg.name);
                    let first = self
                        .stale_logged
                        .lock()
                        .map(|mut s| s.insert(key.clone()))
                        .unwrap_or(false);
                    if first {
                        tracing::warn!(tag = %key, error = %e, "upstream unavailable; serving the cached tag (stale)");
                    }
                    return r;
                }
            }
        }
        upstream_error(e)
    }

    fn cached_manifest(&self, d: &Digest, head: bool) -> Option<Response<Body>> {
        let meta = self.store.manifest_meta(d)?;
        let bytes = std::fs::read(self.store.blob_path(d)).ok()?;
        Some(manifest_response(
            Bytes::from(bytes),
            &meta.media_type,
            d,
            head,
        ))
    }

    async fn blob(
        &self,
        ui: usize,
        repo: &str,
        digest: &Digest,
        headers: &HeaderMap,
        head: bool,
    ) -> Response<Body> {
        let path = self.store.blob_path(digest);
        let range = headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if let Ok(meta) = tokio::fs::metadata(&path).await {
            return serve_file(path, meta.len(), digest, range.as_deref(), head).await;
        }
        let up = self.upstreams[ui].clone();
        let creds = match self.credentials(&up).await {
            Ok(c) => c,
            Err(r) => return r,
        };
        if head {
            // A HEAD for an uncached blob answers what the upstream says, without a fill.
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
        let fill = match self.fills.join(digest, &self.store.tmp_dir()) {
            Ok(Joined::Follower(f)) => f,
            Ok(Joined::Leader(f, driver)) => {
                let fills = self.fills.clone();
                let slots = self.fill_slots.clone();
                let repo = repo.to_string();
                let digest = digest.clone();
                let final_path = path.clone();
                // The fill is its own task: it completes even if every client goes away.
                tokio::spawn(async move {
                    let _slot = slots.acquire_owned().await;
                    let download = match up.client.get_blob(&repo, &digest, 0, creds.as_ref()).await
                    {
                        Ok(resp) => Ok(Download {
                            total: resp.content_length(),
                            chunks: resp
                                .bytes_stream()
                                .map_err(|e| crate::registry::client::describe_reqwest(&e))
                                .boxed(),
                        }),
                        Err(e) => Err(fill_error(&e)),
                    };
                    if let Err(e) = fills.drive(driver, download, final_path).await {
                        tracing::warn!(%digest, error = %e, "blob fill failed");
                    }
                });
                f
            }
            Err(e) => {
                return oci_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "UNKNOWN",
                    &format!("cache: {e}"),
                )
            }
        };
        let mut reader = fill.subscribe();
        let total = match reader.started().await {
            Ok(t) => t,
            Err(e) => return fill_error_response(&e),
        };
        let (status, start, end, content_range) =
            match (range.as_deref().and_then(|r| parse_range(r, total)), total) {
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
}

/// Fill failures carry the status to answer as a prefix: `404|message`.
fn fill_error(e: &RegistryError) -> String {
    format!("{}|{e}", e.status())
}

fn fill_error_response(e: &str) -> Response<Body> {
    let (status, msg) = match e.split_once('|') {
        Some((s, m)) if s.len() == 3 => (s.parse::<u16>().unwrap_or(502), m),
        _ => (502, e),
    };
    let code = match status {
        401 => "UNAUTHORIZED",
        404 => "BLOB_UNKNOWN",
        429 => "TOOMANYREQUESTS",
        _ => "UNAVAILABLE",
    };
    oci_error(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        code,
        msg,
    )
}

fn upstream_error(e: &RegistryError) -> Response<Body> {
    let (status, code) = match e {
        RegistryError::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
        RegistryError::NotFound { code, .. } => (
            StatusCode::NOT_FOUND,
            if code.is_empty() {
                "MANIFEST_UNKNOWN"
            } else {
                leak_code(code)
            },
        ),
        RegistryError::Status { status: 429, .. } => {
            (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS")
        }
        _ => (StatusCode::BAD_GATEWAY, "UNAVAILABLE"),
    };
    oci_error(status, code, &e.to_string())
}

/// Known OCI codes pass through; anything else becomes a generic code.
fn leak_code(code: &str) -> &'static str {
    match code {
        "BLOB_UNKNOWN" => "BLOB_UNKNOWN",
        "MANIFEST_UNKNOWN" => "MANIFEST_UNKNOWN",
        "NAME_UNKNOWN" => "NAME_UNKNOWN",
        _ => "MANIFEST_UNKNOWN",
    }
}

/// Every Accept header value joined, as the upstream should see them.
fn accept_header(headers: &HeaderMap) -> Option<String> {
    let parts: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|s| !s.trim().is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn echo_ns(r: &mut Response<Body>, ns: Option<String>) {
    if let Some(ns) = ns {
        if let Ok(v) = HeaderValue::from_str(&ns) {
            r.headers_mut().insert("oci-namespace", v);
        }
    }
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

pub fn oci_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({"errors": [{"code": code, "message": message, "detail": null}]})
        .to_string();
    let mut r = bytes_response(status, Bytes::from(body), "application/json", false);
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"pullsecret\""),
        );
    }
    r
}

fn text(status: StatusCode, s: &'static str) -> Response<Body> {
    bytes_response(
        status,
        Bytes::from_static(s.as_bytes()),
        "text/plain",
        false,
    )
}

fn bytes_response(
    status: StatusCode,
    bytes: Bytes,
    content_type: &str,
    head: bool,
) -> Response<Body> {
    let len = bytes.len();
    let body: Body = if head {
        empty()
    } else {
        Full::new(bytes).map_err(|e| match e {}).boxed()
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, hv(content_type));
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, hv(&len.to_string()));
    r
}

fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed()
}

fn manifest_response(bytes: Bytes, media_type: &str, d: &Digest, head: bool) -> Response<Body> {
    let mut r = bytes_response(StatusCode::OK, bytes, media_type, head);
    r.headers_mut()
        .insert("docker-content-digest", hv(d.as_str()));
    r
}

fn blob_head(d: &Digest, size: u64) -> Response<Body> {
    let mut r = Response::new(empty());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, hv(&size.to_string()));
    h.insert("docker-content-digest", hv(d.as_str()));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    r
}

fn range_not_satisfiable(total: u64) -> Response<Body> {
    let mut r = oci_error(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "BLOB_UNKNOWN",
        "requested range not satisfiable",
    );
    r.headers_mut()
        .insert(header::CONTENT_RANGE, hv(&format!("bytes */{total}")));
    r
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` against `total`; `None` when not a single byte range
/// we can answer (then the whole blob is sent), `Some(Err)` when unsatisfiable.
pub fn parse_range(h: &str, total: Option<u64>) -> Option<Result<(u64, u64), ()>> {
    let total = total?;
    let spec = h.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let r = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 || total == 0 {
            return Some(Err(()));
        }
        (total.saturating_sub(n), total - 1)
    } else {
        let s: u64 = a.parse().ok()?;
        let e: u64 = if b.is_empty() {
            total.saturating_sub(1)
        } else {
            b.parse::<u64>().ok()?.min(total.saturating_sub(1))
        };
        if s >= total || e < s {
            return Some(Err(()));
        }
        (s, e)
    };
    Some(Ok(r))
}

async fn serve_file(
    path: std::path::PathBuf,
    size: u64,
    d: &Digest,
    range: Option<&str>,
    head: bool,
) -> Response<Body> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let (status, start, end) = match range.and_then(|r| parse_range(r, Some(size))) {
        Some(Ok((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e),
        Some(Err(())) => return range_not_satisfiable(size),
        None => (StatusCode::OK, 0, size.saturating_sub(1)),
    };
    let len = if size == 0 { 0 } else { end + 1 - start };
    let body = if head || len == 0 {
        empty()
    } else {
        match tokio::fs::File::open(&path).await {
            Ok(mut f) => {
                if start > 0 && f.seek(std::io::SeekFrom::Start(start)).await.is_err() {
                    return oci_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "UNKNOWN",
                        "cache read failed",
                    );
                }
                let stream = tokio_util_reader(f.take(len));
                BodyExt::boxed(StreamBody::new(stream))
            }
            Err(_) => {
                return oci_error(
                    StatusCode::NOT_FOUND,
                    "BLOB_UNKNOWN",
                    "blob unknown to registry",
                )
            }
        }
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, hv(&len.to_string()));
    h.insert("docker-content-digest", hv(d.as_str()));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            hv(&format!("bytes {start}-{end}/{size}")),
        );
    }
    r
}

/// Reads `r` in large chunks as body frames.
fn tokio_util_reader<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    r: R,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send + 'static {
    futures_util::stream::unfold(r, |mut r| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = bytes::BytesMut::with_capacity(CHUNK);
        match r.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(Frame::data(buf.freeze())), r)),
            Err(e) => Some((Err(e), r)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", Some(100)), Some(Ok((0, 9))));
        assert_eq!(parse_range("bytes=90-", Some(100)), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=-10", Some(100)), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=95-200", Some(100)), Some(Ok((95, 99))));
        assert_eq!(parse_range("bytes=100-", Some(100)), Some(Err(())));
        assert_eq!(parse_range("bytes=0-1,5-6", Some(100)), None);
        assert_eq!(parse_range("items=0-1", Some(100)), None);
    }
}
