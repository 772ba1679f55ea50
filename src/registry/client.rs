//! The upstream registry client shared by `pullsecret pull` and the proxy: ping, challenge,
//! token flow, manifests (digest-verified), blob streams, tag lists and referrers, with one
//! re-auth on 401.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, RANGE};
use reqwest::{Method, Response, StatusCode};

use super::auth::{Credentials, TokenCache, TokenStyle};
use super::breaker::{Admission, Breaker, BreakerConfig, CircuitState};
use super::challenge::{self, Challenge, Scheme};
use super::digest::Digest;
use super::http::{describe_reqwest, read_limited};
use super::manifest::{
    ACCEPT as MANIFEST_ACCEPT, DOCKER_LIST, DOCKER_MANIFEST, MAX_MANIFEST_BYTES, OCI_INDEX,
    OCI_MANIFEST,
};
use super::RegistryError;
use crate::secret::{DOCKER_HUB_API_HOST, DOCKER_HUB_DOMAIN, LEGACY_HUB_DOMAIN};

/// How to reach one upstream registry.
#[derive(Debug, Clone, Default)]
pub struct UpstreamOptions {
    /// `host[:port]` of the registry API.
    pub host: String,
    /// Plain HTTP instead of TLS.
    pub insecure: bool,
    /// Extra root CA (PEM) for this upstream.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key (PEM, concatenated) for mutual TLS.
    pub client_identity_pem: Option<Vec<u8>>,
    pub token_style: TokenStyle,
    pub connect_timeout: Option<Duration>,
    /// Longest pause between bytes before a transfer counts as stalled.
    pub read_timeout: Option<Duration>,
    /// Token realm hosts besides the registry's own and the well-known ones that may receive
    /// its credentials.
    pub token_realms: Vec<String>,
    /// When consecutive failures stop requests from going upstream for a while.
    pub breaker: BreakerConfig,
    /// At most this many requests per second (shared by the upstream's fallback URLs).
    pub request_cap: Option<Arc<super::rate_cap::RateCap>>,
}

/// Realm hosts of well-known registries whose token service lives on another host.
const KNOWN_REALMS: &[(&str, &str)] = &[
    (DOCKER_HUB_API_HOST, "auth.docker.io"),
    (LEGACY_HUB_DOMAIN, "auth.docker.io"),
    (DOCKER_HUB_DOMAIN, "auth.docker.io"),
    ("registry.gitlab.com", "gitlab.com"),
];

/// A fetched manifest: exact bytes, the media type the registry sent, and its verified digest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub bytes: Bytes,
    pub media_type: String,
    pub digest: Digest,
}

/// Most tags read from one repository, all pages together.
pub const MAX_TAGS: usize = 100_000;
/// Largest tag-list page read into memory.
const MAX_TAGS_PAGE_BYTES: usize = 8 * 1024 * 1024;
/// Most `Link` pages followed for one tag list.
const MAX_TAG_PAGES: usize = 1000;

/// What a HEAD on a manifest says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    pub digest: Option<Digest>,
    pub media_type: String,
    pub size: Option<u64>,
}

pub struct Client {
    http: reqwest::Client,
    opts: UpstreamOptions,
    base: String,
    tokens: Arc<TokenCache>,
    /// The challenge from the last 401, so later requests authenticate up front.
    challenge: RwLock<Option<Challenge>>,
    /// When the registry last answered, and last failed to (for health reports).
    health: std::sync::Mutex<Health>,
    breaker: std::sync::Mutex<Breaker>,
    /// The next URL of the same upstream, tried when this one is unwell.
    next: Option<Box<Client>>,
}

/// An upstream's recent record: Unix seconds of the last answer below 500 and of the last
/// failure (network error or 5xx), with that failure's description (no credentials in it).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Health {
    pub last_success: Option<u64>,
    pub last_error: Option<u64>,
    pub last_error_message: Option<String>,
    /// The circuit breaker's state now.
    pub circuit: CircuitState,
    /// The last `RateLimit-Limit` / `RateLimit-Remaining` the registry sent (Docker Hub's
    /// `ratelimit-limit: 100;w=21600`): the count before any `;` parameters.
    pub ratelimit_limit: Option<u64>,
    pub ratelimit_remaining: Option<u64>,
    /// The same per credential identity (the account's user name, or `anonymous`): registries
    /// such as Docker Hub count each account apart.
    pub ratelimits: std::collections::BTreeMap<String, RateLimit>,
}

