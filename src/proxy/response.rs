//! OCI responses: errors (one mapping from upstream and fill errors), small bodies, manifest
//! and blob heads, Range parsing, and streaming a cached file.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;

use super::error::ProxyError;
use crate::registry::digest::Digest;
use crate::registry::RegistryError;

/// Every response body the proxy sends.
pub type Body = BoxBody<Bytes, std::io::Error>;

pub(super) const CHUNK: usize = 256 * 1024;

/// The fill queue (or this client's share of it) is full.
pub(super) struct QueueFull;

/// 503 TOOMANYREQUESTS with Retry-After, for a full fill queue.
pub(super) fn queue_full() -> Response<Body> {
    let mut r = oci_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "TOOMANYREQUESTS",
        "too many downloads waiting for the upstream; retry shortly",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// Renders any error answer; the one place an error becomes an OCI response.
pub fn error_response(e: &ProxyError) -> Response<Body> {
    let mut r = oci_error(e.status, e.code, &e.message);
    // Clients back off as the upstream asked.
    if let Some(secs) = e.retry_after.filter(|s| *s > 0) {
        r.headers_mut()
            .insert(header::RETRY_AFTER, hv(&secs.to_string()));
    }
    r
}

/// An upstream error as the client's answer (`unknown`: the code of a 404 without a known one),
/// logged at warn unless it is a plain 404.
pub(super) fn upstream_failure(e: &RegistryError, unknown: &'static str) -> ProxyError {
    // 401/403, unreachable, timed out, refused realms: the operator sees each (names, never values).
    if !matches!(e, RegistryError::NotFound { .. }) {
        tracing::warn!(error = %e, "upstream request failed");
    }
    ProxyError::upstream(e, unknown)
}

/// `upstream_failure`, rendered.
pub(super) fn upstream_error(e: &RegistryError, unknown: &'static str) -> Response<Body> {
    error_response(&upstream_failure(e, unknown))
}

/// Every Accept header value joined, as the upstream should see them.
pub(super) fn accept_header(headers: &HeaderMap) -> Option<String> {
    let parts: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|s| !s.trim().is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// `Docker-Distribution-API-Version: registry/2.0`, on every `/v2/` answer of either transport.
pub fn api_version(h: &mut HeaderMap) {
    h.insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
}

/// containerd's `?ns=` comes back as `OCI-Namespace`, on either transport.
pub(super) fn echo_ns(h: &mut HeaderMap, ns: Option<&str>) {
    if let Some(v) = ns.and_then(|ns| HeaderValue::from_str(ns).ok()) {
        h.insert("oci-namespace", v);
    }
}

/// The head of every blob answer (200, 206, HEAD), whichever transport sends it: hyper gets it
/// as a `Response`, the sendfile path as HTTP/1.1 text from `http1_head`.
pub struct BlobHead<'a> {
    pub status: StatusCode,
    pub digest: &'a Digest,
    /// Content-Length; `None` while a fill's size is unknown (the body is then chunked).
    pub length: Option<u64>,
    /// `bytes a-b/total` for a 206.
    pub content_range: Option<String>,
}

impl<'a> BlobHead<'a> {
    /// A 200 for the whole blob.
    pub fn full(digest: &'a Digest, size: u64) -> Self {
        Self {
            status: StatusCode::OK,
            digest,
            length: Some(size),
            content_range: None,
        }
    }

    pub fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        if let Some(n) = self.length {
            h.insert(header::CONTENT_LENGTH, hv(&n.to_string()));
        }
        h.insert("docker-content-digest", hv(self.digest.as_str()));
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if let Some(cr) = &self.content_range {
            h.insert(header::CONTENT_RANGE, hv(cr));
        }
        h
    }

    pub fn response(&self, body: Body) -> Response<Body> {
        let mut r = Response::new(body);
        *r.status_mut() = self.status;
        *r.headers_mut() = self.headers();
        r
    }
}

/// A response head as HTTP/1.1 text, with what hyper adds to its own (`date`, and
/// `connection: close` when the client asked for it), for the sendfile path.
pub fn http1_head(status: StatusCode, headers: &HeaderMap, close: bool) -> String {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for (name, value) in headers {
        if let Ok(v) = value.to_str() {
            head.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    head.push_str(&format!(
        "date: {}\r\n",
        httpdate::fmt_http_date(std::time::SystemTime::now())
    ));
    if close {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    head
}

pub(super) fn hv(s: &str) -> HeaderValue {
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

pub(super) fn text(status: StatusCode, s: &'static str) -> Response<Body> {
    bytes_response(
        status,
        Bytes::from_static(s.as_bytes()),
        "text/plain",
        false,
    )
}

pub(super) fn bytes_response(
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

pub(super) fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed()
}

pub(super) fn manifest_response(
    bytes: Bytes,
    media_type: &str,
    d: &Digest,
    head: bool,
) -> Response<Body> {
    let mut r = bytes_response(StatusCode::OK, bytes, media_type, head);
    r.headers_mut()
        .insert("docker-content-digest", hv(d.as_str()));
    r
}

pub(super) fn blob_head(d: &Digest, size: u64) -> Response<Body> {
    BlobHead {
        status: StatusCode::OK,
        digest: d,
        length: Some(size),
        content_range: None,
    }
    .response(empty())
}

pub(super) fn range_not_satisfiable(total: u64) -> Response<Body> {
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

pub(super) async fn serve_file(
    file: std::fs::File,
    size: u64,
    d: &Digest,
    range: Option<&str>,
    head: bool,
    pin: super::evict::Pin,
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
        // The file opened when the blob was found: an eviction since cannot take it away.
        let mut f = tokio::fs::File::from_std(file);
        if start > 0 && f.seek(std::io::SeekFrom::Start(start)).await.is_err() {
            return oci_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                "cache read failed",
            );
        }
        let stream = tokio_util_reader(f.take(len), pin);
        BodyExt::boxed(StreamBody::new(stream))
    };
    BlobHead {
        status,
        digest: d,
        length: Some(len),
        content_range: (status == StatusCode::PARTIAL_CONTENT)
            .then(|| format!("bytes {start}-{end}/{size}")),
    }
    .response(body)
}

/// Reads `r` in large chunks as body frames.
/// The pin rides along with the stream, so the blob cannot be evicted until the body ends.
pub(super) fn tokio_util_reader<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    r: R,
    pin: super::evict::Pin,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send + 'static {
    futures_util::stream::unfold((r, pin), |(mut r, pin)| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = bytes::BytesMut::with_capacity(CHUNK);
        match r.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(Frame::data(buf.freeze())), (r, pin))),
            Err(e) => Some((Err(e), (r, pin))),
        }
    })
}

/// Streams a (possibly still filling) blob to one client, honouring a single Range.
pub(super) async fn stream_fill(
    mut reader: super::fill::FillReader,
    digest: &Digest,
    range: Option<&str>,
) -> Response<Body> {
    let total = match reader.started().await {
        Ok(t) => t,
        Err(e) => return error_response(&e),
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
    BlobHead {
        status,
        digest,
        length: end.map(|e| e + 1 - start),
        content_range,
    }
    .response(BodyExt::boxed(StreamBody::new(stream)))
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
