//! HashiCorp Vault KV v2 reads for `vault://MOUNT/PATH.KEY`, with token or AppRole login.

use secrecy::SecretString;
use serde_json::Value;

use super::RefError;

/// Reads `key` from the KV v2 secret at `path` (`MOUNT/REST`) on `$VAULT_ADDR`.
pub(super) fn read(path: &str, key: &str) -> Result<SecretString, RefError> {
    let err = |m: String| RefError::Vault(m);
    let addr = std::env::var("VAULT_ADDR").map_err(|_| err("VAULT_ADDR is not set".into()))?;
    let addr = addr.trim_end_matches('/');
    let mut builder = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .redirect(same_origin_redirects());
    if let Ok(ca) = std::env::var("VAULT_CACERT") {
        let pem =
            std::fs::read(&ca).map_err(|e| err(format!("cannot read VAULT_CACERT {ca}: {e}")))?;
        // Parse now: with rustls, `Certificate::from_pem` defers parsing and silently
        // adds nothing for a file holding no PEM certificate (DER, a key, a typo'd path).
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| err(format!("VAULT_CACERT {ca}: {}", without_url(&e))))?;
        if certs.is_empty() {
            return Err(err(format!(
                "VAULT_CACERT {ca}: no PEM certificate in the file"
            )));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder
        .build()
        .map_err(|e| err(format!("http client: {}", without_url(&e))))?;
    let namespace = std::env::var("VAULT_NAMESPACE")
        .ok()
        .filter(|s| !s.is_empty());

    let token = match std::env::var("VAULT_TOKEN") {
        Ok(t) if !t.is_empty() => t,
        _ => approle_login(&client, addr, namespace.as_deref())?,
    };

    let (mount, rest) = path
        .split_once('/')
        .ok_or_else(|| err(format!("{path}: need MOUNT/PATH")))?;
    let rest = rest.strip_prefix("data/").unwrap_or(rest);
    let url = format!("{addr}/v1/{mount}/data/{rest}");
    let mut req = client.get(&url).header("X-Vault-Token", &token);
    if let Some(ns) = &namespace {
        req = req.header("X-Vault-Namespace", ns);
    }
    let resp = req
        .send()
        .map_err(|e| err(format!("GET {url}: {}", without_url(&e))))?;
    refuse_cross_origin(&resp, &format!("GET {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(err(format!("GET {url} answered {status}")));
    }
    let body: Value = resp
        .json()
        .map_err(|_| err(format!("GET {url}: response is not KV v2 JSON")))?;
    match body.pointer("/data/data").and_then(|d| d.get(key)) {
        Some(Value::String(s)) => Ok(SecretString::from(s.clone())),
        Some(_) => Err(err(format!("{path}: key {key:?} is not a string"))),
        None => Err(err(format!("{path}: no key {key:?} in the secret"))),
    }
}

fn approle_login(
    client: &reqwest::blocking::Client,
    addr: &str,
    namespace: Option<&str>,
) -> Result<String, RefError> {
    let err = |m: String| RefError::Vault(m);
    let (Ok(role_id), Ok(secret_id)) = (
        std::env::var("VAULT_APPROLE_ROLE_ID"),
        std::env::var("VAULT_APPROLE_SECRET_ID"),
    ) else {
        return Err(err(
            "set VAULT_TOKEN, or VAULT_APPROLE_ROLE_ID and VAULT_APPROLE_SECRET_ID for AppRole login".into(),
        ));
    };
    let url = format!("{addr}/v1/auth/approle/login");
    let mut req = client
        .post(&url)
        .json(&serde_json::json!({"role_id": role_id, "secret_id": secret_id}));
    if let Some(ns) = namespace {
        req = req.header("X-Vault-Namespace", ns);
    }
    let resp = req
        .send()
        .map_err(|e| err(format!("POST {url}: {}", without_url(&e))))?;
    refuse_cross_origin(&resp, &format!("AppRole login at {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(err(format!("AppRole login at {url} answered {status}")));
    }
    let body: Value = resp
        .json()
        .map_err(|_| err(format!("AppRole login at {url}: response is not JSON")))?;
    body.pointer("/auth/client_token")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            err(format!(
                "AppRole login at {url}: no auth.client_token in the response"
            ))
        })
}

/// Follows redirects only while they stay on the origin (scheme, host, port) of the first
/// request: `X-Vault-Token`, `X-Vault-Namespace` and an AppRole secret id go with a followed
/// redirect, and reqwest strips only `Authorization` and cookies when the origin changes. A
/// redirect elsewhere is not followed; [`refuse_cross_origin`] turns it into an error.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let same = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == attempt.url().origin());
        if attempt.previous().len() > 10 {
            attempt.error("more than 10 redirects")
        } else if same {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// A redirect the policy did not follow: it points at another origin.
fn refuse_cross_origin(resp: &reqwest::blocking::Response, what: &str) -> Result<(), RefError> {
    if !resp.status().is_redirection() {
        return Ok(());
    }
    let target = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .and_then(|l| resp.url().join(l).ok())
        .map_or_else(
            || "elsewhere".to_string(),
            |u| u.origin().ascii_serialization(),
        );
    Err(RefError::Vault(format!(
        "{what} answered {} to {target}, another origin; not followed, so the Vault token stays \
         with VAULT_ADDR (set VAULT_ADDR to the server that answers)",
        resp.status()
    )))
}

/// reqwest errors carry the URL; we print our own, so drop theirs. The cause lives in
/// the source chain (reqwest's own message is just "error sending request"), so append it.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    if let Some(u) = e.url() {
        s = s.replace(&format!(" for url ({u})"), "");
        s = s.replace(u.as_str(), "");
    }
    s
}
