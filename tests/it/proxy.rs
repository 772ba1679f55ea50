//! The proxy with real clients (skopeo, oci-client, containerd's ctr) against a real
//! token-auth distribution registry upstream: credentials injected, single-flight fills,
//! stale serving, routing and the distribution API details.

use crate::support::http::http_request;
use crate::support::images::{push_image, push_index, ImageInfo};
use crate::support::proxy::{stream_get, ProxyProcess};
use crate::support::registry::{Registry, RegistryAuth};
use crate::support::skopeo::skopeo;
use crate::support::{
    eventually, require_bin, run_with_stdin, stderr, store_canary_secret, Env, Scenario, CANARY,
    CANARY_USER,
};

/// A token-auth upstream with a private repo only `puller` may read, plus the proxy holding
/// puller's secret in the store.
fn private_setup(env: &Env) -> Option<(Registry, ProxyProcess)> {
    let s = Scenario::token_registry(env, &[("puller", "pull-pw", "private/*")])?;
    Some(
        s.secret("upstream-cred", "puller", "pull-pw")
            .config("default_upstream = \"local\"")
            .upstream(
                "local",
                "secret = \"upstream-cred\"\naliases = [\"{addr}\", \"loc\"]",
            )
            .start(),
    )
}

#[test]
fn skopeo_pulls_a_private_image_through_the_proxy_without_client_credentials() {
    let env = Env::new();
    let Some((reg, proxy)) = private_setup(&env) else {
        return;
    };
    let layer = vec![7u8; 300_000];
    let img = push_image(
        reg.addr(),
        "private/app",
        "v1",
        Some(("pusher", "push-pw")),
        &[layer],
    );

    // Direct anonymous pull is refused by the upstream: the proxy is what makes it work.
    let dir = env.path("direct");
    let direct = skopeo(
        &env,
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{}/private/app:v1", reg.addr()),
            &format!("oci:{}:v1", dir.display()),
        ],
    );
    assert!(!direct.status.success());

    let dest = env.path("via-proxy");
    let out = skopeo(
        &env,
        &[
            "copy",
            "--preserve-digests",
            "--src-tls-verify=false",
            &format!("docker://{}/private/app:v1", proxy.addr),
            &format!("oci:{}:v1", dest.display()),
        ],
    );
    assert!(
        out.status.success(),
        "skopeo via proxy: {}\nproxy log:\n{}",
        stderr(&out),
        proxy.log()
    );
    for blob in img.layers.iter().chain(std::iter::once(&img.config)) {
        let hex = blob.digest.trim_start_matches("sha256:");
        let got = std::fs::read(dest.join("blobs/sha256").join(hex)).expect("blob in layout");
        assert_eq!(got, blob.data, "{}", blob.digest);
    }
    // The proxy's cache holds them as an OCI layout, and the upstream saw each blob once.
    assert!(proxy.cache.join("v1/oci-layout").exists());
    for d in img.layer_digests() {
        assert_eq!(reg.count_requests("GET", &format!("/blobs/{d}")), 1, "{d}");
    }
    // A second pull is served from the cache.
    let again = skopeo(
        &env,
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{}/private/app:v1", proxy.addr),
            &format!("oci:{}:v1", env.path("again").display()),
        ],
    );
    assert!(again.status.success());
    for d in img.layer_digests() {
        assert_eq!(
            reg.count_requests("GET", &format!("/blobs/{d}")),
            1,
            "{d} fetched twice"
        );
    }
}

/// `private_setup` plus `private/app:v2` (one 100,000-byte layer), for the API tests below.
fn api_setup(env: &Env) -> Option<(Registry, ProxyProcess, ImageInfo)> {
    let (reg, proxy) = private_setup(env)?;
    let layer: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let img = push_image(
        reg.addr(),
        "private/app",
        "v2",
        Some(("pusher", "push-pw")),
        &[layer],
    );
    Some((reg, proxy, img))
}

const ACCEPT_OCI_MANIFEST: [(&str, &str); 1] =
    [("Accept", "application/vnd.oci.image.manifest.v1+json")];

