//! `pullsecret proxy`: the pull-through registry mirror (server, routing, cache, fills).

pub mod auth_endpoint;
pub mod blob_store;
pub mod blobs;
pub mod client_auth;
pub mod client_gate;
pub mod config;
pub mod cred_cache;
pub mod credentials;
pub mod error;
pub mod evict;
// sendfile(2) with these semantics is Linux's; elsewhere hyper serves every request.
pub mod failure_limit;
#[cfg(target_os = "linux")]
pub mod fastpath;
pub mod fill;
pub mod fill_queue;
pub mod fleet;
pub mod fleet_manifests;
pub mod fleet_source;
pub mod grants;
pub mod list_cache;
pub mod listener;
pub mod manifests;
pub mod metrics;
pub mod prefetch;
pub mod ranges;
pub mod recent;
pub mod referrers;
pub mod response;
pub mod route;
pub mod server;
pub mod shared_blobs;
pub mod tags;
pub mod tls;
pub mod upstream;
pub mod warm;
pub mod watchdog;

use std::sync::Arc;
use std::time::Duration;

use self::blob_store::BlobStore;
use self::config::ProxyConfig;
use self::error::SetupError;
pub use self::listener::serve;
use self::server::Proxy;
use self::upstream::Upstream;
use crate::registry::auth::TokenCache;
use crate::store::SecretStore;

/// Builds the proxy state from config: opens the cache (cleaning crash leftovers) and the upstreams.
pub fn build(
    cfg: &ProxyConfig,
    secrets: Arc<dyn SecretStore + Send + Sync>,
    namespace: String,
) -> Result<Arc<Proxy>, SetupError> {
    let cache = cfg.cache_dir();
    let store = BlobStore::open(&cache)
        .map_err(|e| SetupError::new(format!("cache {}", cache.display()), e))?;
    let tokens = Arc::new(TokenCache::default());
    let timeout = Duration::from_secs(cfg.limits.upstream_timeout_secs.max(1));
    let mut upstreams = Vec::new();
    for u in &cfg.upstreams {
        let client_tls = match &u.client_tls_secret {
            Some(spec) => Some(client_tls_pem(secrets.as_ref(), spec, &namespace)?),
            None => None,
        };
        upstreams.push(Arc::new(Upstream::new(
            u.clone(),
            tokens.clone(),
            timeout,
            client_tls,
        )?));
    }
    let default = match &cfg.default_upstream {
        Some(name) => cfg.upstreams.iter().position(|u| &u.name == name),
        None if cfg.upstreams.len() == 1 => Some(0),
        None => None,
    };
    // With a shared bucket, `max_size` bounds the bucket and `local_max_size` this replica's copy.
    let (local_key, local_max) = if !matches!(cfg.cache.backend.as_deref(), None | Some("local")) {
        ("cache.local_max_size", cfg.cache.local_max_size.as_deref())
    } else {
        ("cache.max_size", cfg.cache.max_size.as_deref())
    };
    let max_cache_bytes = match local_max {
        Some(text) => Some(evict::parse_size(text).ok_or_else(|| {
            SetupError::new(
                format!("{local_key} {text:?}"),
                "expected a size such as 50GiB or 800MB",
            )
        })?),
        None => default_max_size(&cache),
    };
    let settings = server::Settings {
        namespace: cfg.namespace.clone().unwrap_or(namespace),
        max_fills: cfg.limits.max_concurrent_fills,
        max_cache_bytes,
        link_ttl: cfg.cache.link_ttl.unwrap_or(Duration::from_secs(3600)),
        auth_enabled: cfg.auth.enabled,
        token_ttl: cfg.auth.token_ttl.unwrap_or(Duration::from_secs(300)),
        realm: cfg.auth.realm.clone(),
        tls: cfg.tls.is_some(),
        max_connections: cfg.limits.max_connections,
        max_connections_per_client: cfg.limits.max_connections_per_client,
        header_read_timeout: Duration::from_secs(cfg.limits.header_read_timeout_secs.max(1)),
        idle_timeout: Duration::from_secs(cfg.limits.idle_timeout_secs.max(1)),
        shutdown_timeout: Duration::from_secs(cfg.limits.shutdown_timeout_secs),
        stall_limit: Duration::from_secs(cfg.limits.stall_secs.max(1)),
        max_queued_fills: cfg.limits.max_queued_fills.max(1),
        max_queued_fills_per_client: cfg.limits.max_queued_fills_per_client.max(1),
        metrics_auth: cfg.metrics.auth.unwrap_or(cfg.auth.enabled),
        sendfile: cfg.limits.sendfile,
        parallel_connections: cfg.limits.parallel_fetch_connections.max(1),
        parallel_min_bytes: cfg.limits.parallel_fetch_min_bytes,
        prefetch: cfg.prefetch.enabled,
        prefetch_max: cfg.prefetch.max_concurrent,
    };
    let proxy = Proxy::new(store, upstreams, default, secrets, settings)
        .map_err(|e| SetupError::new("cache", e))?;
    Ok(Arc::new(proxy))
}

