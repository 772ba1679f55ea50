//! Small reqwest helpers shared by the registry client, token fetches and error reading:
//! a size-limited body read and a reqwest error described without its URL.

use bytes::Bytes;
use reqwest::Response;

/// Reads a body of at most `limit` bytes; `Err(None)` when it is larger.
pub(crate) async fn read_limited(
    mut resp: Response,
    limit: usize,
) -> Result<Bytes, Option<reqwest::Error>> {
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(Some)? {
        if buf.len() + chunk.len() > limit {
            return Err(None);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// A reqwest error without its URL (we name host and object ourselves) and with its cause.
pub fn describe_reqwest(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "transfer failed"
    } else if e.is_redirect() {
        "too many redirects"
    } else {
        "request failed"
    };
    let mut cause = String::new();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        cause = s.to_string();
        src = s.source();
    }
    if cause.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {cause}")
    }
}
