//! The proxy's TOML config: listener, cache, upstreams; an embedded default mirrors Docker Hub.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::registry::auth::TokenStyle;

/// Used when no config file exists: an anonymous Docker Hub mirror on 127.0.0.1:5000.
pub const EMBEDDED_DEFAULT: &str = r#"
listen = "127.0.0.1:5000"
default_upstream = "docker.io"

[[upstream]]
name = "docker.io"
url = "https://registry-1.docker.io"
aliases = ["docker.io", "index.docker.io", "registry-1.docker.io"]
"#;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Cache directory (default `$XDG_CACHE_HOME/pullsecret/proxy`).
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// Name of the upstream for requests with neither `?ns=` nor an alias prefix.
    #[serde(default)]
    pub default_upstream: Option<String>,
    /// Namespace whose stored secrets `secret = "NAME"` refers to.
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default, rename = "upstream")]
    pub upstreams: Vec<UpstreamConfig>,
    #[serde(default)]
    pub limits: ProxyLimits,
    #[serde(default)]
    pub cache: CacheConfig,
    /// Fleet mode: shared state in PostgreSQL (`[state] postgres = "postgres://…"`).
    #[serde(default)]
    pub state: crate::config::StateConfig,
    /// Fleet mode: how replicas reach each other.
    #[serde(default)]
    pub fleet: FleetConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub prefetch: PrefetchConfig,
    /// The admin API's own listener; absent: no admin API.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Where the admin API listens (default 127.0.0.1:5001; keep it on loopback or a private
    /// network: it manages every namespace's secrets).
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// HTTPS for the admin listener (as `[tls]` for the registry port).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

fn default_admin_listen() -> String {
    "127.0.0.1:5001".into()
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `/metrics` only for authenticated clients (default: on when `[auth] enabled`).
    pub auth: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Upper bound on cached blob bytes (`50GiB`); least recently used blobs go first.
    pub max_size: Option<String>,
    /// How long an upstream's confirmation that a repository has a digest is trusted (default 1h).
    #[serde(with = "humantime_serde_opt")]
    pub link_ttl: Option<Duration>,
    /// `local` (default: the cache directory) or `s3` (a bucket shared by a fleet of replicas;
    /// the cache directory becomes each replica's read-through copy).
    pub backend: Option<String>,
    pub bucket: Option<String>,
    /// Key prefix inside the bucket (default none).
    pub prefix: Option<String>,
    /// S3-compatible endpoint (`http://127.0.0.1:3900`); default AWS.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), as most S3-compatible servers want.
    pub path_style: Option<bool>,
    /// SecretRefs (`env://VAR`, `file:///path`, `secret://ns/name/key`) for the access key;
    /// unset: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Upper bound on each replica's local read-through copy with `backend = "s3"`.
    pub local_max_size: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// The URL other replicas use to reach this one (default `http://<listen>`): they stream a
    /// blob this replica is filling from it.
    pub advertise: Option<String>,
    /// How often uses are written to the database and eviction runs (default 5s).
    #[serde(with = "humantime_serde_opt")]
    pub bookkeeping_interval: Option<Duration>,
    /// A blob used more recently than this is never evicted from the bucket (default 30s).
    #[serde(with = "humantime_serde_opt")]
    pub evict_grace: Option<Duration>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Require clients to authenticate (off by default: a loopback proxy serves its own user).
    pub enabled: bool,
    /// Lifetime of tokens from the proxy's `/token` endpoint (default 5m).
    #[serde(with = "humantime_serde_opt")]
    pub token_ttl: Option<Duration>,
    /// The realm URL to advertise (default `http(s)://<Host header>/token`).
    pub realm: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// A stored `tls` secret (`NAME` or `NAMESPACE/NAME`) instead of files.
    pub secret: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub name: String,
    /// `https://host[:port]` (or `http://` together with `insecure = true`).
    pub url: String,
    /// Other names clients use for this registry: `?ns=` values and `/v2/<alias>/…` prefixes.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// A stored docker-registry secret (`NAME` in the proxy namespace, or `NAMESPACE/NAME`).
    #[serde(default)]
    pub secret: Option<String>,
    /// Or a username with a password / SecretRef (`env://`, `file://`, `cmd://`, …).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Who may use `username`/`password`: `namespace` (default: clients of the proxy's home
    /// namespace, like a stored secret there), `global` (every client, anonymous ones too) or
    /// `global-private` (only the proxy's own background work: `warm`).
    #[serde(default)]
    pub scope: crate::store::Scope,
    /// Token realm hosts besides the upstream's own (and the well-known ones) that may receive
    /// its credentials.
    #[serde(default)]
    pub token_realms: Vec<String>,
    /// PEM file with extra root CAs for this upstream.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Or a stored `tls` secret (`NAME` or `NAMESPACE/NAME`) holding the client certificate and key.
    #[serde(default)]
    pub client_tls_secret: Option<String>,
    /// Plain HTTP to this upstream.
    #[serde(default)]
    pub insecure: bool,
    /// Further URLs of the same registry (a mirror first, the origin after), tried in order
    /// when the one before fails to connect, times out, has its circuit open, or answers 5xx or
    /// 429. The same credentials go to each; `http://` ones need `insecure = true`.
    #[serde(default)]
    pub fallback_urls: Vec<String>,
    /// At most this many requests per second to this upstream (all URLs together; unset: no cap).
    #[serde(default)]
    pub max_requests_per_second: Option<f64>,
    /// At most this many bytes per second from this upstream (`20MiB`; unset: no cap).
    #[serde(default)]
    pub max_bytes_per_second: Option<String>,
    /// How long a tag → digest answer is trusted before a HEAD revalidates it.
    #[serde(default = "default_tag_ttl", with = "humantime_serde_compat")]
    pub tag_ttl: Duration,
    /// How long a tag's revalidation (HEAD) may take before the cached tag is served stale.
    #[serde(default = "default_stale_after", with = "humantime_serde_compat")]
    pub stale_after: Duration,
    /// Consecutive failures (connect errors, timeouts, 5xx) that open the circuit breaker:
    /// requests then fail fast (or get the cached answer) for a backoff from 1 s doubling to
    /// 60 s. 0 turns the breaker off.
    #[serde(default = "default_circuit_failures")]
    pub circuit_failures: u32,
    #[serde(default)]
    pub token_style: TokenStyle,
}

