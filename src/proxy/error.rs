//! Why the proxy answers with an error: status, OCI code, message and Retry-After in one value,
//! and the one mapping from upstream errors to it (fills, manifests and blobs all use it).

use http::StatusCode;

use crate::registry::RegistryError;

/// An error answer. `response::error_response` renders it; fills carry it to every reader.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProxyError {
    pub status: StatusCode,
    /// The OCI error code (`BLOB_UNKNOWN`, `UNAUTHORIZED`, `TOOMANYREQUESTS`, …).
    pub code: &'static str,
    pub message: String,
    /// Seconds a client should wait before retrying (passed on from the upstream).
    pub retry_after: Option<u64>,
}

/// A fill's failure, as its readers receive it.
pub type FillError = ProxyError;

impl ProxyError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A transfer that broke on the proxy's side of the upstream (stream, disk, digest): 502.
    pub fn transfer(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "UNAVAILABLE", message)
    }

    /// The one mapping from an upstream error; `unknown` is the code of a 404 whose own code is
    /// not one we pass on (`BLOB_UNKNOWN` for blobs, `MANIFEST_UNKNOWN` for manifests).
    pub fn upstream(e: &RegistryError, unknown: &'static str) -> Self {
        let (status, code) = match e {
            RegistryError::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            RegistryError::NotFound { code, .. } => {
                (StatusCode::NOT_FOUND, known_code(code, unknown))
            }
            // Schema 1: a manifest the proxy does not know how to serve, as distribution calls an
            // OCI manifest a client cannot accept.
            RegistryError::UnsupportedManifest { .. } => {
                (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN")
            }
            RegistryError::Status { status: 429, .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS")
            }
            RegistryError::Config { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
            RegistryError::CircuitOpen { .. } => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            _ => (StatusCode::BAD_GATEWAY, "UNAVAILABLE"),
        };
        let retry_after = match e {
            RegistryError::Status { retry_after, .. } => *retry_after,
            RegistryError::CircuitOpen { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        Self {
            status,
            code,
            message: e.to_string(),
            retry_after,
        }
    }
}

/// Known OCI codes pass through; anything else becomes `unknown`.
fn known_code(code: &str, unknown: &'static str) -> &'static str {
    match code {
        "BLOB_UNKNOWN" => "BLOB_UNKNOWN",
        "MANIFEST_UNKNOWN" => "MANIFEST_UNKNOWN",
        "NAME_UNKNOWN" => "NAME_UNKNOWN",
        _ => unknown,
    }
}

/// Why the proxy cannot start or warm: `what` names the config key, secret, file or image at
/// fault, `reason` says why (never a secret's value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct SetupError {
    pub what: String,
    pub reason: String,
}

impl SetupError {
    pub fn new(what: impl std::fmt::Display, reason: impl std::fmt::Display) -> Self {
        Self {
            what: what.to_string(),
            reason: reason.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_errors_map_once() {
        let e = RegistryError::Status {
            registry: "r".into(),
            what: "blob".into(),
            status: 429,
            code: String::new(),
            message: String::new(),
            retry_after: Some(7),
        };
        let p = ProxyError::upstream(&e, "BLOB_UNKNOWN");
        assert_eq!(
            (p.status, p.code, p.retry_after),
            (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", Some(7))
        );
    }
}
