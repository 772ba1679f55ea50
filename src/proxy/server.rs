//! The pull side of the distribution API: `/v2/`, manifests and blobs by GET and HEAD,
//! served from the cache or filled from the upstream; pushes refused; client auth, metrics.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;

use super::blob_store::{BlobStore, TagRecord};
use super::client_auth::{Claims, TokenAuthority, ANONYMOUS};
use super::client_gate::{ClientGate, Verdict};
use super::evict::Lru;
use super::fill::{Download, Fills, Joined};
use super::fill_queue::{FillQueue, Ticket};
use super::grants::{Grants, Link};
use super::metrics::{KindLabels, Metrics, RequestLabels};
use super::route::{route, ManifestRef, Route};
use super::upstream::{Picked, Requester, Upstream};
use crate::registry::digest::Digest;
use crate::registry::RegistryError;
use crate::store::{now_unix, SecretStore};

pub type Body = BoxBody<Bytes, std::io::Error>;

const CHUNK: usize = 256 * 1024;

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
    grants: Grants,
    tokens: TokenAuthority,
    gate: ClientGate,
    fill_slots: Arc<tokio::sync::Semaphore>,
    fill_queue: Arc<FillQueue>,
    stale_logged: Mutex<HashSet<String>>,
    next_id: AtomicU64,
    creds_cache: Mutex<std::collections::HashMap<CredKey, CachedCreds>>,
    /// sendfile transfers under way (graceful shutdown waits for them).
    pub fast_in_flight: std::sync::atomic::AtomicUsize,
    /// Set when shutdown begins, so idle connections waiting in the fast path close.
    pub stopping: tokio::sync::watch::Sender<bool>,
    manifests: Mutex<std::collections::HashMap<Digest, (String, Bytes)>>,
}

/// (upstream, requester, repository)
type CredKey = (usize, Requester, String);

/// A credential lookup, valid while the store's generation is unchanged (and briefly otherwise:
/// references such as `cmd://` can change outside the store).
struct CachedCreds {
    picked: Option<Picked>,
    at: Instant,
    generation: Option<u128>,
}

const CREDS_TTL: Duration = Duration::from_secs(30);
const CREDS_TTL_UNVERSIONED: Duration = Duration::from_secs(2);
const MANIFEST_MEMORY_ENTRIES: usize = 4096;
/// The requester address of the proxy's own background work (`warm`).
const LOCAL: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// Why a request could not get credentials or was refused before reaching the upstream.
type Refusal = Response<Body>;

