//! Proves the registry test support against the real distribution registry: anonymous, htpasswd and token auth, pushes, pulls, access-log counts.

use std::path::Path;

use crate::support::http::{basic_auth, http_request};
use crate::support::images::{push_image, push_index, OCI_INDEX, OCI_MANIFEST};
use crate::support::registry::{Registry, RegistryAuth};
use crate::support::skopeo::{skopeo, skopeo_pull};
use crate::support::token_issuer::{form_encode, Access, TokenIssuerConfig};
use crate::support::{stderr, Env};

fn users(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(u, p)| (u.to_string(), p.to_string()))
        .collect()
}

/// The manifest digest an OCI layout written by `skopeo_pull` tagged `pulled`.
fn pulled_manifest_digest(dir: &Path) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("read index.json"))
            .expect("index json");
    index["manifests"][0]["digest"]
        .as_str()
        .expect("digest")
        .to_string()
}

fn has_blob(dir: &Path, digest: &str) -> bool {
    dir.join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
        .is_file()
}

fn assert_unauthorized(out: &std::process::Output) {
    let err = stderr(out).to_lowercase();
    assert!(!out.status.success(), "pull should have failed");
    assert!(
        err.contains("unauthorized") || err.contains("authentication required"),
        "not an auth failure: {err}"
    );
}

#[test]
fn anonymous_push_pull_and_blob_gets_are_counted() {
    let Some(reg) = Registry::start(RegistryAuth::Anonymous) else {
        return;
    };
    let layers = vec![b"hello layer".to_vec(), vec![7u8; 100_000]];
    let img = push_image(reg.addr(), "smoke/anon", "v1", None, &layers);
    assert_eq!(img.layers.len(), 2);

    // The registry serves exactly the manifest bytes we built: digests were preserved.
    let got = http_request(
        "GET",
        reg.addr(),
        "/v2/smoke/anon/manifests/v1",
        &[("Accept", OCI_MANIFEST)],
        b"",
    )
    .expect("GET manifest");
    assert_eq!(got.status, 200);
    assert_eq!(
        got.header("Docker-Content-Digest"),
        Some(img.manifest_digest.as_str())
    );
    assert_eq!(got.body, img.manifest);

    let before = reg.count_requests(
        "GET",
        &format!("/v2/smoke/anon/blobs/{}", img.layers[1].digest),
    );
    assert_eq!(before, 0, "push must not GET blobs");
    for round in 1..=2 {
        let dest = tempfile::tempdir().expect("dest");
        let out = skopeo_pull(reg.addr(), "smoke/anon:v1", None, dest.path());
        assert!(
            out.status.success(),
            "anonymous pull failed: {}",
            stderr(&out)
        );
        assert_eq!(pulled_manifest_digest(dest.path()), img.manifest_digest);
        for l in &img.layers {
            assert!(
                has_blob(dest.path(), &l.digest),
                "layer {} missing",
                l.digest
            );
            let n = reg.count_requests("GET", &format!("/v2/smoke/anon/blobs/{}", l.digest));
            assert_eq!(
                n, round,
                "each pull into a fresh layout GETs each layer once"
            );
        }
        assert_eq!(
            reg.count_requests(
                "GET",
                &format!("/v2/smoke/anon/blobs/{}", img.config_digest())
            ),
            round
        );
    }

    // stop() takes the upstream down; restart() brings it back with the same address and storage.
    let mut reg = reg;
    reg.stop();
    assert!(http_request("GET", reg.addr(), "/v2/", &[], b"").is_err());
    reg.restart();
    let path = format!("/v2/smoke/anon/blobs/{}", img.layers[0].digest);
    let got = http_request("GET", reg.addr(), &path, &[], b"").expect("GET after restart");
    assert_eq!((got.status, &got.body), (200, &img.layers[0].data));
}

