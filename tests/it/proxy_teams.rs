//! The proxy shared by teams: client auth and its token endpoint, scopes, no cross-namespace
//! leaks, hot secrets, metrics, eviction and warm-up, against a real token-auth registry.

use crate::support::http::{basic_auth, http_request};
use crate::support::images::push_image;
use crate::support::proxy::ProxyProcess;
use crate::support::registry::{Registry, RegistryAuth};
use crate::support::skopeo::skopeo;
use crate::support::{
    add_proxy_client, eventually, stderr, stdout, store_scoped_secret, Env, Scenario,
};

const TEN_SECONDS: std::time::Duration = std::time::Duration::from_secs(10);
const OCI: (&str, &str) = ("Accept", "application/vnd.oci.image.manifest.v1+json");

/// A token registry where alice and bob may pull `team-a/*` and carol only `other/*`.
fn team_registry(env: &Env) -> Option<Scenario<'_>> {
    Scenario::token_registry(
        env,
        &[
            ("alice", "alice-pw", "team-a/*"),
            ("bob", "bob-pw", "team-a/*"),
            ("carol", "carol-pw", "other/*"),
        ],
    )
}

/// A token from the proxy's own endpoint (docker style GET, optional Basic).
fn proxy_token(proxy: &ProxyProcess, creds: Option<(&str, &str)>) -> String {
    let v = crate::support::proxy::token_answer(&proxy.addr, creds, "team-a/app");
    for k in ["token", "access_token", "expires_in", "issued_at"] {
        assert!(!v[k].is_null(), "token response lacks {k}: {v}");
    }
    v["token"].as_str().unwrap_or_default().to_string()
}

fn get(proxy: &ProxyProcess, path: &str, token: &str) -> crate::support::http::HttpResponse {
    let bearer = format!("Bearer {token}");
    http_request(
        "GET",
        &proxy.addr,
        path,
        &[OCI, ("Authorization", &bearer)],
        b"",
    )
    .expect("request")
}

#[test]
fn no_cross_namespace_leaks() {
    let env = Env::new();
    let Some(s) = team_registry(&env) else {
        return;
    };
    let img = s.push("team-a/app", "v1", &[vec![1u8; 200_000]]);
    let (reg, proxy) = s
        .scoped_secret("team-a", "reg", ("alice", "alice-pw"), "namespace")
        .client("a-client", "team-a", "a-pw")
        .client("b-client", "team-b", "b-pw")
        .config("[auth]\nenabled = true")
        .start();

    // /v2/ challenges unauthenticated clients with the proxy's own token realm.
    let base = http_request("GET", &proxy.addr, "/v2/", &[], b"").expect("v2");
    assert_eq!(base.status, 401);
    assert!(
        base.header("www-authenticate")
            .unwrap_or_default()
            .contains("/token"),
        "{:?}",
        base.headers
    );

    // Team A pulls with skopeo, logging in to the proxy like `docker login`.
    let dest = env.path("a");
    let out = skopeo(
        &env,
        &[
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            "a-client:a-pw",
            &format!("docker://{}/team-a/app:v1", proxy.addr),
            &format!("oci:{}:v1", dest.display()),
        ],
    );
    assert!(
        out.status.success(),
        "team A pull: {}\n{}",
        stderr(&out),
        proxy.log()
    );
    let layer = &img.layers[0].digest;
    let blob_path = format!("/v2/team-a/app/blobs/{layer}");
    let manifest_path = format!("/v2/team-a/app/manifests/{}", img.manifest_digest);
    assert_eq!(reg.count_requests("GET", &format!("/blobs/{layer}")), 1);

    // Team B has no secret for it: the cached manifest and blob are refused.
    let b = proxy_token(&proxy, Some(("b-client", "b-pw")));
    assert_eq!(get(&proxy, &manifest_path, &b).status, 401);
    assert_eq!(get(&proxy, &blob_path, &b).status, 401);
    assert_eq!(get(&proxy, "/v2/team-a/app/manifests/v1", &b).status, 401);
    // Anonymous neither.
    let anon = proxy_token(&proxy, None);
    assert_eq!(get(&proxy, &manifest_path, &anon).status, 401);
    assert_eq!(get(&proxy, &blob_path, &anon).status, 401);
    // A wrong password gets no token at all.
    let wrong = http_request(
        "GET",
        &proxy.addr,
        "/token?service=pullsecret",
        &[("Authorization", &basic_auth("b-client", "nope"))],
        b"",
    )
    .expect("token");
    assert_eq!(wrong.status, 401);

    // Team B with its own valid secret: served from the cache, no second upstream blob GET.
    store_scoped_secret(
        &env,
        "team-b",
        "reg",
        reg.addr(),
        ("bob", "bob-pw"),
        "namespace",
    );
    let r = get(&proxy, &blob_path, &b);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, img.layers[0].data);
    assert_eq!(get(&proxy, &manifest_path, &b).body, img.manifest);
    assert_eq!(
        reg.count_requests("GET", &format!("/blobs/{layer}")),
        1,
        "team B's pull went upstream"
    );
    assert!(
        reg.count_requests("HEAD", &format!("/blobs/{layer}")) >= 1,
        "team B's right was not confirmed upstream"
    );

    // A secret with the wrong repository rights (carol) does not open team A's content either.
    add_proxy_client(&env, "c-client", "team-c", "c-pw");
    store_scoped_secret(
        &env,
        "team-c",
        "reg",
        reg.addr(),
        ("carol", "carol-pw"),
        "namespace",
    );
    let c = proxy_token(&proxy, Some(("c-client", "c-pw")));
    assert_eq!(get(&proxy, &blob_path, &c).status, 401);
}