impl Proxy {
    pub fn new(
        store: BlobStore,
        upstreams: Vec<Arc<Upstream>>,
        default_upstream: Option<usize>,
        secrets: Arc<dyn SecretStore + Send + Sync>,
        settings: Settings,
    ) -> std::io::Result<Self> {
        let lru = Arc::new(Lru::load(&store, settings.max_cache_bytes));
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
            creds_cache: Mutex::new(std::collections::HashMap::new()),
            fast_in_flight: std::sync::atomic::AtomicUsize::new(0),
            stopping: tokio::sync::watch::channel(false).0,
            manifests: Mutex::new(std::collections::HashMap::new()),
        })
    }

    pub async fn handle(
        self: Arc<Self>,
        req: Request<hyper::body::Incoming>,
        peer: std::net::IpAddr,
    ) -> Response<Body> {
        let started = Instant::now();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query = req.uri().query().map(str::to_string);
        let headers = req.headers().clone();
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
        let status = resp.status().as_u16();
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                route: route_label,
                status,
            })
            .inc();
        resp.headers_mut()
            .insert("x-request-id", hv(&id.to_string()));
        tracing::info!(
            request_id = id,
            %method,
            %path,
            query = query.as_deref().unwrap_or(""),
            status,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request"
        );
        resp
    }

    async fn dispatch(
        self: &Arc<Self>,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &Bytes,
        peer: std::net::IpAddr,
    ) -> (&'static str, Response<Body>) {
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
        let who = match self.authenticate(headers, peer).await {
            Ok(w) => w,
            Err(r) => return ("auth", r),
        };
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
                let mut r = bytes_response(
                    StatusCode::OK,
                    Bytes::from_static(b"{}"),
                    "application/json",
                    head,
                );
                r.headers_mut().insert(
                    "docker-distribution-api-version",
                    HeaderValue::from_static("registry/2.0"),
                );
                ("base", r)
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
                echo_ns(&mut r, ns);
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
                echo_ns(&mut r, ns);
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
    fn readiness(&self) -> Response<Body> {
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

    fn refresh_gauges(&self) {
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
    }

    /// The client's namespace: `Ok(None)` for no credentials; `Err` (401) for wrong ones.
    async fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: std::net::IpAddr,
    ) -> Result<Option<String>, Refusal> {
        if !self.settings.auth_enabled {
            return Ok(None);
        }
        let Some(auth) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return Ok(None);
        };
        if let Some(token) = auth.strip_prefix("Bearer ") {
            // A token stands only while the client record it was issued for is unchanged.
            let claims = self.tokens.verify("a", token.trim());
            let current = match &claims {
                Some(c) => self.gate.current(c).await,
                None => false,
            };
            return match claims {
                Some(c) if current => Ok(Some(c.namespace)),
                _ => Err(self.challenge(
                    headers,
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    "invalid or expired token",
                )),
            };
        }
        if let Some((user, pass)) = parse_basic(auth) {
            return match self.gate.login(peer, &user, &pass).await {
                Verdict::Accepted(c) => Ok(Some(c.namespace)),
                verdict => Err(self.refused_login(headers, &user, peer, &verdict)),
            };
        }
        Err(self.challenge(
            headers,
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "unsupported authorization",
        ))
    }

    /// A refused client login: logged with the user and address (never the password), 401, or
    /// 429 with Retry-After while the failure limit holds.
    fn refused_login(
        &self,
        headers: &HeaderMap,
        user: &str,
        peer: std::net::IpAddr,
        verdict: &Verdict,
    ) -> Response<Body> {
        match verdict {
            Verdict::Throttled(wait) => {
                tracing::warn!(client = %user, %peer, retry_after_secs = wait.as_secs() + 1, "client login throttled after repeated failures");
                let mut r = oci_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TOOMANYREQUESTS",
                    "too many failed logins; retry later",
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, hv(&(wait.as_secs() + 1).to_string()));
                r
            }
            _ => {
                tracing::warn!(client = %user, %peer, "client login refused");
                self.challenge(
                    headers,
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    "invalid username or password",
                )
            }
        }
    }

    fn requester(&self, authenticated: Option<String>) -> Requester {
        let namespace = match (self.settings.auth_enabled, authenticated) {
            (true, Some(ns)) => ns,
            (true, None) => ANONYMOUS.to_string(),
            // Without client auth every client is the proxy's own user.
            (false, _) => self.settings.namespace.clone(),
        };
        Requester {
            namespace,
            home: self.settings.namespace.clone(),
            background: false,
        }
    }

    fn realm(&self, headers: &HeaderMap) -> String {
        if let Some(r) = &self.settings.realm {
            return r.clone();
        }
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("127.0.0.1");
        let scheme = if self.settings.tls { "https" } else { "http" };
        format!("{scheme}://{host}/token")
    }

    fn challenge(
        &self,
        headers: &HeaderMap,
        status: StatusCode,
        code: &str,
        message: &str,
    ) -> Response<Body> {
        let mut r = oci_error(status, code, message);
        if self.settings.auth_enabled {
            let v = format!(
                "Bearer realm=\"{}\",service=\"pullsecret\"",
                self.realm(headers)
            );
            r.headers_mut().insert(header::WWW_AUTHENTICATE, hv(&v));
        }
        r
    }

    /// With client auth on, a 401 tells the client where to get a token.
    fn challenge_on_401(&self, r: &mut Response<Body>, headers: &HeaderMap) {
        if self.settings.auth_enabled && r.status() == StatusCode::UNAUTHORIZED {
            let v = format!(
                "Bearer realm=\"{}\",service=\"pullsecret\"",
                self.realm(headers)
            );
            r.headers_mut().insert(header::WWW_AUTHENTICATE, hv(&v));
        }
    }

    /// `/token`: GET with optional Basic (docker, skopeo, podman) or the OAuth2 POST form (containerd).
    async fn token_endpoint(
        &self,
        method: &Method,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &Bytes,
        peer: std::net::IpAddr,
    ) -> Response<Body> {
        let form: Vec<(String, String)> = if method == Method::POST {
            url_form(&String::from_utf8_lossy(body))
        } else {
            url_form(query.unwrap_or(""))
        };
        let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let (claims, refresh) = if method == Method::POST {
            match field("grant_type").as_deref() {
                Some("password") => {
                    let (Some(u), Some(p)) = (field("username"), field("password")) else {
                        return oci_error(
                            StatusCode::BAD_REQUEST,
                            "UNSUPPORTED",
                            "username and password required",
                        );
                    };
                    let p = zeroize::Zeroizing::new(p);
                    match self.gate.login(peer, &u, &p).await {
                        Verdict::Accepted(c) => (c, true),
                        verdict => return self.refused_login(headers, &u, peer, &verdict),
                    }
                }
                Some("refresh_token") => {
                    // Re-checked against the current record: a removed client's refresh
                    // token mints nothing.
                    let claims = field("refresh_token").and_then(|t| self.tokens.verify("r", &t));
                    let current = match &claims {
                        Some(c) => self.gate.current(c).await,
                        None => false,
                    };
                    match claims {
                        Some(c) if current => (c, false),
                        _ => {
                            return oci_error(
                                StatusCode::UNAUTHORIZED,
                                "UNAUTHORIZED",
                                "invalid refresh token",
                            )
                        }
                    }
                }
                _ => {
                    return oci_error(
                        StatusCode::BAD_REQUEST,
                        "UNSUPPORTED",
                        "grant_type must be password or refresh_token",
                    )
                }
            }
        } else {
            match headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_basic)
            {
                Some((u, p)) => match self.gate.login(peer, &u, &p).await {
                    Verdict::Accepted(c) => (c, field("offline_token").as_deref() == Some("true")),
                    verdict => return self.refused_login(headers, &u, peer, &verdict),
                },
                None => (
                    Claims {
                        namespace: ANONYMOUS.to_string(),
                        user: String::new(),
                        fingerprint: String::new(),
                    },
                    false,
                ),
            }
        };
        let ttl = self.settings.token_ttl;
        let token = self.tokens.issue("a", &claims, ttl);
        let mut body = serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": ttl.as_secs(),
            "issued_at": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        });
        if refresh {
            body["refresh_token"] = serde_json::Value::String(self.tokens.issue(
                "r",
                &claims,
                Duration::from_secs(30 * 86400),
            ));
        }
        bytes_response(
            StatusCode::OK,
            Bytes::from(body.to_string()),
            "application/json",
            false,
        )
    }

    async fn credentials(
        &self,
        up: &Arc<Upstream>,
        who: &Requester,
        repo: &str,
    ) -> Result<Option<Picked>, Refusal> {
        let ui = self
            .upstreams
            .iter()
            .position(|u| Arc::ptr_eq(u, up))
            .unwrap_or(usize::MAX);
        let key: CredKey = (ui, who.clone(), repo.to_string());
        let generation = self.secrets.generation();
        {
            let cache = self.creds_cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = cache.get(&key) {
                let ttl = if generation.is_some() {
                    CREDS_TTL
                } else {
                    CREDS_TTL_UNVERSIONED
                };
                if c.generation == generation && c.at.elapsed() < ttl {
                    return Ok(c.picked.clone());
                }
            }
        }
        let up2 = up.clone();
        let store = self.secrets.clone();
        let who2 = who.clone();
        let repo2 = repo.to_string();
        let r = tokio::task::spawn_blocking(move || up2.credentials(store.as_ref(), &who2, &repo2))
            .await;
        match r {
            Ok(Ok(picked)) => {
                let mut cache = self.creds_cache.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() > 10_000 {
                    cache.clear();
                }
                cache.insert(
                    key,
                    CachedCreds {
                        picked: picked.clone(),
                        at: Instant::now(),
                        generation,
                    },
                );
                Ok(picked)
            }
            // The reason (which secret, which namespace, what to run) is for the operator's
            // log; the client learns only that credentials are missing.
            Ok(Err(e)) => {
                tracing::warn!(error = %e, namespace = %who.namespace, %repo, "no credentials for upstream");
                Err(oci_error(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    "the proxy has no usable credentials for this upstream",
                ))
            }
            Err(e) => {
                tracing::warn!(error = %e, "credential lookup failed");
                Err(oci_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "UNKNOWN",
                    "credential lookup failed",
                ))
            }
        }
    }

    /// Whether `who` may see cached `digest` in `repo`: a fresh link, or the upstream confirms
    /// it now with `who`'s own credentials. `Err` carries the upstream's refusal.
    async fn confirm(
        &self,
        up: &Upstream,
        repo: &str,
        digest: &Digest,
        picked: Option<&Picked>,
        manifest: bool,
    ) -> Result<(), Refusal> {
        let identity = picked.map_or("anonymous", |p| p.grant.as_str());
        let link = self.grants.check(identity, &up.cfg.name, repo, digest);
        if link == Link::Fresh {
            return Ok(());
        }
        let creds = picked.map(|p| &p.creds);
        self.count_upstream(&up.cfg.name);
        let found = if manifest {
            up.client
                .head_manifest(repo, digest.as_str(), None, creds)
                .await
                .map(|h| h.is_some())
        } else {
            up.client
                .head_blob(repo, digest, creds)
                .await
                .map(|h| h.is_some())
        };
        match found {
            Ok(true) => {
                self.grants.add(identity, &up.cfg.name, repo, digest);
                Ok(())
            }
            Ok(false) => Err(oci_error(
                StatusCode::NOT_FOUND,
                if manifest {
                    "MANIFEST_UNKNOWN"
                } else {
                    "BLOB_UNKNOWN"
                },
                "unknown to the upstream for this repository",
            )),
            // An upstream that is down cannot confirm; a link confirmed before still stands.
            Err(e) if e.upstream_unavailable() && link == Link::Expired => Ok(()),
            Err(e) => {
                self.metrics
                    .upstream_errors
                    .get_or_create(&self.metrics.upstream(&up.cfg.name))
                    .inc();
                Err(upstream_error(&e))
            }
        }
    }

    fn count_upstream(&self, name: &str) {
        self.metrics
            .upstream_requests
            .get_or_create(&self.metrics.upstream(name))
            .inc();
    }

    fn hit(&self, kind: &'static str) {
        self.metrics
            .cache_hits
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    fn miss(&self, kind: &'static str) {
        self.metrics
            .cache_misses
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    fn remember(&self, d: &Digest, size: u64) {
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

    async fn manifest(
        &self,
        ui: usize,
        repo: &str,
        reference: &ManifestRef,
        headers: &HeaderMap,
        head: bool,
        who: &Requester,
    ) -> Response<Body> {
        let up = self.upstreams[ui].clone();
        // Go clients send one Accept header per media type; all of them go upstream.
        let accept = accept_header(headers);
        let picked = match self.credentials(&up, who, repo).await {
            Ok(p) => p,
            Err(r) => return r,
        };
        match reference {
            ManifestRef::Digest(d) => {
                if self.store.manifest_meta(d).is_some() {
                    if let Err(r) = self.confirm(&up, repo, d, picked.as_ref(), true).await {
                        return r;
                    }
                    if let Some(r) = self.cached_manifest(d, head) {
                        self.hit("manifest");
                        return r;
                    }
                }
                self.miss("manifest");
                self.count_upstream(&up.cfg.name);
                match up
                    .client
                    .get_manifest(
                        repo,
                        d.as_str(),
                        accept.as_deref(),
                        picked.as_ref().map(|p| &p.creds),
                    )
                    .await
                {
                    Ok(m) => {
                        self.store_manifest(&up, repo, &m, picked.as_ref());
                        manifest_response(m.bytes, &m.media_type, &m.digest, head)
                    }
                    Err(e) => {
                        self.metrics
                            .upstream_errors
                            .get_or_create(&self.metrics.upstream(&up.cfg.name))
                            .inc();
                        upstream_error(&e)
                    }
                }
            }
            ManifestRef::Tag(tag) => {
                self.manifest_by_tag(&up, repo, tag, accept.as_deref(), head, picked.as_ref())
                    .await
            }
        }
    }

    fn store_manifest(
        &self,
        up: &Upstream,
        repo: &str,
        m: &crate::registry::client::Manifest,
        picked: Option<&Picked>,
    ) {
        match self.store.put_manifest(&m.digest, &m.bytes, &m.media_type) {
            Ok(()) => self.remember(&m.digest, m.bytes.len() as u64),
            Err(e) => tracing::warn!(error = %e, "caching manifest failed"),
        }
        self.grants.add(
            picked.map_or("anonymous", |p| p.grant.as_str()),
            &up.cfg.name,
            repo,
            &m.digest,
        );
    }

    async fn manifest_by_tag(
        &self,
        up: &Arc<Upstream>,
        repo: &str,
        tag: &str,
        accept: Option<&str>,
        head: bool,
        picked: Option<&Picked>,
    ) -> Response<Body> {
        let accept_key = accept.unwrap_or("");
        let identity = picked.map_or("anonymous", |p| p.grant.as_str());
        let cached = self.store.get_tag(&up.cfg.name, repo, tag, accept_key);
        let cached_digest = cached
            .as_ref()
            .and_then(|c| Digest::parse(&c.digest).ok())
            .filter(|d| self.store.has_blob(d));
        let now = now_unix();
        if let (Some(rec), Some(d)) = (&cached, &cached_digest) {
            // Within the TTL, and only for a requester already linked to this content.
            let fresh_tag = now.saturating_sub(rec.checked) < up.cfg.tag_ttl.as_secs();
            if fresh_tag && self.grants.check(identity, &up.cfg.name, repo, d) == Link::Fresh {
                if let Some(r) = self.cached_manifest(d, head) {
                    self.hit("manifest");
                    return r;
                }
            }
        }
        let creds = picked.map(|p| &p.creds);
        // Revalidate with HEAD: free on Docker Hub's rate limit, unlike GET.
        self.count_upstream(&up.cfg.name);
        let head_result = up.client.head_manifest(repo, tag, accept, creds).await;
        match head_result {
            Ok(Some(h)) => {
                if let (Some(hd), Some(d), Some(rec)) = (&h.digest, &cached_digest, &cached) {
                    if hd == d {
                        let rec = TagRecord {
                            checked: now,
                            ..rec.clone()
                        };
                        let _ = self
                            .store
                            .put_tag(&up.cfg.name, repo, tag, accept_key, &rec);
                        // The HEAD with this requester's credentials is the confirmation.
                        self.grants.add(identity, &up.cfg.name, repo, d);
                        if let Some(r) = self.cached_manifest(d, head) {
                            self.hit("manifest");
                            return r;
                        }
                    }
                }
                self.miss("manifest");
                self.count_upstream(&up.cfg.name);
                match up.client.get_manifest(repo, tag, accept, creds).await {
                    Ok(m) => {
                        let rec = TagRecord {
                            digest: m.digest.to_string(),
                            media_type: m.media_type.clone(),
                            size: m.bytes.len() as u64,
                            checked: now,
                        };
                        self.store_manifest(up, repo, &m, picked);
                        if let Err(e) =
                            self.store
                                .put_tag(&up.cfg.name, repo, tag, accept_key, &rec)
                        {
                            tracing::warn!(error = %e, "caching tag failed");
                        }
                        manifest_response(m.bytes, &m.media_type, &m.digest, head)
                    }
                    Err(e) => self.stale_or_error(
                        &e,
                        up,
                        repo,
                        tag,
                        cached_digest.as_ref(),
                        head,
                        identity,
                    ),
                }
            }
            Ok(None) => oci_error(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                &format!("manifest unknown to {}", up.names.host),
            ),
            Err(e) => {
                self.stale_or_error(&e, up, repo, tag, cached_digest.as_ref(), head, identity)
            }
        }
    }

    /// On an unwell upstream, the last known digest for a tag is served (logged once per tag) to
    /// requesters that were linked to it before.
    #[allow(clippy::too_many_arguments)]
    fn stale_or_error(
        &self,
        e: &RegistryError,
        up: &Upstream,
        repo: &str,
        tag: &str,
        cached: Option<&Digest>,
        head: bool,
        identity: &str,
    ) -> Response<Body> {
        self.metrics
            .upstream_errors
            .get_or_create(&self.metrics.upstream(&up.cfg.name))
            .inc();
        if e.upstream_unavailable() {
            if let Some(d) = cached {
                if self.grants.check(identity, &up.cfg.name, repo, d) != Link::None {
                    if let Some(r) = self.cached_manifest(d, head) {
                        self.metrics.stale_serves.inc();
                        let key = format!("{}/{repo}:{tag}", up.cfg.name);
                        let first = self
                            .stale_logged
                            .lock()
                            .map(|mut s| s.insert(key.clone()))
                            .unwrap_or(false);
                        if first {
                            tracing::warn!(tag = %key, error = %e, "upstream unavailable; serving the cached tag (stale)");
                        }
                        return r;
                    }
                }
            }
        }
        upstream_error(e)
    }

    fn cached_manifest(&self, d: &Digest, head: bool) -> Option<Response<Body>> {
        // Small and hot: kept in memory after the first read.
        if let Some((media_type, bytes)) = self
            .manifests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(d)
        {
            return Some(manifest_response(bytes.clone(), media_type, d, head));
        }
        let meta = self.store.manifest_meta(d)?;
        let bytes = Bytes::from(std::fs::read(self.store.blob_path(d)).ok()?);
        let _pin = self.lru.pin(d);
        let mut mem = self.manifests.lock().unwrap_or_else(|e| e.into_inner());
        if mem.len() >= MANIFEST_MEMORY_ENTRIES {
            mem.clear();
        }
        mem.insert(d.clone(), (meta.media_type.clone(), bytes.clone()));
        Some(manifest_response(bytes, &meta.media_type, d, head))
    }

    #[allow(clippy::too_many_arguments)]
    async fn blob(
        self: &Arc<Self>,
        ui: usize,
        repo: &str,
        digest: &Digest,
        headers: &HeaderMap,
        head: bool,
        who: &Requester,
        peer: std::net::IpAddr,
    ) -> Response<Body> {
        let range = headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let up = self.upstreams[ui].clone();
        let picked = match self.credentials(&up, who, repo).await {
            Ok(p) => p,
            Err(r) => return r,
        };
        let identity = picked
            .as_ref()
            .map_or("anonymous".to_string(), |p| p.grant.clone());
        if let Some(r) = self
            .serve_cached(&up, repo, digest, picked.as_ref(), range.as_deref(), head)
            .await
        {
            return r;
        }
        let creds = picked.as_ref().map(|p| p.creds.clone());
        if head {
            // A HEAD for an uncached blob answers what the upstream says, without a fill.
            self.count_upstream(&up.cfg.name);
            return match up.client.head_blob(repo, digest, creds.as_ref()).await {
                Ok(Some(size)) => blob_head(digest, size),
                Ok(None) => oci_error(
                    StatusCode::NOT_FOUND,
                    "BLOB_UNKNOWN",
                    "blob unknown to registry",
                ),
                Err(e) => upstream_error(&e),
            };
        }
        self.miss("blob");
        let owner = format!("{}|{repo}|{identity}", up.cfg.name);
        let ticket = match self.queue_place(digest, peer) {
            Ok(t) => t,
            Err(QueueFull) => return queue_full(),
        };
        let fill = match self.join_fill(&up, repo, digest, creds, &identity, &owner, ticket) {
            // A fill committed between the cache check and the join.
            Ok(None) => {
                return self
                    .serve_cached(&up, repo, digest, picked.as_ref(), range.as_deref(), head)
                    .await
                    .unwrap_or_else(|| {
                        // Committed and evicted again in between: rare; the client retries.
                        oci_error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "UNAVAILABLE",
                            "blob left the cache while being requested; retry",
                        )
                    });
            }
            Ok(Some((f, false))) if f.owner != owner => {
                // Someone else's download: this requester must be entitled to it first.
                if let Err(r) = self
                    .confirm(&up, repo, digest, picked.as_ref(), false)
                    .await
                {
                    return r;
                }
                f
            }
            Ok(Some((f, _))) => f,
            Err(e) => {
                return oci_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "UNKNOWN",
                    &format!("cache: {e}"),
                )
            }
        };
        stream_fill(fill.subscribe(), digest, range.as_deref()).await
    }
}

