//! A proxy restarted on a warm cache serves every route at once (links are read back from
//! disk), `warm` of cached content completes, shutdown has a deadline and `/readyz` notices a
//! stuck worker.

use std::time::Duration;

use crate::support::http::{http_request, HttpResponse};
use crate::support::images::push_image;
use crate::support::proxy::{stream_get, ProxyProcess};
use crate::support::registry::Registry;
use crate::support::skopeo::skopeo;
use crate::support::{eventually, stderr, stdout, Env, Scenario};

const OCI: (&str, &str) = ("Accept", "application/vnd.oci.image.manifest.v1+json");

fn setup(env: &Env, extra: &str) -> Option<(Registry, ProxyProcess)> {
    let s = Scenario::token_registry(env, &[("puller", "pull-pw", "private/*")])?;
    Some(
        s.secret("upstream-cred", "puller", "pull-pw")
            .config(&format!("default_upstream = \"local\"\n{extra}"))
            .upstream(
                "local",
                "secret = \"upstream-cred\"\naliases = [\"{addr}\"]",
            )
            .start(),
    )
}

fn ok(r: std::io::Result<HttpResponse>, what: &str, proxy: &ProxyProcess) -> HttpResponse {
    match r {
        Ok(r) => r,
        Err(e) => panic!("{what}: no answer ({e}): the proxy hangs\n{}", proxy.log()),
    }
}

#[test]
fn restart_on_a_warm_cache_serves_every_route_and_warm_twice() {
    let env = Env::new();
    let Some((reg, mut proxy)) = setup(&env, "") else {
        return;
    };
    let layer: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
    let img = push_image(
        reg.addr(),
        "private/app",
        "v1",
        Some(("pusher", "push-pw")),
        &[layer],
    );
    let out = skopeo(
        &env,
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{}/private/app:v1", proxy.addr),
            &format!("oci:{}:v1", env.path("first").display()),
        ],
    );
    assert!(out.status.success(), "{}\n{}", stderr(&out), proxy.log());
    proxy.wait_fills_done();

    let (status, took) = proxy.terminate(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM: {status:?} after {took:?}\n{}",
        proxy.log()
    );
    proxy.start_again(&env);

    let layer = img.layers[0].data.clone();
    let layer_digest = &img.layers[0].digest;
    let blob_path = format!("/v2/private/app/blobs/{layer_digest}");
    // Every route, each on a fresh connection; the first one read links back from disk.
    let m = ok(
        http_request(
            "GET",
            &proxy.addr,
            "/v2/private/app/manifests/v1",
            &[OCI],
            b"",
        ),
        "GET manifest by tag",
        &proxy,
    );
    assert_eq!(m.status, 200, "{}", m.text());
    let by_digest = format!("/v2/private/app/manifests/{}", img.manifest_digest);
    let h = ok(
        http_request("HEAD", &proxy.addr, &by_digest, &[OCI], b""),
        "HEAD manifest by digest",
        &proxy,
    );
    assert_eq!(h.status, 200);
    // Plain HTTP/1.1 GET: the sendfile fast path.
    let fast = stream_get(&proxy.addr, &blob_path, &[]).expect("fast-path blob");
    assert_eq!(
        (fast.status, fast.digest.as_str()),
        (200, layer_digest.as_str()),
        "{}",
        proxy.log()
    );
    // With Range: hyper's path, 206.
    let ranged = ok(
        http_request(
            "GET",
            &proxy.addr,
            &blob_path,
            &[("Range", "bytes=10-19")],
            b"",
        ),
        "Range GET",
        &proxy,
    );
    assert_eq!(ranged.status, 206);
    assert_eq!(ranged.body, layer[10..20].to_vec());
    // HTTP/1.0 is never taken by the fast path: the whole blob through hyper.
    let hyper_get = http_request_10(&proxy.addr, &blob_path);
    assert!(hyper_get.starts_with(b"HTTP/1.0 200") || hyper_get.starts_with(b"HTTP/1.1 200"));
    assert!(hyper_get.ends_with(&layer), "hyper path body differs");
    let hb = ok(
        http_request("HEAD", &proxy.addr, &blob_path, &[], b""),
        "HEAD blob",
        &proxy,
    );
    assert_eq!(hb.status, 200);
    assert_eq!(
        hb.header("content-length"),
        Some(layer.len().to_string().as_str())
    );
    for path in ["/healthz", "/readyz", "/metrics", "/v2/"] {
        let r = ok(
            http_request("GET", &proxy.addr, path, &[], b""),
            path,
            &proxy,
        );
        assert_eq!(r.status, 200, "{path}");
    }
    // Still served from the cache: the upstream saw the layer once.
    assert_eq!(
        reg.count_requests("GET", &format!("/blobs/{layer_digest}")),
        1
    );
    let (status, took) = proxy.terminate(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{status:?} {took:?}");

    // `warm` of cached content, twice: completes both times and fetches nothing again.
    for round in 1..=2 {
        let mut cmd = env.pullsecret(&[
            "proxy",
            "--config",
            env.path("proxy.toml").to_str().unwrap_or_default(),
            "warm",
            &format!("{}/private/app:v1", reg.addr()),
        ]);
        let out = run_deadline(&mut cmd, Duration::from_secs(60));
        assert!(out.status.success(), "warm {round}: {}", stderr(&out));
        assert!(
            stdout(&out).contains("warmed 1 manifests"),
            "warm {round}: {}",
            stdout(&out)
        );
    }
    assert_eq!(
        reg.count_requests("GET", &format!("/blobs/{layer_digest}")),
        1
    );
}

