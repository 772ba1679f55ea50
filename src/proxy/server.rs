//! The pull side of the distribution API: `/v2/`, manifests and blobs by GET and HEAD, tag
//! lists and referrers, served from the cache or filled from the upstream; pushes refused; client auth, metrics.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use super::blob_store::BlobStore;
use super::client_auth::TokenAuthority;
use super::client_gate::ClientGate;
use super::cred_cache::CredentialCache;
use super::evict::Lru;
use super::fill::Fills;
use super::fill_queue::FillQueue;
use super::grants::Grants;
use super::metrics::{KindLabels, Metrics, RequestLabels};
use super::response::{api_version, bytes_response, echo_ns, hv, oci_error, text, Body};
use super::route::{route, Route};
use super::upstream::Upstream;
use crate::registry::digest::Digest;
use crate::store::SecretStore;

/// One request's log line, metric and `x-request-id`, finished the same way by hyper and by the
/// sendfile path.
pub struct RequestLog {
    pub id: u64,
    /// The namespace the request was served for, once known.
    pub namespace: Option<String>,
    /// `hit` or `miss`, when the serving stage said.
    pub cache: Option<&'static str>,
    /// The proxy client that logged in, when client auth is on.
    pub client: Option<String>,
    started: Instant,
    method: String,
    path: String,
    query: String,
}

impl RequestLog {
    /// Records a content request for the admin API's recent pulls.
    fn remember_pull(&self, proxy: &Proxy, headers: &HeaderMap, status: u16) {
        let Some((image, reference, kind)) = super::recent::split_path(&self.path) else {
            return;
        };
        let bytes = if self.method == "HEAD" {
            0
        } else {
            headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        proxy.recent.record(super::recent::PullRecord {
            time: std::time::SystemTime::now(),
            namespace: self
                .namespace
                .clone()
                .unwrap_or_else(|| proxy.settings.namespace.clone()),
            client: self.client.clone(),
            image,
            reference,
            kind,
            status,
            bytes,
            cache: self.cache.unwrap_or("-"),
            duration_ms: self.started.elapsed().as_millis() as u64,
        });
    }

    pub fn finish(
        self,
        proxy: &Proxy,
        headers: &mut HeaderMap,
        route: &'static str,
        status: u16,
        sendfile: bool,
    ) {
        proxy
            .metrics
            .requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
        headers.insert("x-request-id", hv(&self.id.to_string()));
        if route == "manifest" || route == "blob" {
            self.remember_pull(proxy, headers, status);
        }
        tracing::info!(
            request_id = self.id,
            method = %self.method,
            path = %self.path,
            query = %self.query,
            status,
            elapsed_ms = self.started.elapsed().as_millis() as u64,
            sendfile,
            "request"
        );
    }
}

/// Settings of a running proxy besides its upstreams.
pub struct Settings {
    pub namespace: String,
    pub max_fills: usize,
    pub max_cache_bytes: Option<u64>,
    pub link_ttl: Duration,
    pub auth_enabled: bool,
    pub token_ttl: Duration,
    pub realm: Option<String>,
    pub tls: bool,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub stall_limit: Duration,
    pub max_queued_fills: usize,
    pub max_queued_fills_per_client: usize,
    /// `/metrics` needs an authenticated client.
    pub metrics_auth: bool,
    /// The sendfile fast path is on.
    pub sendfile: bool,
    /// Parallel ranged fetch: connections per large blob, and from what size.
    pub parallel_connections: usize,
    pub parallel_min_bytes: u64,
    /// Prefetch on manifest: on, and how many blobs at once.
    pub prefetch: bool,
    pub prefetch_max: usize,
}

/// Shared state of a running proxy.
pub struct Proxy {
    pub store: BlobStore,
    pub fills: Arc<Fills>,
    pub upstreams: Vec<Arc<Upstream>>,
    pub default_upstream: Option<usize>,
    pub secrets: Arc<dyn SecretStore + Send + Sync>,
    pub settings: Settings,
    pub metrics: Metrics,
    pub lru: Arc<Lru>,
    pub(super) grants: Grants,
    pub(super) tokens: TokenAuthority,
    pub(super) gate: ClientGate,
    pub(super) fill_slots: Arc<tokio::sync::Semaphore>,
    pub(super) fill_queue: Arc<FillQueue>,
    pub(super) stale_logged: Mutex<HashSet<String>>,
    pub(super) next_id: AtomicU64,
    pub(super) creds_cache: CredentialCache,
    /// sendfile transfers under way (graceful shutdown waits for them).
    pub fast_in_flight: std::sync::atomic::AtomicUsize,
    /// Set when shutdown begins, so idle connections waiting in the fast path close.
    pub stopping: tokio::sync::watch::Sender<bool>,
    pub(super) manifests: Mutex<std::collections::HashMap<Digest, (String, Bytes)>>,
    /// The last content requests, for the admin API.
    pub recent: super::recent::RecentPulls,
    pub(super) prefetch_slots: Arc<tokio::sync::Semaphore>,
    /// Prefetched digests no client has asked for yet, and their sizes once known.
    pub(super) prefetched: Mutex<std::collections::HashMap<Digest, u64>>,
    /// Fleet mode: the shared bucket, leases and peers (set once at start).
    pub(super) fleet: std::sync::OnceLock<Arc<super::fleet::Fleet>>,
}

/// Why a request could not get credentials or was refused before reaching the upstream.
pub(super) type Refusal = Response<Body>;

impl Proxy {
    pub fn new(
        store: BlobStore,
        upstreams: Vec<Arc<Upstream>>,
        default_upstream: Option<usize>,
        secrets: Arc<dyn SecretStore + Send + Sync>,
        settings: Settings,
    ) -> std::io::Result<Self> {
        let lru = Arc::new(Lru::load(&store, settings.max_cache_bytes));
        let prefetch_max = settings.prefetch_max.max(1);
        let grants = Grants::open(store.root().join("meta/links"), settings.link_ttl)?;
        let metrics = Metrics::default();
        let (bytes, entries) = lru.usage();
        metrics.cache_bytes.set(bytes as i64);
        metrics.cache_entries.set(entries as i64);
        Ok(Self {
            fills: Arc::new(Fills::default()),
            fill_slots: Arc::new(tokio::sync::Semaphore::new(settings.max_fills.max(1))),
            fill_queue: Arc::new(FillQueue::new(
                settings.max_queued_fills,
                settings.max_queued_fills_per_client,
            )),
            tokens: TokenAuthority::new(settings.token_ttl),
            gate: ClientGate::new(secrets.clone()),
            store,
            upstreams,
            default_upstream,
            secrets,
            settings,
            metrics,
            lru,
            grants,
            stale_logged: Mutex::new(HashSet::new()),
            next_id: AtomicU64::new(1),
            creds_cache: CredentialCache::default(),
            fast_in_flight: std::sync::atomic::AtomicUsize::new(0),
            stopping: tokio::sync::watch::channel(false).0,
            manifests: Mutex::new(std::collections::HashMap::new()),
            recent: Default::default(),
            prefetch_slots: Arc::new(tokio::sync::Semaphore::new(prefetch_max)),
            prefetched: Mutex::new(std::collections::HashMap::new()),
            fleet: std::sync::OnceLock::new(),
        })
    }

