//! Kubernetes Secrets as stored secrets: one `StoredSecret` per Secret (a dockerconfigjson with
//! several registries stays one, its first registry the primary), for `secret import` and the
//! admin API alike.

use std::collections::BTreeMap;

use secrecy::SecretString;

use super::kube::{self, KubeError, KubeSecret};
use super::model::{Origin, RegistryEntry, Scope, SecretData, StoredSecret};
use crate::secret::{RegistrySecret, SecretValue};

/// Why a Secret cannot be stored; names the Secret and key, never a value.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("secret {name:?} has no {key:?}")]
    Missing { name: String, key: String },
    #[error("secret {name:?}: {key:?} is not UTF-8")]
    NotUtf8 { name: String, key: String },
    #[error(transparent)]
    Kube(#[from] KubeError),
}

pub fn from_kube(
    ks: &KubeSecret,
    ns: &str,
    scope: Scope,
    now: u64,
) -> Result<Vec<StoredSecret>, ImportError> {
    let text = |k: &str| -> Result<String, ImportError> {
        let v = ks.data.get(k).ok_or_else(|| ImportError::Missing {
            name: ks.name.clone(),
            key: k.to_string(),
        })?;
        String::from_utf8(v.clone()).map_err(|_| ImportError::NotUtf8 {
            name: ks.name.clone(),
            key: k.to_string(),
        })
    };
    let stored = |data| StoredSecret {
        name: ks.name.clone(),
        namespace: ns.to_string(),
        scope,
        created: now,
        origin: Origin::Imported,
        data,
    };
    Ok(match ks.kind.as_str() {
        // One secret for the whole Secret: its first registry is the primary, the rest go
        // along (`also`), so export writes the same `.dockerconfigjson` back.
        "kubernetes.io/dockerconfigjson" | "kubernetes.io/dockercfg" => {
            let mut entries = kube::registry_entries(ks)?.into_iter();
            match entries.next() {
                Some(first) => {
                    let mut s = registry_stored(&ks.name, ns, scope, now, first);
                    if let SecretData::DockerRegistry { also, .. } = &mut s.data {
                        also.extend(entries.map(|e| RegistryEntry {
                            server: e.server,
                            username: e.username,
                            password: SecretValue::Literal(e.password),
                            email: e.email,
                        }));
                    }
                    vec![s]
                }
                None => Vec::new(),
            }
        }
        "kubernetes.io/tls" => {
            vec![stored(SecretData::Tls {
                cert: text("tls.crt")?,
                key: SecretValue::Literal(SecretString::from(text("tls.key")?)),
            })]
        }
        _ => {
            let mut map = BTreeMap::new();
            for k in ks.data.keys() {
                map.insert(
                    k.clone(),
                    SecretValue::Literal(SecretString::from(text(k)?)),
                );
            }
            vec![stored(SecretData::Generic(map))]
        }
    })
}

pub fn registry_stored(
    name: &str,
    ns: &str,
    scope: Scope,
    now: u64,
    e: RegistrySecret,
) -> StoredSecret {
    StoredSecret {
        name: name.to_string(),
        namespace: ns.to_string(),
        scope,
        created: now,
        origin: Origin::Imported,
        data: SecretData::DockerRegistry {
            server: e.server,
            username: e.username,
            password: SecretValue::Literal(e.password),
            email: e.email,
            also: Vec::new(),
        },
    }
}
