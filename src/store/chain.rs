//! The lookup chain for a registry: own store (namespace, then global-scoped), docker
//! config (`credHelpers`, `credsStore`, `auths`), containers auth.json, Kubernetes Secret files.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use secrecy::SecretString;

use super::docker_config::{self, AuthLookup};
use super::{kube, Scope, SecretData, SecretStore, StoreError, StoreRefs, StoredSecret};
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
    #[error("{0}")]
    Source(String),
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
        match self.search_store(&key) {
            Ok(Some(stored)) => {
                let source = Source::Store {
                    namespace: stored.namespace.clone(),
                    name: stored.name.clone(),
                };
                note(Attempt {
                    source: "pullsecret store".into(),
                    outcome: format!("found secret {}/{}", stored.namespace, stored.name),
                });
                let refs = StoreRefs(self.store);
                let resolver = RefResolver::with_store(&refs);
                return match stored.to_registry_secret(&resolver) {
                    Ok(Some(s)) => Ok(Some((s, source))),
                    Ok(None) => Ok(None),
                    Err(error) => Err(ChainError::Ref {
                        source_name: source.to_string(),
                        error,
                    }),
                };
            }
            Ok(None) => note(Attempt {
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
                        deferred.get_or_insert(ChainError::Source(e));
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
                    deferred.get_or_insert(ChainError::Source(e));
                }
            }
        }
        match deferred {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    /// The most specific docker-registry secret for `key`: this namespace first, then
    /// `global`-scoped secrets of any namespace.
    fn search_store(&self, key: &ServerKey) -> Result<Option<StoredSecret>, StoreError> {
        let own = self.store.list(Some(&self.namespace))?;
        if let Some(s) = best_match(own.iter(), key) {
            return Ok(Some(s.clone()));
        }
        let all = self.store.list(None)?;
        let global = all
            .iter()
            .filter(|s| s.namespace != self.namespace && s.scope == Scope::Global);
        Ok(best_match(global, key).cloned())
    }
}

/// The secret whose server key is the most specific candidate of `key`.
pub fn best_match<'s>(
    secrets: impl Iterator<Item = &'s StoredSecret> + Clone,
    key: &ServerKey,
) -> Option<&'s StoredSecret> {
    for candidate in key.candidates() {
        let hit = secrets.clone().find(|s| match &s.data {
            SecretData::DockerRegistry { server, .. } => {
                ServerKey::parse(server).ok().as_ref() == Some(&candidate)
            }
            _ => false,
        });
        if hit.is_some() {
            return hit;
        }
    }
    None
}

fn from_kube_dir(dir: &Path, key: &ServerKey) -> Result<Option<(RegistrySecret, PathBuf)>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    let mut best: Option<(usize, RegistrySecret, PathBuf)> = None;
    for path in paths {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "json" | "yaml" | "yml") {
            continue;
        }
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let secrets = kube::parse_secrets(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        for ks in &secrets {
            if !matches!(
                ks.kind.as_str(),
                "kubernetes.io/dockerconfigjson" | "kubernetes.io/dockercfg"
            ) {
                continue;
            }
            for entry in
                kube::registry_entries(ks).map_err(|e| format!("{}: {e}", path.display()))?
            {
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

/// Runs `docker-credential-<helper> get`; `Ok(None)` for its not-found answer.
fn run_helper_get(helper: &str, server: &str) -> Result<Option<RegistrySecret>, String> {
    let bin = format!("docker-credential-{helper}");
    let mut child = Command::new(&bin)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {bin}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{bin}: {e}"))?;
    let stdout = zeroize::Zeroizing::new(out.stdout);
    let text = String::from_utf8_lossy(&stdout);
    if !out.status.success() {
        if text.trim() == crate::helper::NOT_FOUND {
            return Ok(None);
        }
        // Helper errors are short protocol messages, never the secret.
        return Err(format!("{bin} get failed: {}", text.trim()));
    }
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|_| format!("{bin} get printed invalid JSON"))?;
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
