//! Stored secrets: what a namespace holds (docker-registry, generic, tls), with scope and age.

use std::collections::BTreeMap;
use std::fmt;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::secret::{RefError, RefResolver, RegistrySecret, SecretValue, ServerKey};

/// Who may use a secret (see DESIGN.md: namespaces and scopes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Only clients of the secret's namespace.
    #[default]
    Namespace,
    /// Every client.
    Global,
    /// Only the proxy's own background work.
    GlobalPrivate,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Namespace => "namespace",
            Scope::Global => "global",
            Scope::GlobalPrivate => "global-private",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "namespace" => Some(Scope::Namespace),
            "global" => Some(Scope::Global),
            "global-private" => Some(Scope::GlobalPrivate),
            _ => None,
        }
    }
}

/// How a secret came into the store, which decides what may remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// `pullsecret login` or the helper's `store` (`docker login`, `podman login`): logout and
    /// the helper's `erase` remove it.
    Login,
    /// `secret create` by name: only `secret delete NAME` removes it.
    Created,
    /// `secret import`: only `secret delete NAME` removes it.
    Imported,
    /// Written before origins were recorded. Treated as a login secret only when its name is
    /// the one login derives from its server (`ServerKey::secret_name`).
    #[default]
    Unknown,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Login => "login",
            Origin::Created => "created",
            Origin::Imported => "imported",
            Origin::Unknown => "unknown",
        }
    }
}

/// The payload of a stored secret, by Kubernetes type.
#[derive(Clone)]
pub enum SecretData {
    /// One registry's credentials (the primary), and the further registries a Kubernetes
    /// Secret's `.dockerconfigjson` may hold beside it (`also`, usually empty).
    DockerRegistry {
        server: String,
        username: String,
        password: SecretValue,
        email: Option<String>,
        also: Vec<RegistryEntry>,
    },
    Generic(BTreeMap<String, SecretValue>),
    Tls {
        cert: String,
        key: SecretValue,
    },
}

/// One registry's credentials in a docker-registry secret. `Debug` never shows the password.
#[derive(Clone)]
pub struct RegistryEntry {
    pub server: String,
    pub username: String,
    pub password: SecretValue,
    pub email: Option<String>,
}

impl RegistryEntry {
    /// The credentials with the password resolved (following a reference).
    pub fn resolve(&self, resolver: &RefResolver) -> Result<RegistrySecret, RefError> {
        Ok(RegistrySecret {
            server: self.server.clone(),
            username: self.username.clone(),
            password: resolver.resolve_value(&self.password)?,
            email: self.email.clone(),
        })
    }
}

impl fmt::Debug for RegistryEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryEntry")
            .field("server", &self.server)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// One secret in a namespace.
#[derive(Clone)]
pub struct StoredSecret {
    pub name: String,
    pub namespace: String,
    pub scope: Scope,
    /// Seconds since the Unix epoch of the last write (an overwrite sets it anew).
    pub created: u64,
    pub origin: Origin,
    pub data: SecretData,
}