#[test]
fn api_base_answers_with_the_distribution_version() {
    let env = Env::new();
    let Some((_reg, proxy, _img)) = api_setup(&env) else {
        return;
    };
    let base = http_request("GET", &proxy.addr, "/v2/", &[], b"").expect("GET /v2/");
    assert_eq!(base.status, 200);
    assert_eq!(
        base.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
}

#[test]
fn api_manifest_by_tag_has_exact_bytes_type_and_digest_on_get_and_head() {
    let env = Env::new();
    let Some((_reg, proxy, img)) = api_setup(&env) else {
        return;
    };
    let accept = ACCEPT_OCI_MANIFEST;
    let m = http_request(
        "GET",
        &proxy.addr,
        "/v2/private/app/manifests/v2",
        &accept,
        b"",
    )
    .expect("manifest");
    assert_eq!(m.status, 200);
    assert_eq!(m.body, img.manifest);
    assert_eq!(
        m.header("docker-content-digest"),
        Some(img.manifest_digest.as_str())
    );
    assert_eq!(
        m.header("content-type"),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
    let h = http_request(
        "HEAD",
        &proxy.addr,
        "/v2/private/app/manifests/v2",
        &accept,
        b"",
    )
    .expect("head");
    assert_eq!(h.status, 200);
    assert_eq!(
        h.header("content-length"),
        Some(img.manifest.len().to_string().as_str())
    );
    assert_eq!(
        h.header("docker-content-digest"),
        Some(img.manifest_digest.as_str())
    );
}

#[test]
fn api_head_on_an_uncached_blob_answers_its_size() {
    let env = Env::new();
    let Some((_reg, proxy, img)) = api_setup(&env) else {
        return;
    };
    let blob = &img.layers[0];
    // HEAD on an uncached blob answers 200 with its size (chained caches rely on it).
    let hb = http_request(
        "HEAD",
        &proxy.addr,
        &format!("/v2/private/app/blobs/{}", blob.digest),
        &[],
        b"",
    )
    .expect("head blob");
    assert_eq!(hb.status, 200);
    assert_eq!(
        hb.header("content-length"),
        Some(blob.size.to_string().as_str())
    );
}

#[test]
fn api_range_on_a_cold_blob_answers_206_and_416() {
    let env = Env::new();
    let Some((_reg, proxy, img)) = api_setup(&env) else {
        return;
    };
    let blob = &img.layers[0];
    // Range → 206 (cold: served from the filling blob) and 416.
    let r = http_request(
        "GET",
        &proxy.addr,
        &format!("/v2/private/app/blobs/{}", blob.digest),
        &[("Range", "bytes=10-19")],
        b"",
    )
    .expect("range");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, blob.data[10..20]);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 10-19/{}", blob.size).as_str())
    );
    let r = http_request(
        "GET",
        &proxy.addr,
        &format!("/v2/private/app/blobs/{}", blob.digest),
        &[("Range", "bytes=-5")],
        b"",
    )
    .expect("suffix");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, blob.data[blob.data.len() - 5..]);
    let r = http_request(
        "GET",
        &proxy.addr,
        &format!("/v2/private/app/blobs/{}", blob.digest),
        &[("Range", &format!("bytes={}-", blob.size))],
        b"",
    )
    .expect("416");
    assert_eq!(r.status, 416);
}

#[test]
fn api_warm_plain_get_goes_out_through_sendfile_with_the_same_headers_and_bytes() {
    let env = Env::new();
    let Some((reg, proxy, img)) = api_setup(&env) else {
        return;
    };
    let blob = &img.layers[0];
    // Warmed as in a pull: a Range GET (hyper's path) fills the cache.
    let r = http_request(
        "GET",
        &proxy.addr,
        &format!("/v2/private/app/blobs/{}", blob.digest),
        &[("Range", "bytes=10-19")],
        b"",
    )
    .expect("range");
    assert_eq!(r.status, 206);
    proxy.wait_cached(&blob.digest);
    // A warm plain GET goes out through sendfile with the same headers and bytes.
    let warm = http_request(
        "GET",
        &proxy.addr,
        &format!("/v2/private/app/blobs/{}?ns={}", blob.digest, reg.addr()),
        &[],
        b"",
    )
    .expect("warm");
    assert_eq!(warm.status, 200);
    assert_eq!(warm.body, blob.data);
    assert_eq!(
        warm.header("docker-content-digest"),
        Some(blob.digest.as_str())
    );
    assert_eq!(
        warm.header("content-length"),
        Some(blob.size.to_string().as_str())
    );
    assert_eq!(warm.header("oci-namespace"), Some(reg.addr()));
    assert!(
        proxy.log().contains("sendfile=true"),
        "the warm blob did not take the sendfile path"
    );
}

