//! `pullsecret login` / `logout`: store or remove a registry's credentials keyed by server, like docker.

use std::io::Read;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use secrecy::SecretString;

use super::secret::registry_stored;
use super::Ctx;
use crate::secret::{RegistrySecret, ServerKey};
use crate::store::{now_unix, validate_namespace, Scope, SecretData};

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Registry server (default Docker Hub).
    #[arg(default_value = "docker.io")]
    server: String,
    #[arg(short = 'u', long)]
    username: String,
    /// Password (visible in `ps`; prefer --password-stdin).
    #[arg(short = 'p', long, conflicts_with = "password_stdin")]
    password: Option<String>,
    #[arg(long)]
    password_stdin: bool,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    #[arg(default_value = "docker.io")]
    server: String,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

pub fn login(ctx: &Ctx, a: &LoginArgs) -> Result<()> {
    let key = ServerKey::parse(&a.server).with_context(|| format!("server {:?}", a.server))?;
    let password = match (&a.password, a.password_stdin) {
        (Some(p), _) => SecretString::from(p.clone()),
        (None, true) => {
            let mut s = zeroize::Zeroizing::new(String::new());
            std::io::stdin()
                .take(64 * 1024)
                .read_to_string(&mut s)
                .context("reading stdin")?;
            let p = s.trim_end_matches(['\n', '\r']);
            if p.is_empty() {
                bail!("empty password on stdin");
            }
            SecretString::from(p.to_string())
        }
        (None, false) => bail!("give --password-stdin (or -p)"),
    };
    if a.username.is_empty() {
        bail!("empty username");
    }
    let ns = ctx.namespace(a.namespace.as_deref());
    validate_namespace(&ns)?;
    let name = key.secret_name();
    let entry = RegistrySecret::new(key.to_string(), a.username.clone(), password);
    ctx.store.put(
        registry_stored(&name, &ns, Scope::Namespace, now_unix(), entry),
        true,
    )?;
    println!("Login Succeeded (stored as secret {ns}/{name})");
    Ok(())
}

pub fn logout(ctx: &Ctx, a: &LogoutArgs) -> Result<()> {
    let key = ServerKey::parse(&a.server).with_context(|| format!("server {:?}", a.server))?;
    let ns = ctx.namespace(a.namespace.as_deref());
    validate_namespace(&ns)?;
    let names: Vec<String> = ctx
        .store
        .list(Some(&ns))?
        .into_iter()
        .filter(|s| matches!(&s.data, SecretData::DockerRegistry { server, .. } if ServerKey::parse(server).ok().as_ref() == Some(&key)))
        .map(|s| s.name)
        .collect();
    if names.is_empty() {
        println!("Not logged in to {key}");
        return Ok(());
    }
    ctx.store.delete(&ns, &names).map_err(|e| anyhow!(e))?;
    println!("Removing login credentials for {key}");
    Ok(())
}
