//! Attacks on the proxy's promise (content pulled with one namespace's credentials never
//! reaches a client the upstream would refuse; credentials go only where the registry lives),
//! each performed against a real token-auth distribution registry.

use std::os::unix::fs::PermissionsExt;

use crate::support::http::{basic_auth, http_request, HttpResponse};
use crate::support::proxy::ProxyProcess;
use crate::support::registry::{Registry, RegistryAuth};
use crate::support::token_issuer::TokenIssuerConfig;
use crate::support::{add_proxy_client, stderr, Env, Scenario};

const OCI: (&str, &str) = ("Accept", "application/vnd.oci.image.manifest.v1+json");

/// A password reference for the TLS registry test (no Scenario: its registry speaks HTTPS).
fn secret_ref(env: &Env, name: &str, ns: &str, server: &str, user: &str, pw_ref: &str) {
    let out = env
        .pullsecret(&[
            "secret",
            "create",
            "docker-registry",
            name,
            "-n",
            ns,
            "--docker-server",
            server,
            "--docker-username",
            user,
            "--docker-password-ref",
            pw_ref,
        ])
        .output()
        .expect("secret create");
    assert!(out.status.success(), "{}", stderr(&out));
}

fn get(proxy: &ProxyProcess, path: &str, auth: Option<&str>) -> HttpResponse {
    let mut headers = vec![OCI];
    if let Some(a) = auth {
        headers.push(("Authorization", a));
    }
    http_request("GET", &proxy.addr, path, &headers, b"").expect("request")
}

fn proxy_token(proxy: &ProxyProcess, basic: Option<&str>, extra_query: &str) -> HttpResponse {
    let headers: Vec<(&str, &str)> = basic.iter().map(|a| ("Authorization", *a)).collect();
    http_request(
        "GET",
        &proxy.addr,
        &format!("/token?service=pullsecret&scope=repository:private/app:pull{extra_query}"),
        &headers,
        b"",
    )
    .expect("token")
}

fn bearer(r: &HttpResponse) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    format!("Bearer {}", r.json()["token"].as_str().expect("a token"))
}

/// A token registry where `robot` may pull `private/*`.
fn token_registry(env: &Env) -> Option<Scenario<'_>> {
    Scenario::token_registry(env, &[("robot", "robot-pw", "private/*")])
}

/// Two namespaces whose secrets share the username and the `cacheKey` but not the password:
/// the one without rights must not ride on the other's cached upstream token.
#[test]
fn upstream_tokens_never_cross_namespaces() {
    let env = Env::new();
    let Some(s) = token_registry(&env) else {
        return;
    };
    let img = s.push("private/app", "v1", &[vec![5u8; 100_000]]);
    let (good, bad) = (env.path("a-pw"), env.path("c-pw"));
    std::fs::write(&good, "robot-pw").expect("write");
    std::fs::write(&bad, "not-the-password").expect("write");
    let r = |p: &std::path::Path| format!("file://{}?cacheKey=robot", p.display());
    let (reg, proxy) = s
        .secret_ref("team-a", "reg", "robot", &r(&good))
        .secret_ref("team-c", "reg", "robot", &r(&bad))
        .client("a-client", "team-a", "a-pw")
        .client("c-client", "team-c", "c-pw")
        .config("[auth]\nenabled = true")
        .start();
    let a = basic_auth("a-client", "a-pw");
    let c = basic_auth("c-client", "c-pw");
    let manifest = "/v2/private/app/manifests/v1";
    let blob = format!("/v2/private/app/blobs/{}", img.layers[0].digest);
    assert_eq!(
        get(&proxy, manifest, Some(&a)).status,
        200,
        "{}",
        proxy.log()
    );
    assert_eq!(get(&proxy, &blob, Some(&a)).status, 200);
    let issuer = reg.issuer().expect("issuer");
    let before = issuer.requests().len();
    // Team C, after team A pulled: refused by the upstream, so refused here.
    for path in [manifest, blob.as_str()] {
        let r = get(&proxy, path, Some(&c));
        assert!(
            r.status == 401 || r.status == 403 || r.status == 404,
            "team C read {path} with team A's token: {}",
            r.status
        );
    }
    // C's requests went to the token endpoint with C's own (wrong) password.
    let after = issuer.requests();
    assert!(
        after[before..]
            .iter()
            .any(|t| t.offered_user.as_deref() == Some("robot") && t.user.is_none()),
        "team C never asked for its own token: {:?}",
        &after[before..]
    );
}