impl Proxy {
    /// The cached blob for this requester (confirmed with the upstream unless already linked),
    /// or `None` when it is not in the cache.
    async fn serve_cached(
        &self,
        up: &Arc<Upstream>,
        repo: &str,
        digest: &Digest,
        picked: Option<&Picked>,
        range: Option<&str>,
        head: bool,
    ) -> Option<Response<Body>> {
        let path = self.store.blob_path(digest);
        let len = tokio::fs::metadata(&path).await.ok()?.len();
        if let Err(r) = self.confirm(up, repo, digest, picked, false).await {
            return Some(r);
        }
        self.hit("blob");
        let pin = self.lru.pin(digest);
        let resp = serve_file(path, len, digest, range, head, pin).await;
        if !head {
            self.metrics.cache_hit_bytes.inc_by(
                resp.headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            );
        }
        Some(resp)
    }

    /// A place in the fill queue when a new fill for `digest` would have to wait for a slot;
    /// `QueueFull` when the queue or this client's share is full.
    fn queue_place(
        &self,
        digest: &Digest,
        peer: std::net::IpAddr,
    ) -> Result<Option<Ticket>, QueueFull> {
        if self.fills.get(digest).is_some() || self.fill_slots.available_permits() > 0 {
            return Ok(None);
        }
        match self.fill_queue.admit(peer) {
            Some(t) => Ok(Some(t)),
            None => {
                tracing::warn!(%peer, %digest, "fill queue full; answering 503");
                Err(QueueFull)
            }
        }
    }

