//! The lookup chain for a registry: own store (namespace, then global-scoped), docker
//! config (`credHelpers`, `credsStore`, `auths`), containers auth.json, Kubernetes Secret files.

use std::fmt;
use std::path::{Path, PathBuf};

use super::cred_helper::{run_helper_get, CredHelperError};
use super::docker_config::{self, AuthLookup};
use super::kube::{self, KubeError};
use super::{RegistryEntry, Scope, SecretStore, StoreError, StoreRefs, StoredSecret};
use crate::secret::{RefError, RefResolver, RegistrySecret, ServerKey};

/// Our own helper's name; the chain never calls itself through docker's config.
pub const SELF_HELPER: &str = "pullsecret";

/// Where a credential came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Store { namespace: String, name: String },
    DockerConfig(PathBuf),
    Helper { config: PathBuf, helper: String },
    AuthJson(PathBuf),
    KubeSecret(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Store { namespace, name } => {
                write!(f, "pullsecret store, secret {namespace}/{name}")
            }
            Source::DockerConfig(p) => write!(f, "docker config {}", p.display()),
            Source::Helper { config, helper } => {
                write!(
                    f,
                    "docker-credential-{helper} (named in {})",
                    config.display()
                )
            }
            Source::AuthJson(p) => write!(f, "containers auth.json {}", p.display()),
            Source::KubeSecret(p) => write!(f, "Kubernetes Secret file {}", p.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{source_name}: {error}")]
    Ref {
        source_name: String,
        error: RefError,
    },
    #[error(transparent)]
    Helper(#[from] CredHelperError),
    #[error(transparent)]
    KubeDir(#[from] KubeDirError),
    #[error("{0}")]
    Source(String),
}

/// A Kubernetes Secret directory or file that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KubeDirError {
    #[error("{}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", .path.display())]
    Parse { path: PathBuf, source: KubeError },
}

/// What a lookup found: the credentials and where they came from.
pub type Found = Option<(RegistrySecret, Source)>;

/// One step of a lookup, for `pullsecret doctor`.
#[derive(Debug)]
pub struct Attempt {
    pub source: String,
    pub outcome: String,
}

pub struct Chain<'a> {
    pub store: &'a dyn SecretStore,
    pub namespace: String,
    pub kube_dirs: Vec<PathBuf>,
}

impl Chain<'_> {
    /// The first source that has credentials for `server`, with the value resolved.
    pub fn lookup(&self, server: &str) -> Result<Found, ChainError> {
        self.walk(server, &mut |_| {})
    }

    /// Like `lookup`, recording what each source said.
    pub fn explain(&self, server: &str) -> (Result<Found, ChainError>, Vec<Attempt>) {
        let mut attempts = Vec::new();
        let r = self.walk(server, &mut |a| attempts.push(a));
        (r, attempts)
    }

    fn walk(&self, server: &str, note: &mut dyn FnMut(Attempt)) -> Result<Found, ChainError> {
        let key = ServerKey::parse(server).map_err(|e| ChainError::Source(e.to_string()))?;
        let mut deferred: Option<ChainError> = None;

        // 1. Own store.
        match self.store_matches(&key) {
            Ok(matches) if !matches.is_empty() => {
                let found = &matches[0];
                let stored = &found.secret;
                let source = Source::Store {
                    namespace: stored.namespace.clone(),
                    name: stored.name.clone(),
                };
                note(Attempt {
                    source: "pullsecret store".into(),
                    outcome: if found.primary {
                        format!("found secret {}/{}", stored.namespace, stored.name)
                    } else {
                        format!(
                            "found secret {}/{} (its registry {})",
                            stored.namespace, stored.name, found.registry.server
                        )
                    },
                });
                if matches.len() > 1 {
                    note(Attempt {
                        source: "pullsecret store".into(),
                        outcome: format!(
                            "also matching, not used: {} ({RULE})",
                            describe(&matches[1..])
                        ),
                    });
                }
                let refs = StoreRefs(self.store);
                let resolver = RefResolver::with_store(&refs);
                return match found.registry.resolve(&resolver) {
                    Ok(s) => Ok(Some((s, source))),
                    Err(error) => Err(ChainError::Ref {
                        source_name: source.to_string(),
                        error,
                    }),
                };
            }
            Ok(_) => note(Attempt {
                source: format!(
                    "pullsecret store ({}, namespace {} and global)",
                    self.store.backend_name(),
                    self.namespace
                ),
                outcome: "no secret for this registry".into(),
            }),
            Err(e) => {
                note(Attempt {
                    source: "pullsecret store".into(),
                    outcome: format!("error: {e}"),
                });
                deferred.get_or_insert(ChainError::Store(e));
            }
        }

        // 2. docker config.json, then 3. containers auth.json lookup order.
        let docker_path = docker_config::docker_config_path();
        let mut files: Vec<(PathBuf, bool)> = vec![(docker_path.clone(), true)];
        for p in docker_config::auth_json_paths() {
            if p != docker_path {
                files.push((p, false));
            }
        }
        for (path, is_docker) in files {
            let label = if is_docker {
                "docker config"
            } else {
                "containers auth.json"
            };
            let cfg = match docker_config::load(&path) {
                Ok(Some(c)) => c,
                Ok(None) => {
                    note(Attempt {
                        source: format!("{label} {}", path.display()),
                        outcome: "no such file".into(),
                    });
                    continue;
                }
                Err(e) => {
                    note(Attempt {
                        source: format!("{label} {}", path.display()),
                        outcome: format!("error: {e}"),
                    });
                    deferred.get_or_insert(ChainError::Source(e.to_string()));
                    continue;
                }
            };
            match cfg.lookup(&key) {
                Some(AuthLookup::Credentials(s)) => {
                    note(Attempt {
                        source: format!("{label} {}", path.display()),
                        outcome: "found credentials".into(),
                    });
                    let src = if is_docker {
                        Source::DockerConfig(path)
                    } else {
                        Source::AuthJson(path)
                    };
                    return Ok(Some((s, src)));
                }
                Some(AuthLookup::Helper(h)) if h == SELF_HELPER => note(Attempt {
                    source: format!("{label} {}", path.display()),
                    outcome: "names pullsecret itself as the helper; skipped".into(),
                }),
                Some(AuthLookup::Helper(h)) => match run_helper_get(&h, server) {
                    Ok(Some(s)) => {
                        note(Attempt {
                            source: format!("docker-credential-{h}"),
                            outcome: "found credentials".into(),
                        });
                        return Ok(Some((
                            s,
                            Source::Helper {
                                config: path,
                                helper: h,
                            },
                        )));
                    }
                    Ok(None) => note(Attempt {
                        source: format!("docker-credential-{h}"),
                        outcome: "not found".into(),
                    }),
                    Err(e) => {
                        note(Attempt {
                            source: format!("docker-credential-{h}"),
                            outcome: format!("error: {e}"),
                        });
                        deferred.get_or_insert(ChainError::Helper(e));
                    }
                },
                None => note(Attempt {
                    source: format!("{label} {}", path.display()),
                    outcome: "no entry for this registry".into(),
                }),
            }
        }

        // 4. Kubernetes Secret files.
        for dir in &self.kube_dirs {
            match from_kube_dir(dir, &key) {
                Ok(Some((s, p))) => {
                    note(Attempt {
                        source: format!("Kubernetes Secret file {}", p.display()),
                        outcome: "found credentials".into(),
                    });
                    return Ok(Some((s, Source::KubeSecret(p))));
                }
                Ok(None) => note(Attempt {
                    source: format!("Kubernetes Secrets in {}", dir.display()),
                    outcome: "no entry for this registry".into(),
                }),
                Err(e) => {
                    note(Attempt {
                        source: format!("Kubernetes Secrets in {}", dir.display()),
                        outcome: format!("error: {e}"),
                    });
                    deferred.get_or_insert(ChainError::KubeDir(e));
                }
            }
        }
        match deferred {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    /// Every stored docker-registry secret that matches `key`, the one that answers first:
    /// this namespace's matches, then `global`-scoped secrets of other namespaces, each group
    /// ordered by [`RULE`].
    pub fn store_matches(&self, key: &ServerKey) -> Result<Vec<Match>, StoreError> {
        let own = self.store.list(Some(&self.namespace))?;
        let mut out = ranked_matches(own.iter(), key);
        let all = self.store.list(None)?;
        let global = all
            .iter()
            .filter(|s| s.namespace != self.namespace && s.scope == Scope::Global);
        out.extend(ranked_matches(global, key));
        Ok(out)
    }
}

/// How one secret is chosen among several that match, in words for users.
pub const RULE: &str =
    "the most specific server key wins, then the most recently written secret, then the name in alphabetical order";

/// A stored docker-registry secret that answers for a server key, and the one of its
/// registries that matched (a secret imported from Kubernetes may hold several).
#[derive(Debug, Clone)]
pub struct Match {
    pub secret: StoredSecret,
    /// The matching registry's server and credentials (password not yet resolved).
    pub registry: RegistryEntry,
    /// Whether `registry` is the secret's primary one.
    pub primary: bool,
}

/// `ns/name (server S)` for each match, S the registry that matched; comma-separated.
pub fn describe(matches: &[Match]) -> String {
    matches
        .iter()
        .map(|m| {
            format!(
                "{}/{} (server {})",
                m.secret.namespace, m.secret.name, m.registry.server
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The docker-registry secrets with a registry whose server key is a candidate of `key`, best
/// first: the most specific key (of the secret's best-matching registry, see
/// [`StoredSecret::registry_for`]), then the most recently written (`created`), then
/// namespace and name. Each with the registry that matched.
pub fn ranked_matches<'s>(
    secrets: impl Iterator<Item = &'s StoredSecret>,
    key: &ServerKey,
) -> Vec<Match> {
    let mut hits: Vec<(usize, usize, &StoredSecret)> = secrets
        .filter_map(|s| {
            let (rank, index) = s.registry_for(key)?;
            Some((rank, index, s))
        })
        .collect();
    hits.sort_by(|(ra, _, a), (rb, _, b)| {
        ra.cmp(rb)
            .then(b.created.cmp(&a.created))
            .then_with(|| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)))
    });
    hits.into_iter()
        .filter_map(|(_, index, s)| {
            Some(Match {
                registry: s.registries().into_iter().nth(index)?,
                primary: index == 0,
                secret: s.clone(),
            })
        })
        .collect()
}

/// The secret that answers for `key` among `secrets`, with the registry of it that matched
/// (see [`ranked_matches`]). Every use of a stored secret's credentials for a server goes
/// through this or [`Chain::store_matches`].
pub fn best_match<'s>(
    secrets: impl Iterator<Item = &'s StoredSecret>,
    key: &ServerKey,
) -> Option<Match> {
    ranked_matches(secrets, key).into_iter().next()
}

fn from_kube_dir(
    dir: &Path,
    key: &ServerKey,
) -> Result<Option<(RegistrySecret, PathBuf)>, KubeDirError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(KubeDirError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    let mut best: Option<(usize, RegistrySecret, PathBuf)> = None;
    for path in paths {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "json" | "yaml" | "yml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|source| KubeDirError::Read {
            path: path.clone(),
            source,
        })?;
        let parse_err = |source| KubeDirError::Parse {
            path: path.clone(),
            source,
        };
        let secrets = kube::parse_secrets(&text).map_err(parse_err)?;
        for ks in &secrets {
            if !matches!(
                ks.kind.as_str(),
                "kubernetes.io/dockerconfigjson" | "kubernetes.io/dockercfg"
            ) {
                continue;
            }
            for entry in kube::registry_entries(ks).map_err(parse_err)? {
                let Ok(ek) = ServerKey::parse(&entry.server) else {
                    continue;
                };
                if let Some(rank) = key.candidates().iter().position(|c| c == &ek) {
                    if best.as_ref().is_none_or(|(r, _, _)| rank < *r) {
                        best = Some((rank, entry, path.clone()));
                    }
                }
            }
        }
    }
    Ok(best.map(|(_, s, p)| (s, p)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretValue;
    use crate::store::{Origin, SecretData};
    use secrecy::SecretString;

    fn secret(ns: &str, name: &str, server: &str, created: u64) -> StoredSecret {
        StoredSecret {
            name: name.into(),
            namespace: ns.into(),
            scope: Scope::Namespace,
            created,
            origin: Origin::Created,
            data: SecretData::DockerRegistry {
                server: server.into(),
                username: name.into(),
                password: SecretValue::Literal(SecretString::from("p".to_string())),
                email: None,
                also: Vec::new(),
            },
        }
    }

    #[test]
    fn matches_rank_by_specificity_then_recency_then_name() {
        let secrets = [
            secret("a", "host-new", "quay.io", 30),
            secret("a", "org-old", "quay.io/org", 10),
            secret("a", "org-new-b", "https://quay.io/org", 20),
            secret("a", "org-new-a", "quay.io/org/", 20),
            secret("a", "other", "quay.io/other", 99),
        ];
        let key = ServerKey::parse("quay.io/org/app").expect("key");
        let names: Vec<String> = ranked_matches(secrets.iter(), &key)
            .into_iter()
            .map(|m| m.secret.name)
            .collect();
        assert_eq!(names, ["org-new-a", "org-new-b", "org-old", "host-new"]);
        // The order of the input does not matter.
        assert_eq!(
            best_match(secrets.iter(), &key).map(|m| m.secret.name),
            Some("org-new-a".to_string())
        );
        let reversed: Vec<&StoredSecret> = secrets.iter().rev().collect();
        assert_eq!(
            best_match(reversed.into_iter(), &key).map(|m| m.secret.name),
            Some("org-new-a".to_string())
        );
    }

    #[test]
    fn a_further_registry_matches_with_its_own_specificity_and_credentials() {
        let mut both = secret("a", "both", "quay.io", 10);
        if let SecretData::DockerRegistry { also, .. } = &mut both.data {
            also.push(RegistryEntry {
                server: "ghcr.io/org".into(),
                username: "octo".into(),
                password: SecretValue::Literal(SecretString::from("o".to_string())),
                email: None,
            });
        }
        let secrets = [secret("a", "ghcr-wide", "ghcr.io", 99), both];
        let key = ServerKey::parse("ghcr.io/org/app").expect("key");
        let m = best_match(secrets.iter(), &key).expect("a match");
        assert_eq!(
            (
                m.secret.name.as_str(),
                m.registry.username.as_str(),
                m.primary
            ),
            ("both", "octo", false)
        );
        assert_eq!(
            describe(&ranked_matches(secrets.iter(), &key)),
            "a/both (server ghcr.io/org), a/ghcr-wide (server ghcr.io)"
        );
        // For the primary's registry the primary answers.
        let quay = ServerKey::parse("quay.io/x").expect("key");
        let m = best_match(secrets.iter(), &quay).expect("a match");
        assert_eq!((m.registry.username.as_str(), m.primary), ("both", true));
    }
}
