//! The admin API on its own listener, against the real proxy and a token-auth distribution:
//! tokens (none, wrong, another namespace's), namespaces, secrets (never a value back), proxy
//! clients, upstreams, cache, audit; changes apply to pulls at once and are the CLI's store;
//! bad input changes nothing; every response conforms to the OpenAPI document.

use std::io::Write;

use serde_json::{json, Value};

use crate::support::http::{basic_auth, http_request, HttpResponse};
use crate::support::proxy::free_port;
use crate::support::{assert_no_canary, e2e, eventually, stderr, stdout, Env, Scenario, CANARY};

const OCI: (&str, &str) = ("Accept", "application/vnd.oci.image.manifest.v1+json");

/// Records every API answer for the OpenAPI check at the end.
struct Api {
    addr: String,
    log: Vec<Value>,
}

impl Api {
    fn call(
        &mut self,
        method: &str,
        path: &str,
        template: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a));
        }
        let raw = body.map(|b| b.to_string()).unwrap_or_default();
        let r =
            http_request(method, &self.addr, path, &headers, raw.as_bytes()).expect("admin API");
        assert_no_canary(&format!("{method} {path}"), &r.text());
        let v: Value = if r.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&r.body)
                .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {}", r.text()))
        };
        self.log
            .push(json!({"method": method, "path": template, "status": r.status, "body": v}));
        (r.status, v)
    }
}

fn pull(proxy_addr: &str, user: &str, pw: &str) -> HttpResponse {
    let auth = basic_auth(user, pw);
    http_request(
        "GET",
        proxy_addr,
        "/v2/private/app/manifests/v1",
        &[OCI, ("Authorization", &auth)],
        b"",
    )
    .expect("pull")
}