    /// Joins the fill for `digest`, starting it as `owner` when none runs: `(fill, leader)`, or
    /// `None` when the blob reached the cache since the caller looked. The download is its own
    /// task, so it completes even if every client goes away.
    #[allow(clippy::too_many_arguments)]
    fn join_fill(
        self: &Arc<Self>,
        up: &Arc<Upstream>,
        repo: &str,
        digest: &Digest,
        creds: Option<crate::registry::auth::Credentials>,
        identity: &str,
        owner: &str,
        ticket: Option<Ticket>,
    ) -> std::io::Result<Option<(Arc<super::fill::Fill>, bool)>> {
        let final_path = self.store.blob_path(digest);
        let (fill, driver) =
            match self
                .fills
                .join(digest, owner, &self.store.tmp_dir(), &final_path)?
            {
                Joined::Cached => return Ok(None),
                Joined::Follower(f) => return Ok(Some((f, false))),
                Joined::Leader(f, driver) => (f, driver),
            };
        let this = self.clone();
        let (up, repo, digest) = (up.clone(), repo.to_string(), digest.clone());
        let identity = identity.to_string();
        tokio::spawn(async move {
            let queued = ticket.is_some();
            let acquire = this.fill_slots.clone().acquire_owned();
            tokio::pin!(acquire);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let _slot = loop {
                tokio::select! {
                    s = &mut acquire => break s,
                    _ = tick.tick() => {
                        // A queued fill whose clients all left is not worth its place.
                        if queued && driver.abandoned() {
                            tracing::debug!(%digest, "queued fill abandoned by its clients; not started");
                            let gone = Err("every client left before the download started".to_string());
                            let _ = this.fills.drive(driver, gone, final_path, || {}, |_| {}).await;
                            return;
                        }
                    }
                }
            };
            // Running now: the place in the queue goes to the next one.
            drop(ticket);
            let name = up.cfg.name.clone();
            this.count_upstream(&name);
            let bytes_counter = this
                .metrics
                .upstream_bytes
                .get_or_create(&this.metrics.upstream(&name))
                .clone();
            let download = match up.client.get_blob(&repo, &digest, 0, creds.as_ref()).await {
                Ok(resp) => Ok(Download {
                    total: resp.content_length(),
                    chunks: resp
                        .bytes_stream()
                        .map_err(|e| crate::registry::client::describe_reqwest(&e))
                        .inspect_ok(move |b| {
                            bytes_counter.inc_by(b.len() as u64);
                        })
                        .boxed(),
                }),
                Err(e) => Err(fill_error(&e)),
            };
            // The upstream served these verified bytes to this requester: link it before the
            // file appears, so the next request finds both.
            let verified = || this.grants.add(&identity, &name, &repo, &digest);
            let committed = |size| this.remember(&digest, size);
            let result = this
                .fills
                .drive(driver, download, final_path, verified, committed)
                .await;
            if let Err(e) = result {
                this.metrics
                    .upstream_errors
                    .get_or_create(&this.metrics.upstream(&name))
                    .inc();
                tracing::warn!(%digest, error = %e, "blob fill failed");
            }
        });
        Ok(Some((fill, true)))
    }
}

