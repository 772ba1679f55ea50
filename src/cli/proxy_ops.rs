//! `pullsecret proxy warm|gc|status`: operations on the proxy's cache from the command line.

// warm's progress lines.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};

use super::output::outln;
use crate::proxy::blob_store::BlobStore;
use crate::proxy::config::ProxyConfig;
use crate::proxy::evict::{parse_size, Lru};
use crate::proxy::server::Proxy;
use crate::registry::manifest::Platform;
use crate::registry::reference::Reference;

/// Prefetches images through the proxy's own fill path into its cache.
/// `join` runs first inside the runtime: it joins the fleet, if any, so warmed blobs land in
/// the shared bucket too; warm then waits for those uploads before it returns.
pub fn warm(
    proxy: &Arc<Proxy>,
    images: &[String],
    platforms: &[String],
    join: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let platforms: Vec<Platform> = platforms
        .iter()
        .map(|p| {
            Platform::parse(p).ok_or_else(|| anyhow!("--platform {p:?}: want os/arch[/variant]"))
        })
        .collect::<Result<_>>()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        join()?;
        for image in images {
            let (ui, r) = warm_target(proxy, image)?;
            let print = |line: &str| eprintln!("{image}: {line}");
            let done = proxy
                .warm(ui, r.repository(), r.reference_str(), &platforms, &print)
                .await
                .map_err(|e| anyhow!("{image}: {e}"))?;
            outln!(
                "{image}: warmed {} manifests, {} blobs, {} bytes",
                done.manifests,
                done.blobs,
                done.bytes
            );
        }
        proxy
            .settle_fleet(std::time::Duration::from_secs(3600))
            .await;
        Ok(())
    })
}

/// The upstream and reference for `image`: `NAME/repo:tag` with NAME an upstream's name or alias
/// (as clients write it through the proxy), else a full reference whose registry a configured
/// upstream serves. Anything else is refused with the list of upstreams.
fn warm_target(proxy: &Proxy, image: &str) -> Result<(usize, Reference)> {
    if let Some((prefix, rest)) = image.split_once('/') {
        // Docker Hub names (`docker.io/…`) parse as references already.
        if let Some(ui) = proxy
            .upstream_for(prefix)
            .filter(|&ui| !proxy.upstreams[ui].names.docker_hub)
        {
            let host = &proxy.upstreams[ui].names.host;
            let r = Reference::parse(&format!("{host}/{rest}"))
                .with_context(|| format!("image {image:?}"))?;
            return Ok((ui, r));
        }
    }
    let r = Reference::parse(image).with_context(|| format!("image {image:?}"))?;
    match proxy.upstream_for(r.registry()) {
        Some(ui) => Ok((ui, r)),
        None => bail!(
            "{image}: no upstream is configured for {} (configured: {}); warm only pulls through configured upstreams",
            r.registry(),
            proxy.upstream_names().join(", ")
        ),
    }
}

/// Evicts least recently used blobs down to the size limit and removes metadata of evicted manifests.
pub fn gc(cfg: &ProxyConfig, max_size: Option<&str>) -> Result<()> {
    let limit = match max_size.or(cfg.cache.max_size.as_deref()) {
        Some(s) => parse_size(s).ok_or_else(|| anyhow!("{s:?} is not a size like 50GiB"))?,
        None => bail!("no cache.max_size in the config; give --max-size"),
    };
    let store = BlobStore::open(&cfg.cache_dir()).context("opening the cache")?;
    let lru = Lru::load(&store, Some(limit));
    let (before, entries) = lru.usage();
    // Re-inserting nothing new: ask for victims with a zero-sized marker digest.
    let marker = crate::registry::digest::Digest::of_bytes(b"pullsecret-gc-marker");
    let victims = lru.inserted(&marker, 0);
    for v in &victims {
        std::fs::remove_file(store.blob_path(v)).with_context(|| format!("removing {v}"))?;
    }
    let pruned = prune_meta(&store);
    let (after, left) = store.usage();
    outln!("cache {}: {before} bytes in {entries} blobs before, {after} bytes in {left} blobs after ({} evicted, limit {limit}; {pruned} stale metadata files removed)", store.root().display(), victims.len());
    Ok(())
}

/// Size and entries from disk; the hit ratio from a running proxy's /metrics when it answers.
pub fn status(cfg: &ProxyConfig) -> Result<()> {
    let store = BlobStore::open(&cfg.cache_dir()).context("opening the cache")?;
    let (bytes, entries) = store.usage();
    outln!("cache: {}", store.root().display());
    outln!(
        "size: {bytes} bytes ({:.1} MiB) in {entries} blobs",
        bytes as f64 / 1048576.0
    );
    if let Some(limit) = cfg.cache.max_size.as_deref() {
        outln!("limit: {limit}");
    }
    let url = format!("http://{}/metrics", cfg.listen);
    let metrics = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .build()
        .ok()
        .and_then(|c| c.get(&url).send().ok())
        .and_then(|r| {
            let status = r.status().as_u16();
            r.text().ok().map(|t| (status, t))
        });
    match metrics {
        Some((200, text)) => {
            // Counters are whole numbers; summing integers never prints `-0`.
            let sum = |name: &str| -> u64 {
                text.lines()
                    .filter(|l| l.starts_with(name))
                    .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
                    .map(|v| v.max(0.0).round() as u64)
                    .sum()
            };
            let (live_bytes, live_blobs) = (
                sum("pullsecret_proxy_cache_size_bytes"),
                sum("pullsecret_proxy_cache_blobs"),
            );
            outln!("live: {live_bytes} bytes in {live_blobs} blobs (the running proxy's view)");
            let hits = sum("pullsecret_proxy_cache_hits_total");
            let misses = sum("pullsecret_proxy_cache_misses_total");
            let ratio = if hits + misses > 0 {
                hits as f64 / (hits + misses) as f64 * 100.0
            } else {
                0.0
            };
            outln!("hits: {hits} misses: {misses} hit ratio: {ratio:.1}% (from {url})");
        }
        Some((status, _)) => outln!(
            "hit ratio: unknown ({url} answered {status}; with [metrics] auth, read it with credentials)"
        ),
        None => outln!("hit ratio: unknown (no proxy answering at {url})"),
    }
    Ok(())
}

/// Removes manifest metadata whose blob is gone, and content links not confirmed for 30 days.
fn prune_meta(store: &BlobStore) -> usize {
    let mut n = 0;
    if let Ok(entries) = std::fs::read_dir(store.root().join("meta/manifests")) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(hex) = name.strip_suffix(".json") else {
                continue;
            };
            if !store.root().join("blobs/sha256").join(hex).exists()
                && std::fs::remove_file(e.path()).is_ok()
            {
                n += 1;
            }
        }
    }
    let month = std::time::Duration::from_secs(30 * 86400);
    if let Ok(entries) = std::fs::read_dir(store.root().join("meta/links")) {
        for e in entries.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > month);
            if old && std::fs::remove_file(e.path()).is_ok() {
                n += 1;
            }
        }
    }
    n
}