#[test]
fn api_routing_by_ns_and_alias_reaches_the_same_upstream() {
    let env = Env::new();
    let Some((reg, proxy, img)) = api_setup(&env) else {
        return;
    };
    let blob = &img.layers[0];
    let accept = ACCEPT_OCI_MANIFEST;
    // Routing: ?ns= (echoed in OCI-Namespace) and an alias prefix reach the same upstream.
    let ns = http_request(
        "GET",
        &proxy.addr,
        &format!(
            "/v2/private/app/manifests/{}?ns={}",
            img.manifest_digest,
            reg.addr()
        ),
        &accept,
        b"",
    )
    .expect("ns");
    assert_eq!(ns.status, 200);
    assert_eq!(ns.header("oci-namespace"), Some(reg.addr()));
    let alias = http_request(
        "GET",
        &proxy.addr,
        &format!("/v2/loc/private/app/blobs/{}", blob.digest),
        &[],
        b"",
    )
    .expect("alias");
    assert_eq!(alias.status, 200);
    assert_eq!(alias.body, blob.data);
    let unknown_ns = http_request(
        "GET",
        &proxy.addr,
        "/v2/private/app/manifests/v2?ns=quay.io",
        &accept,
        b"",
    )
    .expect("ns");
    assert_eq!(unknown_ns.status, 404);
}

#[test]
fn api_errors_are_oci_json_and_pushes_are_refused() {
    let env = Env::new();
    let Some((_reg, proxy, _img)) = api_setup(&env) else {
        return;
    };
    let accept = ACCEPT_OCI_MANIFEST;
    // Errors: OCI JSON with the right codes; pushes refused.
    let missing = http_request(
        "GET",
        &proxy.addr,
        "/v2/private/app/manifests/nope",
        &accept,
        b"",
    )
    .expect("missing");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["errors"][0]["code"], "MANIFEST_UNKNOWN");
    let push = http_request(
        "POST",
        &proxy.addr,
        "/v2/private/app/blobs/uploads/",
        &[],
        b"",
    )
    .expect("push");
    assert_eq!(push.status, 405);
    assert_eq!(push.json()["errors"][0]["code"], "UNSUPPORTED");
    let bad = http_request(
        "GET",
        &proxy.addr,
        "/v2/private/app/blobs/sha256:..%2f..%2fetc",
        &[],
        b"",
    )
    .expect("bad");
    assert!(bad.status == 400 || bad.status == 404, "{}", bad.status);
}

#[test]
fn twenty_concurrent_clients_one_upstream_fetch() {
    let env = Env::new();
    let Some((reg, proxy)) = private_setup(&env) else {
        return;
    };
    // 64 MiB of incompressible-ish bytes.
    let mut layer = vec![0u8; 64 << 20];
    let mut x: u64 = 0x2545F4914F6CDD1D;
    for chunk in layer.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let img = push_image(
        reg.addr(),
        "private/big",
        "v1",
        Some(("pusher", "push-pw")),
        &[layer],
    );
    let digest = img.layers[0].digest.clone();
    let path = format!("/v2/private/big/blobs/{digest}");
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|_| s.spawn(|| stream_get(&proxy.addr, &path, &[])))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    for r in &results {
        let r = r.as_ref().expect("stream");
        assert_eq!(r.status, 200);
        assert_eq!(r.received, img.layers[0].size, "{r:?}");
        assert_eq!(r.digest, digest);
    }
    // One fill: its parts (a 64 MiB blob comes over up to 4 connections) fetch every byte once.
    let gets = reg.count_requests("GET", &format!("/blobs/{digest}"));
    assert!(
        (1..=4).contains(&gets),
        "{gets} upstream GETs; access log:\n{}",
        reg.access_log()
    );
    proxy.wait_fills_done();
    // Every byte came once; the first connection may read a little past its part before the
    // proxy drops it (socket buffers), never a second copy of the blob.
    let fetched = crate::support::metric(&proxy.addr, "pullsecret_proxy_upstream_bytes_total")
        .map_or(0, |v| v as u64);
    let size = img.layers[0].size;
    assert!(
        (size..size + (4 << 20)).contains(&fetched),
        "{fetched} upstream bytes for one {size}-byte blob"
    );
}