/// Streams a (possibly still filling) blob to one client, honouring a single Range.
async fn stream_fill(
    mut reader: super::fill::FillReader,
    digest: &Digest,
    range: Option<&str>,
) -> Response<Body> {
    let total = match reader.started().await {
        Ok(t) => t,
        Err(e) => return fill_error_response(&e),
    };
    let (status, start, end, content_range) =
        match (range.and_then(|r| parse_range(r, total)), total) {
            (Some(Ok((s, e))), Some(t)) => (
                StatusCode::PARTIAL_CONTENT,
                s,
                Some(e),
                Some(format!("bytes {s}-{e}/{t}")),
            ),
            (Some(Err(())), Some(t)) => return range_not_satisfiable(t),
            _ => (StatusCode::OK, 0, total.map(|t| t.saturating_sub(1)), None),
        };
    let limit = end.map(|e| e + 1);
    let stream =
        futures_util::stream::unfold((reader, start), move |(mut reader, offset)| async move {
            if limit.is_some_and(|l| offset >= l) {
                return None;
            }
            let max = limit.map_or(CHUNK, |l| ((l - offset) as usize).min(CHUNK));
            match reader.read_at(offset, max).await {
                Ok(Some(b)) => {
                    let n = b.len() as u64;
                    Some((Ok(Frame::data(b)), (reader, offset + n)))
                }
                Ok(None) => None,
                // An error frame aborts the connection: the client never sees a complete-looking body.
                Err(e) => Some((Err(std::io::Error::other(e)), (reader, u64::MAX))),
            }
        });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert("docker-content-digest", hv(digest.as_str()));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(e) = end {
        h.insert(header::CONTENT_LENGTH, hv(&(e + 1 - start).to_string()));
    }
    if let Some(cr) = content_range {
        h.insert(header::CONTENT_RANGE, hv(&cr));
    }
    resp
}