#[test]
fn token_endpoint_speaks_docker_and_oauth2() {
    let env = Env::new();
    let Some(s) = team_registry(&env) else {
        return;
    };
    let (_reg, proxy) = s
        .client("ci", "team-a", "ci-pw")
        .config("[auth]\nenabled = true\ntoken_ttl = \"2m\"")
        .start();
    let t = proxy_token(&proxy, Some(("ci", "ci-pw")));
    assert_eq!(get(&proxy, "/v2/", &t).status, 200);
    let form = "grant_type=password&username=ci&password=ci-pw&service=pullsecret&scope=repository%3Ateam-a%2Fapp%3Apull&client_id=containerd";
    let r = http_request(
        "POST",
        &proxy.addr,
        "/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )
    .expect("post");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["expires_in"], 120);
    let refresh = v["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_string();
    let r = http_request(
        "POST",
        &proxy.addr,
        "/token",
        &[],
        format!("grant_type=refresh_token&refresh_token={refresh}&service=pullsecret").as_bytes(),
    )
    .expect("refresh");
    assert_eq!(r.status, 200);
    assert_eq!(
        get(
            &proxy,
            "/v2/",
            r.json()["access_token"].as_str().unwrap_or_default()
        )
        .status,
        200
    );
    let bad = http_request(
        "POST",
        &proxy.addr,
        "/token",
        &[],
        b"grant_type=password&username=ci&password=wrong",
    )
    .expect("bad");
    assert_eq!(bad.status, 401);
    assert_eq!(get(&proxy, "/v2/", "forged.token.value").status, 401);
}

#[test]
fn hot_secrets_apply_without_restart() {
    let env = Env::new();
    let Some(s) = team_registry(&env) else {
        return;
    };
    let img = s.push("team-a/hot", "v1", &[b"hot".to_vec()]);
    // Blobs stay uncached after a manifest GET here (no prefetch): each GET asks for credentials.
    let (reg, proxy) = s
        .config("[prefetch]\nenabled = false")
        .upstream("up", "secret = \"later\"")
        .start();
    let path = "/v2/team-a/hot/manifests/v1";
    let r = http_request("GET", &proxy.addr, path, &[OCI], b"").expect("get");
    assert_eq!(r.status, 401);
    // The client learns only that credentials are missing; which secret is for the log.
    assert!(
        !r.text().contains("later") && !r.text().contains("default"),
        "{}",
        r.text()
    );
    let logged = |needle: &str| {
        let log = proxy.log();
        if log.contains(needle) {
            Ok(())
        } else {
            Err(log)
        }
    };
    eventually(TEN_SECONDS, "the missing secret in the log", || {
        logged("default/later does not exist")
    });
    // Logged by the proxy's background watch, not by the request: give it a moment.
    eventually(TEN_SECONDS, "the watch's notice in the log", || {
        logged("secret does not exist yet")
    });

    store_scoped_secret(
        &env,
        "default",
        "later",
        reg.addr(),
        ("alice", "alice-pw"),
        "namespace",
    );
    let r = http_request("GET", &proxy.addr, path, &[OCI], b"").expect("get");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, img.manifest);

    // Rotated to a bad password: the next pull that reaches the upstream fails.
    store_scoped_secret(
        &env,
        "default",
        "later",
        reg.addr(),
        ("alice", "rotated-wrong"),
        "namespace",
    );
    let r = http_request(
        "GET",
        &proxy.addr,
        &format!("/v2/team-a/hot/blobs/{}", img.layers[0].digest),
        &[],
        b"",
    )
    .expect("get");
    assert_eq!(r.status, 401, "{}", r.text());
    // Deleted: a clear error again.
    assert!(env
        .pullsecret(&["secret", "delete", "later"])
        .output()
        .expect("delete")
        .status
        .success());
    let r = http_request(
        "GET",
        &proxy.addr,
        &format!("/v2/team-a/hot/blobs/{}", img.config.digest),
        &[],
        b"",
    )
    .expect("get");
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(
        r.text().contains("no usable credentials") && !r.text().contains("later"),
        "{}",
        r.text()
    );
}