    pub async fn handle(
        self: Arc<Self>,
        req: Request<hyper::body::Incoming>,
        peer: std::net::IpAddr,
    ) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query = req.uri().query().map(str::to_string);
        let headers = req.headers().clone();
        let log = self.request_log(method.as_str(), &path, query.as_deref());
        let body = if method == Method::POST && path == "/token" {
            match http_body_util::Limited::new(req.into_body(), 64 * 1024)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(_) => Bytes::new(),
            }
        } else {
            Bytes::new()
        };
        let (route_label, mut resp) = self
            .dispatch(&method, &path, query.as_deref(), &headers, &body, peer)
            .await;
        if path.starts_with("/v2") {
            api_version(resp.headers_mut());
        }
        let status = resp.status().as_u16();
        let mut log = log;
        if let Some(n) = resp.extensions().get::<super::recent::PullNamespace>() {
            log.namespace = Some(n.0.clone());
            log.client = n.1.clone();
        }
        log.cache = resp
            .extensions()
            .get::<super::recent::CacheOutcome>()
            .map(|c| c.0);
        log.finish(&self, resp.headers_mut(), route_label, status, false);
        resp
    }

    /// Starts the log line and metric of one request (either transport).
    pub fn request_log(&self, method: &str, path: &str, query: Option<&str>) -> RequestLog {
        RequestLog {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            namespace: None,
            cache: None,
            client: None,
            started: Instant::now(),
            method: method.to_string(),
            path: path.to_string(),
            query: query.unwrap_or("").to_string(),
        }
    }

    pub(super) async fn dispatch(
        self: &Arc<Self>,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &Bytes,
        peer: std::net::IpAddr,
    ) -> (&'static str, Response<Body>) {
        if path.starts_with(super::fleet::PEER_PATH) {
            return ("fleet", self.peer_blob(path, headers).await);
        }
        match path {
            "/healthz" => return ("health", text(StatusCode::OK, "ok\n")),
            "/readyz" => return ("health", self.readiness()),
            // Test hook (debug builds, opt-in): blocks this worker thread as a deadlock would.
            #[cfg(debug_assertions)]
            "/_test/stall-worker" if std::env::var_os("PULLSECRET_TEST_HOOKS").is_some() => {
                let ms = query
                    .and_then(|q| q.strip_prefix("ms="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1000);
                std::thread::sleep(Duration::from_millis(ms));
                return ("other", text(StatusCode::OK, "stalled\n"));
            }
            "/metrics" => {
                if self.settings.metrics_auth {
                    match self.authenticate(headers, peer).await {
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            return (
                                "metrics",
                                self.challenge(
                                    headers,
                                    StatusCode::UNAUTHORIZED,
                                    "UNAUTHORIZED",
                                    "authentication required",
                                ),
                            )
                        }
                        Err(r) => return ("auth", r),
                    }
                }
                self.refresh_gauges();
                let mut r = bytes_response(
                    StatusCode::OK,
                    Bytes::from(self.metrics.encode()),
                    "text/plain; version=0.0.4; charset=utf-8",
                    false,
                );
                r.headers_mut().remove("docker-distribution-api-version");
                return ("metrics", r);
            }
            "/token" if self.settings.auth_enabled => {
                return (
                    "token",
                    self.token_endpoint(method, query, headers, body, peer)
                        .await,
                )
            }
            _ => {}
        }
        if !path.starts_with("/v2") {
            return (
                "other",
                oci_error(StatusCode::NOT_FOUND, "NOT_FOUND", "not found"),
            );
        }
        if method != Method::GET && method != Method::HEAD {
            return (
                "push",
                oci_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "UNSUPPORTED",
                    "this is a pull-through cache; pushes are not supported",
                ),
            );
        }
        let claims = match self.authenticate(headers, peer).await {
            Ok(c) => c,
            Err(r) => return ("auth", r),
        };
        let client = claims
            .as_ref()
            .map(|c| c.user.clone())
            .filter(|u| !u.is_empty());
        let who = claims.map(|c| c.namespace);
        let names: Vec<_> = self.upstreams.iter().map(|u| u.names.clone()).collect();
        let head = method == Method::HEAD;
        match route(path, query, &names, self.default_upstream) {
            Ok(Route::Base) => {
                if self.settings.auth_enabled && who.is_none() {
                    return (
                        "base",
                        self.challenge(
                            headers,
                            StatusCode::UNAUTHORIZED,
                            "UNAUTHORIZED",
                            "authentication required",
                        ),
                    );
                }
                let r = bytes_response(
                    StatusCode::OK,
                    Bytes::from_static(b"{}"),
                    "application/json",
                    head,
                );
                ("base", r)
            }
            // Lists are GET only (the distribution spec defines no HEAD for them).
            Ok(Route::Tags { .. } | Route::Referrers { .. } | Route::Catalog) if head => (
                "invalid",
                oci_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "UNSUPPORTED",
                    "HEAD is not defined for this endpoint",
                ),
            ),
            Ok(Route::Tags {
                upstream,
                repo,
                name,
                page,
                ns,
            }) => {
                let who = self.requester(who);
                let mut r = self
                    .tags(upstream, &repo, &name, &page, ns.as_deref(), &who)
                    .await;
                self.challenge_on_401(&mut r, headers);
                echo_ns(r.headers_mut(), ns.as_deref());
                ("tags", r)
            }
            Ok(Route::Catalog) => {
                if self.settings.auth_enabled && who.is_none() {
                    return (
                        "catalog",
                        self.challenge(
                            headers,
                            StatusCode::UNAUTHORIZED,
                            "UNAUTHORIZED",
                            "authentication required",
                        ),
                    );
                }
                // What a requester may list is what its upstream credentials may list, which
                // the proxy cannot know for a whole registry: no catalog (README, "Read API").
                (
                    "catalog",
                    oci_error(
                        StatusCode::NOT_FOUND,
                        "UNSUPPORTED",
                        "this pull-through cache does not list repositories; list tags of a repository instead",
                    ),
                )
            }
            Ok(Route::Referrers {
                upstream,
                repo,
                digest,
                artifact_type,
                ns,
            }) => {
                let who = self.requester(who);
                let mut r = self
                    .referrers(upstream, &repo, &digest, artifact_type.as_deref(), &who)
                    .await;
                self.challenge_on_401(&mut r, headers);
                echo_ns(r.headers_mut(), ns.as_deref());
                ("referrers", r)
            }
            Ok(Route::Manifest {
                upstream,
                repo,
                reference,
                ns,
            }) => {
                let who = self.requester(who);
                let mut r = self
                    .manifest(upstream, &repo, &reference, headers, head, &who)
                    .await;
                self.challenge_on_401(&mut r, headers);
                echo_ns(r.headers_mut(), ns.as_deref());
                r.extensions_mut().insert(super::recent::PullNamespace(
                    who.namespace.clone(),
                    client.clone(),
                ));
                ("manifest", r)
            }
            Ok(Route::Blob {
                upstream,
                repo,
                digest,
                ns,
            }) => {
                let who = self.requester(who);
                let mut r = self
                    .blob(upstream, &repo, &digest, headers, head, &who, peer)
                    .await;
                self.challenge_on_401(&mut r, headers);
                echo_ns(r.headers_mut(), ns.as_deref());
                r.extensions_mut().insert(super::recent::PullNamespace(
                    who.namespace.clone(),
                    client.clone(),
                ));
                ("blob", r)
            }
            Err(e) => (
                "invalid",
                oci_error(
                    StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
                    e.code,
                    &e.message,
                ),
            ),
        }
    }

    /// Ready unless shutting down or a worker is stuck (a blocked worker stops its connections).
    pub(super) fn readiness(&self) -> Response<Body> {
        if *self.stopping.borrow() {
            return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
        }
        if let Some(quiet) = super::watchdog::stuck(self.settings.stall_limit) {
            tracing::warn!(
                stuck_ms = quiet.as_millis() as u64,
                "a runtime worker is stuck; /readyz fails"
            );
            return text(StatusCode::SERVICE_UNAVAILABLE, "a worker is stuck\n");
        }
        text(StatusCode::OK, "ok\n")
    }

    pub(super) fn refresh_gauges(&self) {
        let shared_up = match self.fleet().and_then(|f| f.shared.as_ref()) {
            Some(s) => i64::from(s.is_up()),
            None => -1,
        };
        self.metrics.shared_up.set(shared_up);
        let (bytes, entries) = self.lru.usage();
        self.metrics.cache_bytes.set(bytes as i64);
        self.metrics.cache_entries.set(entries as i64);
        self.metrics
            .fills_in_flight
            .set(self.fills.in_flight() as i64);
        let tokens: u64 = self
            .upstreams
            .first()
            .map_or(0, |u| u.client.tokens().fetch_count());
        self.metrics.token_fetches.set(tokens as i64);
        for up in &self.upstreams {
            let label = self.metrics.upstream(&up.cfg.name);
            let h = up.client.health();
            let state = h.circuit.gauge();
            self.metrics
                .upstream_up
                .get_or_create(&label)
                .set(i64::from(state == 0));
            self.metrics
                .upstream_circuit_state
                .get_or_create(&label)
                .set(state);
            let gauges = [
                (&self.metrics.upstream_ratelimit_limit, h.ratelimit_limit),
                (
                    &self.metrics.upstream_ratelimit_remaining,
                    h.ratelimit_remaining,
                ),
            ];
            for (family, value) in gauges {
                if let Some(v) = value {
                    family
                        .get_or_create(&label)
                        .set(i64::try_from(v).unwrap_or(i64::MAX));
                }
            }
            for (identity, rl) in &h.ratelimits {
                let labels = super::metrics::IdentityLabels {
                    upstream: up.cfg.name.clone(),
                    identity: identity.clone(),
                };
                let gauges = [
                    (&self.metrics.identity_ratelimit_limit, rl.limit),
                    (&self.metrics.identity_ratelimit_remaining, rl.remaining),
                ];
                for (family, value) in gauges {
                    if let Some(v) = value {
                        family
                            .get_or_create(&labels)
                            .set(i64::try_from(v).unwrap_or(i64::MAX));
                    }
                }
            }
        }
    }

    pub(super) fn count_upstream(&self, name: &str) {
        self.metrics
            .upstream_requests
            .get_or_create(&self.metrics.upstream(name))
            .inc();
    }

    pub(super) fn hit(&self, kind: &'static str) {
        self.metrics
            .cache_hits
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    pub(super) fn miss(&self, kind: &'static str) {
        self.metrics
            .cache_misses
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    pub(super) fn remember(&self, d: &Digest, size: u64) {
        for victim in self.lru.inserted(d, size) {
            self.manifests
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&victim);
            let _ = std::fs::remove_file(self.store.blob_path(&victim));
            self.metrics.evictions.inc();
            tracing::info!(digest = %victim, "evicted (cache.max_size)");
        }
    }
}