/// The fill queue (or this client's share of it) is full.
struct QueueFull;

/// 503 TOOMANYREQUESTS with Retry-After, for a full fill queue.
fn queue_full() -> Response<Body> {
    let mut r = oci_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "TOOMANYREQUESTS",
        "too many downloads waiting for the upstream; retry shortly",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// `Basic base64(user:pass)` → (user, pass).
fn parse_basic(h: &str) -> Option<(String, zeroize::Zeroizing<String>)> {
    use base64::Engine;
    let b64 = h
        .strip_prefix("Basic ")
        .or_else(|| h.strip_prefix("basic "))?;
    let raw = zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()?,
    );
    let text = std::str::from_utf8(&raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), zeroize::Zeroizing::new(p.to_string())))
}

/// `application/x-www-form-urlencoded` pairs, decoded.
fn url_form(s: &str) -> Vec<(String, String)> {
    let decode = |v: &str| -> String {
        let v = v.replace('+', " ");
        let b = v.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                if let Some(x) = v
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    out.push(x);
                    i += 3;
                    continue;
                }
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Fill failures carry the status to answer as a prefix: `404|message`.
fn fill_error(e: &RegistryError) -> String {
    let retry = match e {
        RegistryError::Status {
            retry_after: Some(s),
            ..
        } => *s,
        _ => 0,
    };
    format!("{}|{retry}|{e}", e.status())
}

fn fill_error_response(e: &str) -> Response<Body> {
    let mut parts = e.splitn(3, '|');
    let (status, retry, msg) = match (parts.next(), parts.next(), parts.next()) {
        (Some(s), Some(r), Some(m)) if s.len() == 3 => (
            s.parse::<u16>().unwrap_or(502),
            r.parse::<u64>().unwrap_or(0),
            m,
        ),
        _ => (502, 0, e),
    };
    let code = match status {
        401 => "UNAUTHORIZED",
        404 => "BLOB_UNKNOWN",
        429 => "TOOMANYREQUESTS",
        _ => "UNAVAILABLE",
    };
    let mut r = oci_error(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        code,
        msg,
    );
    if retry > 0 {
        r.headers_mut()
            .insert(header::RETRY_AFTER, hv(&retry.to_string()));
    }
    r
}

fn upstream_error(e: &RegistryError) -> Response<Body> {
    // 401/403, unreachable, timed out, refused realms: the operator sees each (names, never values).
    if !matches!(e, RegistryError::NotFound { .. }) {
        tracing::warn!(error = %e, "upstream request failed");
    }
    let (status, code) = match e {
        RegistryError::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
        RegistryError::NotFound { code, .. } => (
            StatusCode::NOT_FOUND,
            if code.is_empty() {
                "MANIFEST_UNKNOWN"
            } else {
                leak_code(code)
            },
        ),
        RegistryError::Status { status: 429, .. } => {
            (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS")
        }
        _ => (StatusCode::BAD_GATEWAY, "UNAVAILABLE"),
    };
    let mut r = oci_error(status, code, &e.to_string());
    // Clients back off as the upstream asked.
    if let RegistryError::Status {
        retry_after: Some(secs),
        ..
    } = e
    {
        r.headers_mut()
            .insert(header::RETRY_AFTER, hv(&secs.to_string()));
    }
    r
}

/// Known OCI codes pass through; anything else becomes a generic code.
fn leak_code(code: &str) -> &'static str {
    match code {
        "BLOB_UNKNOWN" => "BLOB_UNKNOWN",
        "MANIFEST_UNKNOWN" => "MANIFEST_UNKNOWN",
        "NAME_UNKNOWN" => "NAME_UNKNOWN",
        _ => "MANIFEST_UNKNOWN",
    }
}

/// Every Accept header value joined, as the upstream should see them.
fn accept_header(headers: &HeaderMap) -> Option<String> {
    let parts: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|s| !s.trim().is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn echo_ns(r: &mut Response<Body>, ns: Option<String>) {
    if let Some(ns) = ns {
        if let Ok(v) = HeaderValue::from_str(&ns) {
            r.headers_mut().insert("oci-namespace", v);
        }
    }
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

pub fn oci_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({"errors": [{"code": code, "message": message, "detail": null}]})
        .to_string();
    let mut r = bytes_response(status, Bytes::from(body), "application/json", false);
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"pullsecret\""),
        );
    }
    r
}