impl StoredSecret {
    /// The Kubernetes `type` this secret exports as.
    pub fn type_name(&self) -> &'static str {
        match self.data {
            SecretData::DockerRegistry { .. } => "kubernetes.io/dockerconfigjson",
            SecretData::Generic(_) => "Opaque",
            SecretData::Tls { .. } => "kubernetes.io/tls",
        }
    }

    pub fn server(&self) -> Option<&str> {
        match &self.data {
            SecretData::DockerRegistry { server, .. } => Some(server),
            _ => None,
        }
    }

    pub fn username(&self) -> Option<&str> {
        match &self.data {
            SecretData::DockerRegistry { username, .. } => Some(username),
            _ => None,
        }
    }

    pub fn email(&self) -> Option<&str> {
        match &self.data {
            SecretData::DockerRegistry { email, .. } => email.as_deref(),
            _ => None,
        }
    }

    /// Every registry of a docker-registry secret, the primary first; empty for other types.
    pub fn registries(&self) -> Vec<RegistryEntry> {
        match &self.data {
            SecretData::DockerRegistry {
                server,
                username,
                password,
                email,
                also,
            } => {
                let mut all = Vec::with_capacity(1 + also.len());
                all.push(RegistryEntry {
                    server: server.clone(),
                    username: username.clone(),
                    password: password.clone(),
                    email: email.clone(),
                });
                all.extend(also.iter().cloned());
                all
            }
            _ => Vec::new(),
        }
    }

    /// The servers of a docker-registry secret, the primary first; empty for other types.
    pub fn servers(&self) -> Vec<&str> {
        match &self.data {
            SecretData::DockerRegistry { server, also, .. } => std::iter::once(server.as_str())
                .chain(also.iter().map(|e| e.server.as_str()))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Which of this secret's registries answers for `key`: the one whose server key is the
    /// most specific candidate of `key` (the primary, then the earlier one, on a tie). Returns
    /// that candidate's position in `key.candidates()` (0 = most specific) and the registry's
    /// index in [`StoredSecret::registries`] (0 = the primary); `None` when none matches.
    pub fn registry_for(&self, key: &ServerKey) -> Option<(usize, usize)> {
        let candidates = key.candidates();
        self.servers()
            .iter()
            .enumerate()
            .filter_map(|(i, server)| {
                let k = ServerKey::parse(server).ok()?;
                let rank = candidates.iter().position(|c| c == &k)?;
                Some((rank, i))
            })
            .min()
    }

    /// Resolves a docker-registry secret's primary registry (following references) into a
    /// `RegistrySecret`.
    pub fn to_registry_secret(
        &self,
        resolver: &RefResolver,
    ) -> Result<Option<RegistrySecret>, RefError> {
        self.registries()
            .first()
            .map(|e| e.resolve(resolver))
            .transpose()
    }

    /// Bytes the secret occupies as stored, for `limits.max_secret_bytes`.
    pub fn stored_size(&self) -> usize {
        use secrecy::ExposeSecret;
        let v = |v: &SecretValue| match v {
            SecretValue::Literal(s) => s.expose_secret().len(),
            SecretValue::Ref(r) => r.as_str().len(),
        };
        match &self.data {
            SecretData::DockerRegistry { .. } => self
                .registries()
                .iter()
                .map(|e| {
                    e.server.len()
                        + e.username.len()
                        + v(&e.password)
                        + e.email.as_deref().map_or(0, str::len)
                })
                .sum(),
            SecretData::Generic(map) => map.iter().map(|(k, x)| k.len() + v(x)).sum(),
            SecretData::Tls { cert, key } => cert.len() + v(key),
        }
    }

    /// Whether logout / the helper's `erase` for this secret's server may remove it: made by
    /// login, or (stores written before origins were recorded) named the way login names.
    pub fn is_login(&self) -> bool {
        match self.origin {
            Origin::Login => true,
            Origin::Created | Origin::Imported => false,
            Origin::Unknown => self.server().is_some_and(|server| {
                crate::secret::ServerKey::parse(server).is_ok_and(|k| k.secret_name() == self.name)
            }),
        }
    }

    /// A generic secret's value for `key`, or a docker-registry password, as plain bytes.
    pub fn value(&self, key: Option<&str>) -> Option<&SecretValue> {
        match (&self.data, key) {
            (SecretData::DockerRegistry { password, .. }, None | Some("password")) => {
                Some(password)
            }
            (SecretData::Generic(map), Some(k)) => map.get(k),
            (SecretData::Generic(map), None) if map.len() == 1 => map.values().next(),
            (SecretData::Tls { key, .. }, None | Some("tls.key")) => Some(key),
            _ => None,
        }
    }
}

impl fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredSecret")
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("type", &self.type_name())
            .field("server", &self.server())
            .field("username", &self.username())
            .field("also", &self.servers().get(1..).unwrap_or_default())
            .field("scope", &self.scope)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// On-disk (inside the encryption) shape of a secret. Values are plain strings here
/// and are zeroized when the record is dropped.
#[derive(Serialize, Deserialize, Default)]
pub(crate) struct Record {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub scope: Scope,
    pub created: u64,
    /// Absent in stores written before origins were recorded: `Origin::Unknown`.
    #[serde(default, skip_serializing_if = "is_unknown")]
    pub origin: Origin,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    /// Keys of `data` whose value is a SecretRef rather than the value itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refs: Vec<String>,
    /// A docker-registry secret's further registries (absent in older records and for one
    /// registry). The password of the Nth (from 1) is `data["password.N"]`, so it is zeroized
    /// and may be a reference like the primary's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<RecordRegistry>,
}

/// A further registry of a docker-registry `Record`, its password kept in `data`.
#[derive(Serialize, Deserialize, Default)]
pub(crate) struct RecordRegistry {
    pub server: String,
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// The `data` key of the password of a docker-registry record's `n`th further registry.
fn also_password_key(n: usize) -> String {
    format!("password.{n}")
}

fn is_unknown(o: &Origin) -> bool {
    *o == Origin::Unknown
}

impl Drop for Record {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for v in self.data.values_mut() {
            v.zeroize();
        }
    }
}

impl Record {
    pub(crate) fn from_secret(s: &StoredSecret) -> Record {
        use secrecy::ExposeSecret;
        let mut r = Record::default();
        r.name = s.name.clone();
        r.kind = s.type_name().to_string();
        r.scope = s.scope;
        r.created = s.created;
        r.origin = s.origin;
        let put = |r: &mut Record, k: &str, v: &SecretValue| {
            match v {
                SecretValue::Literal(x) => {
                    r.data.insert(k.to_string(), x.expose_secret().to_string())
                }
                SecretValue::Ref(x) => {
                    r.refs.push(k.to_string());
                    r.data.insert(k.to_string(), x.as_str().to_string())
                }
            };
        };
        match &s.data {
            SecretData::DockerRegistry {
                server,
                username,
                password,
                email,
                also,
            } => {
                r.server = Some(server.clone());
                r.username = Some(username.clone());
                r.email = email.clone();
                put(&mut r, "password", password);
                for (i, e) in also.iter().enumerate() {
                    put(&mut r, &also_password_key(i + 1), &e.password);
                    r.also.push(RecordRegistry {
                        server: e.server.clone(),
                        username: e.username.clone(),
                        email: e.email.clone(),
                    });
                }
            }
            SecretData::Generic(map) => {
                for (k, v) in map {
                    put(&mut r, k, v);
                }
            }
            SecretData::Tls { cert, key } => {
                r.data.insert("tls.crt".into(), cert.clone());
                put(&mut r, "tls.key", key);
            }
        }
        r
    }

    pub(crate) fn into_secret(self, namespace: &str) -> Result<StoredSecret, RecordError> {
        let value = |k: &str| -> Result<SecretValue, RecordError> {
            let v = self.data.get(k).ok_or_else(|| RecordError::Missing {
                name: self.name.clone(),
                key: k.to_string(),
            })?;
            if self.refs.iter().any(|r| r == k) {
                match crate::secret::SecretRef::parse(v) {
                    Ok(Some(r)) => Ok(SecretValue::Ref(r)),
                    _ => Err(RecordError::BadReference {
                        name: self.name.clone(),
                        key: k.to_string(),
                    }),
                }
            } else {
                Ok(SecretValue::Literal(SecretString::from(v.clone())))
            }
        };
        let data = match self.kind.as_str() {
            "kubernetes.io/dockerconfigjson" => SecretData::DockerRegistry {
                server: self.server.clone().unwrap_or_default(),
                username: self.username.clone().unwrap_or_default(),
                password: value("password")?,
                email: self.email.clone(),
                also: self
                    .also
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        Ok(RegistryEntry {
                            server: e.server.clone(),
                            username: e.username.clone(),
                            password: value(&also_password_key(i + 1))?,
                            email: e.email.clone(),
                        })
                    })
                    .collect::<Result<_, RecordError>>()?,
            },
            "Opaque" => {
                let mut map = BTreeMap::new();
                for k in self.data.keys() {
                    map.insert(k.clone(), value(k)?);
                }
                SecretData::Generic(map)
            }
            "kubernetes.io/tls" => SecretData::Tls {
                cert: self.data.get("tls.crt").cloned().unwrap_or_default(),
                key: value("tls.key")?,
            },
            other => {
                return Err(RecordError::UnknownType {
                    name: self.name.clone(),
                    kind: other.to_string(),
                })
            }
        };
        Ok(StoredSecret {
            name: self.name.clone(),
            namespace: namespace.to_string(),
            scope: self.scope,
            created: self.created,
            origin: self.origin,
            data,
        })
    }
}

