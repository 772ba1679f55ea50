//! Where secrets live: the `SecretStore` trait, the encrypted file store, docker /
//! containers / Kubernetes file formats and the lookup chain over them.

pub mod chain;
pub mod cred_helper;
pub mod database;
pub mod docker_config;
mod error;
pub mod file;
pub mod import;
pub mod keyring;
pub mod kube;
pub mod login;
mod master_key;
pub mod model;
pub mod open;
pub mod postgres;
mod sealed;

pub use error::StoreError;
pub use file::{FileStore, StorePaths};
pub use model::{now_unix, Origin, RegistryEntry, Scope, SecretData, StoredSecret};
pub use open::{open_state, open_store, OpenedStore, StoreKind};

use secrecy::SecretString;

use crate::secret::{validate_name, RefResolver, StoreLookup, StoredValueError};
pub use crate::secret::{validate_namespace, DEFAULT_NAMESPACE};

/// A backend that holds secrets grouped by namespace.
pub trait SecretStore {
    /// `file`, `secret-service`, `keyutils`, …
    fn backend_name(&self) -> &'static str;

    /// Every secret in `namespace`, or in all namespaces when `None`.
    fn list(&self, namespace: Option<&str>) -> Result<Vec<StoredSecret>, StoreError>;

    /// Applies `edit` to the namespace's secrets atomically: all of it is stored, or
    /// (on any error, from `edit` or the limits) none of it.
    fn update(
        &self,
        namespace: &str,
        edit: &mut dyn FnMut(&mut Vec<StoredSecret>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// Every namespace that exists (holds secrets, or was created empty).
    fn namespaces(&self) -> Result<Vec<String>, StoreError> {
        let mut out: Vec<String> = self.list(None)?.into_iter().map(|s| s.namespace).collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Creates `namespace` empty when it does not exist (a write that changes nothing).
    fn create_namespace(&self, namespace: &str) -> Result<(), StoreError> {
        self.update(namespace, &mut |_| Ok(()))
    }

    /// Removes `namespace` and every secret in it.
    fn delete_namespace(&self, namespace: &str) -> Result<(), StoreError> {
        self.update(namespace, &mut |secrets| {
            secrets.clear();
            Ok(())
        })
    }

    /// A value that changes whenever stored secrets change, when the backend can tell cheaply
    /// (the file store: its directory's mtime); lets callers cache lookups safely.
    fn generation(&self) -> Option<u128> {
        None
    }

    fn get(&self, namespace: &str, name: &str) -> Result<Option<StoredSecret>, StoreError> {
        Ok(self
            .list(Some(namespace))?
            .into_iter()
            .find(|s| s.name == name))
    }

    /// Stores `secret`; replaces one of the same name only when `overwrite`.
    fn put(&self, secret: StoredSecret, overwrite: bool) -> Result<(), StoreError> {
        validate_name(&secret.name)?;
        let ns = secret.namespace.clone();
        let mut secret = Some(secret);
        self.update(&ns, &mut |secrets| {
            let Some(new) = secret.take() else {
                return Ok(());
            };
            match secrets.iter().position(|s| s.name == new.name) {
                Some(_) if !overwrite => Err(StoreError::AlreadyExists {
                    namespace: new.namespace.clone(),
                    name: new.name.clone(),
                }),
                Some(i) => {
                    secrets[i] = new;
                    Ok(())
                }
                None => {
                    secrets.push(new);
                    Ok(())
                }
            }
        })
    }

    /// Deletes every named secret, or none if any is missing.
    fn delete(&self, namespace: &str, names: &[String]) -> Result<(), StoreError> {
        self.update(namespace, &mut |secrets| {
            for name in names {
                let i = secrets
                    .iter()
                    .position(|s| &s.name == name)
                    .ok_or_else(|| StoreError::NotFound {
                        namespace: namespace.to_string(),
                        name: name.clone(),
                    })?;
                secrets.remove(i);
            }
            Ok(())
        })
    }
}

/// `secret://NAMESPACE/NAME[/KEY]` lookups against any store.
pub struct StoreRefs<'a>(pub &'a dyn SecretStore);

impl StoreLookup for StoreRefs<'_> {
    fn lookup_value(
        &self,
        namespace: &str,
        name: &str,
        key: Option<&str>,
    ) -> Result<Option<SecretString>, StoredValueError> {
        let secret = self
            .0
            .get(namespace, name)
            .map_err(|e| StoredValueError::Store(Box::new(e)))?;
        let Some(secret) = secret else {
            return Ok(None);
        };
        let Some(value) = secret.value(key) else {
            return Err(StoredValueError::NoValue(
                key.unwrap_or("(default)").to_string(),
            ));
        };
        // A stored value may itself be a reference; resolve it without a store to stop cycles.
        RefResolver::default()
            .resolve_value(value)
            .map(Some)
            .map_err(|e| StoredValueError::Ref(Box::new(e)))
    }
}

/// The limits every store enforces: a namespace may not grow past its count
/// limit, and no secret may exceed the size limit.
pub(crate) fn check_limits(
    limits: &crate::secret::Limits,
    namespace: &str,
    before: usize,
    secrets: &[StoredSecret],
) -> Result<(), StoreError> {
    if secrets.len() > limits.max_secrets_per_namespace && secrets.len() > before {
        return Err(crate::secret::LimitError::TooManySecrets {
            namespace: namespace.to_string(),
            limit: limits.max_secrets_per_namespace,
        }
        .into());
    }
    for s in secrets {
        let size = s.stored_size();
        if size > limits.max_secret_bytes {
            return Err(crate::secret::LimitError::SecretTooLarge {
                name: s.name.clone(),
                size,
                limit: limits.max_secret_bytes,
            }
            .into());
        }
    }
    Ok(())
}
