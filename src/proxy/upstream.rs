//! A configured upstream at run time: its client and its credentials, resolved from the
//! secret store at use time so created, rotated and deleted secrets apply without a restart.

use std::sync::Arc;

use secrecy::SecretString;

use super::config::UpstreamConfig;
use super::error::SetupError;
use super::route::UpstreamNames;
use crate::registry::auth::{Credentials, TokenCache};
use crate::registry::breaker::BreakerConfig;
use crate::registry::client::{Client, UpstreamOptions};
use crate::secret::ServerKey;
use crate::secret::{value_identity, RefResolver, SecretValue};
use crate::store::chain::best_match;
use crate::store::chain::Match;
use crate::store::{Scope, SecretStore, StoreRefs, StoredSecret};

pub struct Upstream {
    pub cfg: UpstreamConfig,
    pub names: UpstreamNames,
    pub client: Client,
    /// `host[:port]` of each fallback URL, in order.
    pub fallback_hosts: Vec<String>,
    /// `max_bytes_per_second`, shared by every transfer from this upstream.
    pub bytes_cap: Option<Arc<crate::registry::rate_cap::RateCap>>,
}

/// Why credentials could not be had; the message names the secret, never its value.
#[derive(Debug, Clone, thiserror::Error)]
#[error("upstream {upstream}: {reason}")]
pub struct CredentialError {
    pub upstream: String,
    pub reason: String,
}

impl Upstream {
    /// `client_tls` is the PEM (certificate and key) of a `client_tls_secret`, read by the caller.
    pub fn new(
        cfg: UpstreamConfig,
        tokens: Arc<TokenCache>,
        timeout: std::time::Duration,
        client_tls: Option<Vec<u8>>,
    ) -> Result<Self, SetupError> {
        let host = cfg
            .host()
            .map_err(|e| SetupError::new(format!("upstream {}", cfg.name), e))?;
        let read = |p: &Option<std::path::PathBuf>| -> Result<Option<Vec<u8>>, SetupError> {
            p.as_ref()
                .map(|p| {
                    std::fs::read(p).map_err(|e| {
                        SetupError::new(format!("upstream {}: {}", cfg.name, p.display()), e)
                    })
                })
                .transpose()
        };
        let ca_pem = read(&cfg.ca)?;
        let client_identity_pem = match (read(&cfg.client_cert)?, read(&cfg.client_key)?) {
            (Some(mut c), Some(k)) => {
                c.push(b'\n');
                c.extend_from_slice(&k);
                Some(c)
            }
            (None, None) => client_tls,
            _ => {
                return Err(SetupError::new(
                    format!("upstream {}", cfg.name),
                    "client_cert and client_key go together",
                ))
            }
        };
        let opts = UpstreamOptions {
            host: host.clone(),
            insecure: cfg.insecure,
            ca_pem,
            client_identity_pem,
            token_style: cfg.token_style,
            connect_timeout: Some(timeout),
            read_timeout: Some(timeout),
            token_realms: cfg.token_realms.clone(),
            breaker: BreakerConfig {
                failures: cfg.circuit_failures,
                ..Default::default()
            },
            request_cap: match cfg.max_requests_per_second {
                Some(n) => Some(Arc::new(
                    crate::registry::rate_cap::RateCap::new(n).ok_or_else(|| {
                        SetupError::new(
                            format!("upstream {} max_requests_per_second {n}", cfg.name),
                            "expected a number above 0 (leave it out for no cap)",
                        )
                    })?,
                )),
                None => None,
            },
        };
        let bytes_cap = match cfg.max_bytes_per_second.as_deref() {
            Some(text) => {
                let n = super::evict::parse_size(text).ok_or_else(|| {
                    SetupError::new(
                        format!("upstream {} max_bytes_per_second {text:?}", cfg.name),
                        "expected a size such as 20MiB",
                    )
                })?;
                Some(Arc::new(
                    crate::registry::rate_cap::RateCap::new(n as f64).ok_or_else(|| {
                        SetupError::new(
                            format!("upstream {} max_bytes_per_second {text:?}", cfg.name),
                            "expected a size above 0 (leave it out for no cap)",
                        )
                    })?,
                ))
            }
            None => None,
        };
        let mut client = Client::new(opts.clone(), tokens.clone())
            .map_err(|e| SetupError::new(format!("upstream {}", cfg.name), e))?;
        let mut fallback_hosts = Vec::new();
        for url in &cfg.fallback_urls {
            let what = format!("upstream {} fallback {url}", cfg.name);
            let plain = url.starts_with("http://");
            if plain && !cfg.insecure {
                return Err(SetupError::new(
                    what,
                    "an http:// URL needs insecure = true",
                ));
            }
            let probe = UpstreamConfig {
                url: url.clone(),
                ..cfg.clone()
            };
            let host = probe.host().map_err(|e| SetupError::new(&what, e))?;
            fallback_hosts.push(host.clone());
            let fallback = Client::new(
                UpstreamOptions {
                    host,
                    insecure: plain,
                    ..opts.clone()
                },
                tokens.clone(),
            )
            .map_err(|e| SetupError::new(&what, e))?;
            client = client.with_fallback(fallback);
        }
        let names = UpstreamNames {
            name: cfg.name.clone(),
            host,
            aliases: cfg.aliases.clone(),
            docker_hub: cfg.is_docker_hub(),
        };
        Ok(Self {
            cfg,
            names,
            client,
            fallback_hosts,
            bytes_cap,
        })
    }

