//! Direktiv-compatible registry endpoints (`/api/functions/registries/...`): Direktiv's bodies
//! and answers over the same store, so scripts written for Direktiv work against pullsecret.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;

use super::api::{AdminState, Answer};
use super::tokens::AdminIdentity;
use crate::registry::auth::Credentials;
use crate::secret::{SecretValue, ServerKey};
use crate::store::{now_unix, Origin, Scope, SecretData, StoreError, StoredSecret};

/// Which registries a path names: a namespace's, or the proxy's global or global-private ones
/// (kept in its home namespace).
enum Set {
    Namespace(String),
    Global,
    Private,
}

#[derive(Deserialize)]
struct Create {
    /// `user:token`
    data: String,
    reg: String,
}

#[derive(Deserialize)]
struct Delete {
    reg: String,
}

#[derive(Deserialize)]
struct Test {
    url: String,
    username: String,
    password: String,
}

/// Serves one `/api/functions/registries/...` request.
pub async fn handle(
    state: std::sync::Arc<AdminState>,
    who: AdminIdentity,
    method: &Method,
    path: &str,
    body: Bytes,
) -> Answer {
    let rest = path.trim_start_matches("/api/functions/registries");
    if rest == "/test" && method == Method::POST {
        return test(&body).await;
    }
    let set = match rest
        .trim_matches('/')
        .split('/')
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["namespaces", ns] => Set::Namespace(ns.to_string()),
        ["global"] => Set::Global,
        ["private"] => Set::Private,
        _ => return Answer::error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such path"),
    };
    let (namespace, scope) = match &set {
        Set::Namespace(ns) => (ns.clone(), Scope::Namespace),
        Set::Global => (state.proxy.settings.namespace.clone(), Scope::Global),
        Set::Private => (state.proxy.settings.namespace.clone(), Scope::GlobalPrivate),
    };
    let allowed = match &set {
        Set::Namespace(ns) => who.may_act_on(ns),
        // Global registries serve every namespace: only an all-namespaces token manages them.
        _ => who.namespace.is_none(),
    };
    if !allowed {
        return Answer::error(
            StatusCode::FORBIDDEN,
            "DENIED",
            "this token may not manage these registries",
        );
    }
    if let Err(e) = crate::store::validate_namespace(&namespace) {
        return Answer::error(StatusCode::BAD_REQUEST, "NAMESPACE_INVALID", e.to_string());
    }
    // The same rule as the REST API: proxy clients and admin tokens are not registries.
    if super::api::reserved_by(&namespace).is_some() {
        return super::api::reserved_answer(&namespace);
    }
    let method = method.clone();
    Answer::blocking(move || match method {
        Method::GET => list(&state, &namespace, scope),
        Method::POST => create(&state, &who, &namespace, scope, &body),
        Method::DELETE => delete(&state, &who, &namespace, scope, &body),
        _ => Answer::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "GET, POST or DELETE",
        ),
    })
    .await
}

fn bad(m: impl Into<String>) -> Answer {
    Answer::error(StatusCode::BAD_REQUEST, "BODY_INVALID", m)
}

fn in_set(s: &StoredSecret, scope: Scope) -> bool {
    s.scope == scope && s.server().is_some()
}

fn list(state: &AdminState, ns: &str, scope: Scope) -> Answer {
    match state.store.list(Some(ns)) {
        Ok(secrets) => Answer::ok(json!({
            "registries": secrets
                .iter()
                .filter(|s| in_set(s, scope))
                .map(|s| json!({"name": s.server(), "id": s.name}))
                .collect::<Vec<_>>()
        })),
        Err(e) => Answer::error(StatusCode::INTERNAL_SERVER_ERROR, "STORE", e.to_string()),
    }
}

fn create(state: &AdminState, who: &AdminIdentity, ns: &str, scope: Scope, body: &Bytes) -> Answer {
    let req: Create = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return bad(format!("request body: {e}")),
    };
    let Some((username, password)) = req.data.split_once(':') else {
        return bad("data must be \"user:token\"");
    };
    let key = match ServerKey::parse(&req.reg) {
        Ok(k) => k,
        Err(e) => return Answer::error(StatusCode::BAD_REQUEST, "SERVER_INVALID", e.to_string()),
    };
    let name = key.secret_name();
    let secret = StoredSecret {
        name: name.clone(),
        namespace: ns.to_string(),
        scope,
        created: now_unix(),
        origin: Origin::Created,
        data: SecretData::DockerRegistry {
            server: req.reg.clone(),
            username: username.to_string(),
            password: SecretValue::Literal(SecretString::from(password.to_string())),
            email: None,
            also: Vec::new(),
        },
    };
    // Direktiv replaces a registry given again.
    match state.store.put(secret, true) {
        Ok(()) => {
            state.audit.record(who, "registry.create", ns, &name);
            Answer::ok(json!({"name": req.reg, "id": name}))
        }
        Err(StoreError::Limit(e)) => {
            Answer::error(StatusCode::UNPROCESSABLE_ENTITY, "LIMIT", e.to_string())
        }
        Err(e) => Answer::error(StatusCode::BAD_REQUEST, "STORE", e.to_string()),
    }
}

fn delete(state: &AdminState, who: &AdminIdentity, ns: &str, scope: Scope, body: &Bytes) -> Answer {
    let req: Delete = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return bad(format!("request body: {e}")),
    };
    let Ok(key) = ServerKey::parse(&req.reg) else {
        return bad("reg is not a registry URL");
    };
    let names: Vec<String> = match state.store.list(Some(ns)) {
        Ok(secrets) => secrets
            .iter()
            .filter(|s| in_set(s, scope))
            .filter(|s| s.server().and_then(|x| ServerKey::parse(x).ok()).as_ref() == Some(&key))
            .map(|s| s.name.clone())
            .collect(),
        Err(e) => return Answer::error(StatusCode::INTERNAL_SERVER_ERROR, "STORE", e.to_string()),
    };
    if names.is_empty() {
        return Answer::error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no registry {} here", req.reg),
        );
    }
    match state.store.delete(ns, &names) {
        Ok(()) => {
            for n in &names {
                state.audit.record(who, "registry.delete", ns, n);
            }
            Answer::ok(json!({}))
        }
        Err(e) => Answer::error(StatusCode::INTERNAL_SERVER_ERROR, "STORE", e.to_string()),
    }
}

/// `{url, username, password}` → 200 when the registry accepts them, 401 when it refuses.
async fn test(body: &Bytes) -> Answer {
    let req: Test = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return bad(format!("request body: {e}")),
    };
    let key = match ServerKey::parse(&req.url) {
        Ok(k) => k,
        Err(e) => return Answer::error(StatusCode::BAD_REQUEST, "SERVER_INVALID", e.to_string()),
    };
    let host = if key.is_docker_hub() {
        "registry-1.docker.io".to_string()
    } else {
        key.host().to_string()
    };
    let target = crate::registry_login::Target {
        host,
        insecure: req.url.starts_with("http://"),
        timeout: Duration::from_secs(10),
    };
    let creds = Credentials::new(req.username, SecretString::from(req.password));
    match crate::registry_login::verify(&target, &creds).await {
        Ok(()) => Answer::ok(json!({})),
        Err(crate::registry_login::VerifyError::Rejected { .. }) => Answer::error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "the registry refused the credentials",
        ),
        Err(e) => Answer::error(StatusCode::BAD_GATEWAY, "UNAVAILABLE", e.to_string()),
    }
}
