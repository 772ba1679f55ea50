//! Prometheus metrics for the proxy. Labels carry routes, statuses, upstream names and the
//! user names of upstream accounts (for rate limits, at most 64 per upstream) only, never
//! repository names from clients (unbounded) or anything secret.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
}

/// An upstream and the account a request used there (`anonymous` without one).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IdentityLabels {
    pub upstream: String,
    pub identity: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub cache_hits: Family<KindLabels, Counter>,
    pub cache_misses: Family<KindLabels, Counter>,
    pub cache_hit_bytes: Counter,
    pub upstream_requests: Family<UpstreamLabels, Counter>,
    pub upstream_bytes: Family<UpstreamLabels, Counter>,
    pub upstream_errors: Family<UpstreamLabels, Counter>,
    pub upstream_up: Family<UpstreamLabels, Gauge>,
    pub upstream_circuit_state: Family<UpstreamLabels, Gauge>,
    pub upstream_ratelimit_limit: Family<UpstreamLabels, Gauge>,
    pub upstream_ratelimit_remaining: Family<UpstreamLabels, Gauge>,
    pub identity_ratelimit_limit: Family<IdentityLabels, Gauge>,
    pub identity_ratelimit_remaining: Family<IdentityLabels, Gauge>,
    pub fills_in_flight: Gauge,
    pub token_fetches: Gauge,
    pub stale_serves: Counter,
    pub evictions: Counter,
    pub cache_bytes: Gauge,
    pub cache_entries: Gauge,
    pub prefetch_bytes: Counter,
    pub prefetch_used_bytes: Counter,
    /// Fleet: 1 while the shared bucket answers (-1 without one).
    pub shared_up: Gauge,
    /// Fleet: blobs uploaded to the bucket, blobs filled from it, fills streamed from a peer.
    pub shared_uploads: Counter,
    pub shared_upload_errors: Counter,
    pub shared_fills: Counter,
    pub peer_fills: Counter,
    /// Fleet: client Ranges answered from the bucket while the replica's copy filled.
    pub shared_ranges: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("pullsecret_proxy");
        let m = Self {
            requests: Family::default(),
            cache_hits: Family::default(),
            cache_misses: Family::default(),
            cache_hit_bytes: Counter::default(),
            prefetch_bytes: Counter::default(),
            prefetch_used_bytes: Counter::default(),
            upstream_requests: Family::default(),
            upstream_bytes: Family::default(),
            upstream_errors: Family::default(),
            upstream_up: Family::default(),
            upstream_circuit_state: Family::default(),
            upstream_ratelimit_limit: Family::default(),
            upstream_ratelimit_remaining: Family::default(),
            identity_ratelimit_limit: Family::default(),
            identity_ratelimit_remaining: Family::default(),
            fills_in_flight: Gauge::default(),
            token_fetches: Gauge::default(),
            stale_serves: Counter::default(),
            evictions: Counter::default(),
            cache_bytes: Gauge::default(),
            cache_entries: Gauge::default(),
            shared_up: Gauge::default(),
            shared_uploads: Counter::default(),
            shared_upload_errors: Counter::default(),
            shared_fills: Counter::default(),
            peer_fills: Counter::default(),
            shared_ranges: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Client requests by route and status",
            m.requests.clone(),
        );
        registry.register(
            "cache_hits",
            "Requests served from the cache",
            m.cache_hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Requests that went upstream",
            m.cache_misses.clone(),
        );
        registry.register(
            "cache_hit_bytes",
            "Blob bytes served from the cache",
            m.cache_hit_bytes.clone(),
        );
        registry.register(
            "upstream_requests",
            "Requests sent to upstreams",
            m.upstream_requests.clone(),
        );
        registry.register(
            "upstream_bytes",
            "Blob bytes fetched from upstreams",
            m.upstream_bytes.clone(),
        );
        registry.register(
            "upstream_errors",
            "Failed upstream requests",
            m.upstream_errors.clone(),
        );
        registry.register(
            "upstream_up",
            "1 while the upstream's circuit breaker is closed, 0 while it is open or probing",
            m.upstream_up.clone(),
        );
        registry.register(
            "upstream_circuit_state",
            "The upstream's circuit breaker: 0 closed, 1 half-open (probing), 2 open",
            m.upstream_circuit_state.clone(),
        );
        registry.register(
            "upstream_ratelimit_limit",
            "The last RateLimit-Limit the upstream sent (Docker Hub: pulls per window)",
            m.upstream_ratelimit_limit.clone(),
        );
        registry.register(
            "upstream_ratelimit_remaining",
            "The last RateLimit-Remaining the upstream sent",
            m.upstream_ratelimit_remaining.clone(),
        );
        registry.register(
            "upstream_identity_ratelimit_limit",
            "The last RateLimit-Limit the upstream sent for requests made as this account",
            m.identity_ratelimit_limit.clone(),
        );
        registry.register(
            "upstream_identity_ratelimit_remaining",
            "The last RateLimit-Remaining the upstream sent for requests made as this account",
            m.identity_ratelimit_remaining.clone(),
        );
        registry.register(
            "fills_in_flight",
            "Blob downloads in progress",
            m.fills_in_flight.clone(),
        );
        registry.register(
            "token_fetches",
            "Bearer tokens fetched from upstream token endpoints",
            m.token_fetches.clone(),
        );
        registry.register(
            "stale_serves",
            "Tags served from the cache while the upstream was unavailable",
            m.stale_serves.clone(),
        );
        registry.register(
            "prefetch_bytes",
            "Bytes of config and layer blobs fetched ahead when a client got their manifest",
            m.prefetch_bytes.clone(),
        );
        registry.register(
            "prefetch_used_bytes",
            "Prefetched bytes a client then asked for (the rest was fetched in vain)",
            m.prefetch_used_bytes.clone(),
        );
        registry.register(
            "evictions",
            "Blobs evicted to respect cache.max_size",
            m.evictions.clone(),
        );
        registry.register(
            "cache_size_bytes",
            "Bytes of blobs in the cache",
            m.cache_bytes.clone(),
        );
        registry.register("cache_blobs", "Blobs in the cache", m.cache_entries.clone());
        registry.register(
            "shared_store_up",
            "1 while the fleet's shared bucket answers, 0 while it does not, -1 without one",
            m.shared_up.clone(),
        );
        registry.register(
            "shared_uploads",
            "Verified blobs uploaded to the fleet's shared bucket",
            m.shared_uploads.clone(),
        );
        registry.register(
            "shared_upload_errors",
            "Uploads to the shared bucket that failed (the blob stays in the local cache)",
            m.shared_upload_errors.clone(),
        );
        registry.register(
            "shared_fills",
            "Fills served from the fleet's shared bucket instead of the upstream",
            m.shared_fills.clone(),
        );
        registry.register(
            "shared_ranges",
            "Client Range requests answered from the fleet's shared bucket",
            m.shared_ranges.clone(),
        );
        registry.register(
            "peer_fills",
            "Fills streamed from another replica that was filling the blob",
            m.peer_fills.clone(),
        );
        Self { registry, ..m }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn upstream(&self, name: &str) -> UpstreamLabels {
        UpstreamLabels {
            upstream: name.to_string(),
        }
    }
}
