//! Issue 17 over the WAN emulator (benches/wan_relay.py: a delay line with set-up delay and a
//! per-connection cap) between the proxy and a real distribution registry: prefetch on manifest
//! fills every layer before the client asks, and a large blob is fetched over several
//! connections. Functional checks only; the speed figures are benches/wan.sh's.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::http::http_request;
use crate::support::proxy::{stream_get, ProxyProcess};
use crate::support::registry::{Registry, RegistryAuth};
use crate::support::{eventually, metric, require_bin, Env};

/// The relay process; killed on drop.
struct Relay {
    child: Child,
    addr: String,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the emulator in front of `target`: `rtt_ms` round trip, `mibps` per connection.
fn relay(env: &Env, target: &str, rtt_ms: u32, mibps: u32) -> Option<Relay> {
    let python = require_bin("python3", "apt-get install python3")?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/wan_relay.py");
    let port_file = env.path("relay.port");
    let child = Command::new(python)
        .args(["-u", script, "--target", target, "--listen", "127.0.0.1:0"])
        .args([
            "--rtt-ms",
            &rtt_ms.to_string(),
            "--rate-mibps",
            &mibps.to_string(),
        ])
        .arg("--port-file")
        .arg(&port_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wan_relay.py");
    let port = eventually(Duration::from_secs(10), "the relay's port", || {
        std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok())
            .ok_or_else(|| "no port yet".to_string())
    });
    Some(Relay {
        child,
        addr: format!("127.0.0.1:{port}"),
    })
}

fn layer(mib: u32, seed: u8) -> Vec<u8> {
    (0..(mib << 20))
        .map(|i| ((i.wrapping_mul(2654435761) >> 24) as u8) ^ seed)
        .collect()
}

#[test]
fn over_a_wan_link_prefetch_fills_layers_before_the_client_asks() {
    let env = Env::new();
    let Some(reg) = Registry::start(RegistryAuth::Anonymous) else {
        return;
    };
    let layers: Vec<Vec<u8>> = (0..4).map(|i| layer(1 + i, i as u8)).collect();
    let image = crate::support::images::push_image(reg.addr(), "app", "v1", None, &layers);
    let Some(link) = relay(&env, reg.addr(), 40, 16) else {
        return;
    };
    let proxy = ProxyProcess::start(
        &env,
        "",
        &crate::support::proxy::plain_upstream("up", &link.addr, ""),
    );
    let m = http_request(
        "GET",
        &proxy.addr,
        "/v2/app/manifests/v1",
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        b"",
    )
    .expect("manifest");
    assert_eq!(m.status, 200, "{}", m.text());
    // No blob was asked for; prefetch brings every layer and the config over the link.
    for blob in image.layers.iter().chain(std::iter::once(&image.config)) {
        proxy.wait_cached(&blob.digest);
    }
    let total: usize = layers.iter().map(Vec::len).sum();
    for blob in &image.layers {
        let got = stream_get(&proxy.addr, &format!("/v2/app/blobs/{}", blob.digest), &[])
            .expect("GET layer");
        assert_eq!(
            (got.status, got.digest.as_str()),
            (200, blob.digest.as_str())
        );
    }
    let used = metric(&proxy.addr, "pullsecret_proxy_prefetch_used_bytes_total").unwrap_or(0.0);
    assert!(
        used >= total as f64,
        "prefetched bytes used: {used} of {total}"
    );
    for blob in &image.layers {
        assert_eq!(
            reg.count_requests("GET", &blob.digest),
            1,
            "layer {} fetched more than once",
            blob.digest
        );
    }
}

#[test]
fn over_a_wan_link_a_large_blob_comes_over_several_connections() {
    let env = Env::new();
    let Some(reg) = Registry::start(RegistryAuth::Anonymous) else {
        return;
    };
    let big = layer(12, 7);
    let image = crate::support::images::push_image(reg.addr(), "big", "v1", None, &[big]);
    let Some(link) = relay(&env, reg.addr(), 40, 8) else {
        return;
    };
    let proxy = ProxyProcess::start(
        &env,
        "[prefetch]\nenabled = false\n[limits]\nparallel_fetch_connections = 4\nparallel_fetch_min_bytes = 4194304\n",
        &crate::support::proxy::plain_upstream("up", &link.addr, ""),
    );
    let digest = &image.layers[0].digest;
    let got = stream_get(&proxy.addr, &format!("/v2/big/blobs/{digest}"), &[]).expect("GET");
    assert_eq!((got.status, got.digest.as_str()), (200, digest.as_str()));
    // One GET for the start and three ranged ones, each its own connection through the link.
    assert_eq!(reg.count_requests("GET", digest), 4, "{}", reg.access_log());
}