#[test]
fn admin_api_manages_the_proxy_and_refuses_everyone_else() {
    let env = Env::new();
    let Some(sc) = Scenario::token_registry(&env, &[("robot", CANARY, "private/*")]) else {
        return;
    };
    let img = sc.push("private/app", "v1", &[vec![3u8; 5000]]);
    let admin_addr = format!("127.0.0.1:{}", free_port());
    let reg_addr = sc.registry().addr().to_string();
    let (reg, proxy) = sc
        .config(&format!(
            "[auth]\nenabled = true\n[admin]\nlisten = \"{admin_addr}\""
        ))
        .start();
    let token = |args: &[&str]| {
        let out = env.pullsecret(args).output().expect("admin token");
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).trim().to_string()
    };
    let root = token(&["admin", "token", "create", "root"]);
    let scoped = token(&["admin", "token", "create", "team-b-admin", "-n", "team-b"]);
    assert!(root.starts_with("psa_") && root.len() > 40);
    let mut api = Api {
        addr: admin_addr.clone(),
        log: Vec::new(),
    };

    // Nobody without a valid token gets anywhere, on any endpoint.
    let endpoints = [
        ("GET", "/api/v1/namespaces", "/api/v1/namespaces"),
        ("POST", "/api/v1/namespaces", "/api/v1/namespaces"),
        (
            "DELETE",
            "/api/v1/namespaces/team-a",
            "/api/v1/namespaces/{ns}",
        ),
        (
            "GET",
            "/api/v1/namespaces/team-a/secrets",
            "/api/v1/namespaces/{ns}/secrets",
        ),
        (
            "POST",
            "/api/v1/namespaces/team-a/secrets",
            "/api/v1/namespaces/{ns}/secrets",
        ),
        (
            "GET",
            "/api/v1/namespaces/team-a/secrets/x",
            "/api/v1/namespaces/{ns}/secrets/{name}",
        ),
        (
            "DELETE",
            "/api/v1/namespaces/team-a/secrets/x",
            "/api/v1/namespaces/{ns}/secrets/{name}",
        ),
        (
            "PUT",
            "/api/v1/namespaces/team-a/secrets/x/value",
            "/api/v1/namespaces/{ns}/secrets/{name}/value",
        ),
        (
            "GET",
            "/api/v1/namespaces/team-a/clients",
            "/api/v1/namespaces/{ns}/clients",
        ),
        (
            "POST",
            "/api/v1/namespaces/team-a/clients",
            "/api/v1/namespaces/{ns}/clients",
        ),
        (
            "DELETE",
            "/api/v1/namespaces/team-a/clients/u",
            "/api/v1/namespaces/{ns}/clients/{user}",
        ),
        ("GET", "/api/v1/upstreams", "/api/v1/upstreams"),
        ("GET", "/api/v1/cache", "/api/v1/cache"),
        ("GET", "/api/v1/audit", "/api/v1/audit"),
        ("GET", "/api/v1/pulls", "/api/v1/pulls"),
        ("GET", "/api/v1/pulls/events", "/api/v1/pulls/events"),
        (
            "GET",
            "/api/v1/namespaces/team-a/images",
            "/api/v1/namespaces/{ns}/images",
        ),
        ("GET", "/api/v1/cache/pins", "/api/v1/cache/pins"),
        ("POST", "/api/v1/cache/pins", "/api/v1/cache/pins"),
        (
            "DELETE",
            "/api/v1/cache/pins/sha256:00",
            "/api/v1/cache/pins/{digest}",
        ),
        (
            "DELETE",
            "/api/v1/cache/tags?upstream=up&repository=x",
            "/api/v1/cache/tags",
        ),
    ];
    for (m, p, t) in endpoints {
        for tok in [None, Some("psa_not-a-token")] {
            let (s, _) = api.call(m, p, t, tok, Some(json!({})));
            assert_eq!(s, 401, "{m} {p} with {tok:?}");
        }
    }
    // A namespace token outside its namespace: 403; reserved namespaces: 403 for everyone.
    for (m, p, t) in endpoints.iter().filter(|(_, p, _)| p.contains("/team-a")) {
        let (s, _) = api.call(m, p, t, Some(&scoped), Some(json!({})));
        assert_eq!(s, 403, "{m} {p} with team-b's token");
    }
    // Pins and purges act on the cache every namespace shares: all-namespaces tokens only.
    for (m, p, t) in endpoints
        .iter()
        .filter(|(m, p, _)| p.starts_with("/api/v1/cache/") && *m != "GET")
    {
        let (s, _) = api.call(m, p, t, Some(&scoped), Some(json!({})));
        assert_eq!(s, 403, "{m} {p} with team-b's token");
    }
    let (s, _) = api.call(
        "GET",
        "/api/v1/namespaces/proxy-clients/secrets",
        "/api/v1/namespaces/{ns}/secrets",
        Some(&root),
        None,
    );
    assert_eq!(s, 403);
    let (s, _) = api.call(
        "POST",
        "/api/v1/namespaces",
        "/api/v1/namespaces",
        Some(&scoped),
        Some(json!({"name": "team-z"})),
    );
    assert_eq!(s, 403, "a namespace token created a namespace");

    // Namespaces.
    let (s, v) = api.call(
        "POST",
        "/api/v1/namespaces",
        "/api/v1/namespaces",
        Some(&root),
        Some(json!({"name": "team-a"})),
    );
    assert_eq!((s, &v["name"]), (201, &json!("team-a")));
    let (s, v) = api.call(
        "GET",
        "/api/v1/namespaces",
        "/api/v1/namespaces",
        Some(&root),
        None,
    );
    assert_eq!(s, 200);
    assert!(
        v["namespaces"]
            .as_array()
            .is_some_and(|a| a.iter().any(|n| n["name"] == "team-a")),
        "{v}"
    );
    let (_, v) = api.call(
        "GET",
        "/api/v1/namespaces",
        "/api/v1/namespaces",
        Some(&scoped),
        None,
    );
    assert!(
        v["namespaces"]
            .as_array()
            .is_some_and(|a| a.iter().all(|n| n["name"] == "team-b")),
        "{v}"
    );

    // Bad input: one 4xx naming the problem, and the store unchanged.
    let before = env.store_snapshot();
    let secrets = "/api/v1/namespaces/team-a/secrets";
    let st = "/api/v1/namespaces/{ns}/secrets";
    for (body, want) in [
        (json!({"name": "x"}), 400),
        (
            json!({"name": "x", "type": "docker-registry", "server": reg_addr, "username": "u", "password": "p", "color": "red"}),
            400,
        ),
        (
            json!({"name": "Not_A_Name", "type": "generic", "data": {"k": "v"}}),
            400,
        ),
        (json!({"name": "x", "type": "nope"}), 400),
        (
            json!({"name": "big", "type": "generic", "data": {"k": "v".repeat(6000)}}),
            422,
        ),
    ] {
        let (s, v) = api.call("POST", secrets, st, Some(&root), Some(body));
        assert_eq!(s, want, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
    }
    let r = http_request(
        "POST",
        &admin_addr,
        secrets,
        &[("Authorization", &format!("Bearer {root}"))],
        b"{not json",
    )
    .expect("malformed");
    assert_eq!(r.status, 400);
    let huge = vec![b'x'; 70 * 1024];
    let r = http_request(
        "POST",
        &admin_addr,
        secrets,
        &[("Authorization", &format!("Bearer {root}"))],
        &huge,
    )
    .expect("oversized");
    assert_eq!(r.status, 413);
    assert_eq!(env.store_snapshot(), before, "bad input changed the store");

    // A Kubernetes Secret as the body, as `secret import` takes it (two registries: one secret).
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let cfg = json!({"auths": {
        "ghcr.io": {"username": "u1", "password": "p1", "auth": b64("u1:p1")},
        "quay.io": {"username": "u2", "password": "p2", "auth": b64("u2:p2")}
    }});
    let kube = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "from-kube"},
        "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": b64(&cfg.to_string())}});
    let (s, v) = api.call("POST", secrets, st, Some(&root), Some(kube.clone()));
    assert_eq!((s, &v["server"]), (201, &json!("ghcr.io")), "{v}");
    let mut elsewhere = kube;
    elsewhere["metadata"]["namespace"] = json!("team-b");
    elsewhere["metadata"]["name"] = json!("from-kube-2");
    let (s, _) = api.call("POST", secrets, st, Some(&root), Some(elsewhere));
    assert_eq!(s, 400, "a Secret naming another namespace was stored");
    let (s, _) = api.call(
        "DELETE",
        "/api/v1/namespaces/team-a/secrets/from-kube",
        "/api/v1/namespaces/{ns}/secrets/{name}",
        Some(&root),
        None,
    );
    assert_eq!(s, 204);

    // A secret and a client made through the API: the proxy uses them at once.
    let (s, v) = api.call(
        "POST", secrets, st, Some(&root),
        Some(json!({"name": "reg", "type": "docker-registry", "server": reg_addr, "username": "robot", "password": CANARY})),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["username"], "robot");
    let (s, v) = api.call(
        "POST",
        "/api/v1/namespaces/team-a/clients",
        "/api/v1/namespaces/{ns}/clients",
        Some(&root),
        Some(json!({"user": "ci"})),
    );
    assert_eq!(s, 201, "{v}");
    let client_pw = v["password"]
        .as_str()
        .expect("generated password")
        .to_string();
    assert_eq!(
        pull(&proxy.addr, "ci", &client_pw).status,
        200,
        "{}",
        proxy.log()
    );
    // The same store as the CLI.
    let out = env
        .pullsecret(&["secret", "list", "-n", "team-a", "-o", "name"])
        .output()
        .expect("list");
    assert!(stdout(&out).contains("reg"), "{}", stdout(&out));
    let (s, v) = api.call(
        "GET",
        "/api/v1/namespaces/team-a/secrets/reg",
        "/api/v1/namespaces/{ns}/secrets/{name}",
        Some(&root),
        None,
    );
    assert_eq!((s, &v["server"]), (200, &json!(reg_addr)));
    let (s, _) = api.call(
        "PUT",
        "/api/v1/namespaces/team-a/secrets/reg/value",
        "/api/v1/namespaces/{ns}/secrets/{name}/value",
        Some(&root),
        Some(json!({"value": CANARY})),
    );
    assert_eq!(s, 204);
    let (s, v) = api.call(
        "GET",
        "/api/v1/namespaces/team-a/clients",
        "/api/v1/namespaces/{ns}/clients",
        Some(&root),
        None,
    );
    assert_eq!(s, 200);
    assert_eq!(v["clients"][0]["user"], "ci");
    let (s, _) = api.call(
        "DELETE",
        "/api/v1/namespaces/team-a",
        "/api/v1/namespaces/{ns}",
        Some(&root),
        None,
    );
    assert_eq!(
        s, 409,
        "a namespace holding secrets was deleted without force"
    );
    // Pins keep an image from eviction; purge forgets a tag so the next pull asks again.
    let pins = "/api/v1/cache/pins";
    let (s, _) = api.call(
        "POST",
        pins,
        pins,
        Some(&scoped),
        Some(json!({"upstream": "up", "repository": "private/app", "digest": img.manifest_digest})),
    );
    assert_eq!(s, 403, "a namespace token pinned shared cache content");
    let (s, v) = api.call(
        "POST",
        pins,
        pins,
        Some(&root),
        Some(json!({"upstream": "up", "repository": "private/app", "digest": img.manifest_digest})),
    );
    assert_eq!(s, 201, "{v}");
    for d in img.layer_digests() {
        assert!(
            v["digests"]
                .as_array()
                .is_some_and(|a| a.contains(&json!(d))),
            "{v}"
        );
    }
    let pins_file = proxy.cache.join("v1/meta/pins.json");
    assert!(std::fs::read_to_string(&pins_file)
        .unwrap_or_default()
        .contains(&img.manifest_digest));
    let (s, v) = api.call("GET", pins, pins, Some(&root), None);
    assert_eq!((s, v["pins"].as_array().map(Vec::len)), (200, Some(1)));
    let gets = || reg.count_requests("GET", "/manifests/v1");
    let before_purge = gets();
    let (s, v) = api.call(
        "DELETE",
        "/api/v1/cache/tags?upstream=up&repository=private/app&tag=v1",
        "/api/v1/cache/tags",
        Some(&root),
        None,
    );
    assert_eq!(s, 200, "{v}");
    assert!(v["purged"].as_u64().is_some_and(|n| n >= 1), "{v}");
    assert_eq!(pull(&proxy.addr, "ci", &client_pw).status, 200);
    assert!(
        gets() > before_purge,
        "a purged tag was served without asking the upstream"
    );
    let pin_path = format!("{pins}/{}", img.manifest_digest);
    let (s, _) = api.call(
        "DELETE",
        &pin_path,
        "/api/v1/cache/pins/{digest}",
        Some(&root),
        None,
    );
    assert_eq!(s, 204);
    let (s, _) = api.call(
        "DELETE",
        &pin_path,
        "/api/v1/cache/pins/{digest}",
        Some(&root),
        None,
    );
    assert_eq!(s, 404);

    // Recent pulls: listed, and live as Server-Sent Events.
    let (s, v) = api.call("GET", "/api/v1/pulls", "/api/v1/pulls", Some(&root), None);
    assert_eq!(s, 200);
    assert!(
        v["pulls"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["namespace"] == "team-a"
                && p["image"] == "private/app"
                && p["client"] == "ci"
                && p["kind"] == "manifest"
                && p["status"] == 200)),
        "{v}"
    );
    let events = {
        use std::io::{BufRead, BufReader};
        let mut s = std::net::TcpStream::connect(&admin_addr).expect("sse");
        s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .expect("timeout");
        write!(
            s,
            "GET /api/v1/pulls/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {root}\r\n\r\n"
        )
        .expect("write");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(s).lines().map_while(Result::ok) {
                if line.starts_with("data: ") && line.contains("private/app") {
                    let _ = tx.send(line);
                    return;
                }
            }
        });
        rx
    };
    // The subscription is live once the response head arrived; a pull now is an event.
    let event = (0..20).find_map(|_| {
        pull(&proxy.addr, "ci", &client_pw);
        events
            .recv_timeout(std::time::Duration::from_millis(500))
            .ok()
    });
    let event = event.expect("no pull event arrived over SSE");
    assert!(event.contains("\"namespace\":\"team-a\""), "{event}");
    assert_no_canary("the SSE event", &event);
    // Deleted through the API: the next pull has no credentials.
    let (s, _) = api.call(
        "DELETE",
        "/api/v1/namespaces/team-a/secrets/reg",
        "/api/v1/namespaces/{ns}/secrets/{name}",
        Some(&root),
        None,
    );
    assert_eq!(s, 204);
    let again = pull(&proxy.addr, "ci", &client_pw);
    assert_eq!(again.status, 401, "{}", again.text());
    let (s, _) = api.call(
        "DELETE",
        "/api/v1/namespaces/team-a/clients/ci",
        "/api/v1/namespaces/{ns}/clients/{user}",
        Some(&root),
        None,
    );
    assert_eq!(s, 204);

    // Read-only views, and the audit trail naming the changes but no value.
    let (s, v) = api.call(
        "GET",
        "/api/v1/upstreams",
        "/api/v1/upstreams",
        Some(&root),
        None,
    );
    assert_eq!((s, &v["upstreams"][0]["name"]), (200, &json!("up")));
    assert_eq!(v["upstreams"][0]["state"], "ok", "{v}");
    assert!(v["upstreams"][0]["last_success"].is_u64(), "{v}");
    let images = "/api/v1/namespaces/team-a/images";
    let (s, v) = api.call(
        "GET",
        images,
        "/api/v1/namespaces/{ns}/images",
        Some(&root),
        None,
    );
    assert_eq!(s, 200);
    assert_eq!(v["images"][0]["image"], "private/app", "{v}");
    let (s, _) = api.call(
        "GET",
        images,
        "/api/v1/namespaces/{ns}/images",
        Some(&scoped),
        None,
    );
    assert_eq!(s, 403);
    let (s, v) = api.call("GET", "/api/v1/cache", "/api/v1/cache", Some(&root), None);
    assert_eq!(s, 200);
    assert!(v["misses"].as_u64().is_some_and(|m| m >= 1), "{v}");
    let (s, v) = api.call("GET", "/api/v1/audit", "/api/v1/audit", Some(&root), None);
    assert_eq!(s, 200);
    let actions: Vec<&str> = v["entries"].as_array().map_or(vec![], |a| {
        a.iter().filter_map(|e| e["action"].as_str()).collect()
    });
    for a in [
        "namespace.create",
        "secret.create",
        "client.create",
        "secret.rotate",
        "secret.delete",
        "client.delete",
    ] {
        assert!(actions.contains(&a), "{a} not audited: {actions:?}");
    }
    let (_, v) = api.call("GET", "/api/v1/audit", "/api/v1/audit", Some(&scoped), None);
    assert_eq!(
        v["entries"],
        json!([]),
        "team-b's token saw team-a's audit entries"
    );
    let (s, _) = api.call(
        "DELETE",
        "/api/v1/namespaces/team-a?force=true",
        "/api/v1/namespaces/{ns}",
        Some(&root),
        None,
    );
    assert_eq!(s, 204);
    // Revoked: at once.
    let out = env
        .pullsecret(&["admin", "token", "revoke", "root"])
        .output()
        .expect("revoke");
    assert!(out.status.success(), "{}", stderr(&out));
    let (s, _) = api.call(
        "GET",
        "/api/v1/namespaces",
        "/api/v1/namespaces",
        Some(&root),
        None,
    );
    assert_eq!(s, 401);
    assert_no_canary("the proxy log", &proxy.log());
    // Guessing tokens from one address is throttled (429 with Retry-After), bounded here.
    let throttled = (0..40).find_map(|_| {
        let (s, _) = api.call(
            "GET",
            "/api/v1/cache",
            "/api/v1/cache",
            Some("psa_guess"),
            None,
        );
        (s == 429).then_some(s)
    });
    assert_eq!(throttled, Some(429), "40 wrong tokens were never throttled");

    // The document validates, and so does every answer above.
    let spec = http_request("GET", &admin_addr, "/api/v1/openapi.json", &[], b"").expect("openapi");
    assert_eq!(spec.status, 200);
    let spec_path = env.path("openapi.json");
    std::fs::write(&spec_path, &spec.body).expect("write spec");
    let log_path = env.path("responses.jsonl");
    let mut f = std::fs::File::create(&log_path).expect("log");
    for l in &api.log {
        writeln!(f, "{l}").expect("write");
    }
    let check = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/tools/openapi_check.py"
        ))
        .arg(&spec_path)
        .arg(&log_path)
        .output()
        .expect("python3");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    if said.contains("No module named") && !e2e() {
        eprintln!("SKIPPED OpenAPI check: pip install openapi-spec-validator jsonschema");
        return;
    }
    assert!(check.status.success(), "{said}");
    assert!(said.contains("responses conform"), "{said}");
}