/// One identity's last `RateLimit-*` figures.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct RateLimit {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
}

/// Identities tracked per upstream at most (metric label sets stay bounded).
const MAX_RATELIMIT_IDENTITIES: usize = 64;

/// The leading count of a `RateLimit-*` header value (`76;w=21600` → 76).
fn ratelimit_count(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers
        .get(name)?
        .to_str()
        .ok()?
        .split([';', ','])
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Leaves the half-open state when a probe's caller goes away before it is answered.
struct ProbeGuard<'a> {
    breaker: &'a std::sync::Mutex<Breaker>,
    armed: bool,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.breaker
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .abandon_probe(std::time::Instant::now());
        }
    }
}

impl Client {
    pub fn new(opts: UpstreamOptions, tokens: Arc<TokenCache>) -> Result<Self, RegistryError> {
        let mut b = reqwest::Client::builder()
            .user_agent(concat!("pullsecret/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(opts.connect_timeout.unwrap_or(Duration::from_secs(10)))
            .read_timeout(opts.read_timeout.unwrap_or(Duration::from_secs(60)))
            .pool_idle_timeout(Duration::from_secs(60))
            // reqwest drops Authorization when a redirect leaves the host (blob CDNs).
            .redirect(reqwest::redirect::Policy::limited(10));
        let err = |reason: String| RegistryError::Config {
            registry: opts.host.clone(),
            reason,
        };
        if let Some(pem) = &opts.ca_pem {
            for cert in
                reqwest::Certificate::from_pem_bundle(pem).map_err(|e| err(format!("CA: {e}")))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        if let Some(pem) = &opts.client_identity_pem {
            b = b.identity(
                reqwest::Identity::from_pem(pem)
                    .map_err(|e| err(format!("client certificate: {e}")))?,
            );
        }
        let http = b.build().map_err(|e| err(describe_reqwest(&e)))?;
        let scheme = if opts.insecure { "http" } else { "https" };
        let base = format!("{scheme}://{}", opts.host);
        Ok(Self {
            http,
            base,
            tokens,
            challenge: RwLock::new(None),
            health: Default::default(),
            breaker: std::sync::Mutex::new(Breaker::new(opts.breaker)),
            next: None,
            opts,
        })
    }

    pub fn host(&self) -> &str {
        &self.opts.host
    }

    pub fn tokens(&self) -> &TokenCache {
        &self.tokens
    }

    /// `GET /v2/`: reachable, and remembers the auth challenge.
    pub async fn ping(&self) -> Result<(), RegistryError> {
        let resp = self
            .send_once(Method::GET, "/v2/", HeaderMap::new(), None)
            .await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            self.remember_challenge(&resp);
            return Ok(());
        }
        if !resp.status().is_success() {
            return Err(RegistryError::from_response(self.host(), "/v2/", resp).await);
        }
        Ok(())
    }

    /// GET a manifest by tag or digest; bytes kept exact and the digest verified.
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
        accept: Option<&str>,
        creds: Option<&Credentials>,
    ) -> Result<Manifest, RegistryError> {
        let what = format!("manifest {repo}:{reference}");
        let path = format!("/v2/{repo}/manifests/{reference}");
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, header_value(accept.unwrap_or(MANIFEST_ACCEPT)));
        let resp = self.send(Method::GET, &path, h, repo, creds).await?;
        if !resp.status().is_success() {
            return Err(RegistryError::from_response(self.host(), &what, resp).await);
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_MANIFEST_BYTES as u64)
        {
            return Err(RegistryError::TooLarge {
                registry: self.host().into(),
                what,
            });
        }
        let media_type = content_type(resp.headers());
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = read_limited(resp, MAX_MANIFEST_BYTES)
            .await
            .map_err(|e| match e {
                Some(e) => RegistryError::network(self.host(), &what, &e),
                None => RegistryError::TooLarge {
                    registry: self.host().into(),
                    what: what.clone(),
                },
            })?;
        // Schema 1's digest covers its payload without the signatures, so it would fail the check
        // below; it is refused as unsupported, whatever its digest.
        if let Some(media_type) = schema1(&media_type, &bytes) {
            return Err(RegistryError::UnsupportedManifest {
                registry: self.host().into(),
                what,
                media_type,
            });
        }
        let digest = Digest::of_bytes(&bytes);
        let expected = match Digest::parse(reference) {
            Ok(d) => Some(d),
            Err(_) => header_digest.as_deref().and_then(|d| Digest::parse(d).ok()),
        };
        if let Some(expected) = expected {
            if expected != digest {
                return Err(RegistryError::DigestMismatch {
                    what,
                    expected: expected.to_string(),
                    actual: digest.to_string(),
                });
            }
        }
        Ok(Manifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// HEAD a manifest: `None` when the upstream says 404.
    pub async fn head_manifest(
        &self,
        repo: &str,
        reference: &str,
        accept: Option<&str>,
        creds: Option<&Credentials>,
    ) -> Result<Option<ManifestHead>, RegistryError> {
        let what = format!("manifest {repo}:{reference}");
        let path = format!("/v2/{repo}/manifests/{reference}");
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, header_value(accept.unwrap_or(MANIFEST_ACCEPT)));
        let resp = self.send(Method::HEAD, &path, h, repo, creds).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(RegistryError::from_response(self.host(), &what, resp).await);
        }
        let digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|d| Digest::parse(d).ok());
        Ok(Some(ManifestHead {
            digest,
            media_type: content_type(resp.headers()),
            size: header_length(resp.headers()),
        }))
    }

    /// HEAD a blob: its size when the repository has it, `None` on 404.
    pub async fn head_blob(
        &self,
        repo: &str,
        digest: &Digest,
        creds: Option<&Credentials>,
    ) -> Result<Option<u64>, RegistryError> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let resp = self
            .send(Method::HEAD, &path, HeaderMap::new(), repo, creds)
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(Some(header_length(resp.headers()).unwrap_or(0))),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(RegistryError::from_response(
                self.host(),
                &format!("blob {repo}@{digest}"),
                resp,
            )
            .await),
        }
    }

    /// GET a blob, optionally from byte `offset` (Range). The caller streams and verifies the body.
    pub async fn get_blob(
        &self,
        repo: &str,
        digest: &Digest,
        offset: u64,
        creds: Option<&Credentials>,
    ) -> Result<Response, RegistryError> {
        let range = (offset > 0).then(|| format!("bytes={offset}-"));
        self.get_blob_bytes(repo, digest, range, creds).await
    }

    /// Bytes `start..=end` of a blob (`206`, or a whole `200` when the registry ignores Range).
    pub async fn get_blob_range(
        &self,
        repo: &str,
        digest: &Digest,
        start: u64,
        end: u64,
        creds: Option<&Credentials>,
    ) -> Result<Response, RegistryError> {
        self.get_blob_bytes(repo, digest, Some(format!("bytes={start}-{end}")), creds)
            .await
    }

    async fn get_blob_bytes(
        &self,
        repo: &str,
        digest: &Digest,
        range: Option<String>,
        creds: Option<&Credentials>,
    ) -> Result<Response, RegistryError> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let mut h = HeaderMap::new();
        if let Some(r) = range {
            h.insert(RANGE, header_value(&r));
        }
        let resp = self.send(Method::GET, &path, h, repo, creds).await?;
        if !resp.status().is_success() {
            return Err(RegistryError::from_response(
                self.host(),
                &format!("blob {repo}@{digest}"),
                resp,
            )
            .await);
        }
        Ok(resp)
    }

    /// Every tag of `repo`: `GET /v2/<repo>/tags/list`, following
    /// `Link: <…>; rel="next"` only on this registry's own origin, so credentials never leave it.
    pub async fn list_tags(
        &self,
        repo: &str,
        creds: Option<&Credentials>,
    ) -> Result<Vec<String>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct TagList {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let what = format!("tags of {repo}");
        let invalid = |reason: String| RegistryError::Invalid {
            registry: self.host().into(),
            what: what.clone(),
            reason,
        };
        let mut path = format!("/v2/{repo}/tags/list");
        let mut tags = Vec::new();
        for _ in 0..MAX_TAG_PAGES {
            let resp = self
                .send(Method::GET, &path, HeaderMap::new(), repo, creds)
                .await?;
            if !resp.status().is_success() {
                return Err(RegistryError::from_response(self.host(), &what, resp).await);
            }
            let (bytes, next) = self.read_page(resp, MAX_TAGS_PAGE_BYTES, &what).await?;
            let list: TagList = serde_json::from_slice(&bytes)
                .map_err(|e| invalid(format!("not a tag list: {e}")))?;
            tags.extend(list.tags.unwrap_or_default());
            if tags.len() > MAX_TAGS {
                return Err(RegistryError::TooLarge {
                    registry: self.host().into(),
                    what,
                });
            }
            match next {
                Some(n) if n != path => path = n,
                Some(_) => return Err(invalid("pagination link points at itself".into())),
                None => return Ok(tags),
            }
        }
        Err(invalid(format!("more than {MAX_TAG_PAGES} pages")))
    }

    /// One page of a paginated list: its body (at most `limit` bytes) and the path of the next
    /// page, which must stay on this registry's origin so credentials never leave it.
    async fn read_page(
        &self,
        resp: Response,
        limit: usize,
        what: &str,
    ) -> Result<(Bytes, Option<String>), RegistryError> {
        let next = match next_link(resp.headers()) {
            Some(link) => {
                Some(
                    self.same_origin_path(&link)
                        .ok_or_else(|| RegistryError::Invalid {
                            registry: self.host().into(),
                            what: what.to_string(),
                            reason: "pagination link leaves the registry's origin".into(),
                        })?,
                )
            }
            None => None,
        };
        let bytes = read_limited(resp, limit).await.map_err(|e| match e {
            Some(e) => RegistryError::network(self.host(), what, &e),
            None => RegistryError::TooLarge {
                registry: self.host().into(),
                what: what.to_string(),
            },
        })?;
        Ok((bytes, next))
    }

    /// The descriptors of every manifest whose `subject` is `subject` in `repo`: the referrers API
    /// (its pages followed like tags), or, when the registry answers 404 to it (distribution 2.8
    /// does), the referrers tag schema's `<alg>-<hex>` index; none when neither exists.
    pub async fn referrers(
        &self,
        repo: &str,
        subject: &Digest,
        creds: Option<&Credentials>,
    ) -> Result<Vec<serde_json::Value>, RegistryError> {
        let what = format!("referrers of {repo}@{subject}");
        let invalid = |reason: String| RegistryError::Invalid {
            registry: self.host().into(),
            what: what.clone(),
            reason,
        };
        let mut path = format!("/v2/{repo}/referrers/{subject}");
        let mut found = Vec::new();
        for _ in 0..MAX_TAG_PAGES {
            let mut h = HeaderMap::new();
            h.insert(ACCEPT, HeaderValue::from_static(OCI_INDEX));
            let resp = self.send(Method::GET, &path, h, repo, creds).await?;
            if resp.status() == StatusCode::NOT_FOUND && found.is_empty() {
                return self.referrers_tag(repo, subject, creds).await;
            }
            if !resp.status().is_success() {
                return Err(RegistryError::from_response(self.host(), &what, resp).await);
            }
            let (bytes, next) = self.read_page(resp, MAX_MANIFEST_BYTES, &what).await?;
            found.extend(
                index_descriptors(&bytes)
                    .map_err(|e| invalid(format!("not an image index: {e}")))?,
            );
            match next {
                Some(n) if n != path => path = n,
                Some(_) => return Err(invalid("pagination link points at itself".into())),
                None => return Ok(found),
            }
        }
        Err(invalid(format!("more than {MAX_TAG_PAGES} pages")))
    }

    /// The referrers tag schema: the index tagged `<alg>-<hex>` of the subject.
    async fn referrers_tag(
        &self,
        repo: &str,
        subject: &Digest,
        creds: Option<&Credentials>,
    ) -> Result<Vec<serde_json::Value>, RegistryError> {
        let tag = format!("{}-{}", subject.algorithm().as_str(), subject.hex());
        match self.get_manifest(repo, &tag, Some(OCI_INDEX), creds).await {
            Ok(m) => index_descriptors(&m.bytes).map_err(|e| RegistryError::Invalid {
                registry: self.host().into(),
                what: format!("manifest {repo}:{tag}"),
                reason: format!("not an image index: {e}"),
            }),
            Err(RegistryError::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The path and query of `link` (absolute or relative) when it stays on this registry's
    /// scheme, host and port.
    fn same_origin_path(&self, link: &str) -> Option<String> {
        let base = reqwest::Url::parse(&self.base).ok()?;
        let url = base.join(link).ok()?;
        if url.origin() != base.origin() || !url.path().starts_with("/v2/") {
            return None;
        }
        Some(match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        })
    }

    /// Sends with auth: up front from the remembered challenge, and once more after a 401
    /// with a freshly fetched token (the cached one may have been revoked or expired).
    /// Sends on this URL, then on each fallback in turn while the answer is a connect failure,
    /// a timeout, an open circuit, a 5xx or a 429 (the content is by digest, so any URL serves it).
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: HeaderMap,
        repo: &str,
        creds: Option<&Credentials>,
    ) -> Result<Response, RegistryError> {
        let Some(next) = &self.next else {
            return self.send_here(method, path, headers, repo, creds).await;
        };
        let here = self
            .send_here(method.clone(), path, headers.clone(), repo, creds)
            .await;
        let fail_over = match &here {
            Ok(r) => r.status().is_server_error() || r.status() == StatusCode::TOO_MANY_REQUESTS,
            Err(e) => e.upstream_unavailable(),
        };
        if !fail_over {
            return here;
        }
        tracing::warn!(from = %self.host(), to = %next.host(), %path, "failing over to the next URL of the upstream");
        let creds = creds.map(|c| c.for_host(next.host()));
        Box::pin(next.send(method, path, headers, repo, creds)).await
    }

    /// Adds a URL to try after this one (and after those already added).
    pub fn with_fallback(mut self, next: Client) -> Self {
        self.next = Some(Box::new(match self.next.take() {
            Some(n) => n.with_fallback(next),
            None => next,
        }));
        self
    }

    async fn send_here(
        &self,
        method: Method,
        path: &str,
        headers: HeaderMap,
        repo: &str,
        creds: Option<&Credentials>,
    ) -> Result<Response, RegistryError> {
        let scope = format!("repository:{repo}:pull");
        let mut known = self.challenge.read().ok().and_then(|c| c.clone());
        if known.is_none() {
            // Learn the challenge from /v2/ first, as docker does, so the real request is sent
            // once with credentials rather than bouncing off a 401 (which would also count as a fetch).
            self.ping().await?;
            known = self.challenge.read().ok().and_then(|c| c.clone());
        }
        let auth = match &known {
            Some(ch) => self.authorization(ch, &scope, creds, false).await?,
            None => None,
        };
        let who = creds.map_or("anonymous", |c| c.username.as_str());
        let resp = self
            .send_once(method.clone(), path, headers.clone(), auth)
            .await?;
        self.note_ratelimit(who, &resp);
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let Some(ch) = self.remember_challenge(&resp) else {
            return Ok(resp);
        };
        // Basic with no credentials, or credentials already refused: nothing new to try.
        if *ch.scheme() == Scheme::Basic
            && (creds.is_none() || known.as_ref().is_some_and(|k| *k.scheme() == Scheme::Basic))
        {
            return Ok(resp);
        }
        let auth = self.authorization(&ch, &scope, creds, true).await?;
        let resp = self.send_once(method, path, headers, auth).await?;
        self.note_ratelimit(who, &resp);
        Ok(resp)
    }

    /// Keeps `who`'s last `RateLimit-*` figures from `resp`, when it carries any.
    fn note_ratelimit(&self, who: &str, resp: &Response) {
        let limit = ratelimit_count(resp.headers(), "ratelimit-limit");
        let remaining = ratelimit_count(resp.headers(), "ratelimit-remaining");
        if limit.is_none() && remaining.is_none() {
            return;
        }
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        // The upstream's last figures, whoever asked; then this account's.
        if limit.is_some() {
            h.ratelimit_limit = limit;
        }
        if remaining.is_some() {
            h.ratelimit_remaining = remaining;
        }
        if !h.ratelimits.contains_key(who) && h.ratelimits.len() >= MAX_RATELIMIT_IDENTITIES {
            return;
        }
        let entry = h.ratelimits.entry(who.to_string()).or_default();
        if limit.is_some() {
            entry.limit = limit;
        }
        if remaining.is_some() {
            entry.remaining = remaining;
        }
    }

    async fn authorization(
        &self,
        ch: &Challenge,
        scope: &str,
        creds: Option<&Credentials>,
        force: bool,
    ) -> Result<Option<HeaderValue>, RegistryError> {
        match ch.scheme() {
            Scheme::Basic => Ok(creds.map(|c| sensitive(&c.basic_header()))),
            Scheme::Bearer => {
                let realm = ch.realm().unwrap_or_default();
                if realm.is_empty() {
                    return Err(RegistryError::Token {
                        registry: self.host().into(),
                        realm: String::new(),
                        reason: "Bearer challenge without a realm".into(),
                    });
                }
                if creds.is_some() {
                    self.check_realm(realm)?;
                }
                let service = ch.service().unwrap_or_default();
                let token = self
                    .tokens
                    .token(
                        &self.http,
                        self.host(),
                        realm,
                        service,
                        scope,
                        creds,
                        self.opts.token_style,
                        force,
                    )
                    .await?;
                use secrecy::ExposeSecret;
                Ok(Some(sensitive(&format!(
                    "Bearer {}",
                    token.expose_secret()
                ))))
            }
            _ => Ok(None),
        }
    }

    /// Credentials go to a token realm only over HTTPS (plain HTTP only when the registry itself
    /// is plain HTTP by `insecure`) and only on the registry's own host, a well-known realm of
    /// it, or a host the config lists in `token_realms`.
    fn check_realm(&self, realm: &str) -> Result<(), RegistryError> {
        let refuse = |why: String| RegistryError::Config {
            registry: self.host().into(),
            reason: format!("credentials not sent to token realm {realm}: {why}"),
        };
        let url = reqwest::Url::parse(realm).map_err(|_| refuse("not a URL".into()))?;
        match url.scheme() {
            "https" => {}
            "http" if self.opts.insecure => {}
            other => {
                return Err(refuse(format!(
                    "{other}:// would expose them (only https, or http for an insecure registry)"
                )))
            }
        }
        let realm_host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let own = self
            .host()
            .rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(self.host(), |(h, _)| h)
            .to_ascii_lowercase();
        let known = KNOWN_REALMS
            .iter()
            .any(|(reg, auth)| *reg == own && *auth == realm_host);
        let listed = self
            .opts
            .token_realms
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&realm_host));
        if realm_host == own || known || listed {
            Ok(())
        } else {
            Err(refuse(format!(
                "host {realm_host} is not the registry's; add it to the upstream's token_realms to trust it"
            )))
        }
    }

    fn remember_challenge(&self, resp: &Response) -> Option<Challenge> {
        let ch = challenge::preferred(resp.headers())?;
        if let Ok(mut slot) = self.challenge.write() {
            *slot = Some(ch.clone());
        }
        Some(ch)
    }

    async fn send_once(
        &self,
        method: Method,
        path: &str,
        headers: HeaderMap,
        auth: Option<HeaderValue>,
    ) -> Result<Response, RegistryError> {
        let admitted = self
            .breaker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(std::time::Instant::now());
        let probe = match admitted {
            Ok(a) => a == Admission::Probe,
            Err(wait) => {
                return Err(RegistryError::CircuitOpen {
                    registry: self.host().to_string(),
                    what: path.to_string(),
                    retry_after: (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1),
                })
            }
        };
        let mut guard = ProbeGuard {
            breaker: &self.breaker,
            armed: probe,
        };
        if let Some(cap) = &self.opts.request_cap {
            cap.take(1.0).await;
        }
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).headers(headers);
        if let Some(a) = auth {
            req = req.header(AUTHORIZATION, a);
        }
        let sent = req
            .send()
            .await
            .map_err(|e| RegistryError::network(self.host(), path, &e));
        guard.armed = false;
        // Connect failures, timeouts and 5xx count against the upstream; any other answer is one.
        let ok = matches!(&sent, Ok(r) if r.status().as_u16() < 500);
        self.breaker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(ok, probe, std::time::Instant::now());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        match &sent {
            Ok(r) if r.status().as_u16() < 500 => h.last_success = Some(now),
            Ok(r) => {
                h.last_error = Some(now);
                h.last_error_message = Some(format!("{path}: answered {}", r.status()));
            }
            Err(e) => {
                h.last_error = Some(now);
                h.last_error_message = Some(e.to_string());
            }
        }
        drop(h);
        sent
    }

    /// The registry's recent record.
    pub fn health(&self) -> Health {
        let mut h = self
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        h.circuit = self
            .breaker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .state();
        h
    }
}

