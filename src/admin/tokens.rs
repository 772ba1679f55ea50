//! Admin tokens: created once and shown once, stored only as a SHA-256 hash in the reserved
//! `admin-tokens` namespace of the secret store; each is for all namespaces or for one.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest as _, Sha256};

use crate::proxy::client_auth::constant_time_eq;
use crate::secret::SecretValue;
use crate::store::{now_unix, Origin, Scope, SecretData, SecretStore, StoreError, StoredSecret};

/// The reserved namespace that holds admin token hashes.
pub const ADMIN_TOKENS_NAMESPACE: &str = "admin-tokens";
/// Marks a token that may act on every namespace.
const ALL: &str = "*";

/// What a valid admin token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminIdentity {
    /// The token's name (for the audit log).
    pub name: String,
    /// `None`: every namespace; `Some(ns)`: only that one.
    pub namespace: Option<String>,
}

impl AdminIdentity {
    pub fn may_act_on(&self, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
    }
}

/// A token as listed: never its value.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenInfo {
    pub name: String,
    pub namespace: Option<String>,
    pub created: u64,
}

/// Creates token `name`; returns the token, which is not stored and cannot be shown again.
pub fn create(
    store: &dyn SecretStore,
    name: &str,
    namespace: Option<&str>,
) -> Result<SecretString, StoreError> {
    crate::secret::validate_name(name)?;
    if let Some(ns) = namespace {
        crate::store::validate_namespace(ns)?;
    }
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|_| StoreError::Io {
        path: "(OS random source)".into(),
        source: std::io::Error::other("no randomness"),
    })?;
    let token = format!("psa_{}", B64.encode(raw));
    let mut data = BTreeMap::new();
    data.insert(
        "token-sha256".to_string(),
        SecretValue::Literal(SecretString::from(hash(&token))),
    );
    data.insert(
        "namespace".to_string(),
        SecretValue::Literal(SecretString::from(namespace.unwrap_or(ALL).to_string())),
    );
    store.put(
        StoredSecret {
            name: name.to_string(),
            namespace: ADMIN_TOKENS_NAMESPACE.to_string(),
            scope: Scope::Namespace,
            created: now_unix(),
            origin: Origin::Created,
            data: SecretData::Generic(data),
        },
        false,
    )?;
    Ok(SecretString::from(token))
}

pub fn list(store: &dyn SecretStore) -> Result<Vec<TokenInfo>, StoreError> {
    Ok(store
        .list(Some(ADMIN_TOKENS_NAMESPACE))?
        .into_iter()
        .map(|s| TokenInfo {
            namespace: field(&s, "namespace").filter(|ns| ns != ALL),
            name: s.name,
            created: s.created,
        })
        .collect())
}

pub fn revoke(store: &dyn SecretStore, name: &str) -> Result<(), StoreError> {
    store.delete(ADMIN_TOKENS_NAMESPACE, &[name.to_string()])
}

/// The identity of `token`, if it is a current admin token (blocking: reads the store).
pub fn verify(store: &dyn SecretStore, token: &str) -> Option<AdminIdentity> {
    let presented = hash(token);
    let tokens = store.list(Some(ADMIN_TOKENS_NAMESPACE)).ok()?;
    // Every stored hash is compared, so the time taken does not say which one matched.
    let mut found = None;
    for s in &tokens {
        let Some(stored) = field(s, "token-sha256") else {
            continue;
        };
        if constant_time_eq(stored.as_bytes(), presented.as_bytes()) {
            found = Some(AdminIdentity {
                name: s.name.clone(),
                namespace: field(s, "namespace").filter(|ns| ns != ALL),
            });
        }
    }
    found
}

fn field(s: &StoredSecret, key: &str) -> Option<String> {
    match &s.data {
        SecretData::Generic(map) => match map.get(key) {
            Some(SecretValue::Literal(v)) => Some(v.expose_secret().to_string()),
            _ => None,
        },
        _ => None,
    }
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}
