//! `StoreError`: what can go wrong reading or writing stored secrets.

use std::path::PathBuf;

use crate::secret::{LimitError, NameError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A named secret is not in its namespace (`delete`, `get` by name). The credential
    /// helper's not-found answer is `HelperError::NotFound`, not this.
    #[error("secret {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error("secret {namespace}/{name} already exists (delete it first, or use --overwrite)")]
    AlreadyExists { namespace: String, name: String },
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("the master key {key} is missing but encrypted secrets exist in {data}; restore the key file (or set PULLSECRET_MASTER_KEY_FILE); nothing was changed")]
    MasterKeyMissing { key: PathBuf, data: PathBuf },
    #[error("cannot decrypt namespace {namespace:?} in {path}: {reason}; nothing was changed")]
    Decrypt {
        namespace: String,
        path: PathBuf,
        reason: String,
    },
    #[error("master key {path}: {reason}")]
    MasterKey { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{backend} store unavailable: {reason}. Fix: {fix}")]
    Unavailable {
        backend: &'static str,
        reason: String,
        fix: String,
    },
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }
}