/// Config `username`/`password` belong to the home namespace unless `scope = "global"`.
#[test]
fn config_credentials_respect_scopes() {
    let env = Env::new();
    let Some(s) = token_registry(&env) else {
        return;
    };
    let img = s.push("private/app", "v1", &[vec![6u8; 100_000]]);
    let (reg, mut proxy) = s
        .client("home-client", "home", "h-pw")
        .client("other-client", "other", "o-pw")
        .config("namespace = \"home\"\n[auth]\nenabled = true")
        .upstream("up", "username = \"robot\"\npassword = \"robot-pw\"")
        .start();
    let upstream = |scope: &str| {
        format!(
            "[[upstream]]\nname = \"up\"\nurl = \"http://{}\"\ninsecure = true\nusername = \"robot\"\npassword = \"robot-pw\"\n{scope}",
            reg.addr()
        )
    };
    let manifest = "/v2/private/app/manifests/v1";
    let blob = format!("/v2/private/app/blobs/{}", img.layers[0].digest);
    let other = basic_auth("other-client", "o-pw");
    let outsiders = |proxy: &ProxyProcess| {
        let anon_token = bearer(&proxy_token(proxy, None, ""));
        for auth in [None, Some(anon_token.as_str()), Some(other.as_str())] {
            for path in [manifest, blob.as_str()] {
                let r = get(proxy, path, auth);
                assert!(
                    r.status == 401 || r.status == 404,
                    "{auth:?} read {path} with the config's credentials: {}",
                    r.status
                );
            }
        }
    };
    outsiders(&proxy);
    let home = basic_auth("home-client", "h-pw");
    assert_eq!(
        get(&proxy, manifest, Some(&home)).status,
        200,
        "{}",
        proxy.log()
    );
    assert_eq!(get(&proxy, &blob, Some(&home)).status, 200);
    outsiders(&proxy);
    // Written out, `global` lends them to every client, anonymous ones too.
    drop(proxy);
    proxy = ProxyProcess::start(
        &env,
        "namespace = \"home\"\n[auth]\nenabled = true\n",
        &upstream("scope = \"global\"\n"),
    );
    assert_eq!(get(&proxy, manifest, None).status, 200, "{}", proxy.log());
}

/// A removed client's tokens (access and refresh) stop working at once.
#[test]
fn removing_a_client_revokes_its_tokens() {
    let env = Env::new();
    let Some(s) = token_registry(&env) else {
        return;
    };
    s.push("private/app", "v1", &[vec![7u8; 10_000]]);
    let pw = env.path("pw");
    std::fs::write(&pw, "robot-pw").expect("write");
    let (_reg, proxy) = s
        .secret_ref(
            "team-a",
            "reg",
            "robot",
            &format!("file://{}", pw.display()),
        )
        .client("a-client", "team-a", "a-pw")
        .config("[auth]\nenabled = true")
        .start();
    let t = proxy_token(
        &proxy,
        Some(&basic_auth("a-client", "a-pw")),
        "&offline_token=true",
    );
    let access = bearer(&t);
    let refresh = t.json()["refresh_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!refresh.is_empty(), "{}", t.text());
    let manifest = "/v2/private/app/manifests/v1";
    assert_eq!(get(&proxy, manifest, Some(&access)).status, 200);
    let refresh_grant = |proxy: &ProxyProcess| {
        http_request(
            "POST",
            &proxy.addr,
            "/token",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            format!("grant_type=refresh_token&service=pullsecret&refresh_token={refresh}")
                .as_bytes(),
        )
        .expect("refresh")
    };
    assert_eq!(refresh_grant(&proxy).status, 200);

    let out = env
        .pullsecret(&["proxy", "client", "remove", "a-client"])
        .output()
        .expect("remove");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        get(&proxy, manifest, Some(&access)).status,
        401,
        "a removed client's access token still reads"
    );
    assert_eq!(
        refresh_grant(&proxy).status,
        401,
        "a removed client's refresh token still mints"
    );
    // Re-adding the same name (a new record) does not revive the old tokens.
    add_proxy_client(&env, "a-client", "team-b", "a-pw");
    assert_eq!(get(&proxy, manifest, Some(&access)).status, 401);
    assert_eq!(refresh_grant(&proxy).status, 401);
}

/// Wrong passwords: unknown and known users are refused alike, and repeated failures from one
/// address are throttled (429 with Retry-After) while a right password still needs no wait
/// for another address.
#[test]
fn client_login_failures_are_throttled() {
    let env = Env::new();
    let Some(s) = token_registry(&env) else {
        return;
    };
    let (_reg, proxy) = s
        .client("a-client", "team-a", "a-pw")
        .config("[auth]\nenabled = true")
        .start();
    let unknown = proxy_token(&proxy, Some(&basic_auth("nobody", "x")), "");
    let wrong = proxy_token(&proxy, Some(&basic_auth("a-client", "x")), "");
    assert_eq!((unknown.status, wrong.status), (401, 401));
    assert_eq!(
        unknown.text(),
        wrong.text(),
        "unknown and known users answered differently"
    );
    let mut throttled = None;
    for _ in 0..10 {
        let r = proxy_token(&proxy, Some(&basic_auth("a-client", "guess")), "");
        if r.status == 429 {
            throttled = Some(r);
            break;
        }
        assert_eq!(r.status, 401);
    }
    let r = throttled.expect("ten wrong passwords were never throttled");
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    // Even the right password waits while the backoff holds.
    let right = proxy_token(&proxy, Some(&basic_auth("a-client", "a-pw")), "");
    assert_eq!(right.status, 429);
    assert!(
        proxy.log().contains("client login throttled"),
        "{}",
        proxy.log()
    );
}

