//! Slot exhaustion: half-sent and idle connections are closed, clients that give up while
//! their fill is queued release their sockets, and the fill queue is bounded (503 + Retry-After).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::fault_server::{Fault, FaultServer};
use crate::support::http::http_request;
use crate::support::proxy::ProxyProcess;
use crate::support::{eventually, require_bin, Env};

/// Reads until EOF (or the timeout): whether the proxy closed the connection, and the bytes.
fn read_until_closed(s: &mut TcpStream, within: Duration) -> (bool, Vec<u8>) {
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (true, got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (true, got),
            Err(_) => return (false, got),
        }
    }
}

/// Sockets of the proxy's port in CLOSE-WAIT (the client left, the proxy still holds it).
fn close_wait(port: &str) -> usize {
    let out = std::process::Command::new("ss")
        .args([
            "-Htn",
            "state",
            "close-wait",
            &format!("( sport = :{port} )"),
        ])
        .output()
        .expect("ss");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn half_sent_and_idle_connections_are_closed() {
    let env = Env::new();
    let up = FaultServer::start(vec![1u8; 1000]);
    let proxy = ProxyProcess::start(
        &env,
        "[limits]\nheader_read_timeout_secs = 1\nidle_timeout_secs = 2\n",
        &up.upstream(&env, "http", ""),
    );
    let started = Instant::now();
    let mut half = TcpStream::connect(&proxy.addr).expect("connect");
    half.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nUser-Ag")
        .expect("write");
    let mut idle = TcpStream::connect(&proxy.addr).expect("connect");
    let (closed, _) = read_until_closed(&mut half, Duration::from_secs(15));
    assert!(closed, "a half-sent request head was kept open 15 s");
    let (closed, got) = read_until_closed(&mut idle, Duration::from_secs(15));
    assert!(closed && got.is_empty(), "an idle connection was kept open");
    assert!(started.elapsed() < Duration::from_secs(12));
    // Keep-alive still works for a client that keeps talking.
    let r = http_request("GET", &proxy.addr, "/v2/", &[], b"").expect("v2");
    assert_eq!(r.status, 200);
}

#[test]
fn abandoned_cold_requests_release_their_sockets_and_the_queue_is_bounded() {
    if require_bin("ss", "apt-get install iproute2").is_none() {
        return;
    }
    let env = Env::new();
    let up = FaultServer::start(vec![3u8; 1 << 20]);
    up.set(Fault::Stall(Duration::from_secs(120)));
    let proxy = ProxyProcess::start(
        &env,
        "[limits]\nmax_concurrent_fills = 1\nupstream_timeout_secs = 120\nmax_queued_fills = 64\nmax_queued_fills_per_client = 16\n",
        &up.upstream(&env, "http", ""),
    );
    let port = proxy
        .addr
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let request = |digest: &str| {
        let mut s = TcpStream::connect(&proxy.addr).expect("connect");
        s.write_all(format!("GET /v2/app/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .expect("write");
        s
    };
    // The one fill slot is taken by a download that stalls.
    let _stalled = request(&up.blob_digest);
    eventually(
        Duration::from_secs(10),
        "the stalled download to start",
        || up.blob_gets.load(std::sync::atomic::Ordering::Relaxed) > 0,
    );
    // Cold requests queue up to this client's share; the next is told to come back.
    let fake = |i: usize| format!("sha256:{i:064x}");
    // 17 cold requests from one address: the proxy may take them in any order, so exactly one
    // of them (whichever came last) is told to come back, the other 16 wait in the queue.
    let mut queued: Vec<TcpStream> = (0..17).map(|i| request(&fake(i))).collect();
    for s in &queued {
        s.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
    }
    let answered = eventually(Duration::from_secs(10), "a request to be refused", || {
        queued
            .iter_mut()
            .position(|s| matches!(s.peek(&mut [0u8; 1]), Ok(n) if n > 0))
            .ok_or_else(|| "no request was refused".to_string())
    });
    let mut over = queued.remove(answered);
    let (_, got) = read_until_closed(&mut over, Duration::from_secs(10));
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 503") && text.to_ascii_lowercase().contains("retry-after: 1"),
        "{text}"
    );
    for s in &queued {
        let mut b = [0u8; 1];
        assert!(
            !matches!(s.peek(&mut b), Ok(n) if n > 0),
            "a second request was answered while 16 fit the queue"
        );
    }
    assert!(text.contains("TOOMANYREQUESTS"), "{text}");

    // 2,000 clients send a cold request and leave (bounded in count and time).
    drop(queued);
    let started = Instant::now();
    for i in 0..2000 {
        drop(request(&fake(2000 + i)));
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "load loop too slow"
        );
    }
    eventually(
        Duration::from_secs(30),
        "CLOSE-WAIT sockets to go after their clients left",
        || match close_wait(&port) {
            0 => Ok(()),
            n => Err(format!("{n} sockets still in CLOSE-WAIT")),
        },
    );
    // New clients are served, and the queue has room again.
    let r = http_request("GET", &proxy.addr, "/healthz", &[], b"").expect("healthz");
    assert_eq!(r.status, 200);
    let mut again = request(&fake(9999));
    let (closed, got) = read_until_closed(&mut again, Duration::from_secs(2));
    assert!(
        !closed && got.is_empty(),
        "a new cold request was not queued: {}",
        String::from_utf8_lossy(&got)
    );
}
