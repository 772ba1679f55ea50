//! The proxy's read API beside manifests and blobs (tag lists, referrers, catalog, exact errors,
//! the API version header) with real clients against a token-auth distribution registry.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::support::http::{http_request, HttpResponse};
use crate::support::images::{push_image, ImageInfo, OCI_INDEX, OCI_MANIFEST};
use crate::support::proxy::ProxyProcess;
use crate::support::registry::{Registry, RegistryAuth};
use crate::support::skopeo::skopeo;
use crate::support::token_issuer::{Access, TokenIssuerConfig};
use crate::support::{run_with_stdin, stderr, stdout, Env};

const TAGS: [&str; 5] = ["latest", "v1", "v2", "v3", "v4"];

fn token_registry() -> Option<Registry> {
    let issuer = TokenIssuerConfig::new()
        .user("pusher", "push-pw", &[("*", &["pull", "push"])])
        .user("puller", "pull-pw", &[("private/*", &["pull"])])
        .user("carol", "carol-pw", &[("other/*", &["pull"])]);
    Registry::start(RegistryAuth::Token(issuer))
}

/// Pushes one image to `repo` tagged with every one of `tags` (the manifest PUT once per tag).
pub fn push_tagged(reg: &Registry, repo: &str, tags: &[&str]) -> ImageInfo {
    let img = push_image(
        reg.addr(),
        repo,
        tags[0],
        Some(("pusher", "push-pw")),
        &[b"read api layer".to_vec()],
    );
    let issuer = reg.issuer().expect("token registry");
    let token = issuer.mint(
        "pusher",
        &[Access {
            kind: "repository".into(),
            name: repo.into(),
            actions: vec!["pull".into(), "push".into()],
        }],
        300,
    );
    let bearer = format!("Bearer {token}");
    for tag in &tags[1..] {
        let r = http_request(
            "PUT",
            reg.addr(),
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("Content-Type", OCI_MANIFEST), ("Authorization", &bearer)],
            &img.manifest,
        )
        .expect("put manifest");
        assert_eq!(r.status, 201, "{}", r.text());
    }
    img
}

