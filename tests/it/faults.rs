//! Reliability under upstream faults: for each fault the client gets an error (never a
//! complete-looking body), nothing enters the cache, other requests are served, and the next
//! request after the fault clears succeeds.

use std::time::Duration;

use crate::support::fault_server::{Fault, FaultServer};
use crate::support::http::http_request;
use crate::support::proxy::{stream_get, ProxyProcess};
use crate::support::{eventually, store_canary_secret, try_eventually, Env};

const OCI: (&str, &str) = ("Accept", "application/vnd.oci.image.manifest.v1+json");

fn blob_bytes() -> Vec<u8> {
    (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect()
}

fn proxy_for(env: &Env, up: &FaultServer, scheme: &str, extra: &str) -> ProxyProcess {
    proxy_with(env, up, scheme, extra, "")
}

/// `proxy_for` with extra keys for the upstream's table.
fn proxy_with(
    env: &Env,
    up: &FaultServer,
    scheme: &str,
    extra: &str,
    upstream_extra: &str,
) -> ProxyProcess {
    ProxyProcess::start(
        env,
        // No prefetch: each fault is met by exactly the request the test makes.
        &format!("[prefetch]\nenabled = false\n[limits]\nupstream_timeout_secs = 1\n{extra}"),
        &up.upstream(env, scheme, &format!("tag_ttl = \"0s\"\n{upstream_extra}")),
    )
}

fn assert_clean(proxy: &ProxyProcess, up: &FaultServer) {
    let cached = proxy
        .cache
        .join("v1/blobs/sha256")
        .join(up.blob_digest.trim_start_matches("sha256:"));
    assert!(!cached.exists(), "a failed blob entered the cache");
    // A fill's temp file goes once the fill has failed; give it a moment.
    let _ = try_eventually(Duration::from_secs(5), || proxy.tmp_files().is_empty());
    assert!(
        proxy.tmp_files().is_empty(),
        "temp files left: {:?}",
        proxy.tmp_files()
    );
    let v2 = http_request("GET", &proxy.addr, "/v2/", &[], b"").expect("v2");
    assert_eq!(v2.status, 200, "the proxy stopped serving");
}

fn blob_path(up: &FaultServer) -> String {
    format!("/v2/app/blobs/{}", up.blob_digest)
}

fn recovers(proxy: &ProxyProcess, up: &FaultServer) {
    up.set(Fault::None);
    let before = up.blob_gets.load(std::sync::atomic::Ordering::Relaxed);
    let ok = stream_get(&proxy.addr, &blob_path(up), &[]).expect("get");
    assert_eq!(
        up.blob_gets.load(std::sync::atomic::Ordering::Relaxed),
        before + 1,
        "the retry went upstream once"
    );
    assert_eq!(
        (ok.status, ok.truncated, ok.digest.as_str()),
        (200, false, up.blob_digest.as_str())
    );
}

#[test]
fn reset_mid_blob() {
    let env = Env::new();
    let up = FaultServer::start(blob_bytes());
    let proxy = proxy_for(&env, &up, "http", "");
    up.set(Fault::ResetMidBlob);
    let got = stream_get(&proxy.addr, &blob_path(&up), &[]).expect("get");
    assert!(
        got.status != 200 || got.truncated,
        "looks complete: {got:?}"
    );
    assert_clean(&proxy, &up);
    recovers(&proxy, &up);
}

#[test]
fn stall_longer_than_the_read_timeout() {
    let env = Env::new();
    let up = FaultServer::start(blob_bytes());
    let proxy = proxy_for(&env, &up, "http", "");
    // Far longer than the 1 s read timeout, so waiting it out cannot pass for a timeout.
    up.set(Fault::Stall(Duration::from_secs(20)));
    let started = std::time::Instant::now();
    // A starts the fill; B joins it while it is stalled (served by sendfile from the filling file).
    let (addr, path) = (proxy.addr.clone(), blob_path(&up));
    let a = std::thread::spawn(move || stream_get(&addr, &path, &[]));
    eventually(Duration::from_secs(10), "A's fill to start", || {
        up.blob_gets.load(std::sync::atomic::Ordering::Relaxed) > 0
    });
    let b = stream_get(&proxy.addr, &blob_path(&up), &[]).expect("b");
    let a = a.join().expect("a").expect("a");
    for got in [&a, &b] {
        assert!(
            got.status != 200 || got.truncated,
            "looks complete: {got:?}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the proxy waited out the stall: {:?}",
        started.elapsed()
    );
    assert!(
        proxy.log().contains("sendfile=true"),
        "B did not take the zero-copy path over the filling blob"
    );
    assert_clean(&proxy, &up);
    recovers(&proxy, &up);
}

#[test]
fn server_errors_and_rate_limits() {
    let env = Env::new();
    let up = FaultServer::start(blob_bytes());
    // Each fault's own answer is the subject here; the breaker (which would open after the
    // third 5xx) has its own test below.
    let proxy = proxy_with(&env, &up, "http", "", "circuit_failures = 0");
    // Cache the tag first, so the stale path is exercised for manifests.
    let first =
        http_request("GET", &proxy.addr, "/v2/app/manifests/v1", &[OCI], b"").expect("manifest");
    assert_eq!(first.status, 200);
    for (fault, want_blob) in [
        (Fault::Status(500), 502),
        (Fault::Status(503), 502),
        (Fault::TooMany, 429),
    ] {
        up.set(fault);
        let b = http_request("GET", &proxy.addr, &blob_path(&up), &[], b"").expect("blob");
        assert_eq!(b.status, want_blob, "{fault:?}: {}", b.text());
        assert!(b.json()["errors"][0]["code"].is_string());
        // The tag is served stale from the cache meanwhile.
        let m = http_request("GET", &proxy.addr, "/v2/app/manifests/v1", &[OCI], b"")
            .expect("manifest");
        assert_eq!(m.status, 200, "{fault:?}: stale tag not served");
        assert_eq!(m.body, up.manifest);
        assert_eq!(
            m.header("docker-content-digest"),
            Some(up.manifest_digest.as_str())
        );
        if fault == Fault::TooMany {
            assert_eq!(b.header("retry-after"), Some("1"), "Retry-After passed on");
        }
        assert_clean(&proxy, &up);
    }
    recovers(&proxy, &up);
}

#[test]
fn tls_handshake_failure_and_dns_failure() {
    let env = Env::new();
    let up = FaultServer::start(blob_bytes());
    up.set(Fault::NotTls);
    let proxy = proxy_for(&env, &up, "https", "");
    let b = http_request("GET", &proxy.addr, &blob_path(&up), &[], b"").expect("blob");
    assert_eq!(b.status, 502, "{}", b.text());
    assert!(
        b.text().contains(&up.addr),
        "error names the host: {}",
        b.text()
    );
    assert_clean(&proxy, &up);
    drop(proxy);

    let env = Env::new();
    store_canary_secret(&env, "nx-canary", "registry.invalid");
    let dns = ProxyProcess::start(
        &env,
        "",
        "[[upstream]]\nname = \"nx\"\nurl = \"https://registry.invalid\"\nsecret = \"nx-canary\"\n",
    );
    let r = http_request("GET", &dns.addr, "/v2/app/manifests/v1", &[OCI], b"").expect("dns");
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("registry.invalid"), "{}", r.text());
    assert_eq!(
        http_request("GET", &dns.addr, "/v2/", &[], b"")
            .expect("v2")
            .status,
        200
    );
}

/// A registry that requires Basic auth and redirects blob GETs to a "CDN" on another port; the
/// CDN records whether an Authorization header reached it.
#[test]
fn redirects_are_followed_without_authorization_to_another_host() {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};
    let blob: Vec<u8> = (0..100_000u32).map(|i| (i % 199) as u8).collect();
    let digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&blob))
    );
    let cdn = TcpListener::bind("127.0.0.1:0").expect("bind");
    let cdn_addr = cdn.local_addr().expect("addr").to_string();
    let cdn_saw: Arc<Mutex<Vec<String>>> = Arc::default();
    let reg = TcpListener::bind("127.0.0.1:0").expect("bind");
    let reg_addr = reg.local_addr().expect("addr").to_string();
    let reg_saw_auth: Arc<Mutex<Vec<bool>>> = Arc::default();

    // Reads one request's line and headers.
    fn read_head(r: &mut impl BufRead) -> Option<(String, Vec<String>)> {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).ok()? == 0 || h == "\r\n" {
                break;
            }
            headers.push(h.trim_end().to_string());
        }
        Some((line, headers))
    }
    {
        let (saw, blob) = (cdn_saw.clone(), blob.clone());
        std::thread::spawn(move || {
            for s in cdn.incoming().flatten().take(5) {
                let mut r = BufReader::new(s.try_clone().expect("clone"));
                let mut w = s;
                if let Some((_, headers)) = read_head(&mut r) {
                    saw.lock()
                        .expect("lock")
                        .extend(headers.iter().map(|h| h.to_ascii_lowercase()));
                    let _ = write!(
                        w,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        blob.len()
                    );
                    let _ = w.write_all(&blob);
                }
            }
        });
    }
    {
        let (saw, digest, cdn_addr) = (reg_saw_auth.clone(), digest.clone(), cdn_addr.clone());
        std::thread::spawn(move || {
            for s in reg.incoming().flatten().take(20) {
                let mut r = BufReader::new(s.try_clone().expect("clone"));
                let mut w = s;
                while let Some((line, headers)) = read_head(&mut r) {
                    let authed = headers
                        .iter()
                        .any(|h| h.eq_ignore_ascii_case("authorization: basic dxnlcjpwdw=="));
                    saw.lock().expect("lock").push(authed);
                    if !authed {
                        let _ = write!(w, "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"r\"\r\nContent-Length: 0\r\n\r\n");
                    } else if line.contains(&format!("/blobs/{digest}")) {
                        let _ = write!(w, "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{cdn_addr}/storage/{digest}?sig=x\r\nContent-Length: 0\r\n\r\n");
                    } else {
                        let _ = write!(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{{}}");
                    }
                }
            }
        });
    }
    let env = Env::new();
    let proxy = ProxyProcess::start(&env, "", &format!("[[upstream]]\nname = \"r\"\nurl = \"http://{reg_addr}\"\ninsecure = true\nusername = \"user\"\npassword = \"pw\"\n"));
    let got = stream_get(&proxy.addr, &format!("/v2/app/blobs/{digest}"), &[]).expect("get");
    assert_eq!(
        (got.status, got.digest.as_str(), got.truncated),
        (200, digest.as_str(), false)
    );
    assert!(
        reg_saw_auth.lock().expect("lock").contains(&true),
        "the registry never got credentials"
    );
    let cdn_headers = cdn_saw.lock().expect("lock").clone();
    assert!(!cdn_headers.is_empty(), "the redirect was not followed");
    assert!(
        !cdn_headers.iter().any(|h| h.starts_with("authorization")),
        "Authorization leaked to the CDN: {cdn_headers:?}"
    );
}