#[test]
fn anonymous_push_index_serves_both_platforms() {
    let Some(reg) = Registry::start(RegistryAuth::Anonymous) else {
        return;
    };
    let idx = push_index(reg.addr(), "smoke/multi", "v1", None, &[b"multi".to_vec()]);
    let got = http_request(
        "GET",
        reg.addr(),
        "/v2/smoke/multi/manifests/v1",
        &[("Accept", OCI_INDEX)],
        b"",
    )
    .expect("GET index");
    assert_eq!(got.status, 200);
    assert_eq!(got.header("Content-Type"), Some(OCI_INDEX));
    assert_eq!(
        got.header("Docker-Content-Digest"),
        Some(idx.index_digest.as_str())
    );
    assert_eq!(got.body, idx.index);
    let (amd, arm) = (idx.platform("linux/amd64"), idx.platform("linux/arm64/v8"));
    assert_ne!(
        amd.layers[0].digest, arm.layers[0].digest,
        "platforms must not share layers"
    );
    for m in [amd, arm] {
        let path = format!("/v2/smoke/multi/manifests/{}", m.manifest_digest);
        let got = http_request("GET", reg.addr(), &path, &[("Accept", OCI_MANIFEST)], b"")
            .expect("GET manifest");
        assert_eq!(
            (got.status, &got.body),
            (200, &m.manifest),
            "{}",
            m.platform
        );
        let path = format!("/v2/smoke/multi/blobs/{}", m.layers[0].digest);
        let got = http_request("GET", reg.addr(), &path, &[], b"").expect("GET blob");
        assert_eq!(
            (got.status, &got.body),
            (200, &m.layers[0].data),
            "{}",
            m.platform
        );
    }
    // skopeo picks one platform of an index; --override-arch makes that choice explicit.
    let env = Env::new();
    let dest = tempfile::tempdir().expect("dest");
    let src = format!("docker://{}/smoke/multi:v1", reg.addr());
    let dst = format!("oci:{}:pulled", dest.path().display());
    let out = skopeo(
        &env,
        &[
            "--override-arch",
            "arm64",
            "copy",
            "--preserve-digests",
            "--src-tls-verify=false",
            &src,
            &dst,
        ],
    );
    assert!(out.status.success(), "arm64 pull failed: {}", stderr(&out));
    assert_eq!(pulled_manifest_digest(dest.path()), arm.manifest_digest);
    assert_eq!(
        reg.count_requests("GET", &format!("/blobs/{}", amd.layers[0].digest)),
        1,
        "only our own GET above"
    );
}

#[test]
fn htpasswd_requires_credentials() {
    let auth = RegistryAuth::Htpasswd {
        users: users(&[("alice", "alice-pw"), ("bob", "bob-pw")]),
    };
    let Some(reg) = Registry::start(auth) else {
        return;
    };
    let img = push_image(
        reg.addr(),
        "smoke/basic",
        "v1",
        Some(("alice", "alice-pw")),
        &[b"basic".to_vec()],
    );

    let dest = tempfile::tempdir().expect("dest");
    assert_unauthorized(&skopeo_pull(
        reg.addr(),
        "smoke/basic:v1",
        None,
        dest.path(),
    ));
    let dest = tempfile::tempdir().expect("dest");
    assert_unauthorized(&skopeo_pull(
        reg.addr(),
        "smoke/basic:v1",
        Some(("bob", "wrong")),
        dest.path(),
    ));

    let dest = tempfile::tempdir().expect("dest");
    let out = skopeo_pull(
        reg.addr(),
        "smoke/basic:v1",
        Some(("bob", "bob-pw")),
        dest.path(),
    );
    assert!(
        out.status.success(),
        "pull with creds failed: {}",
        stderr(&out)
    );
    assert_eq!(pulled_manifest_digest(dest.path()), img.manifest_digest);

    let anon = http_request("GET", reg.addr(), "/v2/", &[], b"").expect("GET /v2/");
    assert_eq!(anon.status, 401);
    assert!(anon
        .header("WWW-Authenticate")
        .is_some_and(|c| c.starts_with("Basic ")));
    let authed = http_request(
        "GET",
        reg.addr(),
        "/v2/",
        &[("Authorization", &basic_auth("bob", "bob-pw"))],
        b"",
    )
    .expect("GET /v2/");
    assert_eq!(authed.status, 200);
}

fn token_config() -> TokenIssuerConfig {
    TokenIssuerConfig::new()
        .user("alice", "alice-pw", &[("private/*", &["pull", "push"])])
        .user("bob", "bob-pw", &[("private/app", &["pull"])])
        .user("carol", "carol-pw", &[])
        .public("public/*")
}

