//! Zero-copy serving of blobs on plain HTTP/1.1: a `GET` for a blob that is cached and already
//! linked to the requester, or that this requester's fill is bringing in (leading it if none
//! runs), is answered with sendfile(2) before hyper sees the connection; everything else (and
//! every later request the fast path declines) goes to hyper.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use super::blobs::FastSource;
use super::response::{api_version, http1_head};
use super::server::Proxy;

/// Longest request head the fast path looks at; longer ones go to hyper (which may answer 431).
const MAX_HEAD: usize = 8 * 1024;

/// Serves fast-path requests from `stream` until one is not eligible; `Ok(true)` means the
/// connection should be handed to hyper, `Ok(false)` that it is finished.
pub async fn serve(proxy: &Arc<Proxy>, stream: &mut TcpStream) -> std::io::Result<bool> {
    let mut buf = vec![0u8; MAX_HEAD];
    let peer = stream
        .peer_addr()
        .map_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |a| {
            a.ip()
        });
    loop {
        let mut stopping = proxy.stopping.subscribe();
        if *stopping.borrow_and_update() {
            return Ok(false);
        }
        // An idle keep-alive connection must not hold up a graceful shutdown.
        // A keep-alive connection with no request for `idle_timeout` is closed (a slot is a file
        // descriptor); a started head that does not complete goes to hyper, whose
        // `header_read_timeout` closes it.
        let n = tokio::select! {
            n = tokio::time::timeout(proxy.settings.idle_timeout, stream.peek(&mut buf)) => match n {
                Ok(n) => n?,
                Err(_) => return Ok(false),
            },
            _ = stopping.changed() => return Ok(false),
        };
        if n == 0 {
            return Ok(false);
        }
        // hyper parses with httparse too: the same bytes frame the same request either way.
        let Some((head_len, req)) = parse_head(&buf[..n]) else {
            // Incomplete, invalid or not eligible: hyper reads it properly (and answers errors).
            return Ok(true);
        };
        let Some(mut hit) = proxy.fast_blob(req.path, req.query, peer).await else {
            return Ok(true);
        };
        api_version(&mut hit.headers);
        let close = req.close;
        // Eligible: consume exactly this request's head and answer it.
        let mut consumed = vec![0u8; head_len];
        stream.read_exact(&mut consumed).await?;
        let head = http1_head(hit.status, &hit.headers, close);
        proxy
            .fast_in_flight
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let sent = async {
            stream.write_all(head.as_bytes()).await?;
            match hit.source {
                FastSource::Cached(file, size) => send_file(stream, &file, 0, size).await,
                FastSource::Filling(mut reader, size) => {
                    // Send what has landed, wait for more; a failed fill ends the connection short.
                    let mut offset = 0;
                    while let Some(available) = reader
                        .available_after(offset)
                        .await
                        .map_err(std::io::Error::other)?
                    {
                        send_file(stream, reader.file(), offset, available).await?;
                        offset = available;
                    }
                    if offset != size {
                        return Err(std::io::Error::other("fill ended at an unexpected size"));
                    }
                    Ok(())
                }
                FastSource::Failed(body) => stream.write_all(&body).await,
            }
        }
        .await;
        proxy
            .fast_in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        sent?;
        drop(hit.pin);
        if close {
            return Ok(false);
        }
    }
}

pub struct Head<'a> {
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub close: bool,
}

/// Most header lines the fast path looks at; a request with more goes to hyper.
const MAX_HEADERS: usize = 64;

/// A complete plain `GET … HTTP/1.1` for a blob with no body, no Range and no credentials,
/// and the length of its head; `None` otherwise (hyper then reads it).
pub fn parse_head(buf: &[u8]) -> Option<(usize, Head<'_>)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = req.parse(buf).ok()? else {
        return None;
    };
    if req.method? != "GET" || req.version? != 1 {
        return None;
    }
    let target = req.path?;
    if !target.starts_with('/') {
        return None;
    }
    let mut close = false;
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        match name.as_str() {
            "range" | "authorization" | "content-length" | "transfer-encoding" | "expect"
            | "upgrade" => return None,
            "connection" => {
                let value = std::str::from_utf8(h.value).ok()?;
                close |= value
                    .split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("close"));
            }
            _ => {}
        }
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    path.contains("/blobs/")
        .then_some((len, Head { path, query, close }))
}

/// sendfile(2) of `file[start..end]` to the socket, waiting for writability as the socket buffer fills.
#[allow(unsafe_code)]
async fn send_file(
    stream: &mut TcpStream,
    file: &std::fs::File,
    start: u64,
    size: u64,
) -> std::io::Result<()> {
    let mut offset: libc::off_t = start as libc::off_t;
    let file_fd = file.as_raw_fd();
    let sock_fd = stream.as_raw_fd();
    while (offset as u64) < size {
        let left = (size - offset as u64).min(1 << 30) as usize;
        let sent = stream
            .async_io(Interest::WRITABLE, || {
                // SAFETY: both descriptors are open for the duration of the call and `offset`
                // is a valid, exclusively borrowed off_t.
                let n = unsafe { libc::sendfile(sock_fd, file_fd, &mut offset, left) };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            })
            .await?;
        if sent == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "blob shorter than its size",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_head;

    #[test]
    fn only_plain_blob_gets_are_eligible() {
        let raw = b"GET /v2/a/blobs/sha256:x?ns=docker.io HTTP/1.1\r\nHost: h\r\nUser-Agent: curl\r\n\r\nGET /next";
        let (len, ok) = parse_head(raw).unwrap();
        assert_eq!(
            &raw[len..],
            b"GET /next",
            "the head ends where hyper would end it"
        );
        assert_eq!(
            (ok.path, ok.query, ok.close),
            ("/v2/a/blobs/sha256:x", Some("ns=docker.io"), false)
        );
        assert!(
            parse_head(b"GET /v2/a/blobs/x HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n")
                .unwrap()
                .1
                .close
        );
        for bad in [
            &b"HEAD /v2/a/blobs/x HTTP/1.1\r\n\r\n"[..],
            b"GET /v2/a/blobs/x HTTP/1.0\r\n\r\n",
            b"GET /v2/a/blobs/x HTTP/1.1\r\nRange: bytes=0-1\r\n\r\n",
            b"GET /v2/a/blobs/x HTTP/1.1\r\nAuthorization: Bearer t\r\n\r\n",
            b"GET /v2/a/manifests/x HTTP/1.1\r\n\r\n",
            b"GET /v2/a/blobs/x HTTP/1.1\r\nbroken header\r\n\r\n",
            b"GET /v2/a/blobs/x HTTP/1.1\r\nHost: h\r\n",
            b"GET /v2/a/blobs/x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            b"GET /v2/a/blobs/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET http://h/v2/a/blobs/x HTTP/1.1\r\n\r\n",
            b"GET /v2/a/blobs/x HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        ] {
            assert!(
                parse_head(bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