/// A stored record that does not make a secret (damaged, or written by a newer version).
/// Names the secret and key, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("secret {name:?} lacks {key:?}")]
    Missing { name: String, key: String },
    #[error("secret {name:?}: {key:?} holds an invalid reference")]
    BadReference { name: String, key: String },
    #[error("secret {name:?} has unknown type {kind:?}")]
    UnknownType { name: String, kind: String },
}

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn literal(s: &str) -> SecretValue {
        SecretValue::Literal(SecretString::from(s.to_string()))
    }

    fn two_registries() -> StoredSecret {
        StoredSecret {
            name: "regcred".into(),
            namespace: "team".into(),
            scope: Scope::Namespace,
            created: 7,
            origin: Origin::Imported,
            data: SecretData::DockerRegistry {
                server: "quay.io".into(),
                username: "robot".into(),
                password: literal("quay-pw"),
                email: None,
                also: vec![
                    RegistryEntry {
                        server: "ghcr.io/org".into(),
                        username: "octo".into(),
                        password: SecretValue::Ref(
                            crate::secret::SecretRef::parse("env://GHCR_PW")
                                .expect("parse")
                                .expect("a reference"),
                        ),
                        email: Some("o@example.com".into()),
                    },
                    RegistryEntry {
                        server: "ghcr.io".into(),
                        username: "wide".into(),
                        password: literal("wide-pw"),
                        email: None,
                    },
                ],
            },
        }
    }

    #[test]
    fn further_registries_round_trip_through_the_record() {
        let json = serde_json::to_string(&Record::from_secret(&two_registries())).expect("json");
        // Passwords live in `data` under distinct keys; the reference stays a reference.
        let r: Record = serde_json::from_str(&json).expect("record");
        assert_eq!(
            r.data.keys().collect::<Vec<_>>(),
            ["password", "password.1", "password.2"]
        );
        assert_eq!(r.refs, ["password.1"]);
        let back = r.into_secret("team").expect("secret");
        let entries = back.registries();
        let shown: Vec<(&str, &str, Option<&str>)> = entries
            .iter()
            .map(|e| (e.server.as_str(), e.username.as_str(), e.email.as_deref()))
            .collect();
        assert_eq!(
            shown,
            [
                ("quay.io", "robot", None),
                ("ghcr.io/org", "octo", Some("o@example.com")),
                ("ghcr.io", "wide", None)
            ]
        );
        assert!(
            matches!(&entries[1].password, SecretValue::Ref(r) if r.as_str() == "env://GHCR_PW")
        );
        assert!(
            matches!(&entries[2].password, SecretValue::Literal(p) if p.expose_secret() == "wide-pw")
        );
        assert!(!format!("{back:?}").contains("pw"), "{back:?}");
    }

    #[test]
    fn records_without_further_registries_read_and_write_as_before() {
        let old = r#"{"name":"r","type":"kubernetes.io/dockerconfigjson","scope":"namespace","created":1,"server":"quay.io","username":"u","data":{"password":"p"}}"#;
        let r: Record = serde_json::from_str(old).expect("record");
        let s = r.into_secret("default").expect("secret");
        assert_eq!(s.servers(), ["quay.io"]);
        let again = serde_json::to_string(&Record::from_secret(&s)).expect("json");
        assert_eq!(again, old);
    }

    #[test]
    fn the_most_specific_registry_of_a_secret_answers() {
        let s = two_registries();
        let key = |k: &str| ServerKey::parse(k).expect("key");
        assert_eq!(s.registry_for(&key("quay.io/x/y")), Some((2, 0)));
        assert_eq!(s.registry_for(&key("ghcr.io/org/app")), Some((1, 1)));
        assert_eq!(s.registry_for(&key("ghcr.io/other/app")), Some((2, 2)));
        assert_eq!(s.registry_for(&key("docker.io/library/alpine")), None);
    }
}
