//! `RegistryError`: upstream failures with the registry's OCI error code and message,
//! naming the host and what was fetched, never a credential or token.

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    #[error("{registry}: unauthorized to fetch {what}: {detail}")]
    Unauthorized {
        registry: String,
        what: String,
        detail: String,
    },
    #[error("{registry}: {what} not found ({code}: {message})")]
    NotFound {
        registry: String,
        what: String,
        code: String,
        message: String,
    },
    #[error("{registry}: {what}: {status} {code}: {message}")]
    Status {
        registry: String,
        what: String,
        status: u16,
        code: String,
        message: String,
        retry_after: Option<u64>,
    },
    #[error("{registry}: fetching {what}: {reason}")]
    Network {
        registry: String,
        what: String,
        reason: String,
        timeout: bool,
    },
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// A manifest of a format pullsecret does not serve (Docker schema 1, which distribution
    /// writes when asked for a manifest list by tag without its media type in Accept).
    #[error(
        "{registry}: {what} is a {media_type} manifest (Docker schema 1), which pullsecret does not \
         serve (docker 28 no longer pulls it either); accept the manifest list or image manifest \
         media types to get the image"
    )]
    UnsupportedManifest {
        registry: String,
        what: String,
        media_type: String,
    },
    #[error("{registry}: {what} is larger than allowed")]
    TooLarge { registry: String, what: String },
    #[error("{registry}: token endpoint {realm}: {reason}")]
    Token {
        registry: String,
        realm: String,
        reason: String,
    },
    /// Not sent: the upstream's circuit breaker is open after repeated failures.
    #[error("{registry}: {what}: upstream unavailable after repeated failures (circuit open); retry in {retry_after} s")]
    CircuitOpen {
        registry: String,
        what: String,
        retry_after: u64,
    },
    #[error("{registry}: {reason}")]
    Config { registry: String, reason: String },
    /// A success answer whose body or headers do not mean what the API says they must.
    #[error("{registry}: {what}: invalid answer: {reason}")]
    Invalid {
        registry: String,
        what: String,
        reason: String,
    },
}

/// Largest upstream error body read into memory.
const MAX_ERROR_BODY: usize = 64 * 1024;

impl RegistryError {
    pub fn network(registry: &str, what: &str, e: &reqwest::Error) -> Self {
        RegistryError::Network {
            registry: registry.to_string(),
            what: what.to_string(),
            reason: super::http::describe_reqwest(e),
            timeout: e.is_timeout(),
        }
    }

    /// Builds the error for a non-success response from its OCI error JSON (bodies over 64 KiB
    /// are not parsed).
    pub async fn from_response(registry: &str, what: &str, resp: reqwest::Response) -> Self {
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        // Only the start of an error body is read: an upstream cannot make us buffer more.
        let body = super::http::read_limited(resp, MAX_ERROR_BODY)
            .await
            .unwrap_or_default();
        let (code, message) = oci_error(&body).unwrap_or_else(|| {
            (
                status
                    .canonical_reason()
                    .unwrap_or("ERROR")
                    .to_ascii_uppercase()
                    .replace(' ', "_"),
                String::new(),
            )
        });
        match status.as_u16() {
            401 | 403 => RegistryError::Unauthorized {
                registry: registry.into(),
                what: what.into(),
                detail: if message.is_empty() {
                    code
                } else {
                    format!("{code}: {message}")
                },
            },
            404 => RegistryError::NotFound {
                registry: registry.into(),
                what: what.into(),
                code,
                message,
            },
            s => RegistryError::Status {
                registry: registry.into(),
                what: what.into(),
                status: s,
                code,
                message,
                retry_after,
            },
        }
    }

    /// The HTTP status a proxy should answer a client with for this failure.
    pub fn status(&self) -> u16 {
        match self {
            RegistryError::Unauthorized { .. } => 401,
            RegistryError::NotFound { .. } | RegistryError::UnsupportedManifest { .. } => 404,
            RegistryError::Status { status, .. } if *status == 429 => 429,
            RegistryError::Status { .. }
            | RegistryError::Network { .. }
            | RegistryError::Token { .. } => 502,
            RegistryError::DigestMismatch { .. } => 502,
            RegistryError::TooLarge { .. } | RegistryError::Invalid { .. } => 502,
            RegistryError::Config { .. } => 500,
            RegistryError::CircuitOpen { .. } => 503,
        }
    }

    /// Whether the upstream is unwell (errors, timeouts, 429): a cached tag may be served stale.
    pub fn upstream_unavailable(&self) -> bool {
        match self {
            RegistryError::Status { status, .. } => *status >= 500 || *status == 429,
            RegistryError::Network { .. }
            | RegistryError::Token { .. }
            | RegistryError::CircuitOpen { .. } => true,
            _ => false,
        }
    }
}

/// `{"errors":[{"code","message"}]}` → the first code and message.
fn oci_error(body: &[u8]) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let first = v.get("errors")?.get(0)?;
    let code = first.get("code")?.as_str()?.to_string();
    let message = first
        .get("message")
        .and_then(|m| m.as_str())
        .unwrap_or("")
        .to_string();
    Some((code, message))
}