#[test]
fn global_private_secrets_warm_but_never_serve_clients() {
    let env = Env::new();
    let Some(s) = team_registry(&env) else {
        return;
    };
    let img = s.push("team-a/warm", "v1", &[vec![9u8; 50_000], vec![8u8; 60_000]]);
    let (reg, proxy) = s
        .scoped_secret("ops", "prefetch", ("alice", "alice-pw"), "global-private")
        .upstream("up", "aliases = [\"{addr}\"]")
        .start();
    // A client pull cannot use the global-private secret.
    let r = http_request(
        "GET",
        &proxy.addr,
        "/v2/team-a/warm/manifests/v1",
        &[OCI],
        b"",
    )
    .expect("get");
    assert_eq!(r.status, 401, "{}", r.text());

    let out = env
        .pullsecret(&[
            "proxy",
            "--config",
            env.path("proxy.toml").to_str().unwrap_or_default(),
            "warm",
            &format!("{}/team-a/warm:v1", reg.addr()),
        ])
        .output()
        .expect("warm");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("warmed 1 manifests, 3 blobs"),
        "{}",
        stdout(&out)
    );
    for d in img.layer_digests() {
        assert!(proxy
            .cache
            .join("v1/blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
            .exists());
    }
    // Warmed content is still not handed to a client without its own right to it.
    let r = http_request(
        "GET",
        &proxy.addr,
        &format!("/v2/team-a/warm/blobs/{}", img.layers[0].digest),
        &[],
        b"",
    )
    .expect("get");
    assert_eq!(r.status, 401);
}