fn secret(env: &Env, name: &str, ns: &str, server: &str, user: &str, pw: &str) {
    let out = run_with_stdin(
        env.pullsecret(&[
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
            "--docker-password-stdin",
            "--overwrite",
        ]),
        pw.as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

fn client(env: &Env, user: &str, ns: &str, pw: &str) {
    let out = run_with_stdin(
        env.pullsecret(&["proxy", "client", "add", user, "-n", ns, "--password-stdin"]),
        pw.as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A proxy with client auth: `a-client` (namespace team-a) holds a secret that may pull
/// `private/*`; `b-client` (team-b) holds none; `c-client` (team-c) one without rights to it.
fn teams_setup(env: &Env) -> Option<(Registry, ProxyProcess)> {
    let reg = token_registry()?;
    secret(env, "reg", "team-a", reg.addr(), "puller", "pull-pw");
    secret(env, "reg", "team-c", reg.addr(), "carol", "carol-pw");
    client(env, "a-client", "team-a", "a-pw");
    client(env, "b-client", "team-b", "b-pw");
    client(env, "c-client", "team-c", "c-pw");
    let proxy = ProxyProcess::start(
        env,
        "[auth]\nenabled = true\n",
        &crate::support::proxy::plain_upstream("up", reg.addr(), ""),
    );
    Some((reg, proxy))
}

/// A bearer header from the proxy's own token endpoint (`None`: anonymous).
fn proxy_bearer(proxy: &ProxyProcess, creds: Option<(&str, &str)>) -> String {
    let token = crate::support::proxy::client_token(&proxy.addr, creds, "private/app");
    format!("Bearer {token}")
}

fn get(proxy: &ProxyProcess, path: &str, auth: Option<&str>) -> HttpResponse {
    let mut headers = vec![("Accept", OCI_MANIFEST)];
    if let Some(a) = auth {
        headers.push(("Authorization", a));
    }
    http_request("GET", &proxy.addr, path, &headers, b"").expect("request")
}

fn tags_of(r: &HttpResponse) -> Vec<String> {
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_value(r.json()["tags"].clone()).expect("tags array")
}

fn assert_api_version(r: &HttpResponse, what: &str) {
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0"),
        "{what}: {:?}",
        r.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_list_with_skopeo_oci_client_and_pages() {
    use oci_client::client::{ClientConfig, ClientProtocol};
    use oci_client::secrets::RegistryAuth as OciAuth;
    let env = Env::new();
    let Some((reg, proxy)) = tokio::task::block_in_place(|| teams_setup(&env)) else {
        return;
    };
    tokio::task::block_in_place(|| push_tagged(&reg, "private/app", &TAGS));

    // skopeo logs in to the proxy like `docker login` and lists every tag.
    let out = tokio::task::block_in_place(|| {
        skopeo(
            &env,
            &[
                "list-tags",
                "--tls-verify=false",
                "--creds",
                "a-client:a-pw",
                &format!("docker://{}/private/app", proxy.addr),
            ],
        )
    });
    assert!(
        out.status.success(),
        "skopeo list-tags: {}\n{}",
        stderr(&out),
        proxy.log()
    );
    let listed: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("skopeo json");
    assert_eq!(listed["Tags"], serde_json::json!(TAGS), "{listed}");

    // oci-client, whole and paged.
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });
    let reference: oci_client::Reference = format!("{}/private/app:v1", proxy.addr)
        .parse()
        .expect("reference");
    let auth = OciAuth::Basic("a-client".into(), "a-pw".into());
    let all = client
        .list_tags(&reference, &auth, None, None)
        .await
        .expect("oci-client list_tags");
    assert_eq!(all.tags, TAGS);
    let page = client
        .list_tags(&reference, &auth, Some(2), Some("v1"))
        .await
        .expect("oci-client list_tags n=2 last=v1");
    assert_eq!(page.tags, ["v2", "v3"]);

    // The Link header walks the pages, as the spec gives it.
    let a = proxy_bearer(&proxy, Some(("a-client", "a-pw")));
    let mut path = "/v2/private/app/tags/list?n=2".to_string();
    let mut pages = Vec::new();
    loop {
        let r = get(&proxy, &path, Some(&a));
        assert_api_version(&r, "tags list");
        assert_eq!(r.json()["name"], "private/app");
        pages.push(tags_of(&r));
        let Some(link) = r.header("link") else { break };
        path = link
            .strip_prefix('<')
            .and_then(|l| l.split_once(">; rel=\"next\""))
            .map(|(p, _)| p.to_string())
            .expect("Link: <…>; rel=\"next\"");
        assert!(pages.len() < 5, "{pages:?}");
    }
    assert_eq!(pages, [vec!["latest", "v1"], vec!["v2", "v3"], vec!["v4"]]);
    let r = get(&proxy, "/v2/private/app/tags/list?n=oops", Some(&a));
    assert_eq!(
        (r.status, r.json()["errors"][0]["code"].as_str()),
        (400, Some("PAGINATION_NUMBER_INVALID"))
    );

    // Cached per credential identity for tag_ttl: the listings above went upstream once.
    assert_eq!(
        reg.count_requests("GET", "/v2/private/app/tags/list"),
        1,
        "{}",
        reg.access_log()
    );

    // No secret (team-b), a secret without rights (team-c), anonymous: 401, and the cached
    // list is not theirs.
    for creds in [Some(("b-client", "b-pw")), Some(("c-client", "c-pw")), None] {
        let t = proxy_bearer(&proxy, creds);
        let r = get(&proxy, "/v2/private/app/tags/list", Some(&t));
        assert_eq!(r.status, 401, "{creds:?}: {}", r.text());
        assert_eq!(r.json()["errors"][0]["code"], "UNAUTHORIZED");
        assert!(!r.text().contains("latest"), "{}", r.text());
    }
    // Unauthenticated: the proxy's own challenge.
    let r = get(&proxy, "/v2/private/app/tags/list", None);
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .unwrap_or_default()
        .contains("/token"));
    assert_api_version(&r, "401");
}

#[test]
fn tags_list_served_stale_when_the_upstream_is_down() {
    let env = Env::new();
    let Some(mut reg) = token_registry() else {
        return;
    };
    push_tagged(&reg, "private/app", &TAGS);
    secret(&env, "up-cred", "default", reg.addr(), "puller", "pull-pw");
    let proxy = ProxyProcess::start(
        &env,
        "",
        &crate::support::proxy::plain_upstream(
            "up",
            reg.addr(),
            "secret = \"up-cred\"\ntag_ttl = \"0s\"\n",
        ),
    );
    let r = get(&proxy, "/v2/private/app/tags/list", None);
    assert_eq!(tags_of(&r), TAGS);
    assert!(r.header("warning").is_none());
    // tag_ttl 0: every listing asks the upstream.
    assert_eq!(
        tags_of(&get(&proxy, "/v2/private/app/tags/list", None)),
        TAGS
    );
    assert_eq!(reg.count_requests("GET", "/v2/private/app/tags/list"), 2);

    reg.stop();
    let r = get(&proxy, "/v2/private/app/tags/list?n=1", None);
    assert_eq!(tags_of(&r), ["latest"]);
    assert_eq!(
        r.header("warning"),
        Some("110 - \"Response is Stale\""),
        "{:?}",
        r.headers
    );
    assert!(r.header("link").is_some());
    // A repository never listed has nothing stale to give.
    let r = get(&proxy, "/v2/private/other/tags/list", None);
    assert_eq!(r.status, 502, "{}", r.text());

    reg.restart();
    let r = get(&proxy, "/v2/private/app/tags/list", None);
    assert_eq!(tags_of(&r), TAGS);
    assert!(r.header("warning").is_none());
}

#[test]
fn catalog_is_unsupported_for_every_client() {
    let env = Env::new();
    let Some((_reg, proxy)) = teams_setup(&env) else {
        return;
    };
    let r = get(&proxy, "/v2/_catalog", None);
    assert_eq!(r.status, 401, "{}", r.text());
    for creds in [Some(("a-client", "a-pw")), Some(("b-client", "b-pw")), None] {
        let t = proxy_bearer(&proxy, creds);
        let r = get(&proxy, "/v2/_catalog?n=10", Some(&t));
        assert_eq!(r.status, 404, "{creds:?}: {}", r.text());
        assert_eq!(r.json()["errors"][0]["code"], "UNSUPPORTED");
        assert_api_version(&r, "catalog");
    }
}

#[test]
fn exact_errors_and_the_api_version_header() {
    let env = Env::new();
    let Some((reg, proxy)) = teams_setup(&env) else {
        return;
    };
    let img = push_tagged(&reg, "private/app", &["v1"]);
    let a = proxy_bearer(&proxy, Some(("a-client", "a-pw")));
    let b = proxy_bearer(&proxy, Some(("b-client", "b-pw")));
    let code = |r: &HttpResponse| {
        (
            r.status,
            r.json()["errors"][0]["code"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    };
    for auth in [&a, &b] {
        // A tag outside the grammar names no manifest; a malformed digest is invalid.
        let r = get(&proxy, "/v2/private/app/manifests/.INVALID", Some(auth));
        assert_eq!(code(&r), (404, "MANIFEST_UNKNOWN".into()));
        assert_api_version(&r, "invalid tag");
        for kind in ["manifests", "blobs"] {
            let r = get(
                &proxy,
                &format!("/v2/private/app/{kind}/sha256:totallywrong"),
                Some(auth),
            );
            assert_eq!(code(&r), (400, "DIGEST_INVALID".into()), "{kind}");
            assert_api_version(&r, kind);
        }
    }
    // An unknown repository: distribution says NAME_UNKNOWN for its tag list and
    // MANIFEST_UNKNOWN / BLOB_UNKNOWN for its content; each passes through as it said it.
    let unknown = [
        ("/v2/private/nothing/tags/list", "NAME_UNKNOWN"),
        ("/v2/private/nothing/manifests/v1", "MANIFEST_UNKNOWN"),
        (
            &*format!("/v2/private/nothing/manifests/{}", img.manifest_digest),
            "MANIFEST_UNKNOWN",
        ),
        (
            &*format!("/v2/private/nothing/blobs/{}", img.layers[0].digest),
            "BLOB_UNKNOWN",
        ),
    ];
    for (path, want) in unknown {
        assert_eq!(
            code(&get(&proxy, path, Some(&a))),
            (404, want.into()),
            "{path}"
        );
    }
    // Every answer under /v2/ carries the header: the base, manifests, blobs, refusals.
    assert_api_version(&get(&proxy, "/v2/", Some(&a)), "base");
    let m = get(&proxy, "/v2/private/app/manifests/v1", Some(&a));
    assert_eq!(m.status, 200);
    assert_api_version(&m, "manifest");
    let blob = format!("/v2/private/app/blobs/{}", img.layers[0].digest);
    let r = get(&proxy, &blob, Some(&a));
    assert_eq!(r.status, 200);
    assert_api_version(&r, "blob");
    let r = http_request("HEAD", &proxy.addr, &blob, &[("Authorization", &a)], b"").expect("head");
    assert_api_version(&r, "blob HEAD");
    let r = get(&proxy, &blob, Some(&b));
    assert_eq!(r.status, 401);
    assert_api_version(&r, "refused blob");
    let r = http_request(
        "PUT",
        &proxy.addr,
        "/v2/private/app/manifests/v9",
        &[],
        b"{}",
    )
    .expect("put");
    assert_eq!(r.status, 405);
    assert_api_version(&r, "push");
}

/// Without client auth the sendfile path answers cached blobs; its heads carry the header too.
#[test]
fn sendfile_answers_carry_the_api_version() {
    let env = Env::new();
    let Some(reg) = token_registry() else {
        return;
    };
    let img = push_tagged(&reg, "private/app", &["v1"]);
    secret(&env, "up-cred", "default", reg.addr(), "puller", "pull-pw");
    let proxy = ProxyProcess::start(
        &env,
        "",
        &crate::support::proxy::plain_upstream("up", reg.addr(), "secret = \"up-cred\"\n"),
    );
    let blob = format!("/v2/private/app/blobs/{}", img.layers[0].digest);
    for _ in 0..2 {
        let r = get(&proxy, &blob, None);
        assert_eq!(r.status, 200);
        assert_eq!(r.body, img.layers[0].data);
        assert_api_version(&r, "blob");
        proxy.wait_fills_done();
    }
    assert!(
        proxy.log().contains("sendfile=true"),
        "the second GET did not take the sendfile path:\n{}",
        proxy.log()
    );
}

/// An upstream that pages its tag list (`Link`, relative then absolute), as distribution 2.8
/// does not, and answers 429 while `busy` is set.
struct PagedTags {
    addr: String,
    busy: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl PagedTags {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let busy = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (b, r, a) = (busy.clone(), requests.clone(), addr.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = Self::answer(conn, &a, &b, &r);
            }
        });
        Self {
            addr,
            busy,
            requests,
        }
    }

    fn answer(
        mut conn: TcpStream,
        addr: &str,
        busy: &AtomicBool,
        requests: &Mutex<Vec<String>>,
    ) -> std::io::Result<()> {
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let target = line.split(' ').nth(1).unwrap_or_default().to_string();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h == "\r\n" {
                break;
            }
        }
        requests.lock().expect("requests").push(target.clone());
        let (status, link, body) = match target.as_str() {
            "/v2/" => ("200 OK", None, "{}".to_string()),
            _ if busy.load(Ordering::SeqCst) => ("429 Too Many Requests", None, String::new()),
            "/v2/r/tags/list" => (
                "200 OK",
                Some("</v2/r/tags/list?last=b&n=2>; rel=\"next\"".to_string()),
                r#"{"name":"r","tags":["b","a"]}"#.to_string(),
            ),
            "/v2/r/tags/list?last=b&n=2" => (
                "200 OK",
                Some(format!(
                    "<http://{addr}/v2/r/tags/list?last=d&n=2>; rel=\"next\""
                )),
                r#"{"name":"r","tags":["d","c"]}"#.to_string(),
            ),
            "/v2/r/tags/list?last=d&n=2" => (
                "200 OK",
                None,
                r#"{"name":"r","tags":["e"]}"#.to_string(),
            ),
            REFERRERS_PATH => (
                "200 OK",
                None,
                format!(
                    r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{b}","size":10,"artifactType":"{SIG_TYPE}"}},{{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{c}","size":11,"artifactType":"{SBOM_TYPE}"}}]}}"#,
                    b = "b".repeat(64),
                    c = "c".repeat(64)
                ),
            ),
            "/v2/away/tags/list" => (
                "200 OK",
                Some("<http://elsewhere.invalid/v2/away/tags/list?last=a>; rel=\"next\"".into()),
                r#"{"name":"away","tags":["a"]}"#.to_string(),
            ),
            _ => ("404 Not Found", None, r#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#.to_string()),
        };
        let mut head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        if status.starts_with("429") {
            head.push_str("Retry-After: 1\r\n");
        }
        if let Some(l) = link {
            head.push_str(&format!("Link: {l}\r\n"));
        }
        head.push_str("\r\n");
        conn.write_all(head.as_bytes())?;
        conn.write_all(body.as_bytes())
    }

    fn tag_requests(&self) -> usize {
        let r = self.requests.lock().expect("requests");
        r.iter().filter(|t| t.contains("/tags/list")).count()
    }
}

