//! The sendfile fast path and hyper answer the same blob requests with the same status and the
//! same complete header set (values of `date` and `x-request-id` aside): cached, filling, HEAD,
//! Range, unknown, and a failed fill.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::fault_server::{Fault, FaultServer};
use crate::support::proxy::ProxyProcess;
use crate::support::Env;

/// Status and headers (lower-case names) of one request on a fresh connection; the body is read
/// to its end so the next request starts clean.
fn head(
    addr: &str,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> (u16, BTreeMap<String, String>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write");
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut headers = BTreeMap::new();
    loop {
        line.clear();
        r.read_line(&mut line).expect("header");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    (status, headers)
}

/// The headers whose values differ by nature (the clock, the request counter) keep only their presence.
fn comparable(mut h: BTreeMap<String, String>) -> BTreeMap<String, String> {
    for k in ["date", "x-request-id"] {
        if let Some(v) = h.get_mut(k) {
            *v = "(present)".into();
        }
    }
    h
}

/// (name, method, path, extra headers)
type Case<'a> = (&'a str, &'a str, String, Vec<(&'a str, &'a str)>);

#[test]
fn fast_path_and_hyper_send_the_same_heads() {
    let env = Env::new();
    let blob: Vec<u8> = (0..3u32 << 20).map(|i| (i % 241) as u8).collect();
    let up = FaultServer::start(blob);
    let upstream = up.upstream(&env, "http", "");
    let fast = ProxyProcess::start(&env, "[limits]\nupstream_timeout_secs = 5\n", &upstream);
    let env2 = Env::new();
    let upstream2 = up.upstream(&env2, "http", "");
    let slow = ProxyProcess::start(
        &env2,
        "[limits]\nupstream_timeout_secs = 5\nsendfile = false\n",
        &upstream2,
    );
    let blob_path = format!("/v2/app/blobs/{}?ns={}", up.blob_digest, up.addr);
    let unknown = format!("/v2/app/blobs/sha256:{}", "e".repeat(64));
    let mut cases: Vec<Case> = vec![
        ("filling (cold)", "GET", blob_path.clone(), vec![]),
        ("cached", "GET", blob_path.clone(), vec![]),
        ("HEAD", "HEAD", blob_path.clone(), vec![]),
        (
            "Range",
            "GET",
            blob_path.clone(),
            vec![("Range", "bytes=5-9")],
        ),
        ("unknown", "GET", unknown, vec![]),
    ];
    let mut diffs = Vec::new();
    let run = |cases: &mut Vec<Case>, diffs: &mut Vec<String>| {
        for (name, method, path, extra) in cases.drain(..) {
            let a = head(&fast.addr, method, &path, &extra);
            fast.wait_fills_done();
            let b = head(&slow.addr, method, &path, &extra);
            slow.wait_fills_done();
            assert!(
                a.1.contains_key("date") && b.1.contains_key("date"),
                "{name}: no Date: {a:?} / {b:?}"
            );
            let (a, b) = ((a.0, comparable(a.1)), (b.0, comparable(b.1)));
            if a != b {
                diffs.push(format!("{name}:\n  fast  {a:?}\n  hyper {b:?}"));
            }
        }
    };
    run(&mut cases, &mut diffs);
    // A fill that fails: a second blob digest the upstream answers with 500.
    up.set(Fault::Status(500));
    let failing = format!("/v2/app/blobs/sha256:{}", "d".repeat(64));
    cases.push(("failed fill", "GET", failing, vec![]));
    run(&mut cases, &mut diffs);
    assert!(
        diffs.is_empty(),
        "the two transports differ:\n{}",
        diffs.join("\n")
    );
}