/// The `manifests` of an image index, keeping only well-formed descriptors (a `mediaType`, a
/// valid `digest`, a `size`).
fn index_descriptors(bytes: &[u8]) -> Result<Vec<serde_json::Value>, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Option<Vec<serde_json::Value>>,
    }
    let index: Index = serde_json::from_slice(bytes)?;
    Ok(index
        .manifests
        .unwrap_or_default()
        .into_iter()
        .filter(|d| {
            d.get("mediaType").and_then(|m| m.as_str()).is_some()
                && d.get("size").and_then(|s| s.as_u64()).is_some()
                && d.get("digest")
                    .and_then(|x| x.as_str())
                    .is_some_and(|x| Digest::parse(x).is_ok())
        })
        .collect())
}

/// The media type of a Docker schema 1 manifest (by its Content-Type, or, when that names no
/// v2 type, by its `schemaVersion`), else `None`.
fn schema1(content_type: &str, bytes: &[u8]) -> Option<String> {
    const SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1";
    let header = content_type.split(';').next().unwrap_or("").trim();
    if header.starts_with(SCHEMA1) {
        return Some(header.to_string());
    }
    let v2 = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];
    if v2.contains(&header) {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Version {
        #[serde(rename = "schemaVersion")]
        schema_version: Option<u64>,
    }
    let v: Version = serde_json::from_slice(bytes).ok()?;
    (v.schema_version == Some(1)).then(|| format!("{SCHEMA1}+json"))
}