/// A subject whose referrers the paging upstream's referrers API lists.
const REFERRERS_PATH: &str =
    "/v2/r/referrers/sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// The upstream's own pages are followed (relative and absolute `Link` on its origin, never
/// another host), and a 429 serves the last list stale.
#[test]
fn upstream_pages_and_referrers_api_followed_and_429_serves_stale() {
    let env = Env::new();
    let up = PagedTags::start();
    let proxy = ProxyProcess::start(
        &env,
        "",
        &crate::support::proxy::plain_upstream("up", &up.addr, "tag_ttl = \"0s\"\n"),
    );
    let r = get(&proxy, "/v2/r/tags/list", None);
    assert_eq!(tags_of(&r), ["a", "b", "c", "d", "e"]);
    assert_eq!(up.tag_requests(), 3);
    let r = get(&proxy, "/v2/away/tags/list", None);
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        !up.requests
            .lock()
            .expect("requests")
            .iter()
            .any(|t| t.contains("last=a")),
        "followed a link off the registry"
    );
    // An upstream that says NAME_UNKNOWN for an unknown repository is passed on for every read
    // (a tag's HEAD 404 has no body, so the GET brings the code); referrers are an empty index.
    let digest = format!("sha256:{}", "d".repeat(64));
    for path in [
        "/v2/nothing/tags/list".to_string(),
        "/v2/nothing/manifests/v1".to_string(),
        format!("/v2/nothing/manifests/{digest}"),
        format!("/v2/nothing/blobs/{digest}"),
    ] {
        let r = get(&proxy, &path, None);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert_eq!(r.json()["errors"][0]["code"], "NAME_UNKNOWN", "{path}");
    }
    let r = get(&proxy, &format!("/v2/nothing/referrers/{digest}"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["manifests"], serde_json::json!([]));

    // An upstream with the referrers API: its answer passes through, filtered here.
    let r = get(&proxy, REFERRERS_PATH, None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["manifests"].as_array().map(Vec::len), Some(2));
    let r = get(
        &proxy,
        &format!("{REFERRERS_PATH}?artifactType=application%2Fspdx%2Bjson"),
        None,
    );
    assert_eq!(r.json()["manifests"][0]["artifactType"], SBOM_TYPE);
    assert_eq!(r.json()["manifests"].as_array().map(Vec::len), Some(1));
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));

    up.busy.store(true, Ordering::SeqCst);
    // Referrers too are served stale while the upstream answers 429.
    let r = get(&proxy, REFERRERS_PATH, None);
    assert_eq!(r.json()["manifests"].as_array().map(Vec::len), Some(2));
    assert_eq!(r.header("warning"), Some("110 - \"Response is Stale\""));
    let r = get(&proxy, "/v2/r/tags/list?n=2&last=a", None);
    assert_eq!(tags_of(&r), ["b", "c"]);
    assert_eq!(r.header("warning"), Some("110 - \"Response is Stale\""));
    let r = get(&proxy, "/v2/nothing/tags/list", None);
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
}