#[test]
fn token_auth_grants_only_what_users_may_do() {
    let Some(reg) = Registry::start(RegistryAuth::Token(token_config())) else {
        return;
    };
    let issuer = reg.issuer().expect("issuer");
    let img = push_image(
        reg.addr(),
        "private/app",
        "v1",
        Some(("alice", "alice-pw")),
        &[b"secret layer".to_vec()],
    );
    assert!(issuer
        .requests()
        .iter()
        .any(|r| r.user.as_deref() == Some("alice")
            && r.granted
                .iter()
                .any(|a| a.name == "private/app" && a.actions.contains(&"push".to_string()))));

    // The registry challenges with our realm and service.
    let manifest_path = "/v2/private/app/manifests/v1";
    let challenge = http_request(
        "GET",
        reg.addr(),
        manifest_path,
        &[("Accept", OCI_MANIFEST)],
        b"",
    )
    .expect("GET");
    assert_eq!(challenge.status, 401);
    let www = challenge
        .header("WWW-Authenticate")
        .expect("challenge")
        .to_string();
    assert!(
        www.contains(issuer.realm()) && www.contains(&issuer.service()),
        "{www}"
    );

    // Anonymous: a token with no access, which the registry refuses as insufficient_scope.
    let issuer_addr = issuer.addr().to_string();
    let scope = form_encode("repository:private/app:pull");
    let service = form_encode(&issuer.service());
    let query = format!("/token?service={service}&scope={scope}");
    let anon = http_request("GET", &issuer_addr, &query, &[], b"").expect("anonymous token");
    assert_eq!(anon.status, 200);
    let token = anon.json()["token"].as_str().expect("token").to_string();
    assert_eq!(
        issuer.requests().last().expect("recorded").granted,
        Vec::<Access>::new()
    );
    let bearer = format!("Bearer {token}");
    let denied = http_request(
        "GET",
        reg.addr(),
        manifest_path,
        &[("Authorization", &bearer)],
        b"",
    )
    .expect("GET");
    assert_eq!(denied.status, 401);
    assert!(denied
        .header("WWW-Authenticate")
        .is_some_and(|c| c.contains("insufficient_scope")));
    let dest = tempfile::tempdir().expect("dest");
    assert_unauthorized(&skopeo_pull(
        reg.addr(),
        "private/app:v1",
        None,
        dest.path(),
    ));

    // A user without a grant, and a wrong password.
    let dest = tempfile::tempdir().expect("dest");
    assert_unauthorized(&skopeo_pull(
        reg.addr(),
        "private/app:v1",
        Some(("carol", "carol-pw")),
        dest.path(),
    ));
    let wrong = http_request(
        "GET",
        &issuer_addr,
        &query,
        &[("Authorization", &basic_auth("bob", "nope"))],
        b"",
    )
    .expect("token with wrong password");
    assert_eq!(wrong.status, 401);

    // Bob may pull, and the issuer saw his GET token request for exactly that scope.
    issuer.clear_requests();
    let dest = tempfile::tempdir().expect("dest");
    let out = skopeo_pull(
        reg.addr(),
        "private/app:v1",
        Some(("bob", "bob-pw")),
        dest.path(),
    );
    assert!(out.status.success(), "bob's pull failed: {}", stderr(&out));
    assert_eq!(pulled_manifest_digest(dest.path()), img.manifest_digest);
    let seen = issuer.requests();
    let bob = seen
        .iter()
        .find(|r| r.user.as_deref() == Some("bob"))
        .expect("bob's token request");
    assert_eq!(bob.method, "GET");
    assert_eq!(bob.scopes, vec!["repository:private/app:pull".to_string()]);
    assert_eq!(bob.granted[0].actions, vec!["pull".to_string()]);
    assert_eq!(
        reg.count_requests(
            "GET",
            &format!("/v2/private/app/blobs/{}", img.layers[0].digest)
        ),
        1
    );

    // Bob asking for push as well gets only pull: the intersection, not an error.
    let scope = form_encode("repository:private/app:pull,push");
    let both = format!(
        "/token?service={service}&scope={scope}&scope={}",
        form_encode("repository:private/other:pull")
    );
    let partial = http_request(
        "GET",
        &issuer_addr,
        &both,
        &[("Authorization", &basic_auth("bob", "bob-pw"))],
        b"",
    )
    .expect("token");
    assert_eq!(partial.status, 200);
    let last = issuer.requests().pop().expect("recorded");
    assert_eq!(last.scopes.len(), 2);
    assert_eq!(
        last.granted,
        vec![Access {
            kind: "repository".into(),
            name: "private/app".into(),
            actions: vec!["pull".into()]
        }]
    );
}

