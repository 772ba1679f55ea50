//! Size and count limits on stored secrets.

use serde::Deserialize;

/// Limits from the `[limits]` config table.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Limits {
    pub max_secret_bytes: usize,
    pub max_secrets_per_namespace: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_secret_bytes: 4096,
            max_secrets_per_namespace: 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("secret {name:?} is {size} bytes, over limits.max_secret_bytes = {limit}; raise it in the config file's [limits] table or with PULLSECRET_MAX_SECRET_BYTES")]
    SecretTooLarge {
        name: String,
        size: usize,
        limit: usize,
    },
    #[error("namespace {namespace:?} already holds {limit} secrets (limits.max_secrets_per_namespace); delete some or raise the limit in the config file's [limits] table or with PULLSECRET_MAX_SECRETS_PER_NAMESPACE")]
    TooManySecrets { namespace: String, limit: usize },
    #[error("{var}={value:?} is not a whole number of at least 1")]
    InvalidEnv { var: &'static str, value: String },
}

impl Limits {
    /// Defaults overridden by `PULLSECRET_MAX_SECRET_BYTES` / `PULLSECRET_MAX_SECRETS_PER_NAMESPACE`;
    /// a value that is not a positive whole number is an error naming the variable.
    pub fn with_env_overrides(mut self) -> Result<Self, LimitError> {
        let num = |var: &'static str| -> Result<Option<usize>, LimitError> {
            let Some(raw) = std::env::var_os(var) else {
                return Ok(None);
            };
            let value = raw.to_string_lossy().to_string();
            match value.trim().parse::<usize>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(LimitError::InvalidEnv { var, value }),
            }
        };
        if let Some(n) = num("PULLSECRET_MAX_SECRET_BYTES")? {
            self.max_secret_bytes = n;
        }
        if let Some(n) = num("PULLSECRET_MAX_SECRETS_PER_NAMESPACE")? {
            self.max_secrets_per_namespace = n;
        }
        Ok(self)
    }
}
