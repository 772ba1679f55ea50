//! The REST API under `/api/v1`: namespaces, secrets (values never returned), proxy clients,
//! upstreams, cache figures and the audit log, over the same store the CLI and the helper use.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};

use super::audit::Audit;
use super::tokens::{AdminIdentity, ADMIN_TOKENS_NAMESPACE};
use crate::proxy::client_auth::{client_secret, CLIENTS_NAMESPACE};
use crate::proxy::server::Proxy;
use crate::secret::SecretValue;
use crate::store::{
    now_unix, validate_namespace, Origin, Scope, SecretData, SecretStore, StoreError, StoredSecret,
};

/// The shared state behind every admin request.
pub struct AdminState {
    pub store: Arc<dyn SecretStore + Send + Sync>,
    pub proxy: Arc<Proxy>,
    pub audit: Audit,
}

/// An API answer: status and JSON body (`None`: no body, 204).
pub struct Answer {
    pub status: StatusCode,
    pub body: Option<Value>,
}

impl Answer {
    /// Runs `f` (the store is synchronous) off the runtime's workers; a panic in it becomes a
    /// 500 that says nothing more.
    pub async fn blocking(f: impl FnOnce() -> Answer + Send + 'static) -> Answer {
        tokio::task::spawn_blocking(f).await.unwrap_or_else(|_| {
            Answer::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "the request failed",
            )
        })
    }

    pub fn ok(body: Value) -> Self {
        Self {
            status: StatusCode::OK,
            body: Some(body),
        }
    }

    fn created(body: Value) -> Self {
        Self {
            status: StatusCode::CREATED,
            body: Some(body),
        }
    }

    fn no_content() -> Self {
        Self {
            status: StatusCode::NO_CONTENT,
            body: None,
        }
    }

    pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: Some(json!({"error": {"code": code, "message": message.into()}})),
        }
    }
}

/// Namespaces no API call, Direktiv call or `secret create` may write: they hold the proxy's
/// client and admin credentials, each with the one command that writes there.
const RESERVED: &[(&str, &str)] = &[
    (CLIENTS_NAMESPACE, "pullsecret proxy client add"),
    (ADMIN_TOKENS_NAMESPACE, "pullsecret admin token create"),
];

/// The command that owns `ns` when it is reserved.
pub fn reserved_by(ns: &str) -> Option<&'static str> {
    RESERVED.iter().find(|(r, _)| *r == ns).map(|(_, by)| *by)
}

/// The answer for a request on a reserved namespace.
pub(crate) fn reserved_answer(ns: &str) -> Answer {
    Answer::error(
        StatusCode::FORBIDDEN,
        "NAMESPACE_RESERVED",
        format!("namespace {ns} is reserved"),
    )
}

