//! A Range past what a running fill has written is answered at once by its own upstream Range
//! request (lazy-pull snapshotters read a layer's end first): a stalled fill does not hold it up,
//! and a range the fill already holds comes from the fill.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::support::fault_server::{Fault, FaultServer};
use crate::support::http::http_request;
use crate::support::proxy::ProxyProcess;
use crate::support::{eventually, Env};

#[test]
fn a_range_past_the_fill_is_answered_at_once_and_one_inside_it_from_the_fill() {
    let env = Env::new();
    let blob: Vec<u8> = (0..(4u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let up = FaultServer::start(blob.clone());
    // Whole GETs send half the blob and then stall for a minute.
    up.set(Fault::Stall(Duration::from_secs(60)));
    let proxy = ProxyProcess::start(
        &env,
        "[prefetch]\nenabled = false\n[limits]\nupstream_timeout_secs = 60\n",
        &up.upstream(&env, "http", ""),
    );
    let path = format!("/v2/app/blobs/{}", up.blob_digest);
    let addr = proxy.addr.clone();
    let p = path.clone();
    let _stalled = std::thread::spawn(move || crate::support::proxy::stream_get(&addr, &p, &[]));
    eventually(Duration::from_secs(10), "the fill to start", || {
        up.blob_gets.load(Ordering::Relaxed) > 0
    });
    // The last MiB: far past the half the fill has; answered without waiting for it.
    let total = blob.len();
    let before = up.range_gets.load(Ordering::Relaxed);
    let last = format!("bytes={}-{}", total - (1 << 20), total - 1);
    let r = http_request("GET", &proxy.addr, &path, &[("Range", &last)], b"").expect("last MiB");
    assert_eq!(r.status, 206, "{}", r.text());
    assert_eq!(r.body, blob[total - (1 << 20)..].to_vec());
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes {}-{}/{total}", total - (1 << 20), total - 1).as_str())
    );
    assert!(
        up.range_gets.load(Ordering::Relaxed) > before,
        "no upstream range request"
    );
    // The first bytes are in the fill already (the upstream sent half): served from it, with no
    // upstream request.
    eventually(
        Duration::from_secs(10),
        "the fill to receive half the blob",
        || {
            crate::support::metric(&proxy.addr, "pullsecret_proxy_upstream_bytes_total")
                .is_some_and(|n| n >= (total / 2) as f64)
        },
    );
    let before = up.range_gets.load(Ordering::Relaxed);
    let r = http_request("GET", &proxy.addr, &path, &[("Range", "bytes=0-1023")], b"")
        .expect("first KiB");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, blob[..1024].to_vec());
    assert_eq!(
        up.range_gets.load(Ordering::Relaxed),
        before,
        "the fill's bytes were fetched again"
    );
    // Nothing of the range answers entered the cache.
    assert!(!proxy
        .cache
        .join("v1/blobs/sha256")
        .join(up.blob_digest.trim_start_matches("sha256:"))
        .exists());
}