const SIG_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
const SBOM_TYPE: &str = "application/spdx+json";
const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";

/// A push token for `repo` on the token registry.
fn push_bearer(reg: &Registry, repo: &str) -> String {
    let token = reg.issuer().expect("token registry").mint(
        "pusher",
        &[Access {
            kind: "repository".into(),
            name: repo.into(),
            actions: vec!["pull".into(), "push".into()],
        }],
        300,
    );
    format!("Bearer {token}")
}

/// A monolithic blob upload (POST, then PUT with the digest); returns the digest.
fn upload_blob(reg: &Registry, bearer: &str, repo: &str, data: &[u8]) -> String {
    let digest = crate::support::images::sha256_digest(data);
    let r = http_request(
        "POST",
        reg.addr(),
        &format!("/v2/{repo}/blobs/uploads/"),
        &[("Authorization", bearer)],
        b"",
    )
    .expect("start upload");
    assert_eq!(r.status, 202, "{}", r.text());
    let location = r.header("location").expect("Location").to_string();
    let path = location
        .strip_prefix(&format!("http://{}", reg.addr()))
        .unwrap_or(&location)
        .to_string();
    let sep = if path.contains('?') { '&' } else { '?' };
    let r = http_request(
        "PUT",
        reg.addr(),
        &format!("{path}{sep}digest={digest}"),
        &[
            ("Authorization", bearer),
            ("Content-Type", "application/octet-stream"),
        ],
        data,
    )
    .expect("finish upload");
    assert_eq!(r.status, 201, "{}", r.text());
    digest
}