/// Routes one authenticated `/api/v1` request (blocking: the store is synchronous).
pub fn route(
    state: &AdminState,
    who: &AdminIdentity,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: &Bytes,
) -> Answer {
    let parts: Vec<&str> = path
        .trim_start_matches("/api/v1")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match (method, parts.as_slice()) {
        (&Method::GET, ["namespaces"]) => list_namespaces(state, who),
        (&Method::POST, ["namespaces"]) => create_namespace(state, who, body),
        (&Method::DELETE, ["namespaces", ns]) => delete_namespace(state, who, ns, query),
        (&Method::GET, ["namespaces", ns, "secrets"]) => {
            with_ns(who, ns, || list_secrets(state, ns))
        }
        (&Method::POST, ["namespaces", ns, "secrets"]) => {
            with_ns(who, ns, || create_secret(state, who, ns, body))
        }
        (&Method::GET, ["namespaces", ns, "secrets", name]) => {
            with_ns(who, ns, || get_secret(state, ns, name))
        }
        (&Method::PUT, ["namespaces", ns, "secrets", name, "value"]) => {
            with_ns(who, ns, || rotate_secret(state, who, ns, name, body))
        }
        (&Method::DELETE, ["namespaces", ns, "secrets", name]) => {
            with_ns(who, ns, || delete_secret(state, who, ns, name))
        }
        (&Method::GET, ["namespaces", ns, "images"]) => with_ns(who, ns, || {
            Answer::ok(json!({ "images": state.proxy.recent.images(ns) }))
        }),
        (&Method::GET, ["namespaces", ns, "clients"]) => {
            with_ns(who, ns, || list_clients(state, ns))
        }
        (&Method::POST, ["namespaces", ns, "clients"]) => {
            with_ns(who, ns, || create_client(state, who, ns, body))
        }
        (&Method::DELETE, ["namespaces", ns, "clients", user]) => {
            with_ns(who, ns, || delete_client(state, who, ns, user))
        }
        (&Method::GET, ["upstreams"]) => upstreams(state),
        (&Method::GET, ["cache"]) => cache(state),
        (&Method::GET, ["cache", "pins"]) => {
            Answer::ok(json!({ "pins": state.proxy.store.pins() }))
        }
        (&Method::POST, ["cache", "pins"]) => all_namespaces(who, || pin(state, who, body)),
        (&Method::DELETE, ["cache", "pins", digest]) => {
            all_namespaces(who, || unpin(state, who, digest))
        }
        (&Method::DELETE, ["cache", "tags"]) => all_namespaces(who, || purge(state, who, query)),
        (&Method::GET, ["pulls"]) => {
            let n = query
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("n=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or(100usize)
                .min(1000);
            let pulls = state.proxy.recent.last(n, who.namespace.as_deref());
            Answer::ok(json!({ "pulls": pulls }))
        }
        (&Method::GET, ["audit"]) => {
            let entries = state.audit.entries(who.namespace.as_deref());
            Answer::ok(json!({ "entries": entries }))
        }
        _ => Answer::error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such API path"),
    }
}

/// Runs `f` when `ns` is a namespace this token may act on and not a reserved one.
fn with_ns(who: &AdminIdentity, ns: &str, f: impl FnOnce() -> Answer) -> Answer {
    if let Err(e) = validate_namespace(ns) {
        return Answer::error(StatusCode::BAD_REQUEST, "NAMESPACE_INVALID", e.to_string());
    }
    if reserved_by(ns).is_some() {
        return reserved_answer(ns);
    }
    if !who.may_act_on(ns) {
        return Answer::error(
            StatusCode::FORBIDDEN,
            "DENIED",
            format!("this token is not for namespace {ns}"),
        );
    }
    f()
}

/// The cache is shared by every namespace: only an all-namespaces token changes it.
fn all_namespaces(who: &AdminIdentity, f: impl FnOnce() -> Answer) -> Answer {
    if who.namespace.is_some() {
        return Answer::error(
            StatusCode::FORBIDDEN,
            "DENIED",
            "the cache is shared: only an all-namespaces token changes it",
        );
    }
    f()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPin {
    upstream: String,
    repository: String,
    digest: String,
}

/// The digests an image needs from the cache: its manifest, config and layers, and for an index
/// each platform manifest that is cached and what that one names.
fn image_digests(
    store: &crate::proxy::blob_store::BlobStore,
    root: &crate::registry::digest::Digest,
) -> Vec<String> {
    use crate::registry::manifest::{is_index, ImageIndex, ImageManifest};
    let mut out = Vec::new();
    let mut queue = vec![root.clone()];
    while let Some(d) = queue.pop() {
        if out.contains(&d.to_string()) {
            continue;
        }
        out.push(d.to_string());
        let Some(meta) = store.manifest_meta(&d) else {
            continue;
        };
        let Ok(bytes) = std::fs::read(store.blob_path(&d)) else {
            continue;
        };
        if is_index(&meta.media_type) {
            if let Ok(index) = serde_json::from_slice::<ImageIndex>(&bytes) {
                queue.extend(
                    index
                        .manifests
                        .iter()
                        .filter_map(|m| crate::registry::digest::Digest::parse(&m.digest).ok()),
                );
            }
        } else if let Ok(m) = serde_json::from_slice::<ImageManifest>(&bytes) {
            for desc in std::iter::once(&m.config).chain(m.layers.iter()) {
                if !out.contains(&desc.digest) {
                    out.push(desc.digest.clone());
                }
            }
        }
    }
    out
}

fn pin(state: &AdminState, who: &AdminIdentity, body: &Bytes) -> Answer {
    let req: NewPin = match parse(body) {
        Ok(r) => r,
        Err(a) => return a,
    };
    let Ok(digest) = crate::registry::digest::Digest::parse(&req.digest) else {
        return Answer::error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "digest must be sha256:<64 hex>",
        );
    };
    let store = &state.proxy.store;
    if store.manifest_meta(&digest).is_none() {
        return Answer::error(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            format!("{digest} is not a cached manifest; pull (or warm) the image first"),
        );
    }
    let mut pins = store.pins();
    pins.retain(|p| p.digest != req.digest);
    let new = crate::proxy::blob_store::Pin {
        upstream: req.upstream,
        repository: req.repository,
        digest: req.digest.clone(),
        digests: image_digests(store, &digest),
    };
    pins.push(new.clone());
    if let Err(e) = store.put_pins(&pins) {
        return Answer::error(StatusCode::INTERNAL_SERVER_ERROR, "CACHE", e.to_string());
    }
    state.proxy.lru.set_pinned(&pins);
    state.audit.record(who, "cache.pin", "", &req.digest);
    Answer::created(json!(new))
}

fn unpin(state: &AdminState, who: &AdminIdentity, digest: &str) -> Answer {
    let store = &state.proxy.store;
    let mut pins = store.pins();
    let before = pins.len();
    pins.retain(|p| p.digest != digest);
    if pins.len() == before {
        return Answer::error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("{digest} is not pinned"),
        );
    }
    if let Err(e) = store.put_pins(&pins) {
        return Answer::error(StatusCode::INTERNAL_SERVER_ERROR, "CACHE", e.to_string());
    }
    state.proxy.lru.set_pinned(&pins);
    state.audit.record(who, "cache.unpin", "", digest);
    Answer::no_content()
}