/// Fetching an image's config and layers as soon as a client gets its manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrefetchConfig {
    pub enabled: bool,
    /// Prefetched blobs in flight at once, over all upstreams (each also takes a fill slot).
    pub max_concurrent: usize,
}

impl Default for PrefetchConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_concurrent: 16,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyLimits {
    /// Concurrent upstream blob downloads.
    pub max_concurrent_fills: usize,
    /// Open client connections from one IP address; more are closed at once.
    pub max_connections_per_client: usize,
    /// Open client connections in all (bounds file descriptors).
    pub max_connections: usize,
    /// Upstream connect and between-bytes read timeout, in seconds.
    pub upstream_timeout_secs: u64,
    /// A client has this long to send a whole request head once it started one (and hyper's
    /// connections to send the next head after a response), in seconds.
    pub header_read_timeout_secs: u64,
    /// A plain-HTTP keep-alive connection may wait this long for its next request, in seconds.
    pub idle_timeout_secs: u64,
    /// After SIGTERM/SIGINT, requests in flight get this long before the process exits anyway.
    pub shutdown_timeout_secs: u64,
    /// `/readyz` fails when a runtime worker has been awake this long without polling a
    /// connection (stuck in a blocking call), in seconds.
    pub stall_secs: u64,
    /// Runtime worker threads (0: one per CPU, the default).
    pub worker_threads: usize,
    /// Cold blob requests waiting for a fill slot, in all and per client address; beyond
    /// them the proxy answers 503 TOOMANYREQUESTS with Retry-After.
    pub max_queued_fills: usize,
    pub max_queued_fills_per_client: usize,
    /// Serve plain-HTTP/1.1 blob GETs with sendfile(2) (the fast path); off: hyper serves all.
    pub sendfile: bool,
    /// A blob of at least `parallel_fetch_min_bytes` from an upstream that answers Range is
    /// fetched over this many connections at once (1: never).
    pub parallel_fetch_connections: usize,
    pub parallel_fetch_min_bytes: u64,
}

impl Default for ProxyLimits {
    fn default() -> Self {
        Self {
            max_concurrent_fills: 64,
            max_connections_per_client: 2048,
            max_connections: 8192,
            upstream_timeout_secs: 30,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            shutdown_timeout_secs: 30,
            stall_secs: 10,
            worker_threads: 0,
            max_queued_fills: 1024,
            max_queued_fills_per_client: 256,
            sendfile: true,
            parallel_fetch_connections: 4,
            parallel_fetch_min_bytes: 64 << 20,
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:5000".into()
}

fn default_tag_ttl() -> Duration {
    Duration::from_secs(300)
}

fn default_stale_after() -> Duration {
    Duration::from_secs(2)
}

fn default_circuit_failures() -> u32 {
    3
}

mod humantime_serde_opt {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyConfigError {
    #[error("cannot read proxy config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid proxy config {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid proxy config: {0}")]
    Invalid(String),
}

impl ProxyConfig {
    /// Reads `path`, else `$XDG_CONFIG_HOME/pullsecret/proxy.toml` when it exists, else the embedded default.
    pub fn load(path: Option<&Path>) -> Result<Self, ProxyConfigError> {
        let default_path = crate::config::default_config_dir().join("proxy.toml");
        let (text, name) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|source| ProxyConfigError::Read {
                    path: p.into(),
                    source,
                })?,
                p.display().to_string(),
            ),
            None if default_path.exists() => (
                std::fs::read_to_string(&default_path).map_err(|source| {
                    ProxyConfigError::Read {
                        path: default_path.clone(),
                        source,
                    }
                })?,
                default_path.display().to_string(),
            ),
            None => (
                EMBEDDED_DEFAULT.to_string(),
                "(embedded default)".to_string(),
            ),
        };
        Self::parse(&text, &name)
    }

