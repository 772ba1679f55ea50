//! Client authentication on requests (Basic or the proxy's bearer tokens), the challenge that
//! points clients at `/token`, and the `/token` endpoint itself (docker GET, OAuth2 POST).

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Response, StatusCode};

use super::client_auth::{Claims, ANONYMOUS};
use super::client_gate::Verdict;
use super::response::{bytes_response, hv, oci_error, Body};
use super::server::{Proxy, Refusal};
use super::upstream::Requester;

/// `Basic base64(user:pass)` → (user, pass).
pub(super) fn parse_basic(h: &str) -> Option<(String, zeroize::Zeroizing<String>)> {
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
pub(super) fn url_form(s: &str) -> Vec<(String, String)> {
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

impl Proxy {
    /// The client's namespace: `Ok(None)` for no credentials; `Err` (401) for wrong ones.
    pub(super) async fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: std::net::IpAddr,
    ) -> Result<Option<Claims>, Refusal> {
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
                Some(c) if current => Ok(Some(c)),
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
                Verdict::Accepted(c) => Ok(Some(c)),
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
    pub(super) fn refused_login(
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

    pub(super) fn requester(&self, authenticated: Option<String>) -> Requester {
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

    pub(super) fn realm(&self, headers: &HeaderMap) -> String {
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

    pub(super) fn challenge(
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
    pub(super) fn challenge_on_401(&self, r: &mut Response<Body>, headers: &HeaderMap) {
        if self.settings.auth_enabled && r.status() == StatusCode::UNAUTHORIZED {
            let v = format!(
                "Bearer realm=\"{}\",service=\"pullsecret\"",
                self.realm(headers)
            );
            r.headers_mut().insert(header::WWW_AUTHENTICATE, hv(&v));
        }
    }

    /// `/token`: GET with optional Basic (docker, skopeo, podman) or the OAuth2 POST form (containerd).
    pub(super) async fn token_endpoint(
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
}