fn put_manifest(reg: &Registry, bearer: &str, repo: &str, reference: &str, ty: &str, body: &[u8]) {
    let r = http_request(
        "PUT",
        reg.addr(),
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Authorization", bearer), ("Content-Type", ty)],
        body,
    )
    .expect("put manifest");
    assert_eq!(r.status, 201, "{}", r.text());
}

/// One artifact of `artifact_type` whose `subject` is `img`; its manifest bytes and digest, and
/// its layer's bytes and digest.
fn push_artifact(
    reg: &Registry,
    repo: &str,
    img: &ImageInfo,
    artifact_type: &str,
    payload: &[u8],
) -> (Vec<u8>, String, String) {
    let bearer = push_bearer(reg, repo);
    let empty = upload_blob(reg, &bearer, repo, b"{}");
    let layer = upload_blob(reg, &bearer, repo, payload);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": EMPTY_TYPE, "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": layer, "size": payload.len()}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": img.manifest_digest, "size": img.manifest.len()},
    }))
    .expect("artifact manifest");
    let digest = crate::support::images::sha256_digest(&manifest);
    put_manifest(reg, &bearer, repo, &digest, OCI_MANIFEST, &manifest);
    (manifest, digest, layer)
}

/// The referrers tag schema, as clients write it for registries without the API: an index of
/// `descriptors` tagged `sha256-<hex>` of `img`'s manifest.
fn fallback_tag(reg: &Registry, img: &ImageInfo, descriptors: Vec<serde_json::Value>) {
    let fallback = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": descriptors,
    }))
    .expect("index");
    let tag = img.manifest_digest.replace(':', "-");
    put_manifest(
        reg,
        &push_bearer(reg, "private/app"),
        "private/app",
        &tag,
        OCI_INDEX,
        &fallback,
    );
}