#[test]
fn stale_tag_served_when_upstream_is_down_and_404_passes_through() {
    let env = Env::new();
    let Some(mut reg) = Registry::start(RegistryAuth::Anonymous) else {
        return;
    };
    let img = push_image(reg.addr(), "lib/app", "v1", None, &[b"stale-me".to_vec()]);
    // The layer must stay uncached after the manifest GET: no prefetch here.
    let proxy = ProxyProcess::start(
        &env,
        "[prefetch]\nenabled = false\n",
        &crate::support::proxy::plain_upstream("up", reg.addr(), "tag_ttl = \"0s\"\n"),
    );
    let accept = [("Accept", "application/vnd.oci.image.manifest.v1+json")];
    let first =
        http_request("GET", &proxy.addr, "/v2/lib/app/manifests/v1", &accept, b"").expect("get");
    assert_eq!(first.status, 200);
    // TTL 0: each tag request revalidates with HEAD; the manifest was fetched once.
    let second =
        http_request("GET", &proxy.addr, "/v2/lib/app/manifests/v1", &accept, b"").expect("get");
    assert_eq!(second.body, img.manifest);
    assert_eq!(reg.count_requests("GET", "/manifests/v1"), 1);
    assert!(reg.count_requests("HEAD", "/manifests/v1") >= 1);

    reg.stop();
    let stale =
        http_request("GET", &proxy.addr, "/v2/lib/app/manifests/v1", &accept, b"").expect("stale");
    assert_eq!(stale.status, 200, "{}", stale.text());
    assert_eq!(stale.body, img.manifest);
    let blob = http_request(
        "GET",
        &proxy.addr,
        &format!("/v2/lib/app/blobs/{}", img.config.digest),
        &[],
        b"",
    )
    .expect("blob");
    assert_eq!(
        blob.status, 502,
        "uncached blob with upstream down is an error"
    );
    assert!(proxy.log().contains("serving the cached tag (stale)"));
    reg.restart();
    let missing = http_request(
        "GET",
        &proxy.addr,
        "/v2/lib/app/manifests/nope",
        &accept,
        b"",
    )
    .expect("404");
    assert_eq!(missing.status, 404);
}

