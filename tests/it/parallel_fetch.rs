//! Parallel ranged fetch: a large blob from an upstream that answers Range comes over several
//! connections, written into place; clients still stream it in order, and nothing is cached
//! unless the one digest over the whole blob verifies.

use std::sync::atomic::Ordering;

use crate::support::fault_server::{Fault, FaultServer};
use crate::support::proxy::{stream_get, ProxyProcess};
use crate::support::Env;

fn blob() -> Vec<u8> {
    (0..(8u32 << 20))
        .map(|i| (i.wrapping_mul(2246822519) >> 23) as u8)
        .collect()
}

const CONFIG: &str = "[prefetch]\nenabled = false\n[limits]\nupstream_timeout_secs = 10\nparallel_fetch_connections = 4\nparallel_fetch_min_bytes = 1048576\n";

#[test]
fn a_large_blob_comes_over_four_connections_and_clients_read_it_in_order() {
    let env = Env::new();
    let up = FaultServer::start(blob());
    let proxy = ProxyProcess::start(&env, CONFIG, &up.upstream(&env, "http", ""));
    let path = format!("/v2/app/blobs/{}", up.blob_digest);
    let before = up.range_gets.load(Ordering::Relaxed);
    // Two clients at once: one leads the fill, one joins it; both get every byte in order.
    let (a1, p1) = (proxy.addr.clone(), path.clone());
    let other = std::thread::spawn(move || stream_get(&a1, &p1, &[]));
    let got = stream_get(&proxy.addr, &path, &[]).expect("GET");
    let got2 = other.join().expect("client").expect("GET");
    for g in [&got, &got2] {
        assert_eq!(
            (g.status, g.truncated, g.digest.as_str()),
            (200, false, up.blob_digest.as_str())
        );
    }
    assert_eq!(
        up.blob_gets.load(Ordering::Relaxed),
        1,
        "one whole GET (its first part used)"
    );
    assert!(
        up.range_gets.load(Ordering::Relaxed) >= before + 3,
        "the other three parts were not ranges"
    );
    let cached = proxy.wait_cached(&up.blob_digest);
    assert_eq!(std::fs::read(cached).expect("cached"), blob());
}

#[test]
fn wrong_bytes_in_a_part_fail_the_fill_and_nothing_is_cached() {
    let env = Env::new();
    let up = FaultServer::start(blob());
    up.set(Fault::CorruptRanges);
    let proxy = ProxyProcess::start(&env, CONFIG, &up.upstream(&env, "http", ""));
    let path = format!("/v2/app/blobs/{}", up.blob_digest);
    let got = stream_get(&proxy.addr, &path, &[]).expect("GET");
    assert!(
        got.status != 200 || got.truncated,
        "looks complete: {got:?}"
    );
    proxy.wait_fills_done();
    let cached = proxy
        .cache
        .join("v1/blobs/sha256")
        .join(up.blob_digest.trim_start_matches("sha256:"));
    assert!(
        !cached.exists(),
        "a blob that failed its digest entered the cache"
    );
    // Once the upstream is right again, the next request fills it properly.
    up.set(Fault::None);
    let again = stream_get(&proxy.addr, &path, &[]).expect("GET");
    assert_eq!(
        (again.status, again.truncated, again.digest.as_str()),
        (200, false, up.blob_digest.as_str())
    );
}