fn metric(proxy: &ProxyProcess, name: &str) -> Option<String> {
    let m = http_request("GET", &proxy.addr, "/metrics", &[], b"").expect("metrics");
    let prefix = format!("{name}{{upstream=\"f\"}} ");
    m.text()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
}

/// Issue 17, deliverable 5: a stalled upstream costs a cached tag `stale_after`, not the read
/// timeout; three failures open the breaker, which then answers uncached requests at once with
/// 503 and Retry-After without asking the upstream; after the backoff a probe closes it.
#[test]
fn upstream_health_stale_after_and_circuit_breaker() {
    let env = Env::new();
    let up = FaultServer::start(blob_bytes());
    // The read timeout stays at its default 30 s, far above `stale_after` (default 2 s).
    let proxy = ProxyProcess::start(
        &env,
        "[prefetch]\nenabled = false\n",
        &up.upstream(&env, "http", "tag_ttl = \"0s\""),
    );
    let tag = "/v2/app/manifests/v1";
    let first = http_request("GET", &proxy.addr, tag, &[OCI], b"").expect("manifest");
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("warning"), None);
    assert_eq!(
        metric(&proxy, "pullsecret_proxy_upstream_up").as_deref(),
        Some("1")
    );

    // Stalled before any header: the cached tag comes after ~2 s (the client gives up at 5 s).
    up.set(Fault::StallHeaders(Duration::from_secs(15)));
    let started = std::time::Instant::now();
    let m = http_request("GET", &proxy.addr, tag, &[OCI], b"").expect("stale tag in time");
    let took = started.elapsed();
    println!("cached tag over a stalled upstream: {took:?}");
    assert_eq!(m.status, 200, "{}", m.text());
    assert_eq!(m.body, up.manifest);
    assert_eq!(m.header("warning"), Some("110 - \"Response is Stale\""));
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(4),
        "took {took:?}"
    );

    // 5xx answers: the tag keeps coming stale; the third failure opens the breaker.
    up.set(Fault::Status(503));
    for _ in 0..3 {
        let m = http_request("GET", &proxy.addr, tag, &[OCI], b"").expect("manifest");
        assert_eq!(m.status, 200, "{}", m.text());
        assert_eq!(m.header("warning"), Some("110 - \"Response is Stale\""));
    }
    assert_eq!(
        metric(&proxy, "pullsecret_proxy_upstream_up").as_deref(),
        Some("0")
    );
    assert_eq!(
        metric(&proxy, "pullsecret_proxy_upstream_circuit_state").as_deref(),
        Some("2")
    );
    let before = up.request_count();
    let started = std::time::Instant::now();
    let b = http_request("GET", &proxy.addr, &blob_path(&up), &[], b"").expect("blob");
    println!(
        "uncached blob, breaker open: {} in {:?}: {}",
        b.status,
        started.elapsed(),
        b.text()
    );
    assert_eq!(b.status, 503, "{}", b.text());
    assert_eq!(b.json()["errors"][0]["code"], "UNAVAILABLE");
    let retry: u64 = b
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let m = http_request("GET", &proxy.addr, tag, &[OCI], b"").expect("manifest");
    assert_eq!(
        (m.status, m.header("warning")),
        (200, Some("110 - \"Response is Stale\""))
    );
    assert_eq!(
        up.request_count(),
        before,
        "the open breaker let a request through"
    );
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "not fast: {:?}",
        started.elapsed()
    );

    // The fault clears; after the backoff the probe succeeds and closes the breaker.
    up.set(Fault::None);
    eventually(Duration::from_secs(10), "the breaker to close", || {
        http_request("GET", &proxy.addr, &blob_path(&up), &[], b"").is_ok_and(|r| r.status == 200)
    });
    let m = http_request("GET", &proxy.addr, tag, &[OCI], b"").expect("manifest");
    assert_eq!((m.status, m.header("warning")), (200, None));
    assert_eq!(
        metric(&proxy, "pullsecret_proxy_upstream_up").as_deref(),
        Some("1")
    );
    assert_eq!(
        metric(&proxy, "pullsecret_proxy_upstream_circuit_state").as_deref(),
        Some("0")
    );
}