#[test]
fn multi_arch_index_through_the_proxy() {
    let env = Env::new();
    let Some(reg) = Registry::start(RegistryAuth::Anonymous) else {
        return;
    };
    let idx = push_index(
        reg.addr(),
        "multi/app",
        "v1",
        None,
        &[b"arch-layer".to_vec()],
    );
    let proxy = ProxyProcess::start(
        &env,
        "",
        &crate::support::proxy::plain_upstream("up", reg.addr(), ""),
    );
    let m = http_request(
        "GET",
        &proxy.addr,
        "/v2/multi/app/manifests/v1",
        &[("Accept", "application/vnd.oci.image.index.v1+json")],
        b"",
    )
    .expect("index");
    assert_eq!(m.status, 200);
    assert_eq!(m.body, idx.index);
    assert_eq!(
        m.header("content-type"),
        Some("application/vnd.oci.image.index.v1+json")
    );
    let arm = idx.platform("linux/arm64/v8");
    let dest = env.path("arm");
    let out = skopeo(
        &env,
        &[
            "--override-arch",
            "arm64",
            "--override-variant",
            "v8",
            "copy",
            "--preserve-digests",
            "--src-tls-verify=false",
            &format!("docker://{}/multi/app:v1", proxy.addr),
            &format!("oci:{}:v1", dest.display()),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let got = std::fs::read(
        dest.join("blobs/sha256")
            .join(arm.layers[0].digest.trim_start_matches("sha256:")),
    )
    .expect("arm64 layer");
    assert_eq!(got, arm.layers[0].data);
    let amd = idx.platform("linux/amd64");
    assert_eq!(
        reg.count_requests("GET", &format!("/blobs/{}", amd.layers[0].digest)),
        0
    );
}

#[test]
fn containerd_ctr_pulls_through_the_proxy_with_ns() {
    let Some(containerd) = require_bin("containerd", "apt-get install containerd") else {
        return;
    };
    let Some(ctr) = require_bin("ctr", "apt-get install containerd") else {
        return;
    };
    let env = Env::new();
    let Some((reg, proxy)) = private_setup(&env) else {
        return;
    };
    let img = push_image(
        reg.addr(),
        "private/ctr",
        "v1",
        Some(("pusher", "push-pw")),
        &[b"containerd-layer".to_vec()],
    );

    let root = env.path("containerd");
    let sock = root.join("c.sock");
    std::fs::create_dir_all(&root).expect("mkdir");
    std::fs::write(
        root.join("config.toml"),
        "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
    )
    .expect("config");
    let mut daemon = std::process::Command::new(&containerd)
        .args([
            "--config",
            &root.join("config.toml").display().to_string(),
            "--root",
            &root.join("root").display().to_string(),
            "--state",
            &root.join("state").display().to_string(),
            "--address",
            &sock.display().to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(root.join("containerd.log")).expect("log"))
        .spawn()
        .expect("containerd");
    eventually(
        std::time::Duration::from_secs(20),
        "containerd to start",
        || sock.exists(),
    );
    let hosts = env.path("hosts");
    std::fs::create_dir_all(hosts.join(reg.addr())).expect("hosts dir");
    std::fs::write(
        hosts.join(reg.addr()).join("hosts.toml"),
        format!("server = \"http://{}\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n", reg.addr(), proxy.addr),
    )
    .expect("hosts.toml");
    let out = std::process::Command::new(&ctr)
        .args([
            "--address",
            &sock.display().to_string(),
            "images",
            "pull",
            "--hosts-dir",
            &hosts.display().to_string(),
            &format!("{}/private/ctr:v1", reg.addr()),
        ])
        .output()
        .expect("ctr");
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(
        out.status.success(),
        "ctr pull failed: {}{}\nproxy log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out),
        proxy.log()
    );
    // Every request reached the proxy with ?ns=, and the upstream served the layer once.
    assert!(
        proxy
            .log()
            .contains(&format!("ns={}", reg.addr().replace(':', "%3A"))),
        "no ?ns= in the proxy log:\n{}",
        proxy.log()
    );
    assert_eq!(
        reg.count_requests("GET", &format!("/blobs/{}", img.layers[0].digest)),
        1
    );
    // containerd never talked to the upstream itself: it has no credentials for it.
    assert_eq!(reg.count_requests("GET", "/v2/private/ctr/manifests/v1"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_client_pulls_through_the_proxy() {
    use oci_client::client::{ClientConfig, ClientProtocol};
    use oci_client::secrets::RegistryAuth as OciAuth;
    let env = Env::new();
    let Some((reg, proxy)) = tokio::task::block_in_place(|| private_setup(&env)) else {
        return;
    };
    let layer = b"oci-client layer bytes".to_vec();
    let img = tokio::task::block_in_place(|| {
        push_image(
            reg.addr(),
            "private/oci",
            "v1",
            Some(("pusher", "push-pw")),
            &[layer],
        )
    });
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });
    let reference: oci_client::Reference = format!("{}/private/oci:v1", proxy.addr)
        .parse()
        .expect("reference");
    let image = client
        .pull(
            &reference,
            &OciAuth::Anonymous,
            vec![oci_client::manifest::IMAGE_LAYER_MEDIA_TYPE],
        )
        .await
        .expect("oci-client pull through the proxy");
    assert_eq!(image.layers.len(), 1);
    assert_eq!(image.layers[0].data, img.layers[0].data);
    assert_eq!(image.digest.as_deref(), Some(img.manifest_digest.as_str()));
}

fn canary_htpasswd() -> RegistryAuth {
    RegistryAuth::Htpasswd {
        users: vec![(CANARY_USER.to_string(), CANARY.to_string())],
    }
}

/// An upstream for `reg` whose credentials are the canary secret.
fn canary_upstream(env: &Env, reg: &Registry) -> String {
    store_canary_secret(env, "canary", reg.addr());
    crate::support::proxy::plain_upstream("up", reg.addr(), "secret = \"canary\"\n")
}

/// The registry's own copy of a blob, to corrupt it behind its back.
fn registry_blob_file(reg: &Registry, digest: &str) -> std::path::PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    reg.storage_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

#[test]
fn wrong_bytes_from_upstream_never_look_complete_and_never_enter_the_cache() {
    let env = Env::new();
    // The registry demands the canary password, so the proxy carries it through the fault.
    let Some(reg) = Registry::start(canary_htpasswd()) else {
        return;
    };
    let layer = vec![42u8; 2 << 20];
    let img = push_image(
        reg.addr(),
        "lib/corrupt",
        "v1",
        Some((CANARY_USER, CANARY)),
        &[layer],
    );
    let blob = &img.layers[0];
    let file = registry_blob_file(&reg, &blob.digest);
    let good = std::fs::read(&file).expect("registry blob");
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    std::fs::write(&file, &bad).expect("corrupt");

    let proxy = ProxyProcess::start(&env, "", &canary_upstream(&env, &reg));
    let path = format!("/v2/lib/corrupt/blobs/{}", blob.digest);
    let got = stream_get(&proxy.addr, &path, &[]).expect("get");
    assert!(
        got.status != 200 || got.truncated,
        "a corrupt blob was served as complete: {got:?}"
    );
    assert_ne!(got.digest, blob.digest);
    let cached = proxy
        .cache
        .join("v1/blobs/sha256")
        .join(blob.digest.trim_start_matches("sha256:"));
    assert!(!cached.exists(), "corrupt bytes entered the cache");
    assert!(
        proxy.tmp_files().is_empty(),
        "temp file left: {:?}",
        proxy.tmp_files()
    );
    // Other requests are still served, and the next request after the fault clears succeeds.
    assert_eq!(
        http_request("GET", &proxy.addr, "/v2/", &[], b"")
            .expect("v2")
            .status,
        200
    );
    std::fs::write(&file, &good).expect("repair");
    let ok = stream_get(&proxy.addr, &path, &[]).expect("get");
    assert_eq!(
        (ok.status, ok.digest.as_str(), ok.truncated),
        (200, blob.digest.as_str(), false)
    );
    assert_eq!(ok.content_length, Some(blob.size));
    proxy.wait_cached(&blob.digest);
}

#[test]
fn kill_during_fill_leaves_nothing_that_is_ever_served() {
    let env = Env::new();
    // The registry demands the canary password, so the proxy carries it through the fault.
    let Some(reg) = Registry::start(canary_htpasswd()) else {
        return;
    };
    let mut layer = vec![0u8; 96 << 20];
    for (i, b) in layer.iter_mut().enumerate() {
        *b = (i * 31 % 251) as u8;
    }
    let img = push_image(
        reg.addr(),
        "lib/killme",
        "v1",
        Some((CANARY_USER, CANARY)),
        &[layer],
    );
    let blob = &img.layers[0];
    let mut proxy = ProxyProcess::start(&env, "", &canary_upstream(&env, &reg));
    let path = format!("/v2/lib/killme/blobs/{}", blob.digest);

    // Start a fill, read its first bytes, then kill -9 the proxy mid-download.
    let mut s = std::net::TcpStream::connect(&proxy.addr).expect("connect");
    use std::io::{Read, Write};
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .expect("send");
    let mut first = vec![0u8; 64 * 1024];
    s.read_exact(&mut first)
        .expect("first bytes arrive while filling");
    proxy.kill9();
    let leftovers = proxy.tmp_files();
    let cached = proxy
        .cache
        .join("v1/blobs/sha256")
        .join(blob.digest.trim_start_matches("sha256:"));

    proxy.restart(&env);
    assert!(
        proxy.tmp_files().is_empty(),
        "temp files survived a restart: {:?}",
        proxy.tmp_files()
    );
    assert!(
        !leftovers.is_empty(),
        "the fill finished before the kill; nothing was tested mid-fill"
    );
    assert!(
        !cached.exists(),
        "a partial blob was promoted into the cache"
    );
    let got = stream_get(&proxy.addr, &path, &[]).expect("get after restart");
    assert_eq!(
        (got.status, got.digest.as_str(), got.received),
        (200, blob.digest.as_str(), blob.size)
    );
}

#[test]
fn identity_tokens_use_the_refresh_token_grant_and_oauth2_style_posts_passwords() {
    let env = Env::new();
    let Some(s) = Scenario::token_registry(&env, &[("puller", "pull-pw", "private/*")]) else {
        return;
    };
    let img = s.push("private/idtok", "v1", &[b"idtok".to_vec()]);
    let token_addr = s.registry().issuer().expect("issuer").addr().to_string();
    // A refresh token, as `docker login` to an OAuth2 registry would have stored it.
    let r = http_request("POST", &token_addr, "/token", &[("Content-Type", "application/x-www-form-urlencoded")], b"grant_type=password&username=puller&password=pull-pw&service=pullsecret-test-registry&client_id=test").expect("token");
    let refresh = r.json()["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_string();
    let (reg, proxy) = s
        .secret("idtok", "<token>", &refresh)
        .upstream("up", "secret = \"idtok\"")
        .start();
    reg.issuer().expect("issuer").clear_requests();
    let m = http_request(
        "GET",
        &proxy.addr,
        "/v2/private/idtok/manifests/v1",
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        b"",
    )
    .expect("manifest");
    assert_eq!(m.status, 200, "{}", m.text());
    assert_eq!(m.body, img.manifest);
    let grants: Vec<_> = reg
        .issuer()
        .expect("issuer")
        .requests()
        .iter()
        .map(|t| (t.method.clone(), t.grant_type.clone()))
        .collect();
    assert!(
        grants
            .iter()
            .all(|(m, g)| m == "POST" && g.as_deref() == Some("refresh_token")),
        "{grants:?}"
    );
    assert!(!grants.is_empty());
    drop(proxy);

    // token_style = "oauth2": the password goes in a POST form, as containerd sends it.
    let env = Env::new();
    let create = env.pullsecret(&[
        "secret",
        "create",
        "docker-registry",
        "pw",
        "--docker-server",
        reg.addr(),
        "--docker-username",
        "puller",
        "--docker-password-stdin",
    ]);
    assert!(run_with_stdin(create, b"pull-pw").status.success());
    let proxy = ProxyProcess::start(
        &env,
        "",
        &crate::support::proxy::plain_upstream(
            "up",
            reg.addr(),
            "secret = \"pw\"\ntoken_style = \"oauth2\"\n",
        ),
    );
    reg.issuer().expect("issuer").clear_requests();
    let m = http_request(
        "GET",
        &proxy.addr,
        &format!("/v2/private/idtok/blobs/{}", img.layers[0].digest),
        &[],
        b"",
    )
    .expect("blob");
    assert_eq!(m.status, 200);
    let grants: Vec<_> = reg
        .issuer()
        .expect("issuer")
        .requests()
        .iter()
        .map(|t| (t.method.clone(), t.grant_type.clone()))
        .collect();
    assert!(
        grants
            .iter()
            .any(|(m, g)| m == "POST" && g.as_deref() == Some("password")),
        "{grants:?}"
    );
}
