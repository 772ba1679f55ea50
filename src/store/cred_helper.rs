//! The client side of the docker credential-helper protocol: running another
//! `docker-credential-<name> get`, and the not-found text both sides of the protocol share.

use std::process::Command;
use std::time::Duration;

use secrecy::SecretString;

use crate::secret::{RefError, RegistrySecret};

/// The exact text docker matches to mean "no credentials": what our helper prints on a
/// miss, and what another helper's `get` prints for one.
pub const NOT_FOUND: &str = "credentials not found in native keychain";

/// How long another credential helper may take, like `cmd://` references.
const HELPER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why another helper's `get` gave no answer. Never carries the secret: helper errors are
/// short protocol messages.
#[derive(Debug, thiserror::Error)]
pub enum CredHelperError {
    #[error(
        "PULLSECRET_HELPER_TIMEOUT_MS={0:?} is not a whole number of milliseconds of at least 1"
    )]
    Timeout(String),
    #[error(transparent)]
    Run(#[from] RefError),
    #[error("{bin} get failed: {message}")]
    Failed { bin: String, message: String },
    #[error("{bin} get printed invalid JSON")]
    InvalidJson { bin: String },
}

/// [`HELPER_TIMEOUT`], or `PULLSECRET_HELPER_TIMEOUT_MS` when set.
fn helper_timeout() -> Result<Duration, CredHelperError> {
    match std::env::var("PULLSECRET_HELPER_TIMEOUT_MS") {
        Err(_) => Ok(HELPER_TIMEOUT),
        Ok(v) => match v.parse::<u64>() {
            Ok(ms) if ms >= 1 => Ok(Duration::from_millis(ms)),
            _ => Err(CredHelperError::Timeout(v)),
        },
    }
}

/// Runs `docker-credential-<helper> get`; `Ok(None)` for its not-found answer. A helper that
/// does not answer within the timeout is killed.
pub fn run_helper_get(
    helper: &str,
    server: &str,
) -> Result<Option<RegistrySecret>, CredHelperError> {
    let bin = format!("docker-credential-{helper}");
    let mut cmd = Command::new(&bin);
    cmd.arg("get");
    let (status, stdout) = crate::secret::run_with_timeout(
        &mut cmd,
        &bin,
        Some(server.as_bytes()),
        helper_timeout()?,
    )?;
    let text = String::from_utf8_lossy(&stdout);
    if !status.success() {
        if text.trim() == NOT_FOUND {
            return Ok(None);
        }
        return Err(CredHelperError::Failed {
            bin,
            message: text.trim().to_string(),
        });
    }
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|_| CredHelperError::InvalidJson { bin })?;
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    let secret = field("Secret");
    if secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(RegistrySecret::new(
        server,
        field("Username"),
        SecretString::from(secret),
    )))
}
