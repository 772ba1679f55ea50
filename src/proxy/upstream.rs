//! A configured upstream at run time: its client and its credentials, resolved from the
//! secret store at use time so created, rotated and deleted secrets apply without a restart.

use std::sync::Arc;

use secrecy::SecretString;

use super::config::UpstreamConfig;
use super::route::UpstreamNames;
use crate::registry::auth::{Credentials, TokenCache};
use crate::registry::client::{Client, UpstreamOptions};
use crate::secret::{value_identity, RefResolver, SecretValue};
use crate::store::{SecretData, SecretStore, StoreRefs};

pub struct Upstream {
    pub cfg: UpstreamConfig,
    pub names: UpstreamNames,
    pub client: Client,
}

/// Why credentials could not be had; the message names the secret, never its value.
#[derive(Debug, Clone, thiserror::Error)]
#[error("upstream {upstream}: {reason}")]
pub struct CredentialError {
    pub upstream: String,
    pub reason: String,
}

impl Upstream {
    pub fn new(
        cfg: UpstreamConfig,
        tokens: Arc<TokenCache>,
        timeout: std::time::Duration,
    ) -> Result<Self, String> {
        let host = cfg.host().map_err(|e| e.to_string())?;
        let read = |p: &Option<std::path::PathBuf>| -> Result<Option<Vec<u8>>, String> {
            p.as_ref()
                .map(|p| {
                    std::fs::read(p)
                        .map_err(|e| format!("upstream {}: {}: {e}", cfg.name, p.display()))
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
            (None, None) => None,
            _ => {
                return Err(format!(
                    "upstream {}: client_cert and client_key go together",
                    cfg.name
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
        };
        let client = Client::new(opts, tokens).map_err(|e| e.to_string())?;
        let names = UpstreamNames {
            name: cfg.name.clone(),
            host,
            aliases: cfg.aliases.clone(),
            docker_hub: cfg.is_docker_hub(),
        };
        Ok(Self { cfg, names, client })
    }

    /// Resolves this upstream's credentials now (blocking: the store and `cmd://` are sync).
    pub fn credentials(
        &self,
        store: &dyn SecretStore,
        namespace: &str,
    ) -> Result<Option<Credentials>, CredentialError> {
        let err = |reason: String| CredentialError {
            upstream: self.cfg.name.clone(),
            reason,
        };
        let refs = StoreRefs(store);
        let resolver = RefResolver::with_store(&refs);
        if let Some(spec) = &self.cfg.secret {
            let (ns, name) = spec.split_once('/').unwrap_or((namespace, spec.as_str()));
            let secret = store
                .get(ns, name)
                .map_err(|e| err(e.to_string()))?
                .ok_or_else(|| err(format!("secret {ns}/{name} does not exist (create it with `pullsecret secret create docker-registry {name} -n {ns} …`)")))?;
            let SecretData::DockerRegistry {
                username, password, ..
            } = &secret.data
            else {
                return Err(err(format!(
                    "secret {ns}/{name} is not a docker-registry secret"
                )));
            };
            let value = resolver
                .resolve_value(password)
                .map_err(|e| err(e.to_string()))?;
            return Ok(Some(credentials(username.clone(), password, value)));
        }
        if let (Some(user), Some(pass)) = (&self.cfg.username, &self.cfg.password) {
            let v = SecretValue::from_user(pass);
            let value = resolver.resolve_value(&v).map_err(|e| err(e.to_string()))?;
            return Ok(Some(credentials(user.clone(), &v, value)));
        }
        Ok(None)
    }
}

/// Credentials whose cache identity follows the reference's `cacheKey` when it has one.
fn credentials(username: String, source: &SecretValue, value: SecretString) -> Credentials {
    let identity = match source {
        SecretValue::Ref(r) => r.cache_identity(&value),
        SecretValue::Literal(_) => value_identity(&value),
    };
    Credentials {
        identity: format!("{username}:{identity}"),
        username,
        password: value,
    }
}