/// The target of `Link: <…>; rel="next"` (RFC 8288), if any.
pub fn next_link(h: &HeaderMap) -> Option<String> {
    h.get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|link| {
            let (target, params) = link.trim().strip_prefix('<')?.split_once('>')?;
            let next = params.split(';').any(|p| {
                p.trim()
                    .strip_prefix("rel=")
                    .map(|r| r.trim_matches('"'))
                    .is_some_and(|r| r.split_whitespace().any(|r| r == "next"))
            });
            next.then(|| target.to_string())
        })
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Marks a credential header sensitive so it is never printed by http's Debug.
fn sensitive(s: &str) -> HeaderValue {
    let mut v = header_value(s);
    v.set_sensitive(true);
    v
}

/// Content-Length as sent (a HEAD response's body is empty, so reqwest's own figure is 0).
fn header_length(h: &HeaderMap) -> Option<u64> {
    h.get(reqwest::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn content_type(h: &HeaderMap) -> String {
    h.get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema1_by_content_type_or_version() {
        let prettyjws = "application/vnd.docker.distribution.manifest.v1+prettyjws";
        assert_eq!(schema1(prettyjws, b"{}").as_deref(), Some(prettyjws));
        assert!(schema1("application/json", br#"{"schemaVersion":1}"#).is_some());
        assert!(schema1("", br#"{"schemaVersion":2,"config":{}}"#).is_none());
        assert!(schema1(OCI_MANIFEST, br#"{"schemaVersion":1}"#).is_none());
        assert!(schema1("", b"not json").is_none());
    }

    #[test]
    fn next_links_stay_on_the_registry() {
        let mut h = HeaderMap::new();
        h.append(
            reqwest::header::LINK,
            HeaderValue::from_static(
                r#"<https://x/other>; rel="prev", </v2/a/tags/list?n=2&last=b>; rel="next""#,
            ),
        );
        assert_eq!(next_link(&h).as_deref(), Some("/v2/a/tags/list?n=2&last=b"));
        assert_eq!(next_link(&HeaderMap::new()), None);
        let c = Client::new(
            UpstreamOptions {
                host: "reg.example:5000".into(),
                ..Default::default()
            },
            Arc::new(TokenCache::default()),
        )
        .expect("client");
        assert_eq!(
            c.same_origin_path("/v2/a/tags/list?last=b").as_deref(),
            Some("/v2/a/tags/list?last=b")
        );
        assert_eq!(
            c.same_origin_path("https://reg.example:5000/v2/a/tags/list?last=b")
                .as_deref(),
            Some("/v2/a/tags/list?last=b")
        );
        for away in [
            "https://evil.example/v2/a/tags/list",
            "http://reg.example:5000/v2/a/tags/list",
            "//evil.example/v2/x",
            "/token?x=1",
        ] {
            assert_eq!(c.same_origin_path(away), None, "{away}");
        }
    }
}