/// Cache directories are 0700 and files 0600, and an existing looser cache is tightened.
#[test]
fn cache_is_private_on_disk() {
    let env = Env::new();
    let Some(s) = token_registry(&env) else {
        return;
    };
    let img = s.push("private/app", "v1", &[vec![8u8; 50_000]]);
    // A cache left readable by others (an older version, or a careless copy).
    let cache = env.path("proxy-cache");
    let loose = cache.join("v1/blobs/sha256");
    std::fs::create_dir_all(&loose).expect("mkdir");
    std::fs::write(loose.join("0000"), b"x").expect("write");
    for p in [cache.clone(), cache.join("v1"), loose.clone()] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    }
    std::fs::set_permissions(loose.join("0000"), std::fs::Permissions::from_mode(0o666))
        .expect("chmod");
    let pw = env.path("pw");
    std::fs::write(&pw, "robot-pw").expect("write");
    let (_reg, proxy) = s
        .secret_ref(
            "default",
            "reg",
            "robot",
            &format!("file://{}", pw.display()),
        )
        .upstream("up", "secret = \"reg\"")
        .start();
    assert_eq!(
        get(&proxy, "/v2/private/app/manifests/v1", None).status,
        200
    );
    let blob = format!("/v2/private/app/blobs/{}", img.layers[0].digest);
    assert_eq!(get(&proxy, &blob, None).status, 200);
    proxy.wait_fills_done();
    let mut seen = 0;
    let mut stack = vec![cache.clone()];
    while let Some(dir) = stack.pop() {
        let mode = std::fs::metadata(&dir).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
        for e in std::fs::read_dir(&dir).expect("readdir").flatten() {
            let m = e.metadata().expect("stat");
            if m.is_dir() {
                stack.push(e.path());
            } else {
                seen += 1;
                assert_eq!(
                    m.permissions().mode() & 0o777,
                    0o600,
                    "{}",
                    e.path().display()
                );
            }
        }
    }
    assert!(seen >= 4, "only {seen} files in the cache");
}

/// An HTTPS upstream whose token realm is plain HTTP on another port: the realm gets nothing.
#[test]
fn credentials_go_only_to_trusted_token_realms() {
    let env = Env::new();
    let Some((cert, key)) = crate::support::loopback_cert(&env, "reg") else {
        return;
    };
    let issuer = TokenIssuerConfig::new().user("robot", "robot-pw", &[("*", &["pull"])]);
    let Some(reg) = Registry::start_tls(RegistryAuth::Token(issuer), &cert, &key) else {
        return;
    };
    let pw = env.path("pw");
    std::fs::write(&pw, "robot-pw").expect("write");
    secret_ref(
        &env,
        "reg",
        "default",
        reg.addr(),
        "robot",
        &format!("file://{}", pw.display()),
    );
    let proxy = ProxyProcess::start(
        &env,
        "",
        &format!(
            "[[upstream]]\nname = \"up\"\nurl = \"https://{}\"\nca = \"{}\"\nsecret = \"reg\"\n",
            reg.addr(),
            cert.display()
        ),
    );
    let r = get(&proxy, "/v2/library/app/manifests/v1", None);
    assert_ne!(r.status, 200);
    assert!(
        r.text().contains("credentials not sent to token realm"),
        "{}",
        r.text()
    );
    let issuer = reg.issuer().expect("issuer");
    assert!(
        issuer.requests().is_empty(),
        "the plain-HTTP realm received {:?}",
        issuer.requests()
    );
    let log = proxy.log();
    assert!(
        log.contains("credentials not sent to token realm") && log.contains(issuer.realm()),
        "{log}"
    );
    assert!(!log.contains("robot-pw") && !r.text().contains("robot-pw"));
}

/// With client auth on, `/metrics` is for authenticated clients only (by default).
#[test]
fn metrics_require_auth_when_clients_do() {
    let env = Env::new();
    let Some(s) = token_registry(&env) else {
        return;
    };
    let s = s
        .client("a-client", "team-a", "a-pw")
        .config("[auth]\nenabled = true");
    let upstream = s.upstream_toml();
    let (_reg, proxy) = s.start();
    let anon = http_request("GET", &proxy.addr, "/metrics", &[], b"").expect("metrics");
    assert_eq!(anon.status, 401);
    assert!(!anon.text().contains("pullsecret_proxy"), "{}", anon.text());
    let a = basic_auth("a-client", "a-pw");
    let ok = http_request(
        "GET",
        &proxy.addr,
        "/metrics",
        &[("Authorization", &a)],
        b"",
    )
    .expect("metrics");
    assert_eq!(ok.status, 200);
    assert!(ok.text().contains("pullsecret_proxy_requests_total"));
    drop(proxy);
    // Opting out keeps metrics open for a scraper on a trusted network.
    let open = ProxyProcess::start(
        &env,
        "[auth]\nenabled = true\n[metrics]\nauth = false\n",
        &upstream,
    );
    let r = http_request("GET", &open.addr, "/metrics", &[], b"").expect("metrics");
    assert_eq!(r.status, 200);
}
