//! Prefetch on manifest: a client's manifest GET starts its config and layers at once (with the
//! client's credentials), each fetched once; the client's own GETs then hit, and /metrics tells
//! prefetched bytes from those used.

use crate::support::http::http_request;
use crate::support::{eventually, Env, Scenario};

const OCI: (&str, &str) = ("Accept", "application/vnd.oci.image.manifest.v1+json");

fn metric(addr: &str, name: &str) -> u64 {
    crate::support::metric(addr, name).map_or(0, |v| v as u64)
}

#[test]
fn a_manifest_get_starts_the_layers_and_the_client_joins_them() {
    let env = Env::new();
    let Some(sc) = Scenario::token_registry(&env, &[("robot", "robot-pw", "private/*")]) else {
        return;
    };
    let layers: Vec<Vec<u8>> = (0..3u8)
        .map(|i| vec![i + 1; 200_000 + i as usize])
        .collect();
    let img = sc.push("private/app", "v1", &layers);
    let (reg, proxy) = sc
        .secret("upstream-cred", "robot", "robot-pw")
        .config("default_upstream = \"up\"")
        .upstream("up", "secret = \"upstream-cred\"")
        .start();
    let m = http_request(
        "GET",
        &proxy.addr,
        "/v2/private/app/manifests/v1",
        &[OCI],
        b"",
    )
    .expect("manifest");
    assert_eq!(m.status, 200, "{}", m.text());
    // No blob was asked for, yet every one reaches the cache.
    let all: Vec<String> = img
        .layer_digests()
        .into_iter()
        .chain(std::iter::once(img.config.digest.clone()))
        .collect();
    for d in &all {
        proxy.wait_cached(d);
    }
    eventually(
        std::time::Duration::from_secs(10),
        "prefetched bytes in /metrics",
        || metric(&proxy.addr, "pullsecret_proxy_prefetch_bytes_total") > 600_000,
    );
    assert_eq!(
        metric(&proxy.addr, "pullsecret_proxy_prefetch_used_bytes_total"),
        0
    );
    // The client's GETs are cache hits: the upstream saw each blob once.
    for d in &all {
        let r = http_request(
            "GET",
            &proxy.addr,
            &format!("/v2/private/app/blobs/{d}"),
            &[],
            b"",
        )
        .expect("blob");
        assert_eq!(r.status, 200);
        assert_eq!(reg.count_requests("GET", &format!("/blobs/{d}")), 1, "{d}");
    }
    assert!(
        metric(&proxy.addr, "pullsecret_proxy_prefetch_used_bytes_total") > 600_000,
        "used prefetched bytes not counted"
    );
}