/// A signature and an SBOM referring to one image, listed through the proxy from distribution
/// 2.8 (which answers 404 to the referrers API, so the `sha256-<hex>` tag is used).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_from_the_fallback_tag_with_and_without_a_filter() {
    use oci_client::client::{ClientConfig, ClientProtocol};
    use oci_client::secrets::RegistryAuth as OciAuth;
    use oci_client::RegistryOperation;
    let env = Env::new();
    let Some((reg, proxy)) = tokio::task::block_in_place(|| teams_setup(&env)) else {
        return;
    };
    let (img, sig, sbom) = tokio::task::block_in_place(|| {
        let img = push_tagged(&reg, "private/app", &["v1"]);
        let sig = push_artifact(&reg, "private/app", &img, SIG_TYPE, b"signature bytes");
        let sbom = push_artifact(&reg, "private/app", &img, SBOM_TYPE, b"{\"spdx\":1}");
        fallback_tag(
            &reg,
            &img,
            vec![
                serde_json::json!({"mediaType": OCI_MANIFEST, "digest": sig.1, "size": sig.0.len(), "artifactType": SIG_TYPE}),
                serde_json::json!({"mediaType": OCI_MANIFEST, "digest": sbom.1, "size": sbom.0.len(), "artifactType": SBOM_TYPE}),
            ],
        );
        (img, sig, sbom)
    });
    let a = proxy_bearer(&proxy, Some(("a-client", "a-pw")));
    let path = format!("/v2/private/app/referrers/{}", img.manifest_digest);
    let digests = |r: &HttpResponse| -> Vec<String> {
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .map(|d| d["digest"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let r = get(&proxy, &path, Some(&a));
    assert_eq!(digests(&r), [sig.1.clone(), sbom.1.clone()]);
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    assert_eq!(r.json()["schemaVersion"], 2);
    assert!(r.header("oci-filters-applied").is_none());
    // distribution 2.8 has no referrers API: its 404 sent the proxy to the tag.
    let fallback_tag = img.manifest_digest.replace(':', "-");
    tokio::task::block_in_place(|| {
        assert_eq!(reg.count_requests("GET", &path), 1, "{}", reg.access_log());
        assert_eq!(
            reg.count_requests("GET", &format!("/manifests/{fallback_tag}")),
            1
        );
    });
    assert_api_version(&r, "referrers");
    let r = get(
        &proxy,
        &format!(
            "{path}?artifactType={}",
            SIG_TYPE.replace('/', "%2F").replace('+', "%2B")
        ),
        Some(&a),
    );
    assert_eq!(digests(&r), vec![sig.1.clone()]);
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));

    // No referrers: an empty index, not a 404.
    let r = get(
        &proxy,
        &format!("/v2/private/app/referrers/{}", img.config_digest()),
        Some(&a),
    );
    assert_eq!(digests(&r), Vec::<String>::new());
    let r = get(&proxy, "/v2/private/app/referrers/sha256:nope", Some(&a));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errors"][0]["code"], "DIGEST_INVALID");
    let r = http_request("HEAD", &proxy.addr, &path, &[("Authorization", &a)], b"").expect("head");
    assert_eq!(r.status, 405);

    // The artifact itself pulls through like any image.
    let r = get(
        &proxy,
        &format!("/v2/private/app/manifests/{}", sig.1),
        Some(&a),
    );
    assert_eq!((r.status, &r.body), (200, &sig.0));
    let r = get(
        &proxy,
        &format!("/v2/private/app/blobs/{}", sig.2),
        Some(&a),
    );
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"signature bytes"[..])
    );

    // oci-client's referrers call, filtered.
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });
    let reference: oci_client::Reference =
        format!("{}/private/app@{}", proxy.addr, img.manifest_digest)
            .parse()
            .expect("reference");
    client
        .auth(
            &reference,
            &OciAuth::Basic("a-client".into(), "a-pw".into()),
            RegistryOperation::Pull,
        )
        .await
        .expect("oci-client login to the proxy");
    let index = client
        .pull_referrers(&reference, Some(SBOM_TYPE))
        .await
        .expect("oci-client pull_referrers");
    assert_eq!(index.manifests.len(), 1);
    assert_eq!(index.manifests[0].digest, sbom.1);

    // Clients without rights to the repository: 401, nothing listed.
    for creds in [Some(("b-client", "b-pw")), Some(("c-client", "c-pw")), None] {
        let t = proxy_bearer(&proxy, creds);
        let r = get(&proxy, &path, Some(&t));
        assert_eq!(r.status, 401, "{creds:?}: {}", r.text());
        assert!(!r.text().contains(&sig.1), "{}", r.text());
    }
}