/// Issue 17, deliverable 7: the upstream's rate-limit headers (Docker Hub's lower-case ones and
/// the generic `RateLimit-*`) become gauges per upstream name, and per upstream and account
/// (the user name the request used: registries count accounts apart), never the password.
#[test]
fn upstream_rate_limit_headers_become_gauges() {
    let env = Env::new();
    let up = FaultServer::start(blob_bytes());
    let proxy = proxy_for(&env, &up, "http", "");
    assert_eq!(
        metric(&proxy, "pullsecret_proxy_upstream_ratelimit_limit"),
        None
    );
    up.set_extra_headers("ratelimit-limit: 100;w=21600\r\nratelimit-remaining: 76;w=21600\r\n");
    let m = http_request("GET", &proxy.addr, "/v2/app/manifests/v1", &[OCI], b"").expect("get");
    assert_eq!(m.status, 200, "{}", m.text());
    assert_eq!(
        metric(&proxy, "pullsecret_proxy_upstream_ratelimit_limit").as_deref(),
        Some("100")
    );
    assert_eq!(
        metric(&proxy, "pullsecret_proxy_upstream_ratelimit_remaining").as_deref(),
        Some("76")
    );
    up.set_extra_headers("RateLimit-Limit: 100\r\nRateLimit-Remaining: 75\r\n");
    let m = http_request("GET", &proxy.addr, "/v2/app/manifests/v1", &[OCI], b"").expect("get");
    assert_eq!(m.status, 200, "{}", m.text());
    assert_eq!(
        metric(&proxy, "pullsecret_proxy_upstream_ratelimit_remaining").as_deref(),
        Some("75")
    );
    let all = http_request("GET", &proxy.addr, "/metrics", &[], b"")
        .expect("metrics")
        .text();
    let ratelimit: Vec<&str> = all.lines().filter(|l| l.contains("ratelimit")).collect();
    println!("{}", ratelimit.join("\n"));
    let per_account = format!(
        "pullsecret_proxy_upstream_identity_ratelimit_remaining{{upstream=\"f\",identity=\"{}\"}} 75",
        crate::support::CANARY_USER
    );
    assert!(ratelimit.contains(&per_account.as_str()), "{ratelimit:?}");
    for l in ratelimit.iter().filter(|l| !l.starts_with('#')) {
        assert!(
            l.contains("{upstream=\"f\"}")
                || l.contains(&format!(
                    "{{upstream=\"f\",identity=\"{}\"}}",
                    crate::support::CANARY_USER
                )),
            "labels: {l}"
        );
    }
    crate::support::assert_no_canary("/metrics", &all);
}

