//! Upstream authentication: credentials, the bearer-token flow (GET with Basic, OAuth2
//! POST password / refresh_token) and a token cache keyed by realm, service, scope and identity.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::RegistryError;

/// Credentials for one upstream, with the identity caches use for them (never the password).
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: SecretString,
    /// Names the credential in cache keys: a `cacheKey` or a salted hash of the value.
    pub identity: String,
    /// Credentials of the same owner for other hosts of one upstream (its fallback URLs), by
    /// `host[:port]`; a host not listed gets these.
    pub alternates: Vec<(String, Credentials)>,
}

impl Credentials {
    pub fn new(username: String, password: SecretString) -> Self {
        let identity = format!("{username}:{}", crate::secret::value_identity(&password));
        Self {
            username,
            password,
            identity,
            alternates: Vec::new(),
        }
    }

    /// The credentials for `host`: an alternate for it, else these.
    pub fn for_host(&self, host: &str) -> &Credentials {
        self.alternates
            .iter()
            .find(|(h, _)| h.eq_ignore_ascii_case(host))
            .map_or(self, |(_, c)| c)
    }

    /// Docker stores identity (refresh) tokens under the username `<token>`.
    pub fn is_identity_token(&self) -> bool {
        self.username == "<token>"
    }

    pub fn basic_header(&self) -> String {
        let raw = zeroize::Zeroizing::new(format!(
            "{}:{}",
            self.username,
            self.password.expose_secret()
        ));
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw.as_bytes())
        )
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, ********)", self.username)
    }
}

/// How to ask a token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenStyle {
    /// GET with Basic credentials (docker, skopeo, podman, distribution).
    #[default]
    Get,
    /// OAuth2 POST `grant_type=password` (containerd), falling back to GET when refused.
    Oauth2,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct TokenKey {
    realm: String,
    service: String,
    scope: String,
    identity: String,
}

#[derive(Clone)]
pub struct Token {
    pub value: SecretString,
    pub expires: SystemTime,
    refresh_at: SystemTime,
}

/// Tokens by (realm, service, scope, identity); refreshed before they expire.
#[derive(Default)]
pub struct TokenCache {
    map: Mutex<HashMap<TokenKey, Token>>,
    fetches: std::sync::atomic::AtomicU64,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    issued_at: Option<String>,
}

impl TokenCache {
    /// How many tokens were fetched from endpoints (for metrics and tests).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A valid token for the request, from the cache unless `force`.
    #[allow(clippy::too_many_arguments)]
    pub async fn token(
        &self,
        http: &reqwest::Client,
        registry: &str,
        realm: &str,
        service: &str,
        scope: &str,
        creds: Option<&Credentials>,
        style: TokenStyle,
        force: bool,
    ) -> Result<SecretString, RegistryError> {
        let key = TokenKey {
            realm: realm.to_string(),
            service: service.to_string(),
            scope: scope.to_string(),
            identity: creds
                .map(|c| c.identity.clone())
                .unwrap_or_else(|| "anonymous".into()),
        };
        if !force {
            if let Some(t) = self.lock().get(&key) {
                if SystemTime::now() < t.refresh_at {
                    return Ok(t.value.clone());
                }
            }
        }
        let token = fetch(http, registry, realm, service, scope, creds, style).await?;
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let value = token.value.clone();
        self.lock().insert(key, token);
        Ok(value)
    }

    /// Drops tokens fetched with `identity` (after a secret rotated or was deleted).
    pub fn forget_identity(&self, identity: &str) {
        self.lock().retain(|k, _| k.identity != identity);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenKey, Token>> {
        // A panic while holding this lock leaves a plain map behind; keep using it.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Largest token response read into memory.
const MAX_TOKEN_BODY: usize = 1 << 20;

async fn fetch(
    http: &reqwest::Client,
    registry: &str,
    realm: &str,
    service: &str,
    scope: &str,
    creds: Option<&Credentials>,
    style: TokenStyle,
) -> Result<Token, RegistryError> {
    let err = |reason: String| RegistryError::Token {
        registry: registry.to_string(),
        realm: realm.to_string(),
        reason,
    };
    let mut form: Vec<(&str, String)> = Vec::new();
    if !service.is_empty() {
        form.push(("service", service.to_string()));
    }
    if !scope.is_empty() {
        form.push(("scope", scope.to_string()));
    }
    let resp = match creds {
        Some(c) if c.is_identity_token() => {
            let mut body = form.clone();
            body.push(("grant_type", "refresh_token".into()));
            body.push(("refresh_token", c.password.expose_secret().to_string()));
            body.push(("client_id", "pullsecret".into()));
            http.post(realm).form(&body).send().await
        }
        Some(c) if style == TokenStyle::Oauth2 => {
            let mut body = form.clone();
            body.push(("grant_type", "password".into()));
            body.push(("username", c.username.clone()));
            body.push(("password", c.password.expose_secret().to_string()));
            body.push(("client_id", "pullsecret".into()));
            let r = http.post(realm).form(&body).send().await;
            match r {
                // Endpoints without OAuth2 support answer 404/405; containerd then uses GET.
                Ok(r) if matches!(r.status().as_u16(), 404 | 405) => {
                    http.get(realm)
                        .query(&form)
                        .header("Authorization", c.basic_header())
                        .send()
                        .await
                }
                other => other,
            }
        }
        Some(c) => {
            http.get(realm)
                .query(&form)
                .header("Authorization", c.basic_header())
                .send()
                .await
        }
        None => http.get(realm).query(&form).send().await,
    }
    .map_err(|e| err(super::http::describe_reqwest(&e)))?;
    let status = resp.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(RegistryError::Unauthorized {
            registry: registry.to_string(),
            what: format!("token for {scope}"),
            detail: format!("the token endpoint {realm} refused the credentials ({status})"),
        });
    }
    if !status.is_success() {
        return Err(err(format!("answered {status}")));
    }
    // Tokens are small; an endpoint sending more is not buffered without bound.
    let body = super::http::read_limited(resp, MAX_TOKEN_BODY)
        .await
        .map_err(|e| match e {
            Some(e) => err(super::http::describe_reqwest(&e)),
            None => err(format!("response over {MAX_TOKEN_BODY} bytes")),
        })?;
    let parsed: TokenResponse =
        serde_json::from_slice(&body).map_err(|_| err("response is not token JSON".into()))?;
    let value = parsed
        .token
        .filter(|t| !t.is_empty())
        .or(parsed.access_token)
        .filter(|t| !t.is_empty());
    let value = value.ok_or_else(|| err("response has neither token nor access_token".into()))?;
    // The spec's default lifetime is 60 s; a shorter one given by the server is honoured.
    let lifetime = Duration::from_secs(parsed.expires_in.filter(|s| *s > 0).unwrap_or(60));
    let issued = parsed
        .issued_at
        .as_deref()
        .and_then(|s| humantime::parse_rfc3339_weak(s).ok())
        .filter(|t| *t <= SystemTime::now() + Duration::from_secs(300))
        .unwrap_or_else(SystemTime::now);
    let expires = issued + lifetime;
    // Refresh a fifth of the lifetime early (at most 30 s), so a pull never carries a dying token.
    let margin = (lifetime / 5).min(Duration::from_secs(30));
    Ok(Token {
        value: SecretString::from(value),
        expires,
        refresh_at: expires - margin,
    })
}
