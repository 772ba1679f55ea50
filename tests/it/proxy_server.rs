//! The proxy's server side: h2c and HTTP/1.1 on one port, TLS from files or a stored tls
//! secret (HTTP/2 by ALPN), graceful shutdown on SIGTERM with requests in flight.

use std::time::Duration;

use crate::support::fault_server::FaultServer;
use crate::support::http::http_request;
use crate::support::proxy::{stream_get, ProxyProcess};
use crate::support::{eventually, try_eventually, Env};

fn upstream_toml(env: &Env, up: &FaultServer) -> String {
    up.upstream(env, "http", "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_and_http1_on_one_port() {
    let env = Env::new();
    let up = FaultServer::start(vec![1u8; 10_000]);
    let proxy =
        tokio::task::block_in_place(|| ProxyProcess::start(&env, "", &upstream_toml(&env, &up)));
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let r = h2
        .get(format!(
            "http://{}/v2/app/blobs/{}",
            proxy.addr, up.blob_digest
        ))
        .send()
        .await
        .expect("h2c");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.expect("body").len(), 10_000);
    let h1 = reqwest::Client::builder()
        .http1_only()
        .build()
        .expect("client");
    let r = h1
        .get(format!("http://{}/v2/", proxy.addr))
        .send()
        .await
        .expect("h1");
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(
        r.headers()
            .get("docker-distribution-api-version")
            .and_then(|v| v.to_str().ok()),
        Some("registry/2.0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_from_files_and_from_a_stored_secret() {
    let env = Env::new();
    let Some((cert, key)) = crate::support::loopback_cert(&env, "tls") else {
        return;
    };
    let up = FaultServer::start(vec![2u8; 1000]);
    let root = reqwest::Certificate::from_pem(&std::fs::read(&cert).expect("cert")).expect("pem");
    let client = reqwest::Client::builder()
        .add_root_certificate(root)
        .build()
        .expect("client");

    let files = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let proxy = tokio::task::block_in_place(|| {
        ProxyProcess::start_tls(&env, &files, &upstream_toml(&env, &up))
    });
    let r = client
        .get(format!("https://{}/v2/", proxy.addr))
        .send()
        .await
        .expect("https");
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN should pick h2");
    drop(proxy);

    let env2 = Env::new();
    let created = env2
        .pullsecret(&[
            "secret",
            "create",
            "tls",
            "mirror-tls",
            &format!("--cert={}", cert.display()),
            &format!("--key={}", key.display()),
        ])
        .output()
        .expect("create tls");
    assert!(created.status.success());
    let proxy = tokio::task::block_in_place(|| {
        ProxyProcess::start_tls(
            &env2,
            "[tls]\nsecret = \"mirror-tls\"\n",
            &upstream_toml(&env2, &up),
        )
    });
    let r = client
        .get(format!(
            "https://{}/v2/app/blobs/{}",
            proxy.addr, up.blob_digest
        ))
        .send()
        .await
        .expect("https");
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.expect("body").len(), 1000);
}

#[test]
fn sigterm_lets_requests_in_flight_finish() {
    let env = Env::new();
    let up = FaultServer::start((0..(12u32 << 20)).map(|i| (i % 253) as u8).collect());
    let proxy = ProxyProcess::start(&env, "", &upstream_toml(&env, &up));
    let addr = proxy.addr.clone();
    let path = format!("/v2/app/blobs/{}", up.blob_digest);
    // An idle keep-alive client must not hold up the shutdown.
    let idle = std::net::TcpStream::connect(&proxy.addr).expect("idle connection");
    let client = std::thread::spawn(move || stream_get(&addr, &path, &[]));
    // Wait until the download is under way (the upstream saw the GET), so it is in flight.
    eventually(Duration::from_secs(10), "the download to start", || {
        up.blob_gets.load(std::sync::atomic::Ordering::Relaxed) > 0
    });
    let pid = proxy.pid();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let got = client.join().expect("client").expect("stream");
    assert_eq!(
        (got.status, got.truncated, got.digest.as_str()),
        (200, false, up.blob_digest.as_str()),
        "in-flight download cut by SIGTERM"
    );
    // The process exits soon after the download, idle connection notwithstanding.
    eventually(
        Duration::from_secs(5),
        "the proxy to exit after SIGTERM",
        || {
            !std::path::Path::new(&format!("/proc/{pid}/status")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .unwrap_or_default()
                    .contains("State:\tZ")
        },
    );
    drop(idle);
    // New connections are refused once it has stopped.
    assert!(
        http_request("GET", &proxy.addr, "/v2/", &[], b"").is_err(),
        "still accepting after SIGTERM"
    );
    assert!(proxy.log().contains("shutting down"), "{}", proxy.log());
}

#[test]
fn json_logs_carry_request_ids_matching_the_response_header() {
    let mut env = Env::new();
    env.set("PULLSECRET_LOG_FORMAT", "json");
    env.set("RUST_LOG", "pullsecret=info");
    let up = FaultServer::start(vec![4u8; 100]);
    let proxy = ProxyProcess::start(&env, "", &upstream_toml(&env, &up));
    let r = http_request("GET", &proxy.addr, "/v2/", &[], b"").expect("v2");
    let id = r.header("x-request-id").expect("x-request-id").to_string();
    let json_lines = || -> Vec<serde_json::Value> {
        proxy
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let is_hit = |l: &serde_json::Value| {
        l["fields"]["request_id"]
            .as_u64()
            .map(|v| v.to_string())
            .as_deref()
            == Some(id.as_str())
            && l["fields"]["path"] == "/v2/"
    };
    // The access line is written as the response goes out; wait for it rather than a fixed time.
    let _ = try_eventually(Duration::from_secs(10), || json_lines().iter().any(is_hit));
    let lines = json_lines();
    assert!(!lines.is_empty(), "no JSON log lines: {}", proxy.log());
    let hit = lines.iter().find(|l| is_hit(l));
    assert!(hit.is_some(), "no JSON line for request {id}: {lines:?}");
}