fn purge(state: &AdminState, who: &AdminIdentity, query: Option<&str>) -> Answer {
    let field = |k: &str| {
        query.and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                .map(|v| v.replace("%2F", "/").replace("%2f", "/"))
        })
    };
    let (Some(upstream), Some(repo)) = (field("upstream"), field("repository")) else {
        return Answer::error(
            StatusCode::BAD_REQUEST,
            "QUERY_INVALID",
            "upstream and repository are required",
        );
    };
    let tag = field("tag");
    let n = state
        .proxy
        .store
        .purge_tags(&upstream, &repo, tag.as_deref());
    let what = match &tag {
        Some(t) => format!("{upstream}/{repo}:{t}"),
        None => format!("{upstream}/{repo}"),
    };
    state.audit.record(who, "cache.purge", "", &what);
    Answer::ok(json!({ "purged": n }))
}

fn store_error(e: StoreError) -> Answer {
    let (status, code) = match &e {
        StoreError::NotFound { .. } => (StatusCode::NOT_FOUND, "NOT_FOUND"),
        StoreError::AlreadyExists { .. } => (StatusCode::CONFLICT, "ALREADY_EXISTS"),
        StoreError::Limit(_) => (StatusCode::UNPROCESSABLE_ENTITY, "LIMIT"),
        StoreError::Name(_) | StoreError::Invalid(_) => (StatusCode::BAD_REQUEST, "NAME_INVALID"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "STORE"),
    };
    Answer::error(status, code, e.to_string())
}

/// Parses a JSON body into `T`, rejecting unknown fields (a 400 naming the problem).
fn parse<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, Answer> {
    serde_json::from_slice(body).map_err(|e| {
        Answer::error(
            StatusCode::BAD_REQUEST,
            "BODY_INVALID",
            format!("request body: {e}"),
        )
    })
}