    pub fn parse(text: &str, name: &str) -> Result<Self, ProxyConfigError> {
        let cfg: ProxyConfig = toml::from_str(text).map_err(|e| ProxyConfigError::Parse {
            path: name.to_string(),
            message: e.message().to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ProxyConfigError> {
        let mut names = std::collections::HashSet::new();
        for u in &self.upstreams {
            if !names.insert(&u.name) {
                return Err(ProxyConfigError::Invalid(format!(
                    "upstream {:?} is defined twice",
                    u.name
                )));
            }
            u.host()?;
            if u.secret.is_some() && (u.username.is_some() || u.password.is_some()) {
                return Err(ProxyConfigError::Invalid(format!(
                    "upstream {:?}: give `secret` or `username`/`password`, not both",
                    u.name
                )));
            }
            if u.username.is_some() != u.password.is_some() {
                return Err(ProxyConfigError::Invalid(format!(
                    "upstream {:?}: `username` and `password` go together",
                    u.name
                )));
            }
        }
        if let Some(m) = &self.cache.max_size {
            if super::evict::parse_size(m).is_none() {
                return Err(ProxyConfigError::Invalid(format!(
                    "cache.max_size {m:?} is not a size like 50GiB"
                )));
            }
        }
        if let Some(d) = &self.default_upstream {
            if !self.upstreams.iter().any(|u| &u.name == d) {
                return Err(ProxyConfigError::Invalid(format!(
                    "default_upstream {d:?} names no upstream"
                )));
            }
        }
        Ok(())
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir.clone().unwrap_or_else(|| {
            crate::config::xdg_dir("XDG_CACHE_HOME", ".cache")
                .join("pullsecret")
                .join("proxy")
        })
    }
}

impl UpstreamConfig {
    /// `host[:port]` from the URL; checks the scheme against `insecure`.
    pub fn host(&self) -> Result<String, ProxyConfigError> {
        let (scheme, rest) = self.url.split_once("://").ok_or_else(|| {
            ProxyConfigError::Invalid(format!(
                "upstream {:?}: url needs http:// or https://",
                self.name
            ))
        })?;
        match (scheme, self.insecure) {
            ("https", _) | ("http", true) => {}
            ("http", false) => {
                return Err(ProxyConfigError::Invalid(format!(
                    "upstream {:?}: http:// needs `insecure = true`",
                    self.name
                )))
            }
            _ => {
                return Err(ProxyConfigError::Invalid(format!(
                    "upstream {:?}: unknown scheme {scheme}",
                    self.name
                )))
            }
        }
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            return Err(ProxyConfigError::Invalid(format!(
                "upstream {:?}: url must be scheme://host[:port]",
                self.name
            )));
        }
        Ok(host.to_string())
    }

    pub fn is_docker_hub(&self) -> bool {
        self.host()
            .is_ok_and(|h| crate::secret::is_docker_hub_host(&h))
            || self.aliases.iter().any(|a| a == "docker.io")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses() {
        let c = ProxyConfig::parse(EMBEDDED_DEFAULT, "embedded").unwrap();
        assert_eq!(c.listen, "127.0.0.1:5000");
        assert!(c.upstreams[0].is_docker_hub());
        assert_eq!(c.upstreams[0].tag_ttl, Duration::from_secs(300));
    }

    #[test]
    fn the_documented_example_parses() {
        let c =
            ProxyConfig::parse(include_str!("../../config/proxy.example.toml"), "example").unwrap();
        assert_eq!(c.upstreams.len(), 2);
        assert_eq!(
            c.upstreams[1].password.as_deref(),
            Some("cmd://\"gh auth token\"?cacheKey=gh")
        );
        assert_eq!(c.cache.link_ttl, Some(Duration::from_secs(3600)));
    }

    #[test]
    fn rejects_inconsistent_upstreams() {
        for bad in [
            "[[upstream]]\nname='a'\nurl='http://x'",
            "[[upstream]]\nname='a'\nurl='https://x/path'",
            "[[upstream]]\nname='a'\nurl='https://x'\nsecret='s'\nusername='u'\npassword='p'",
            "default_upstream='zz'\n[[upstream]]\nname='a'\nurl='https://x'",
            "bogus_key = 1",
        ] {
            assert!(ProxyConfig::parse(bad, "t").is_err(), "{bad}");
        }
    }
}