#[test]
fn token_oauth_password_and_refresh_grants() {
    let Some(reg) = Registry::start(RegistryAuth::Token(token_config().expires_in(120))) else {
        return;
    };
    let issuer = reg.issuer().expect("issuer");
    let img = push_image(
        reg.addr(),
        "private/app",
        "v1",
        Some(("alice", "alice-pw")),
        &[b"oauth".to_vec()],
    );
    let issuer_addr = issuer.addr().to_string();
    let form_headers = [("Content-Type", "application/x-www-form-urlencoded")];
    let service = form_encode(&issuer.service());
    // containerd sends scopes space-separated in one form field.
    let scope = form_encode("repository:private/app:pull repository:public/x:pull");
    let form = format!("grant_type=password&username=bob&password=bob-pw&service={service}&scope={scope}&client_id=t");
    let got = http_request(
        "POST",
        &issuer_addr,
        "/token",
        &form_headers,
        form.as_bytes(),
    )
    .expect("POST token");
    assert_eq!(got.status, 200, "{}", got.text());
    let body = got.json();
    assert_eq!(body["expires_in"], 120);
    assert!(
        body["issued_at"]
            .as_str()
            .is_some_and(|t| t.len() == 20 && t.ends_with('Z')),
        "{body}"
    );
    assert_eq!(body["token"], body["access_token"]);
    let refresh = body["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_string();
    let last = issuer.requests().pop().expect("recorded");
    assert_eq!(
        (last.method.as_str(), last.grant_type.as_deref()),
        ("POST", Some("password"))
    );
    assert_eq!(
        last.granted.len(),
        2,
        "private pull for bob, public pull for anyone"
    );

    let form =
        format!("grant_type=refresh_token&refresh_token={refresh}&service={service}&scope={scope}");
    let got = http_request(
        "POST",
        &issuer_addr,
        "/token",
        &form_headers,
        form.as_bytes(),
    )
    .expect("refresh");
    assert_eq!(got.status, 200, "{}", got.text());
    let bearer = format!(
        "Bearer {}",
        got.json()["access_token"].as_str().expect("access_token")
    );
    let manifest = http_request(
        "GET",
        reg.addr(),
        "/v2/private/app/manifests/v1",
        &[("Authorization", &bearer), ("Accept", OCI_MANIFEST)],
        b"",
    )
    .expect("GET manifest");
    assert_eq!((manifest.status, &manifest.body), (200, &img.manifest));
    let last = issuer.requests().pop().expect("recorded");
    assert_eq!(
        (last.grant_type.as_deref(), last.user.as_deref()),
        (Some("refresh_token"), Some("bob"))
    );

    let form = "grant_type=password&username=bob&password=bad&service=x&scope=y";
    let got = http_request(
        "POST",
        &issuer_addr,
        "/token",
        &form_headers,
        form.as_bytes(),
    )
    .expect("POST");
    assert_eq!(got.status, 401);
    let got = http_request(
        "POST",
        &issuer_addr,
        "/token",
        &form_headers,
        b"grant_type=refresh_token&refresh_token=no",
    )
    .expect("POST");
    assert_eq!(got.status, 401);

    // A token already past distribution's 60 s leeway is refused.
    let access = [Access {
        kind: "repository".into(),
        name: "private/app".into(),
        actions: vec!["pull".into()],
    }];
    let expired = format!("Bearer {}", issuer.mint("bob", &access, -120));
    let got = http_request(
        "GET",
        reg.addr(),
        "/v2/private/app/manifests/v1",
        &[("Authorization", &expired)],
        b"",
    )
    .expect("GET");
    assert_eq!(got.status, 401);
}
