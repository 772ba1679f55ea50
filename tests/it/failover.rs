//! Failover chains: an upstream with several URLs tries them in order when one is unwell, with
//! the same credentials; the cache is shared because content is by digest.

use std::sync::atomic::Ordering;

use crate::support::fault_server::{Fault, FaultServer};
use crate::support::http::http_request;
use crate::support::proxy::{stream_get, ProxyProcess};
use crate::support::{store_canary_secret, Env};

const OCI: (&str, &str) = ("Accept", "application/vnd.oci.image.manifest.v1+json");

#[test]
fn an_unwell_first_url_fails_over_to_the_next() {
    let env = Env::new();
    let blob: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 239) as u8).collect();
    let mirror = FaultServer::start(blob.clone());
    let origin = FaultServer::start(blob);
    // The mirror answers 503; a closed port before it fails to connect at all.
    mirror.set(Fault::Status(503));
    let closed = format!("127.0.0.1:{}", crate::support::proxy::free_port());
    store_canary_secret(&env, "fault-canary", &mirror.addr);
    let upstream = format!(
        "[[upstream]]\nname = \"f\"\nurl = \"http://{closed}\"\ninsecure = true\nsecret = \"fault-canary\"\ncircuit_failures = 0\nfallback_urls = [\"http://{}\", \"http://{}\"]\n",
        mirror.addr, origin.addr
    );
    let proxy = ProxyProcess::start(&env, "[prefetch]\nenabled = false\n", &upstream);
    let m =
        http_request("GET", &proxy.addr, "/v2/app/manifests/v1", &[OCI], b"").expect("manifest");
    assert_eq!(m.status, 200, "{}", m.text());
    assert_eq!(m.body, origin.manifest);
    let got = stream_get(
        &proxy.addr,
        &format!("/v2/app/blobs/{}", origin.blob_digest),
        &[],
    )
    .expect("blob");
    assert_eq!(
        (got.status, got.digest.as_str()),
        (200, origin.blob_digest.as_str())
    );
    assert_eq!(
        origin.blob_gets.load(Ordering::Relaxed),
        1,
        "the origin served the blob"
    );
    assert_eq!(
        mirror.blob_gets.load(Ordering::Relaxed),
        0,
        "the 503 mirror served nothing"
    );
    assert!(
        proxy.log().contains("failing over to the next URL"),
        "{}",
        proxy.log()
    );
    // The mirror recovers: the next fetch (the uncached config blob) is answered by it, before
    // the origin is asked.
    mirror.set(Fault::None);
    let manifest: serde_json::Value = serde_json::from_slice(&m.body).expect("manifest json");
    let config = manifest["config"]["digest"]
        .as_str()
        .expect("config digest")
        .to_string();
    let (mirror_before, origin_before) = (
        mirror.requests.load(Ordering::Relaxed),
        origin.requests.load(Ordering::Relaxed),
    );
    let c = http_request(
        "GET",
        &proxy.addr,
        &format!("/v2/app/blobs/{config}"),
        &[],
        b"",
    )
    .expect("config");
    assert_eq!(c.status, 200, "{}", c.text());
    assert!(
        mirror.requests.load(Ordering::Relaxed) > mirror_before,
        "the mirror was not asked"
    );
    assert_eq!(
        origin.requests.load(Ordering::Relaxed),
        origin_before,
        "the origin was asked"
    );
}

/// Issue 17, deliverable 6: credentials per URL. The requester's secret holds an entry for the
/// mirror and one for the origin (as a Kubernetes Secret with two registries does); when the
/// mirror fails, the origin gets the origin's credentials, not the mirror's.
#[test]
fn a_fallback_url_gets_the_secrets_own_entry_for_its_host() {
    use pullsecret::secret::RegistrySecret;
    use secrecy::SecretString;
    let env = Env::new();
    let blob: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 241) as u8).collect();
    let mirror = FaultServer::start(blob.clone());
    let origin = FaultServer::start_with_login(blob, "origin-bot", "origin-pw-7f3a");
    mirror.set(Fault::Status(503));
    let entries = [
        RegistrySecret::new(
            &mirror.addr,
            crate::support::CANARY_USER,
            SecretString::from(crate::support::CANARY),
        ),
        RegistrySecret::new(
            &origin.addr,
            "origin-bot",
            SecretString::from("origin-pw-7f3a"),
        ),
    ];
    let secret = pullsecret::store::kube::docker_registry_json("fault-canary", None, &entries);
    let out = crate::support::run_with_stdin(
        env.pullsecret(&["secret", "import", "-f", "-"]),
        secret.as_bytes(),
    );
    assert!(out.status.success(), "{}", crate::support::stderr(&out));
    let upstream = format!(
        "[[upstream]]\nname = \"f\"\nurl = \"http://{}\"\ninsecure = true\nsecret = \"fault-canary\"\ncircuit_failures = 0\nfallback_urls = [\"http://{}\"]\n",
        mirror.addr, origin.addr
    );
    let proxy = ProxyProcess::start(&env, "[prefetch]\nenabled = false\n", &upstream);
    let m =
        http_request("GET", &proxy.addr, "/v2/app/manifests/v1", &[OCI], b"").expect("manifest");
    assert_eq!(m.status, 200, "{}\n{}", m.text(), proxy.log());
    assert_eq!(m.body, origin.manifest);
    let got = stream_get(
        &proxy.addr,
        &format!("/v2/app/blobs/{}", origin.blob_digest),
        &[],
    )
    .expect("blob");
    assert_eq!(
        (got.status, got.digest.as_str()),
        (200, origin.blob_digest.as_str())
    );
    assert_eq!(origin.blob_gets.load(Ordering::Relaxed), 1);
    let log = proxy.log();
    assert!(
        !log.contains("origin-pw-7f3a"),
        "the origin's password leaked into the log"
    );
    crate::support::assert_no_canary("the proxy log", &log);
}