fn list_namespaces(state: &AdminState, who: &AdminIdentity) -> Answer {
    let all = match state.store.list(None) {
        Ok(a) => a,
        Err(e) => return store_error(e),
    };
    let names = match state.store.namespaces() {
        Ok(n) => n,
        Err(e) => return store_error(e),
    };
    let list: Vec<Value> = names
        .iter()
        .filter(|ns| reserved_by(ns).is_none() && who.may_act_on(ns))
        .map(|ns| {
            let n = all.iter().filter(|s| &s.namespace == ns).count();
            json!({"name": ns, "secrets": n})
        })
        .collect();
    Answer::ok(json!({ "namespaces": list }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNamespace {
    name: String,
}

fn create_namespace(state: &AdminState, who: &AdminIdentity, body: &Bytes) -> Answer {
    let req: NewNamespace = match parse(body) {
        Ok(r) => r,
        Err(a) => return a,
    };
    if who.namespace.is_some() {
        return Answer::error(
            StatusCode::FORBIDDEN,
            "DENIED",
            "a namespace token cannot create namespaces",
        );
    }
    with_ns(who, &req.name, || {
        match state.store.namespaces() {
            Ok(n) if n.contains(&req.name) => {
                return Answer::error(
                    StatusCode::CONFLICT,
                    "ALREADY_EXISTS",
                    format!("namespace {} exists", req.name),
                )
            }
            Err(e) => return store_error(e),
            Ok(_) => {}
        }
        match state.store.create_namespace(&req.name) {
            Ok(()) => {
                state
                    .audit
                    .record(who, "namespace.create", &req.name, &req.name);
                Answer::created(json!({"name": req.name, "secrets": 0}))
            }
            Err(e) => store_error(e),
        }
    })
}

fn delete_namespace(
    state: &AdminState,
    who: &AdminIdentity,
    ns: &str,
    query: Option<&str>,
) -> Answer {
    with_ns(who, ns, || {
        let force = query.is_some_and(|q| q.split('&').any(|kv| kv == "force=true"));
        let held = match state.store.list(Some(ns)) {
            Ok(s) => s.len(),
            Err(e) => return store_error(e),
        };
        match state.store.namespaces() {
            Ok(n) if !n.iter().any(|x| x == ns) => {
                return Answer::error(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    format!("no namespace {ns}"),
                )
            }
            Err(e) => return store_error(e),
            Ok(_) => {}
        }
        if held > 0 && !force {
            return Answer::error(
                StatusCode::CONFLICT,
                "NOT_EMPTY",
                format!("namespace {ns} holds {held} secrets; add ?force=true to delete them too"),
            );
        }
        match state.store.delete_namespace(ns) {
            Ok(()) => {
                state.audit.record(who, "namespace.delete", ns, ns);
                Answer::no_content()
            }
            Err(e) => store_error(e),
        }
    })
}

/// A secret as the API shows it: everything but values.
fn describe(s: &StoredSecret) -> Value {
    let mut v = json!({
        "name": s.name,
        "namespace": s.namespace,
        "type": s.type_name(),
        "scope": s.scope.as_str(),
        "origin": s.origin.as_str(),
        "created": s.created,
    });
    match &s.data {
        SecretData::DockerRegistry {
            server, username, ..
        } => {
            v["server"] = json!(server);
            v["username"] = json!(username);
        }
        SecretData::Generic(map) => {
            v["keys"] = json!(map.keys().collect::<Vec<_>>());
        }
        SecretData::Tls { .. } => {
            v["keys"] = json!(["tls.crt", "tls.key"]);
        }
    }
    v
}

fn list_secrets(state: &AdminState, ns: &str) -> Answer {
    match state.store.list(Some(ns)) {
        Ok(list) => Answer::ok(json!({ "secrets": list.iter().map(describe).collect::<Vec<_>>() })),
        Err(e) => store_error(e),
    }
}

fn get_secret(state: &AdminState, ns: &str, name: &str) -> Answer {
    match state.store.get(ns, name) {
        Ok(Some(s)) => Answer::ok(describe(&s)),
        Ok(None) => Answer::error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no secret {ns}/{name}"),
        ),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSecret {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    server: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    data: Option<BTreeMap<String, String>>,
    #[serde(default)]
    cert: Option<String>,
    #[serde(default)]
    key: Option<String>,
}

fn literal(v: String) -> SecretValue {
    SecretValue::from_user(&v)
}

/// A Kubernetes Secret (JSON or YAML, as `secret import -f` takes it) as the body: stored
/// under its own name in the path's namespace.
fn create_from_kube(state: &AdminState, who: &AdminIdentity, ns: &str, body: &Bytes) -> Answer {
    let bad = |m: String| Answer::error(StatusCode::BAD_REQUEST, "BODY_INVALID", m);
    let text = String::from_utf8_lossy(body);
    let secrets = match crate::store::kube::parse_secrets(&text) {
        Ok(s) => s,
        Err(e) => return bad(e.to_string()),
    };
    let [ks] = secrets.as_slice() else {
        return bad(format!(
            "{} Secrets in the body; send one per request",
            secrets.len()
        ));
    };
    if let Some(other) = ks.namespace.as_deref().filter(|n| *n != ns) {
        return bad(format!(
            "the Secret names namespace {other}, the path {ns}; they must agree"
        ));
    }
    if let Err(e) = crate::secret::validate_name(&ks.name) {
        return Answer::error(StatusCode::BAD_REQUEST, "NAME_INVALID", e.to_string());
    }
    let stored = match crate::store::import::from_kube(ks, ns, Scope::Namespace, now_unix()) {
        Ok(s) => s,
        Err(e) => return bad(e.to_string()),
    };
    let Some(secret) = stored.into_iter().next() else {
        return bad("the Secret holds no credentials".to_string());
    };
    let shown = describe(&secret);
    match state.store.put(secret, false) {
        Ok(()) => {
            state.audit.record(who, "secret.create", ns, &ks.name);
            Answer::created(shown)
        }
        Err(e) => store_error(e),
    }
}

fn create_secret(state: &AdminState, who: &AdminIdentity, ns: &str, body: &Bytes) -> Answer {
    let looks_kube = serde_json::from_slice::<Value>(body)
        .ok()
        .is_some_and(|v| v.get("kind").and_then(Value::as_str) == Some("Secret"));
    if looks_kube {
        return create_from_kube(state, who, ns, body);
    }
    let req: NewSecret = match parse(body) {
        Ok(r) => r,
        Err(a) => return a,
    };
    let bad = |m: &str| Answer::error(StatusCode::BAD_REQUEST, "BODY_INVALID", m.to_string());
    if let Err(e) = crate::secret::validate_name(&req.name) {
        return Answer::error(StatusCode::BAD_REQUEST, "NAME_INVALID", e.to_string());
    }
    let scope = match req.scope.as_deref().map(Scope::parse) {
        None => Scope::Namespace,
        Some(Some(s)) => s,
        Some(None) => return bad("scope must be namespace, global or global-private"),
    };
    let data = match req.kind.as_str() {
        "docker-registry" => {
            let (Some(server), Some(username), Some(password)) =
                (req.server, req.username, req.password)
            else {
                return bad("a docker-registry secret needs server, username and password");
            };
            if let Err(e) = crate::secret::ServerKey::parse(&server) {
                return Answer::error(StatusCode::BAD_REQUEST, "SERVER_INVALID", e.to_string());
            }
            SecretData::DockerRegistry {
                server,
                username,
                password: literal(password),
                email: req.email,
                also: Vec::new(),
            }
        }
        "generic" => match req.data {
            Some(map) if !map.is_empty() => {
                SecretData::Generic(map.into_iter().map(|(k, v)| (k, literal(v))).collect())
            }
            _ => return bad("a generic secret needs a non-empty data object"),
        },
        "tls" => match (req.cert, req.key) {
            (Some(cert), Some(key)) => SecretData::Tls {
                cert,
                key: literal(key),
            },
            _ => return bad("a tls secret needs cert and key (PEM)"),
        },
        other => {
            return bad(&format!(
                "type {other:?}: want docker-registry, generic or tls"
            ))
        }
    };
    let secret = StoredSecret {
        name: req.name.clone(),
        namespace: ns.to_string(),
        scope,
        created: now_unix(),
        origin: Origin::Created,
        data,
    };
    let shown = describe(&secret);
    match state.store.put(secret, false) {
        Ok(()) => {
            state.audit.record(who, "secret.create", ns, &req.name);
            Answer::created(shown)
        }
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewValue {
    /// For generic secrets: which key; docker-registry rotates its password, tls its key.
    #[serde(default)]
    key: Option<String>,
    value: String,
}

fn rotate_secret(
    state: &AdminState,
    who: &AdminIdentity,
    ns: &str,
    name: &str,
    body: &Bytes,
) -> Answer {
    let req: NewValue = match parse(body) {
        Ok(r) => r,
        Err(a) => return a,
    };
    let value = SecretString::from(req.value);
    let mut missing = false;
    let r = state.store.update(ns, &mut |secrets| {
        let Some(s) = secrets.iter_mut().find(|s| s.name == name) else {
            missing = true;
            return Err(StoreError::NotFound {
                namespace: ns.to_string(),
                name: name.to_string(),
            });
        };
        let new = literal(value.expose_secret().to_string());
        match (&mut s.data, req.key.as_deref()) {
            (SecretData::DockerRegistry { password, .. }, None | Some("password")) => {
                *password = new
            }
            (SecretData::Tls { key, .. }, None | Some("tls.key")) => *key = new,
            (SecretData::Generic(map), Some(k)) if map.contains_key(k) => {
                map.insert(k.to_string(), new);
            }
            _ => {
                return Err(StoreError::NotFound {
                    namespace: ns.to_string(),
                    name: format!("{name} (key {:?})", req.key.as_deref().unwrap_or("")),
                })
            }
        }
        s.created = now_unix();
        Ok(())
    });
    match r {
        Ok(()) => {
            state.audit.record(who, "secret.rotate", ns, name);
            Answer::no_content()
        }
        Err(e) if missing => Answer::error(StatusCode::NOT_FOUND, "NOT_FOUND", e.to_string()),
        Err(e) => store_error(e),
    }
}

fn delete_secret(state: &AdminState, who: &AdminIdentity, ns: &str, name: &str) -> Answer {
    match state.store.delete(ns, &[name.to_string()]) {
        Ok(()) => {
            state.audit.record(who, "secret.delete", ns, name);
            Answer::no_content()
        }
        Err(e) => store_error(e),
    }
}

/// Client records of namespace `ns` (they live in the reserved clients namespace).
fn clients_of(state: &AdminState, ns: &str) -> Result<Vec<StoredSecret>, StoreError> {
    Ok(state
        .store
        .list(Some(CLIENTS_NAMESPACE))?
        .into_iter()
        .filter(|s| {
            matches!(s.value(Some("namespace")), Some(SecretValue::Literal(v)) if v.expose_secret() == ns)
        })
        .collect())
}

fn list_clients(state: &AdminState, ns: &str) -> Answer {
    match clients_of(state, ns) {
        Ok(list) => Answer::ok(json!({
            "clients": list
                .iter()
                .map(|s| json!({"user": s.name, "namespace": ns, "created": s.created}))
                .collect::<Vec<_>>()
        })),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewClient {
    user: String,
    /// Omitted: one is generated and returned once.
    #[serde(default)]
    password: Option<String>,
}

fn create_client(state: &AdminState, who: &AdminIdentity, ns: &str, body: &Bytes) -> Answer {
    let req: NewClient = match parse(body) {
        Ok(r) => r,
        Err(a) => return a,
    };
    if let Err(e) = crate::secret::validate_name(&req.user) {
        return Answer::error(StatusCode::BAD_REQUEST, "NAME_INVALID", e.to_string());
    }
    let generated = req.password.is_none();
    let password = match req.password {
        Some(p) if !p.is_empty() => zeroize::Zeroizing::new(p),
        Some(_) => return Answer::error(StatusCode::BAD_REQUEST, "BODY_INVALID", "empty password"),
        None => {
            let mut raw = [0u8; 24];
            if getrandom::fill(&mut raw).is_err() {
                return Answer::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "RANDOM",
                    "no OS random source",
                );
            }
            use base64::Engine;
            zeroize::Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
        }
    };
    match state
        .store
        .put(client_secret(&req.user, ns, &password), false)
    {
        Ok(()) => {
            state.audit.record(who, "client.create", ns, &req.user);
            let mut body = json!({"user": req.user, "namespace": ns});
            // A generated password is shown this once; a given one is never echoed.
            if generated {
                body["password"] = json!(password.as_str());
            }
            Answer::created(body)
        }
        Err(e) => store_error(e),
    }
}

fn delete_client(state: &AdminState, who: &AdminIdentity, ns: &str, user: &str) -> Answer {
    match clients_of(state, ns) {
        Ok(list) if list.iter().any(|s| s.name == user) => {}
        Ok(_) => {
            return Answer::error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!("no client {user} in namespace {ns}"),
            )
        }
        Err(e) => return store_error(e),
    }
    match state.store.delete(CLIENTS_NAMESPACE, &[user.to_string()]) {
        Ok(()) => {
            state.audit.record(who, "client.delete", ns, user);
            Answer::no_content()
        }
        Err(e) => store_error(e),
    }
}

fn upstreams(state: &AdminState) -> Answer {
    let m = &state.proxy.metrics;
    let list: Vec<Value> = state
        .proxy
        .upstreams
        .iter()
        .map(|u| {
            let labels = m.upstream(&u.cfg.name);
            let h = u.client.health();
            let state = match (h.last_success, h.last_error) {
                (_, None) if h.last_success.is_some() => "ok",
                (Some(ok), Some(err)) if ok >= err => "ok",
                (_, Some(_)) => "failing",
                _ => "unknown",
            };
            json!({
                "state": state,
                "last_success": h.last_success,
                "last_error": h.last_error,
                "last_error_message": h.last_error_message,
                "circuit": match h.circuit {
                    crate::registry::breaker::CircuitState::Closed => "closed",
                    crate::registry::breaker::CircuitState::Open => "open",
                    crate::registry::breaker::CircuitState::HalfOpen => "half-open",
                },
                "ratelimit_limit": h.ratelimit_limit,
                "ratelimit_remaining": h.ratelimit_remaining,
                "name": u.cfg.name,
                "url": u.cfg.url,
                "aliases": u.cfg.aliases,
                "requests": m.upstream_requests.get_or_create(&labels).get(),
                "errors": m.upstream_errors.get_or_create(&labels).get(),
                "bytes": m.upstream_bytes.get_or_create(&labels).get(),
            })
        })
        .collect();
    Answer::ok(json!({ "upstreams": list }))
}

fn cache(state: &AdminState) -> Answer {
    let p = &state.proxy;
    let (bytes, blobs) = p.lru.usage();
    let count = |f: &prometheus_client::metrics::family::Family<
        crate::proxy::metrics::KindLabels,
        prometheus_client::metrics::counter::Counter,
    >| {
        ["blob", "manifest"]
            .iter()
            .map(|kind| {
                f.get_or_create(&crate::proxy::metrics::KindLabels { kind })
                    .get()
            })
            .sum::<u64>()
    };
    let hits = count(&p.metrics.cache_hits);
    let misses = count(&p.metrics.cache_misses);
    let fetched: u64 = p
        .upstreams
        .iter()
        .map(|u| {
            p.metrics
                .upstream_bytes
                .get_or_create(&p.metrics.upstream(&u.cfg.name))
                .get()
        })
        .sum();
    let ratio = if hits + misses > 0 {
        hits as f64 / (hits + misses) as f64
    } else {
        0.0
    };
    Answer::ok(json!({
        "size_bytes": bytes,
        "blobs": blobs,
        "hits": hits,
        "misses": misses,
        "hit_ratio": ratio,
        "bytes_from_cache": p.metrics.cache_hit_bytes.get(),
        "bytes_fetched": fetched,
    }))
}