/// Direktiv's registry endpoints and headers, against distribution with htpasswd and token auth.
#[test]
fn direktiv_registry_endpoints_work_unchanged() {
    use crate::support::registry::{Registry, RegistryAuth};
    let env = Env::new();
    let Some(sc) = Scenario::token_registry(&env, &[("robot", "robot-pw", "private/*")]) else {
        return;
    };
    sc.push("private/app", "v1", &[vec![4u8; 3000]]);
    let Some(basic) = Registry::start(RegistryAuth::Htpasswd {
        users: vec![("bob".into(), "bob-pw".into())],
    }) else {
        return;
    };
    let admin_addr = format!("127.0.0.1:{}", free_port());
    let reg = sc.registry().addr().to_string();
    let (_reg, proxy) = sc
        .client("ci", "team-a", "ci-pw")
        .config(&format!(
            "[auth]\nenabled = true\n[admin]\nlisten = \"{admin_addr}\""
        ))
        .start();
    let out = env
        .pullsecret(&["admin", "token", "create", "direktiv"])
        .output()
        .expect("token");
    let token = stdout(&out).trim().to_string();
    let out = env
        .pullsecret(&["admin", "token", "create", "a-only", "-n", "team-a"])
        .output()
        .expect("token");
    let scoped = stdout(&out).trim().to_string();
    let call = |method: &str, path: &str, header: (&str, &str), body: Value| {
        let raw = body.to_string();
        let r = http_request(
            method,
            &admin_addr,
            path,
            &[header, ("Content-Type", "application/json")],
            raw.as_bytes(),
        )
        .expect("direktiv API");
        assert!(
            !r.text().contains("robot-pw") && !r.text().contains("bob-pw"),
            "{}",
            r.text()
        );
        (
            r.status,
            serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null),
        )
    };
    let hdr = ("direktiv-token", token.as_str());
    // The registry test call, with htpasswd and with token auth: right and wrong.
    for (url, user, pw) in [
        (format!("http://{}", basic.addr()), "bob", "bob-pw"),
        (format!("http://{reg}"), "robot", "robot-pw"),
    ] {
        let (s, _) = call(
            "POST",
            "/api/functions/registries/test",
            hdr,
            json!({"url": url, "username": user, "password": pw}),
        );
        assert_eq!(s, 200, "{url} with the right password");
        let (s, _) = call(
            "POST",
            "/api/functions/registries/test",
            hdr,
            json!({"url": url, "username": user, "password": "wrong"}),
        );
        assert_eq!(s, 401, "{url} with a wrong password");
    }
    // Create through Direktiv's body; the apikey header works as well; a client pulls.
    let ns_path = "/api/functions/registries/namespaces/team-a";
    let (s, v) = call(
        "POST",
        ns_path,
        ("apikey", &token),
        json!({"data": "robot:robot-pw", "reg": format!("http://{reg}")}),
    );
    assert_eq!(s, 200, "{v}");
    let (s, v) = call("GET", ns_path, hdr, Value::Null);
    assert_eq!(s, 200);
    assert_eq!(
        v["registries"][0]["name"],
        json!(format!("http://{reg}")),
        "{v}"
    );
    assert!(v["registries"][0]["id"].is_string(), "{v}");
    let auth = basic_auth("ci", "ci-pw");
    let pull = || {
        http_request(
            "GET",
            &proxy.addr,
            "/v2/private/app/manifests/v1",
            &[OCI, ("Authorization", &auth)],
            b"",
        )
        .expect("pull")
        .status
    };
    assert_eq!(pull(), 200, "{}", proxy.log());
    let (s, _) = call(
        "DELETE",
        ns_path,
        hdr,
        json!({"reg": format!("http://{reg}")}),
    );
    assert_eq!(s, 200);
    assert_eq!(pull(), 401);
    // Global registries need an all-namespaces token; no token at all is 401.
    let (s, _) = call(
        "GET",
        "/api/functions/registries/global",
        ("direktiv-token", &scoped),
        Value::Null,
    );
    assert_eq!(s, 403);
    let (s, v) = call("GET", "/api/functions/registries/global", hdr, Value::Null);
    assert_eq!((s, &v["registries"]), (200, &json!([])));
    // No token, or a wrong one, on every Direktiv endpoint: 401; a namespace token on another
    // namespace's registries or on the private ones: 403.
    for path in [
        ns_path,
        "/api/functions/registries/global",
        "/api/functions/registries/private",
        "/api/functions/registries/test",
    ] {
        for header in [("x-none", "x"), ("direktiv-token", "psa_wrong")] {
            let (s, _) = call(
                "POST",
                path,
                header,
                json!({"data": "a:b", "reg": "https://x.io", "url": "https://x.io", "username": "a", "password": "b"}),
            );
            assert_eq!(s, 401, "{path} with {header:?}");
        }
    }
    let (s, _) = call(
        "GET",
        "/api/functions/registries/private",
        ("direktiv-token", &scoped),
        Value::Null,
    );
    assert_eq!(s, 403);
    let (s, _) = call(
        "GET",
        "/api/functions/registries/namespaces/team-b",
        ("direktiv-token", &scoped),
        Value::Null,
    );
    assert_eq!(s, 403, "a team-a token listed team-b's registries");
    // Nor may it write or delete there, or in the global and private sets.
    for (method, path) in [
        ("POST", "/api/functions/registries/namespaces/team-b"),
        ("DELETE", "/api/functions/registries/namespaces/team-b"),
        ("POST", "/api/functions/registries/global"),
        ("DELETE", "/api/functions/registries/private"),
    ] {
        let (s, _) = call(
            method,
            path,
            ("direktiv-token", &scoped),
            json!({"data": "a:b", "reg": "https://x.io"}),
        );
        assert_eq!(s, 403, "{method} {path} with a team-a token");
    }
    // The namespaces holding proxy clients and admin tokens are not registries, for anyone.
    let tokens_before = stdout(
        &env.pullsecret(&["admin", "token", "list"])
            .output()
            .expect("token list"),
    );
    for ns in ["admin-tokens", "proxy-clients"] {
        let (s, v) = call(
            "POST",
            &format!("/api/functions/registries/namespaces/{ns}"),
            hdr,
            json!({"data": "a:b", "reg": "https://x.io"}),
        );
        assert_eq!(s, 403, "{ns}: {v}");
        assert_eq!(v["error"]["code"], "NAMESPACE_RESERVED", "{v}");
    }
    let tokens_after = stdout(
        &env.pullsecret(&["admin", "token", "list"])
            .output()
            .expect("token list"),
    );
    assert_eq!(
        tokens_before, tokens_after,
        "a registry landed among the admin tokens"
    );
}