    /// Resolves the credentials `who` may use for `repo` on this upstream, now (blocking: the
    /// store and `cmd://` are sync). An explicit `secret`/`username` in the config comes first
    /// (of a secret holding several registries, the one matching `host/repo`, else its
    /// primary); otherwise the store is searched by server key (`host/repo` down to `host`).
    pub fn credentials(
        &self,
        store: &dyn SecretStore,
        who: &Requester,
        repo: &str,
    ) -> Result<Option<Picked>, CredentialError> {
        let err = |reason: String| CredentialError {
            upstream: self.cfg.name.clone(),
            reason,
        };
        let refs = StoreRefs(store);
        let resolver = RefResolver::with_store(&refs);
        if let (Some(user), Some(pass)) = (&self.cfg.username, &self.cfg.password) {
            // Config credentials belong to the home namespace under their declared scope,
            // exactly like a stored secret there (DESIGN.md: namespaces and scopes).
            if !who.may_use_scope(self.cfg.scope, &who.home) {
                tracing::info!(
                    upstream = %self.cfg.name,
                    client_namespace = %who.namespace,
                    scope = self.cfg.scope.as_str(),
                    home = %who.home,
                    "config credentials are not for this client's namespace (scope); pulling anonymously"
                );
                return Ok(None);
            }
            let v = SecretValue::from_user(pass);
            let value = resolver.resolve_value(&v).map_err(|e| err(e.to_string()))?;
            let grant = format!("config:{}", self.cfg.name);
            return Ok(Some(Picked {
                creds: credentials(&grant, user.clone(), &v, value),
                grant,
            }));
        }
        let key = ServerKey::parse(&format!("{}/{repo}", self.names.host)).ok();
        let found = if let Some(spec) = &self.cfg.secret {
            let crate::secret::SecretName {
                namespace: ns,
                name,
            } = crate::secret::SecretName::parse(spec, &who.home);
            let secret = store
                .get(&ns, &name)
                .map_err(|e| err(e.to_string()))?
                .ok_or_else(|| err(format!("secret {ns}/{name} does not exist (create it with `pullsecret secret create docker-registry {name} -n {ns} …`)")))?;
            if !who.may_use(&secret) {
                tracing::info!(
                    upstream = %self.cfg.name,
                    client_namespace = %who.namespace,
                    secret = %format!("{ns}/{name}"),
                    scope = secret.scope.as_str(),
                    "the configured secret is not for this client's namespace (scope); pulling anonymously"
                );
                return Ok(None);
            }
            let matching = key
                .as_ref()
                .and_then(|k| best_match(std::iter::once(&secret), k));
            match matching {
                Some(m) => m,
                None => {
                    let Some(registry) = secret.registries().into_iter().next() else {
                        return Err(err(format!(
                            "secret {}/{} is not a docker-registry secret",
                            secret.namespace, secret.name
                        )));
                    };
                    Match {
                        secret,
                        registry,
                        primary: true,
                    }
                }
            }
        } else {
            let Some(key) = key else {
                return Ok(None);
            };
            let all = store.list(None).map_err(|e| err(e.to_string()))?;
            let own = all
                .iter()
                .filter(|s| s.namespace == who.namespace && who.may_use(s));
            let shared = all
                .iter()
                .filter(|s| s.namespace != who.namespace && who.may_use(s));
            match best_match(own, &key).or_else(|| best_match(shared, &key)) {
                Some(m) => m,
                None => {
                    if let Some(Match { secret: s, .. }) = best_match(all.iter(), &key) {
                        tracing::info!(
                            upstream = %self.cfg.name,
                            client_namespace = %who.namespace,
                            secret = %format!("{}/{}", s.namespace, s.name),
                            scope = s.scope.as_str(),
                            "a secret matches but its scope excludes this client's namespace; pulling anonymously"
                        );
                    }
                    return Ok(None);
                }
            }
        };
        let Match {
            secret,
            registry,
            primary,
        } = found;
        let value = resolver
            .resolve_value(&registry.password)
            .map_err(|e| err(e.to_string()))?;
        // Each registry of a secret is its own identity: tokens and links stay per registry.
        let grant = if primary {
            format!("secret:{}/{}", secret.namespace, secret.name)
        } else {
            format!(
                "secret:{}/{}@{}",
                secret.namespace, secret.name, registry.server
            )
        };
        let mut creds = credentials(&grant, registry.username, &registry.password, value);
        // Fallback URLs on other hosts get the same secret's entry for that host, if it has
        // one: per-URL credentials that never leave the requester's own secret.
        for host in &self.fallback_hosts {
            let Ok(k) = ServerKey::parse(&format!("{host}/{repo}")) else {
                continue;
            };
            let Some((_, index)) = secret.registry_for(&k) else {
                continue;
            };
            let Some(entry) = secret.registries().into_iter().nth(index) else {
                continue;
            };
            if entry.server == registry.server {
                continue;
            }
            let value = resolver
                .resolve_value(&entry.password)
                .map_err(|e| err(e.to_string()))?;
            let alt_grant = format!(
                "secret:{}/{}@{}",
                secret.namespace, secret.name, entry.server
            );
            creds.alternates.push((
                host.clone(),
                credentials(&alt_grant, entry.username, &entry.password, value),
            ));
        }
        Ok(Some(Picked { creds, grant }))
    }
}