/// distribution converts a Docker manifest list asked for by tag with only the OCI index in
/// Accept into a signed schema 1 manifest (its digest is not the body's sha256): refused as an
/// unknown manifest with a message naming schema 1, never a 502; by digest the list is served.
#[test]
fn schema1_conversions_are_refused_as_unknown_manifests() {
    use crate::support::images::{push_blob, put_manifest as put_anon, DOCKER_LIST};
    let env = Env::new();
    let Some(reg) = Registry::start(RegistryAuth::Anonymous) else {
        return;
    };
    let layer = crate::support::images::tar_one_file("f", b"schema1");
    let layer_digest = push_blob(reg.addr(), "dock/app", &layer);
    // distribution needs a history to write schema 1 (without one it answers 400 instead).
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "test"}],
    }))
    .expect("config");
    let config_digest = push_blob(reg.addr(), "dock/app", &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::support::images::DOCKER_MANIFEST,
        "config": {"mediaType": crate::support::images::DOCKER_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": crate::support::images::DOCKER_LAYER_TAR, "digest": layer_digest, "size": layer.len()}],
    }))
    .expect("manifest");
    let manifest_digest = crate::support::images::sha256_digest(&manifest);
    put_anon(
        reg.addr(),
        "dock/app",
        &manifest_digest,
        crate::support::images::DOCKER_MANIFEST,
        &manifest,
    );
    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [{"mediaType": crate::support::images::DOCKER_MANIFEST, "digest": manifest_digest,
                       "size": manifest.len(), "platform": {"architecture": "amd64", "os": "linux"}}],
    }))
    .expect("list");
    put_anon(reg.addr(), "dock/app", "multi", DOCKER_LIST, &list);

    // What distribution itself answers: schema 1, signed, under a digest of the payload alone.
    let direct = http_request(
        "GET",
        reg.addr(),
        "/v2/dock/app/manifests/multi",
        &[("Accept", OCI_INDEX)],
        b"",
    )
    .expect("direct GET");
    assert_eq!(
        direct.header("content-type"),
        Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
        "{}",
        direct.text()
    );
    assert_ne!(
        direct.header("docker-content-digest").map(str::to_string),
        Some(crate::support::images::sha256_digest(&direct.body))
    );

    let proxy = ProxyProcess::start(
        &env,
        "",
        &crate::support::proxy::plain_upstream("up", reg.addr(), ""),
    );
    for method in ["GET", "HEAD"] {
        let r = http_request(
            method,
            &proxy.addr,
            "/v2/dock/app/manifests/multi",
            &[("Accept", OCI_INDEX)],
            b"",
        )
        .expect("through the proxy");
        assert_eq!(r.status, 404, "{method}: {}", r.text());
        if method == "GET" {
            assert_eq!(r.json()["errors"][0]["code"], "MANIFEST_UNKNOWN");
            let message = r.json()["errors"][0]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(message.contains("schema 1"), "{message}");
        }
    }
    // Asked for what it is, the list passes through; by digest distribution never converts.
    let r = http_request(
        "GET",
        &proxy.addr,
        "/v2/dock/app/manifests/multi",
        &[("Accept", &format!("{OCI_INDEX}, {DOCKER_LIST}"))],
        b"",
    )
    .expect("list through the proxy");
    assert_eq!((r.status, &r.body), (200, &list), "{}", r.text());
    let r = http_request(
        "GET",
        &proxy.addr,
        &format!(
            "/v2/dock/app/manifests/{}",
            crate::support::images::sha256_digest(&list)
        ),
        &[("Accept", OCI_INDEX)],
        b"",
    )
    .expect("list by digest");
    assert_eq!((r.status, &r.body), (200, &list), "{}", r.text());
}

