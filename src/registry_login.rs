//! Checks credentials against a registry the way `docker login` does: `GET /v2/`, then the
//! challenge it answers with (Basic, or the bearer-token flow without a scope).

use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::StatusCode;
use secrecy::ExposeSecret;

use crate::registry::auth::{Credentials, TokenCache, TokenStyle};
use crate::registry::challenge::{Challenge, Scheme};
use crate::registry::http::describe_reqwest;
use crate::registry::RegistryError;

/// Why a login check failed. Never carries the password or a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    #[error("{registry}: the registry refused the credentials ({detail})")]
    Rejected { registry: String, detail: String },
    #[error("{registry}: cannot reach the registry: {reason}")]
    Unreachable { registry: String, reason: String },
    #[error("{registry}: GET /v2/ answered {status}; is this a registry?")]
    Unexpected { registry: String, status: u16 },
    #[error(transparent)]
    Registry(RegistryError),
}

/// How to reach the registry API at `host` (`host[:port]`).
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    /// Plain HTTP only. Otherwise HTTPS, falling back to plain HTTP for loopback hosts when
    /// HTTPS cannot connect (docker treats 127.0.0.0/8 as an insecure registry the same way).
    pub insecure: bool,
    pub timeout: Duration,
}

/// Succeeds when the registry accepts `creds` for `GET /v2/` (or asks for no credentials).
pub async fn verify(target: &Target, creds: &Credentials) -> Result<(), VerifyError> {
    let registry = target.host.clone();
    let http = reqwest::Client::builder()
        .user_agent(concat!("pullsecret/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(target.timeout)
        .timeout(target.timeout)
        .build()
        .map_err(|e| VerifyError::Unreachable {
            registry: registry.clone(),
            reason: describe_reqwest(&e),
        })?;
    let schemes: &[&str] = if target.insecure {
        &["http"]
    } else if is_loopback(&target.host) {
        &["https", "http"]
    } else {
        &["https"]
    };
    let mut last = None;
    for scheme in schemes {
        let url = format!("{scheme}://{}/v2/", target.host);
        match http.get(&url).send().await {
            Ok(resp) => return answer(&http, &registry, &url, resp, creds).await,
            Err(e) => last = Some(describe_reqwest(&e)),
        }
    }
    Err(VerifyError::Unreachable {
        registry,
        reason: last.unwrap_or_default(),
    })
}

async fn answer(
    http: &reqwest::Client,
    registry: &str,
    url: &str,
    resp: reqwest::Response,
    creds: &Credentials,
) -> Result<(), VerifyError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    if status != StatusCode::UNAUTHORIZED {
        return Err(VerifyError::Unexpected {
            registry: registry.to_string(),
            status: status.as_u16(),
        });
    }
    let authorization = match crate::registry::challenge::preferred(resp.headers()) {
        Some(ch) if *ch.scheme() == Scheme::Bearer => bearer(http, registry, &ch, creds).await?,
        Some(_) => creds.basic_header(),
        None => {
            return Err(VerifyError::Rejected {
                registry: registry.to_string(),
                detail: "401 without a usable WWW-Authenticate challenge".into(),
            })
        }
    };
    let mut value = HeaderValue::from_str(&authorization).map_err(|_| VerifyError::Rejected {
        registry: registry.to_string(),
        detail: "the credentials cannot be sent in a header".into(),
    })?;
    value.set_sensitive(true);
    let resp = http
        .get(url)
        .header(AUTHORIZATION, value)
        .send()
        .await
        .map_err(|e| VerifyError::Unreachable {
            registry: registry.to_string(),
            reason: describe_reqwest(&e),
        })?;
    match resp.status() {
        s if s.is_success() => Ok(()),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(VerifyError::Rejected {
            registry: registry.to_string(),
            detail: format!("GET /v2/ answered {}", resp.status()),
        }),
        s => Err(VerifyError::Unexpected {
            registry: registry.to_string(),
            status: s.as_u16(),
        }),
    }
}

/// A token for no particular scope, as `docker login` asks; `Bearer TOKEN`.
async fn bearer(
    http: &reqwest::Client,
    registry: &str,
    ch: &Challenge,
    creds: &Credentials,
) -> Result<String, VerifyError> {
    let realm = ch.realm().unwrap_or_default();
    if realm.is_empty() {
        return Err(VerifyError::Rejected {
            registry: registry.to_string(),
            detail: "Bearer challenge without a realm".into(),
        });
    }
    let token = TokenCache::default()
        .token(
            http,
            registry,
            realm,
            ch.service().unwrap_or_default(),
            "",
            Some(creds),
            TokenStyle::Get,
            true,
        )
        .await
        .map_err(|e| match e {
            RegistryError::Unauthorized { detail, .. } => VerifyError::Rejected {
                registry: registry.to_string(),
                detail,
            },
            other => VerifyError::Registry(other),
        })?;
    Ok(format!("Bearer {}", token.expose_secret()))
}

/// `localhost`, `127.x.x.x` or `[::1]`, with or without a port.
fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "quay.io",
            "10.0.0.1:5000",
            "example.com:443",
            "[2001:db8::1]:5000",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }
}
