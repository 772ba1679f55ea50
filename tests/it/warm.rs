//! `pullsecret proxy warm`: upstream names as prefixes, unconfigured registries refused, and
//! every digest of a multi-platform index fetched once.

use crate::support::http::http_request;
use crate::support::images::push_index;
use crate::support::proxy::ProxyProcess;
use crate::support::registry::{Registry, RegistryAuth};
use crate::support::{stderr, stdout, Env};

#[test]
fn warm_takes_upstream_prefixes_refuses_others_and_fetches_each_digest_once() {
    let env = Env::new();
    let Some(reg) = Registry::start(RegistryAuth::Anonymous) else {
        return;
    };
    // Two platforms sharing both layers.
    let idx = push_index(
        reg.addr(),
        "multi/app",
        "v1",
        None,
        &[vec![1u8; 20_000], vec![2u8; 30_000]],
    );
    let proxy = ProxyProcess::start(
        &env,
        "",
        &crate::support::proxy::plain_upstream("local", reg.addr(), ""),
    );
    let config = env.path("proxy.toml");
    let warm = |image: &str| {
        env.pullsecret(&[
            "proxy",
            "--config",
            config.to_str().unwrap_or_default(),
            "warm",
            image,
        ])
        .output()
        .expect("warm")
    };
    drop(proxy);
    // An index that lists one platform's manifest twice.
    let mut index: serde_json::Value = serde_json::from_slice(&idx.index).expect("index json");
    let first = index["manifests"][0].clone();
    index["manifests"]
        .as_array_mut()
        .expect("manifests")
        .push(first);
    let body = serde_json::to_vec(&index).expect("json");
    let put = http_request(
        "PUT",
        reg.addr(),
        "/v2/multi/app/manifests/dup",
        &[("Content-Type", "application/vnd.oci.image.index.v1+json")],
        &body,
    )
    .expect("put index");
    assert_eq!(put.status, 201, "{}", put.text());
    // The upstream's name as a prefix, as clients write it through the proxy.
    let out = warm("local/multi/app:dup");
    assert!(out.status.success(), "{}", stderr(&out));
    let unique_blobs = idx
        .manifests
        .iter()
        .flat_map(|m| m.layers.iter().chain(std::iter::once(&m.config)))
        .map(|b| b.digest.clone())
        .collect::<std::collections::HashSet<_>>()
        .len();
    // The index and its two distinct manifests; each blob once.
    assert!(
        stdout(&out).contains(&format!("warmed 3 manifests, {unique_blobs} blobs")),
        "{}",
        stdout(&out)
    );
    for d in idx.manifests[0].layer_digests() {
        assert_eq!(reg.count_requests("GET", &format!("/blobs/{d}")), 1, "{d}");
    }
    // A full reference to the same registry works too.
    let out = warm(&format!("{}/multi/app:v1", reg.addr()));
    assert!(out.status.success(), "{}", stderr(&out));
    // A registry the config does not name is refused, not sent to some other upstream.
    let out = warm("quay.io/someone/else:1");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("no upstream is configured for quay.io") && err.contains("local"),
        "{err}"
    );
}
