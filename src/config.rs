//! The TOML config file (`$XDG_CONFIG_HOME/pullsecret/config.toml` or `--config`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::secret::Limits;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `auto`, `file`, `secret-service`, `keyutils`, `keychain`, `wincred`.
    pub store: Option<String>,
    /// Namespace for CLI and helper operations (`PULLSECRET_NAMESPACE` overrides).
    pub namespace: Option<String>,
    pub limits: Limits,
    /// Directories of Kubernetes Secret files the lookup chain reads.
    pub kube_secret_dirs: Vec<PathBuf>,
    /// Fleet mode: shared state in PostgreSQL instead of the local store.
    pub state: StateConfig,
    /// `--state` (or `PULLSECRET_STATE` through it): wins over the config file.
    #[serde(skip)]
    pub state_override: Option<String>,
}

/// `[state]`: where shared state lives (fleet mode). Unset: the local store.
#[derive(Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// `postgres://user[:password]@host[:port]/database`.
    pub postgres: Option<String>,
    /// Where the master key comes from in fleet mode, as a reference (`vault://…`, `env://VAR`,
    /// `file:///path`, `cmd://…`; also `PULLSECRET_MASTER_KEY_REF`). Unset: the file store's key.
    pub master_key: Option<String>,
}

// The URL may carry a password.
impl std::fmt::Debug for StateConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateConfig")
            .field("postgres", &self.postgres.as_ref().map(|_| "(set)"))
            .field("master_key", &self.master_key.as_ref().map(|_| "(set)"))
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(transparent)]
    Limit(#[from] crate::secret::LimitError),
}

impl Config {
    /// Reads `path`, or the default location when `None` (a missing default file is an empty config).
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => match std::env::var_os("PULLSECRET_CONFIG") {
                Some(p) if !p.is_empty() => (PathBuf::from(p), true),
                _ => (default_config_dir().join("config.toml"), false),
            },
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => {
                let mut cfg = Self::default();
                cfg.limits = cfg.limits.with_env_overrides()?;
                return Ok(cfg);
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        let mut cfg: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.clone(),
            message: e.message().to_string(),
        })?;
        cfg.limits = cfg.limits.with_env_overrides()?;
        Ok(cfg)
    }

    /// The store backend to use and where that choice came from: `PULLSECRET_STORE`,
    /// then the config file's `store`, else `auto`.
    pub fn store_setting(&self) -> (String, &'static str) {
        match std::env::var("PULLSECRET_STORE") {
            Ok(v) if !v.trim().is_empty() => (v.trim().to_string(), "PULLSECRET_STORE"),
            _ => match &self.store {
                Some(s) => (s.trim().to_string(), "the config file"),
                None => ("auto".to_string(), "the default"),
            },
        }
    }

    /// The PostgreSQL URL of shared state and where it came from: `PULLSECRET_STATE`
    /// (also `--state`), then the config file's `[state] postgres`; `None`: the local store.
    pub fn state_url(&self) -> Option<(String, &'static str)> {
        if let Some(u) = self
            .state_override
            .as_ref()
            .filter(|u| !u.trim().is_empty())
        {
            return Some((u.trim().to_string(), "--state"));
        }
        match std::env::var("PULLSECRET_STATE") {
            Ok(v) if !v.trim().is_empty() => Some((v.trim().to_string(), "PULLSECRET_STATE")),
            _ => self
                .state
                .postgres
                .clone()
                .map(|u| (u, "the config file's [state]")),
        }
    }

    /// The namespace to work in: `PULLSECRET_NAMESPACE`, then config, then `default`.
    pub fn namespace(&self) -> String {
        std::env::var("PULLSECRET_NAMESPACE")
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| self.namespace.clone())
            .unwrap_or_else(|| crate::secret::DEFAULT_NAMESPACE.to_string())
    }
}

/// `$XDG_CONFIG_HOME/pullsecret`, else `~/.config/pullsecret`.
pub fn default_config_dir() -> PathBuf {
    xdg_dir("XDG_CONFIG_HOME", ".config").join("pullsecret")
}

/// An XDG base directory: `$var` when set and non-empty, else `$HOME/fallback`.
pub fn xdg_dir(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/"))
                .join(fallback)
        })
}
