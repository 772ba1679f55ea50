//! Bad input, load and secrets under stress: path traversal and oversize input refused without
//! touching files outside the cache; a bounded 1,000-connection load with zero 5xx; a canary
//! upstream password never reaching logs, error bodies or /metrics.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::fault_server::{Fault, FaultServer};
use crate::support::http::http_request;
use crate::support::images::push_image;
use crate::support::proxy::ProxyProcess;
use crate::support::registry::{Registry, RegistryAuth};
use crate::support::token_issuer::TokenIssuerConfig;
use crate::support::{assert_no_canary, canary_forms, run_with_stdin, Env};

const OCI: (&str, &str) = ("Accept", "application/vnd.oci.image.manifest.v1+json");

#[test]
fn traversal_and_oversize_input_are_refused() {
    let env = Env::new();
    let up = FaultServer::start(vec![5u8; 1000]);
    let proxy = ProxyProcess::start(&env, "", &up.upstream(&env, "http", ""));
    // A file next to the cache that traversal would reach.
    std::fs::write(env.path("secret.txt"), "outside-the-cache").expect("write");
    let long = "a/".repeat(200);
    let paths = [
        "/v2/../secret.txt/manifests/latest".to_string(),
        "/v2/%2e%2e/%2e%2e/manifests/latest".to_string(),
        "/v2/app/blobs/sha256:../../../../secret.txt".to_string(),
        "/v2/app/blobs/..%2f..%2fsecret.txt".to_string(),
        "/v2//etc/passwd/manifests/latest".to_string(),
        "/v2/app/blobs//etc/passwd".to_string(),
        "/v2/app/blobs/md5:d41d8cd98f00b204e9800998ecf8427e".to_string(),
        "/v2/app/blobs/sha512:abc".to_string(),
        "/v2/app/manifests/sha256:ZZZZ".to_string(),
        "/v2/app/manifests/../../x".to_string(),
        format!("/v2/{long}x/manifests/latest"),
    ];
    for p in &paths {
        let r = http_request("GET", &proxy.addr, p, &[OCI], b"").expect("request");
        assert!(r.status == 400 || r.status == 404, "{p} → {}", r.status);
        assert!(
            !r.text().contains("outside-the-cache"),
            "{p} read a file outside the cache"
        );
        assert!(
            r.json()["errors"][0]["code"].is_string(),
            "{p}: OCI error JSON expected"
        );
    }

    // A manifest over 4 MiB is refused, not cached.
    up.set(Fault::HugeManifest);
    let r = http_request("GET", &proxy.addr, "/v2/app/manifests/huge", &[OCI], b"").expect("huge");
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("larger than allowed"), "{}", r.text());
    up.set(Fault::None);

    // Oversize request headers: refused with 431 or the connection closed; the proxy lives on.
    let mut s = TcpStream::connect(&proxy.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let big = format!(
        "GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let _ = s.write_all(big.as_bytes());
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(
        out.is_empty() || out.starts_with("HTTP/1.1 431"),
        "oversize headers accepted: {}",
        &out[..out.len().min(80)]
    );
    assert_eq!(
        http_request("GET", &proxy.addr, "/v2/", &[], b"")
            .expect("v2")
            .status,
        200
    );
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// `PULLSECRET_LOAD_SECS` (default 5; the full run uses 60) with 1,000 connections.
#[test]
fn thousand_connections_zero_5xx_bounded_memory_and_files() {
    let secs: u64 = std::env::var("PULLSECRET_LOAD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .min(120);
    let conns: usize = std::env::var("PULLSECRET_LOAD_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
        .min(2000);
    let env = Env::new();
    let up = FaultServer::start(vec![3u8; 64 * 1024]);
    let proxy = ProxyProcess::start(&env, "", &up.upstream(&env, "http", ""));
    // Warm the manifest and the blob.
    let m = http_request("GET", &proxy.addr, "/v2/app/manifests/v1", &[OCI], b"").expect("warm");
    assert_eq!(m.status, 200);
    let blob = format!("/v2/app/blobs/{}", up.blob_digest);
    assert_eq!(
        http_request("GET", &proxy.addr, &blob, &[], b"")
            .expect("warm blob")
            .status,
        200
    );
    let pid = proxy.pid();
    let rss_before = rss_kib(pid);
    let manifest_path = format!("/v2/app/manifests/{}", up.manifest_digest);

    let deadline = Instant::now() + Duration::from_secs(secs);
    let (peak_fds, peak_rss) = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for i in 0..conns {
            let addr = proxy.addr.clone();
            let path = if i % 10 == 0 {
                blob.clone()
            } else {
                manifest_path.clone()
            };
            handles.push(s.spawn(move || load_client(&addr, &path, deadline)));
        }
        let mut peak = (0usize, 0u64);
        while Instant::now() < deadline {
            peak.0 = peak.0.max(open_fds(pid));
            peak.1 = peak.1.max(rss_kib(pid));
            std::thread::sleep(Duration::from_millis(200));
        }
        let mut totals = (0u64, 0u64, 0u64);
        for h in handles {
            let (ok, fivexx, errors) = h.join().expect("client");
            totals.0 += ok;
            totals.1 += fivexx;
            totals.2 += errors;
        }
        eprintln!(
            "load: {conns} connections for {secs} s: {} responses ({:.0}/s), {} 5xx, {} connection errors; proxy RSS {rss_before} KiB before, peak {} KiB; peak open fds {}",
            totals.0, totals.0 as f64 / secs as f64, totals.1, totals.2, peak.1, peak.0
        );
        assert_eq!(totals.1, 0, "5xx under load");
        // A sanity floor (the load happened), not a speed target: benchmarks measure speed.
        assert!(
            totals.0 >= conns as u64 / 4,
            "too few responses: {}",
            totals.0
        );
        peak
    });
    assert!(peak_rss < 512 * 1024, "memory not bounded: {peak_rss} KiB");
    assert!(
        peak_fds <= conns + 200,
        "open files not bounded: {peak_fds}"
    );
    assert_eq!(
        http_request("GET", &proxy.addr, "/v2/", &[], b"")
            .expect("alive")
            .status,
        200
    );
}

/// Keep-alive GETs until `deadline`: (responses, 5xx, connection errors).
fn load_client(addr: &str, path: &str, deadline: Instant) -> (u64, u64, u64) {
    let (mut ok, mut bad, mut errors) = (0, 0, 0);
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/vnd.oci.image.manifest.v1+json\r\n\r\n");
    while Instant::now() < deadline {
        let Ok(mut s) = TcpStream::connect(addr) else {
            errors += 1;
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let mut buf = vec![0u8; 128 * 1024];
        while Instant::now() < deadline {
            if s.write_all(req.as_bytes()).is_err() {
                errors += 1;
                break;
            }
            match read_response(&mut s, &mut buf) {
                Some(status) if status >= 500 => bad += 1,
                Some(_) => ok += 1,
                None => {
                    errors += 1;
                    break;
                }
            }
        }
    }
    (ok, bad, errors)
}

/// Reads one response with a Content-Length body; its status.
fn read_response(s: &mut TcpStream, buf: &mut [u8]) -> Option<u16> {
    let mut have = 0usize;
    loop {
        let n = s.read(&mut buf[have..]).ok()?;
        if n == 0 {
            return None;
        }
        have += n;
        let text = &buf[..have];
        if let Some(end) = text.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&text[..end]).to_string();
            let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = have - end - 4;
            while body < len {
                let n = s.read(buf).ok()?;
                if n == 0 {
                    return None;
                }
                body += n;
            }
            return Some(status);
        }
        if have == buf.len() {
            return None;
        }
    }
}

/// The scan every fault, bad-input and load test ends with catches each form of the canary.
#[test]
fn the_canary_scan_catches_every_form() {
    for form in canary_forms() {
        let text = format!("level=debug msg=\"upstream said\" auth={form} done");
        let caught = std::panic::catch_unwind(|| assert_no_canary("a test text", &text));
        assert!(caught.is_err(), "form {form:.4}… not caught");
    }
    assert_no_canary("a clean text", "nothing secret here");
}

#[test]
fn canary_upstream_password_never_leaks_from_the_proxy() {
    const CANARY: &str = "proxy-canary-93b1f";
    let env = Env::new();
    let issuer = TokenIssuerConfig::new()
        .user("pusher", "push-pw", &[("*", &["pull", "push"])])
        .user("bot", CANARY, &[("ok/*", &["pull"])]);
    let Some(reg) = Registry::start(RegistryAuth::Token(issuer)) else {
        return;
    };
    let img = push_image(
        reg.addr(),
        "ok/app",
        "v1",
        Some(("pusher", "push-pw")),
        &[b"canary-run".to_vec()],
    );
    push_image(
        reg.addr(),
        "denied/app",
        "v1",
        Some(("pusher", "push-pw")),
        &[b"denied".to_vec()],
    );
    let c = env.pullsecret(&[
        "secret",
        "create",
        "docker-registry",
        "bot",
        "--docker-server",
        reg.addr(),
        "--docker-username",
        "bot",
        "--docker-password-stdin",
    ]);
    assert!(run_with_stdin(c, CANARY.as_bytes()).status.success());
    let mut env_trace = env;
    env_trace.set("RUST_LOG", "trace");
    let proxy = ProxyProcess::start(
        &env_trace,
        "",
        &crate::support::proxy::plain_upstream("up", reg.addr(), "secret = \"bot\"\n"),
    );
    let mut bodies = String::new();
    for p in [
        "/v2/ok/app/manifests/v1".to_string(),
        format!("/v2/ok/app/blobs/{}", img.layers[0].digest),
        "/v2/denied/app/manifests/v1".to_string(),
        "/v2/ok/app/manifests/missing".to_string(),
        "/v2/ok/app/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000"
            .to_string(),
        "/metrics".to_string(),
    ] {
        let r = http_request("GET", &proxy.addr, &p, &[OCI], b"").expect("request");
        bodies.push_str(&format!("{:?}\n{}\n", r.headers, r.text()));
    }
    let log = proxy.log();
    assert!(log.contains("request"), "trace log is empty: {log}");
    // Trace level really was on, including the HTTP libraries' own logs.
    assert!(
        log.contains("TRACE"),
        "the proxy did not log at trace level"
    );
    assert!(
        bodies.contains("pullsecret_proxy_requests_total"),
        "metrics not scanned"
    );
    for (what, text) in [("proxy log", &log), ("responses and /metrics", &bodies)] {
        assert!(!text.contains(CANARY), "canary in {what}");
        let b64 = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(format!("bot:{CANARY}"))
        };
        assert!(!text.contains(&b64), "canary (as Basic auth) in {what}");
    }
}