fn text(status: StatusCode, s: &'static str) -> Response<Body> {
    bytes_response(
        status,
        Bytes::from_static(s.as_bytes()),
        "text/plain",
        false,
    )
}

fn bytes_response(
    status: StatusCode,
    bytes: Bytes,
    content_type: &str,
    head: bool,
) -> Response<Body> {
    let len = bytes.len();
    let body: Body = if head {
        empty()
    } else {
        Full::new(bytes).map_err(|e| match e {}).boxed()
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, hv(content_type));
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, hv(&len.to_string()));
    r
}

fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed()
}

fn manifest_response(bytes: Bytes, media_type: &str, d: &Digest, head: bool) -> Response<Body> {
    let mut r = bytes_response(StatusCode::OK, bytes, media_type, head);
    r.headers_mut()
        .insert("docker-content-digest", hv(d.as_str()));
    r
}

fn blob_head(d: &Digest, size: u64) -> Response<Body> {
    let mut r = Response::new(empty());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, hv(&size.to_string()));
    h.insert("docker-content-digest", hv(d.as_str()));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    r
}

fn range_not_satisfiable(total: u64) -> Response<Body> {
    let mut r = oci_error(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "BLOB_UNKNOWN",
        "requested range not satisfiable",
    );
    r.headers_mut()
        .insert(header::CONTENT_RANGE, hv(&format!("bytes */{total}")));
    r
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` against `total`; `None` when not a single byte range
/// we can answer (then the whole blob is sent), `Some(Err)` when unsatisfiable.
pub fn parse_range(h: &str, total: Option<u64>) -> Option<Result<(u64, u64), ()>> {
    let total = total?;
    let spec = h.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let r = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 || total == 0 {
            return Some(Err(()));
        }
        (total.saturating_sub(n), total - 1)
    } else {
        let s: u64 = a.parse().ok()?;
        let e: u64 = if b.is_empty() {
            total.saturating_sub(1)
        } else {
            b.parse::<u64>().ok()?.min(total.saturating_sub(1))
        };
        if s >= total || e < s {
            return Some(Err(()));
        }
        (s, e)
    };
    Some(Ok(r))
}

async fn serve_file(
    path: std::path::PathBuf,
    size: u64,
    d: &Digest,
    range: Option<&str>,
    head: bool,
    pin: super::evict::Pin,
) -> Response<Body> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let (status, start, end) = match range.and_then(|r| parse_range(r, Some(size))) {
        Some(Ok((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e),
        Some(Err(())) => return range_not_satisfiable(size),
        None => (StatusCode::OK, 0, size.saturating_sub(1)),
    };
    let len = if size == 0 { 0 } else { end + 1 - start };
    let body = if head || len == 0 {
        empty()
    } else {
        match tokio::fs::File::open(&path).await {
            Ok(mut f) => {
                if start > 0 && f.seek(std::io::SeekFrom::Start(start)).await.is_err() {
                    return oci_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "UNKNOWN",
                        "cache read failed",
                    );
                }
                let stream = tokio_util_reader(f.take(len), pin);
                BodyExt::boxed(StreamBody::new(stream))
            }
            Err(_) => {
                return oci_error(
                    StatusCode::NOT_FOUND,
                    "BLOB_UNKNOWN",
                    "blob unknown to registry",
                )
            }
        }
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, hv(&len.to_string()));
    h.insert("docker-content-digest", hv(d.as_str()));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            hv(&format!("bytes {start}-{end}/{size}")),
        );
    }
    r
}

/// Reads `r` in large chunks as body frames.
/// The pin rides along with the stream, so the blob cannot be evicted until the body ends.
fn tokio_util_reader<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    r: R,
    pin: super::evict::Pin,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send + 'static {
    futures_util::stream::unfold((r, pin), |(mut r, pin)| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = bytes::BytesMut::with_capacity(CHUNK);
        match r.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(Frame::data(buf.freeze())), (r, pin))),
            Err(e) => Some((Err(e), (r, pin))),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", Some(100)), Some(Ok((0, 9))));
        assert_eq!(parse_range("bytes=90-", Some(100)), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=-10", Some(100)), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=95-200", Some(100)), Some(Ok((95, 99))));
        assert_eq!(parse_range("bytes=100-", Some(100)), Some(Err(())));
        assert_eq!(parse_range("bytes=0-1,5-6", Some(100)), None);
        assert_eq!(parse_range("items=0-1", Some(100)), None);
    }
}

impl Proxy {
    /// The fast path's check, for a client with no credentials of its own (client auth off): a
    /// cached blob linked (fresh) to the requester, or a miss whose fill this requester leads or
    /// owns. Counts the request as served when it says yes.
    pub async fn fast_blob(
        self: &Arc<Self>,
        path: &str,
        query: Option<&str>,
        peer: std::net::IpAddr,
    ) -> Option<super::fastpath::FastHit> {
        if self.settings.auth_enabled {
            return None;
        }
        let names: Vec<_> = self.upstreams.iter().map(|u| u.names.clone()).collect();
        let Ok(Route::Blob {
            upstream,
            repo,
            digest,
            ns,
        }) = route(path, query, &names, self.default_upstream)
        else {
            return None;
        };
        let up = self.upstreams[upstream].clone();
        let who = self.requester(None);
        let picked = self.credentials(&up, &who, &repo).await.ok()?;
        let identity = picked.as_ref().map_or("anonymous", |p| p.grant.as_str());
        let owner = format!("{}|{repo}|{identity}", up.cfg.name);
        let pin = self.lru.pin(&digest);
        let (source, size) = match std::fs::File::open(self.store.blob_path(&digest)) {
            Ok(file)
                if self.grants.check(identity, &up.cfg.name, &repo, &digest) == Link::Fresh =>
            {
                let size = file.metadata().ok()?.len();
                self.hit("blob");
                self.metrics.cache_hit_bytes.inc_by(size);
                (super::fastpath::Source::Cached(file), size)
            }
            Ok(_) => return None,
            // Not cached: lead the fill, or join one running for this same requester (others
            // need a confirmation first, which hyper's path does).
            Err(_) => {
                let creds = picked.as_ref().map(|p| p.creds.clone());
                // `None` (cached meanwhile): hyper's path serves it.
                let (fill, leader) = self
                    .join_fill(&up, &repo, &digest, creds, identity, &owner, {
                        // A full queue is answered by hyper's path (503 with Retry-After).
                        self.queue_place(&digest, peer).ok()?
                    })
                    .ok()??;
                if !leader && fill.owner != owner {
                    return None;
                }
                let mut reader = fill.subscribe();
                let hit = match reader.started().await {
                    Ok(Some(size)) => (super::fastpath::Source::Filling(reader), size),
                    // No Content-Length: hyper streams it (joining this same fill).
                    Ok(None) => return None,
                    // The fill is over; answering here keeps a retry from fetching again.
                    Err(e) => (super::fastpath::Source::Failed(fill_error_response(&e)), 0),
                };
                self.miss("blob");
                hit
            }
        };
        let request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let status = match &source {
            super::fastpath::Source::Failed(r) => r.status().as_u16(),
            _ => 200,
        };
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                route: "blob",
                status,
            })
            .inc();
        tracing::info!(
            request_id,
            method = "GET",
            path,
            query = query.unwrap_or(""),
            status,
            sendfile = status == 200,
            "request"
        );
        Some(super::fastpath::FastHit {
            source,
            size,
            digest: digest.to_string(),
            ns,
            request_id,
            pin,
        })
    }
}

/// What `warm` fetched.
#[derive(Debug, Default)]
pub struct Warmed {
    pub manifests: usize,
    pub blobs: usize,
    pub bytes: u64,
}

impl Proxy {
    /// Prefetches `repo:reference` on upstream `ui` into the cache as background work (which may
    /// use `global-private` secrets): the manifest, the chosen platforms' manifests of an index
    /// (all when `platforms` is empty), and every config and layer blob.
    pub async fn warm(
        self: &Arc<Self>,
        ui: usize,
        repo: &str,
        reference: &str,
        platforms: &[crate::registry::manifest::Platform],
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Warmed, String> {
        use crate::registry::manifest::{is_index, ImageIndex, ImageManifest, ACCEPT};
        let who = Requester {
            namespace: self.settings.namespace.clone(),
            home: self.settings.namespace.clone(),
            background: true,
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, hv(ACCEPT));
        let mut out = Warmed::default();
        let first = match Digest::parse(reference) {
            Ok(d) => ManifestRef::Digest(d),
            Err(_) => ManifestRef::Tag(reference.to_string()),
        };
        let mut queue = vec![first];
        // An index may list a manifest twice, and platforms share layers: each digest once.
        let mut seen: HashSet<String> = HashSet::new();
        while let Some(r) = queue.pop() {
            if !seen.insert(r.as_str().to_string()) {
                continue;
            }
            let resp = self.manifest(ui, repo, &r, &headers, false, &who).await;
            let media_type = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let (status, body) = drain(resp).await;
            if status != 200 {
                return Err(format!(
                    "manifest {repo}:{}: {status} {}",
                    r.as_str(),
                    String::from_utf8_lossy(&body)
                ));
            }
            out.manifests += 1;
            progress(&format!(
                "manifest {repo}@{} ({media_type})",
                Digest::of_bytes(&body)
            ));
            if is_index(&media_type) {
                let index: ImageIndex =
                    serde_json::from_slice(&body).map_err(|e| format!("index: {e}"))?;
                for m in index.manifests {
                    let wanted = platforms.is_empty()
                        || m.platform
                            .as_ref()
                            .is_some_and(|p| platforms.iter().any(|w| w.matches(p)));
                    if wanted {
                        queue.push(ManifestRef::Digest(
                            Digest::parse(&m.digest).map_err(|e| e.to_string())?,
                        ));
                    }
                }
                continue;
            }
            let image: ImageManifest =
                serde_json::from_slice(&body).map_err(|e| format!("manifest: {e}"))?;
            for desc in std::iter::once(&image.config).chain(image.layers.iter()) {
                let d = Digest::parse(&desc.digest).map_err(|e| e.to_string())?;
                if !seen.insert(d.to_string()) {
                    continue;
                }
                let resp = self
                    .blob(ui, repo, &d, &HeaderMap::new(), false, &who, LOCAL)
                    .await;
                let (status, n) = drain_count(resp).await?;
                if status != 200 {
                    return Err(format!("blob {d}: {status}"));
                }
                // A body ends once verified; the fill commits to the cache just after.
                if let Some(fill) = self.fills.get(&d) {
                    fill.subscribe().settled().await;
                }
                out.blobs += 1;
                out.bytes += n;
                progress(&format!("blob {d} {n} bytes"));
            }
        }
        Ok(out)
    }

    /// The upstream a registry host (or upstream name or alias) belongs to; no default: an
    /// image of a registry the config does not name is refused, not sent elsewhere.
    pub fn upstream_for(&self, registry: &str) -> Option<usize> {
        let hub = matches!(
            registry,
            "docker.io" | "index.docker.io" | "registry-1.docker.io"
        );
        self.upstreams.iter().position(|u| {
            u.names.name == registry
                || u.names.host == registry
                || u.names.aliases.iter().any(|a| a == registry)
                || (hub && u.names.docker_hub)
        })
    }

    /// Names of the configured upstreams, for messages.
    pub fn upstream_names(&self) -> Vec<String> {
        self.upstreams
            .iter()
            .map(|u| u.names.name.clone())
            .collect()
    }
}

async fn drain(resp: Response<Body>) -> (u16, Bytes) {
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (status, body)
}

async fn drain_count(resp: Response<Body>) -> Result<(u16, u64), String> {
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Some(d) = frame.data_ref() {
            n += d.len() as u64;
        }
    }
    Ok((status, n))
}