#[test]
fn readyz_fails_on_a_stuck_worker_and_shutdown_has_a_deadline() {
    let mut env = Env::new();
    env.set("PULLSECRET_TEST_HOOKS", "1");
    let Some((_reg, mut proxy)) = setup(
        &env,
        "[limits]\nstall_secs = 1\nshutdown_timeout_secs = 2\n",
    ) else {
        return;
    };
    let r = http_request("GET", &proxy.addr, "/readyz", &[], b"").expect("readyz");
    assert_eq!(r.status, 200);
    // A request that blocks its worker thread for a minute, as a deadlock would.
    let addr = proxy.addr.clone();
    let _stuck = std::thread::spawn(move || {
        let _ = http_request("GET", &addr, "/_test/stall-worker?ms=60000", &[], b"");
    });
    let r = eventually(
        Duration::from_secs(15),
        "/readyz to report the stuck worker",
        || match http_request("GET", &proxy.addr, "/readyz", &[], b"") {
            Ok(r) if r.status == 503 => Ok(r),
            r => Err(format!("{:?}", r.map(|r| r.status))),
        },
    );
    assert!(r.text().contains("stuck"), "{}", r.text());
    // /healthz (liveness) still answers from the other worker.
    let h = http_request("GET", &proxy.addr, "/healthz", &[], b"").expect("healthz");
    assert_eq!(h.status, 200);
    let (status, took) = proxy.terminate(Duration::from_secs(20));
    assert!(
        status.is_some(),
        "still running 20 s after SIGTERM with a 2 s deadline\n{}",
        proxy.log()
    );
    assert!(took < Duration::from_secs(15), "exited after {took:?}");
    assert!(proxy.log().contains("shutdown deadline"), "{}", proxy.log());
}

/// An HTTP/1.0 GET (which the fast path declines); the raw response.
fn http_request_10(addr: &str, path: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .expect("write");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    raw
}

/// Runs `cmd`, killing it (and failing) if it outlives `within`.
fn run_deadline(cmd: &mut std::process::Command, within: Duration) -> std::process::Output {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(within) {
        Ok(out) => out.expect("output"),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("hung for {within:?}: {cmd:?}");
        }
    }
}

/// `proxy status` beside a running proxy: live figures from its /metrics (never `-0`), and
/// opening the cache does not delete the temp file of the proxy's download in progress.
#[test]
fn status_reads_a_running_proxy_and_leaves_its_fills_alone() {
    use crate::support::fault_server::{Fault, FaultServer};
    let env = Env::new();
    let up = FaultServer::start(vec![9u8; 1 << 20]);
    up.set(Fault::Stall(Duration::from_secs(60)));
    let proxy = ProxyProcess::start(
        &env,
        "[limits]\nupstream_timeout_secs = 60\n",
        &up.upstream(&env, "http", ""),
    );
    let status = || {
        let out = env
            .pullsecret(&[
                "proxy",
                "--config",
                env.path("proxy.toml").to_str().unwrap_or_default(),
                "status",
            ])
            .output()
            .expect("status");
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let idle = status();
    assert!(idle.contains("hits: 0 misses: 0"), "{idle}");
    assert!(!idle.contains("-0"), "{idle}");
    assert!(idle.contains("live: 0 bytes in 0 blobs"), "{idle}");
    // A download that stalls half way: its temp file is the proxy's work in progress.
    let mut s = std::net::TcpStream::connect(&proxy.addr).expect("connect");
    std::io::Write::write_all(
        &mut s,
        format!(
            "GET /v2/app/blobs/{} HTTP/1.1\r\nHost: x\r\n\r\n",
            up.blob_digest
        )
        .as_bytes(),
    )
    .expect("write");
    eventually(Duration::from_secs(10), "a fill to start", || {
        !proxy.tmp_files().is_empty()
    });
    let busy = status();
    assert!(busy.contains("misses: 1"), "{busy}");
    assert!(
        !proxy.tmp_files().is_empty(),
        "`proxy status` deleted the running proxy's fill"
    );
}