/// `pull --referrers` from distribution 2.8 (token auth; referrers from the fallback tag): the
/// signature and the SBOM land in the layout with their blobs, index.json lists them by digest
/// with their artifactType, skopeo still reads the image, and a listed artifact that is gone is
/// named, not fatal.
#[test]
fn pull_referrers_copies_artifacts_into_the_layout() {
    use crate::support::images::sha256_digest;
    let env = Env::new();
    let Some(reg) = token_registry() else {
        return;
    };
    let img = push_tagged(&reg, "private/app", &["v1"]);
    let sig = push_artifact(&reg, "private/app", &img, SIG_TYPE, b"signature bytes");
    let sbom = push_artifact(&reg, "private/app", &img, SBOM_TYPE, b"{\"spdx\":1}");
    // A third artifact, listed in the fallback tag and then deleted.
    let gone = push_artifact(&reg, "private/app", &img, SBOM_TYPE, b"deleted later").1;
    fallback_tag(
        &reg,
        &img,
        vec![
            serde_json::json!({"mediaType": OCI_MANIFEST, "digest": sig.1, "size": sig.0.len(),
                               "artifactType": SIG_TYPE, "annotations": {"dev.cosignproject.cosign/signature": "MEUC"}}),
            serde_json::json!({"mediaType": OCI_MANIFEST, "digest": sbom.1, "size": sbom.0.len(), "artifactType": SBOM_TYPE}),
            serde_json::json!({"mediaType": OCI_MANIFEST, "digest": gone, "size": 10, "artifactType": SBOM_TYPE}),
        ],
    );
    let token = reg.issuer().expect("token registry").mint(
        "pusher",
        &[Access {
            kind: "repository".into(),
            name: "private/app".into(),
            actions: vec!["delete".into()],
        }],
        300,
    );
    let r = http_request(
        "DELETE",
        reg.addr(),
        &format!("/v2/private/app/manifests/{gone}"),
        &[("Authorization", &format!("Bearer {token}"))],
        b"",
    )
    .expect("delete");
    assert_eq!(r.status, 202, "{}", r.text());
    let dir = env.path("layout");
    let image = format!("{}/private/app:v1", reg.addr());
    let pull = |extra: &[&str]| {
        let d = dir.display().to_string();
        let mut args = vec![
            "pull",
            &image,
            "--insecure",
            "--output",
            &d,
            "--creds",
            "puller:pull-pw",
        ];
        args.extend_from_slice(extra);
        env.pullsecret(&args).output().expect("run pullsecret pull")
    };
    let index_json = || -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("index.json"))
            .expect("index.json is JSON")
    };
    let blob = |d: &str| {
        std::fs::read(
            dir.join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
    };

    // Without --referrers, only the image.
    let out = pull(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(index_json()["manifests"].as_array().map(Vec::len), Some(1));
    assert!(blob(&sig.1).is_err());

    for run in 0..2 {
        let out = pull(&["--referrers"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out).trim(), img.manifest_digest);
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "warning: referrer {gone} not copied: listed, but gone"
            )),
            "{err}"
        );
        assert!(err.contains("2 referrers)"), "{err}");
        // Run twice: the same three entries, no duplicates.
        let index = index_json();
        let entries = index["manifests"].as_array().expect("manifests");
        assert_eq!(entries.len(), 3, "run {run}: {index}");
        assert_eq!(entries[0]["digest"], img.manifest_digest.as_str());
        assert_eq!(
            entries[0]["annotations"]["org.opencontainers.image.ref.name"],
            "v1"
        );
        assert_eq!(
            entries[1],
            serde_json::json!({"mediaType": OCI_MANIFEST, "digest": sig.1, "size": sig.0.len(),
                               "artifactType": SIG_TYPE, "annotations": {"dev.cosignproject.cosign/signature": "MEUC"}})
        );
        assert_eq!(
            entries[2],
            serde_json::json!({"mediaType": OCI_MANIFEST, "digest": sbom.1, "size": sbom.0.len(), "artifactType": SBOM_TYPE})
        );
    }
    // The referrer manifests and their blobs, byte for byte.
    assert_eq!(blob(&sig.1).expect("signature manifest"), sig.0);
    assert_eq!(blob(&sbom.1).expect("sbom manifest"), sbom.0);
    assert_eq!(blob(&sig.2).expect("signature layer"), b"signature bytes");
    assert_eq!(blob(&sbom.2).expect("sbom layer"), b"{\"spdx\":1}");
    assert_eq!(blob(&sha256_digest(b"{}")).expect("empty config"), b"{}");

    // skopeo still finds the image by tag and copies it whole.
    let skopeo_env = Env::new();
    let copy = tempfile::tempdir().expect("copy dir");
    let out = skopeo(
        &skopeo_env,
        &[
            "copy",
            &format!("oci:{}:v1", dir.display()),
            &format!("dir:{}", copy.path().display()),
        ],
    );
    assert!(out.status.success(), "skopeo copy: {}", stderr(&out));
    assert_eq!(
        std::fs::read(copy.path().join("manifest.json")).expect("copied manifest"),
        img.manifest
    );
    // oci-client would follow the same subject: the copied signature names the image's digest.
    let sig_manifest: serde_json::Value = serde_json::from_slice(&sig.0).expect("sig json");
    assert_eq!(
        sig_manifest["subject"]["digest"],
        img.manifest_digest.as_str()
    );
}