/// Issue 17, deliverable 7: optional caps per upstream on requests and bytes per second. Five
/// HEADs at 2 requests/s (a burst of 2, then one each 0.5 s) take at least 1.5 s; a
/// 4 MiB blob at 2 MiB/s (a burst of one second's worth) at least 1 s (bounds set a little
/// lower for clock granularity). Both are
/// lower bounds, which a slow machine only makes easier to meet.
#[test]
fn upstream_request_and_byte_caps_hold() {
    let env = Env::new();
    let up = FaultServer::start(blob_bytes());
    let proxy = proxy_with(
        &env,
        &up,
        "http",
        "parallel_fetch_connections = 1\n",
        "max_requests_per_second = 2\nmax_bytes_per_second = \"2MiB\"",
    );
    // The proxy learns the challenge with its first request; spend the burst on it.
    let h = http_request("HEAD", &proxy.addr, &blob_path(&up), &[], b"").expect("HEAD");
    assert_eq!(h.status, 200);
    let started = std::time::Instant::now();
    for _ in 0..5 {
        let h = http_request("HEAD", &proxy.addr, &blob_path(&up), &[], b"").expect("HEAD");
        assert_eq!(h.status, 200);
    }
    let heads = started.elapsed();
    assert!(
        heads >= Duration::from_millis(1400),
        "5 HEADs at 2/s took {heads:?}"
    );
    let started = std::time::Instant::now();
    let got = stream_get(&proxy.addr, &blob_path(&up), &[]).expect("GET");
    let transfer = started.elapsed();
    assert_eq!(
        (got.status, got.digest.as_str()),
        (200, up.blob_digest.as_str())
    );
    assert!(
        transfer >= Duration::from_millis(900),
        "4 MiB at 2 MiB/s took {transfer:?}"
    );
    println!("5 HEADs at 2/s: {heads:?}; 4 MiB at 2 MiB/s: {transfer:?}");
}