/// The start-up summary at info: where the proxy listens, how clients authenticate, and for
/// each upstream where its credentials come from (a source, never a value).
pub fn log_summary(proxy: &Proxy, listen: &str) {
    let s = &proxy.settings;
    tracing::info!(
        listen,
        client_auth = if s.auth_enabled { "required (namespaces from proxy clients)" } else { "off (every client is the proxy's own user)" },
        namespace = %s.namespace,
        metrics_auth = s.metrics_auth,
        max_cache_bytes = s.max_cache_bytes.unwrap_or(0),
        upstreams = proxy.upstreams.len(),
        "proxy started"
    );
    let stored = proxy.secrets.list(None).unwrap_or_default();
    for up in &proxy.upstreams {
        let cfg = &up.cfg;
        let source = if cfg.username.is_some() && cfg.password.is_some() {
            format!("config username (scope {})", cfg.scope.as_str())
        } else if let Some(spec) = &cfg.secret {
            let full = if spec.contains('/') {
                spec.clone()
            } else {
                format!("{}/{spec}", s.namespace)
            };
            format!("secret {full}")
        } else if stored.iter().any(|x| {
            x.server()
                .and_then(|k| crate::secret::ServerKey::parse(k).ok())
                .is_some_and(|k| {
                    k.host() == up.names.host || (up.names.docker_hub && k.is_docker_hub())
                })
        }) {
            "store lookup by server key (per namespace and scope)".to_string()
        } else {
            "anonymous (no stored secret for this registry yet)".to_string()
        };
        tracing::info!(
            upstream = %cfg.name,
            url = %cfg.url,
            aliases = %cfg.aliases.join(","),
            credentials = %source,
            "upstream"
        );
    }
}

/// Without `cache.max_size`: 80% of the space free on the cache's file system now, capped at
/// 1 TiB, so a cold mirror cannot fill the disk; logged so the operator sees the figure.
// statvfs field types differ between platforms; the casts are identities only on some.
#[allow(clippy::unnecessary_cast)]
#[allow(unsafe_code)]
fn default_max_size(cache: &std::path::Path) -> Option<u64> {
    const CAP: u64 = 1 << 40;
    let c_path = std::ffi::CString::new(cache.as_os_str().as_encoded_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a valid NUL-terminated path and `st` a writable statvfs buffer.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        tracing::warn!(cache = %cache.display(), "cannot measure free space; cache.max_size unset (no limit)");
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the buffer.
    let st = unsafe { st.assume_init() };
    let free = (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
    let limit = (free / 10 * 8).min(CAP);
    tracing::info!(
        max_size_bytes = limit,
        free_bytes = free,
        "cache.max_size not set: using 80% of the free space (at most 1 TiB)"
    );
    Some(limit)
}

/// Certificate and key PEM from a stored `tls` secret, for mutual TLS to an upstream.
fn client_tls_pem(
    store: &dyn SecretStore,
    spec: &str,
    namespace: &str,
) -> Result<Vec<u8>, SetupError> {
    use secrecy::ExposeSecret;
    let crate::secret::SecretName {
        namespace: ns,
        name,
    } = crate::secret::SecretName::parse(spec, namespace);
    let what = format!("client_tls_secret {ns}/{name}");
    let s = store
        .get(&ns, &name)
        .map_err(|e| SetupError::new(&what, e))?
        .ok_or_else(|| SetupError::new(&what, "does not exist"))?;
    let crate::store::SecretData::Tls { cert, key } = &s.data else {
        return Err(SetupError::new(&what, "is not a tls secret"));
    };
    let refs = crate::store::StoreRefs(store);
    let key = crate::secret::RefResolver::with_store(&refs)
        .resolve_value(key)
        .map_err(|e| SetupError::new(&what, e))?;
    Ok(format!("{cert}\n{}", key.expose_secret()).into_bytes())
}