#[test]
fn metrics_eviction_gc_and_status() {
    let env = Env::new();
    let Some(reg) = Registry::start(RegistryAuth::Anonymous) else {
        return;
    };
    let layers: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 1 << 20]).collect();
    let img = push_image(reg.addr(), "lib/evict", "v1", None, &layers);
    let one = img.layers[0].size;
    let limit = 3 * one + 100;
    let proxy = ProxyProcess::start(
        &env,
        &format!("[cache]\nmax_size = \"{limit}\"\n"),
        &crate::support::proxy::plain_upstream("up", reg.addr(), ""),
    );
    let blobs_dir = proxy.cache.join("v1/blobs/sha256");
    let size = |d: &std::path::Path| -> u64 {
        std::fs::read_dir(d)
            .map(|e| {
                e.flatten()
                    .filter_map(|f| f.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    };
    let mut sizes = Vec::new();
    for d in img.layer_digests() {
        let r = http_request(
            "GET",
            &proxy.addr,
            &format!("/v2/lib/evict/blobs/{d}"),
            &[],
            b"",
        )
        .expect("blob");
        assert_eq!(r.status, 200);
        proxy.wait_cached(&d);
        // Eviction runs once the new blob is accounted for, before its fill leaves the table.
        proxy.wait_fills_done();
        sizes.push(size(&blobs_dir));
    }
    eprintln!("cache sizes after each {one}-byte blob with max_size {limit}: {sizes:?}");
    assert!(sizes.iter().all(|s| *s <= limit), "{sizes:?}");
    assert_eq!(sizes, [one, 2 * one, 3 * one, 3 * one, 3 * one]);
    // The most recent blob survived; the first was evicted.
    let last = img.layer_digests().pop().unwrap_or_default();
    assert!(blobs_dir.join(last.trim_start_matches("sha256:")).exists());
    let first = &img.layer_digests()[0];
    assert!(!blobs_dir.join(first.trim_start_matches("sha256:")).exists());

    let m = http_request("GET", &proxy.addr, "/metrics", &[], b"")
        .expect("metrics")
        .text();
    eprintln!("/metrics sample:\n{m}");
    for needle in [
        "pullsecret_proxy_requests_total{route=\"blob\",status=\"200\"} 5",
        "pullsecret_proxy_cache_misses_total{kind=\"blob\"} 5",
        "pullsecret_proxy_evictions_total 2",
        "pullsecret_proxy_fills_in_flight 0",
    ] {
        assert!(m.contains(needle), "missing {needle}");
    }
    let config = env.path("proxy.toml");
    let st = env
        .pullsecret(&[
            "proxy",
            "--config",
            config.to_str().unwrap_or_default(),
            "status",
        ])
        .output()
        .expect("status");
    assert!(
        stdout(&st).contains(&format!("{} bytes", 3 * one)),
        "{}",
        stdout(&st)
    );
    assert!(
        m.contains(&format!(
            "pullsecret_proxy_upstream_bytes_total{{upstream=\"up\"}} {}",
            5 * one
        )),
        "upstream bytes"
    );
    assert!(stdout(&st).contains("hit ratio"), "{}", stdout(&st));
    let gc = env
        .pullsecret(&[
            "proxy",
            "--config",
            config.to_str().unwrap_or_default(),
            "gc",
            "--max-size",
            &one.to_string(),
        ])
        .output()
        .expect("gc");
    assert!(gc.status.success(), "{}", stderr(&gc));
    eprintln!("gc: {}", stdout(&gc));
    assert!(
        stdout(&gc).contains(&format!(
            "{} bytes in 3 blobs before, {one} bytes in 1 blobs after",
            3 * one
        )),
        "{}",
        stdout(&gc)
    );
}

/// A Kubernetes Secret holding two registries is imported as one secret; the upstream the
/// config names it for is its SECOND registry, so the proxy pulls with that registry's
/// credentials (alice), never the primary's (carol, who may not pull `team-a/*`).
#[test]
fn a_named_secret_answers_with_the_registry_matching_the_upstream() {
    let env = Env::new();
    let Some(s) = team_registry(&env) else {
        return;
    };
    let img = s.push("team-a/multi", "v1", &[b"multi".to_vec()]);
    let payload = format!(
        r#"{{"auths":{{"10.255.255.1:5000":{{"username":"carol","password":"carol-pw"}},"{}":{{"username":"alice","password":"alice-pw"}}}}}}"#,
        s.registry().addr()
    );
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "multi"},
        "type": "kubernetes.io/dockerconfigjson", "stringData": {".dockerconfigjson": payload},
    });
    let out = crate::support::run_with_stdin(
        env.pullsecret(&["secret", "import", "-f", "-"]),
        secret.to_string().as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let shown: serde_json::Value = serde_json::from_str(&stdout(
        &env.pullsecret(&["secret", "inspect", "multi"])
            .output()
            .expect("inspect"),
    ))
    .expect("json");
    assert_eq!(shown["server"], "10.255.255.1:5000", "the primary: {shown}");
    assert_eq!(shown["also"][0]["server"], s.registry().addr(), "{shown}");

    let (reg, proxy) = s.upstream("up", "secret = \"multi\"").start();
    let issuer = reg.issuer().expect("a token registry");
    issuer.clear_requests();
    let r = http_request(
        "GET",
        &proxy.addr,
        "/v2/team-a/multi/manifests/v1",
        &[OCI],
        b"",
    )
    .expect("get");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), proxy.log());
    assert_eq!(r.body, img.manifest);
    let blob = format!("/v2/team-a/multi/blobs/{}", img.layers[0].digest);
    let r = http_request("GET", &proxy.addr, &blob, &[], b"").expect("get");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, img.layers[0].data);
    let users: Vec<Option<String>> = issuer
        .requests()
        .into_iter()
        .map(|t| t.offered_user)
        .collect();
    assert!(
        !users.is_empty() && users.iter().all(|u| u.as_deref() == Some("alice")),
        "token requests offered {users:?}"
    );
}