/// Who a request is for: a client of a namespace, or the proxy's own background work.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Requester {
    /// The client's namespace (`anonymous` for unauthenticated clients when client auth is on).
    pub namespace: String,
    /// Where bare secret names in the config live.
    pub home: String,
    /// Prefetch / warm-up: may use `global-private` secrets.
    pub background: bool,
}

impl Requester {
    /// The scope rules of DESIGN.md: namespace secrets for their namespace, global for all,
    /// global-private only for background work.
    pub fn may_use(&self, s: &StoredSecret) -> bool {
        self.may_use_scope(s.scope, &s.namespace)
    }

    /// The same rule for a credential of `scope` that belongs to `namespace`.
    pub fn may_use_scope(&self, scope: Scope, namespace: &str) -> bool {
        match scope {
            Scope::Global => true,
            Scope::Namespace => namespace == self.namespace,
            Scope::GlobalPrivate => self.background,
        }
    }
}

/// Credentials chosen for a request, and the identity content fetched with them is linked to.
#[derive(Debug, Clone)]
pub struct Picked {
    pub creds: Credentials,
    /// `secret:NS/NAME` (`secret:NS/NAME@SERVER` for a secret's further registry),
    /// `config:UPSTREAM`: stable across restarts and rotations.
    pub grant: String,
}

/// Credentials whose cache identity is the secret's own identity (`grant`) plus the value's:
/// a reference's `cacheKey` keeps tokens across rotations of this one secret, never shares
/// them with another secret (of another namespace) that happens to use the same key.
fn credentials(
    grant: &str,
    username: String,
    source: &SecretValue,
    value: SecretString,
) -> Credentials {
    let identity = match source {
        SecretValue::Ref(r) => r.cache_identity(&value),
        SecretValue::Literal(_) => value_identity(&value),
    };
    Credentials {
        identity: format!("{grant}|{username}:{identity}"),
        username,
        password: value,
        alternates: Vec::new(),
    }
}