/// The admin listener over HTTPS (`[admin.tls]`, as `[tls]` for the registry port).
#[test]
fn admin_listener_serves_tls() {
    let env = Env::new();
    let Some((cert, key)) = crate::support::loopback_cert(&env, "admin") else {
        return;
    };
    let Some(sc) = Scenario::token_registry(&env, &[]) else {
        return;
    };
    let admin_addr = format!("127.0.0.1:{}", free_port());
    let (_reg, _proxy) = sc
        .config(&format!(
            "[admin]\nlisten = \"{admin_addr}\"\n[admin.tls]\ncert = \"{}\"\nkey = \"{}\"",
            cert.display(),
            key.display()
        ))
        .start();
    let root = reqwest::Certificate::from_pem(&std::fs::read(&cert).expect("cert")).expect("pem");
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(root)
        .build()
        .expect("client");
    let r = eventually(
        std::time::Duration::from_secs(10),
        "the admin listener over TLS",
        || {
            client
                .get(format!("https://{admin_addr}/api/v1/openapi.json"))
                .send()
                .map_err(|e| e.to_string())
        },
    );
    assert_eq!(r.status(), 200);
    let plain = http_request("GET", &admin_addr, "/api/v1/openapi.json", &[], b"");
    assert!(
        plain.map_or(true, |r| r.status != 200),
        "the TLS admin listener answered plain HTTP"
    );
}
