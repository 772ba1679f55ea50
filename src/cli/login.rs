//! `pullsecret login` / `logout`: store or remove a registry's credentials keyed by server, like docker.

use std::io::Read;

use anyhow::{bail, Context, Result};
use clap::Args;
use secrecy::SecretString;

use super::Ctx;
use crate::secret::{RegistrySecret, ServerKey};
use crate::store::login::{erase_login, store_login};
use crate::store::validate_namespace;

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
    let entry = RegistrySecret::new(key.to_string(), a.username.clone(), password);
    let name = store_login(ctx.store.as_ref(), &ns, entry)?;
    println!("Login Succeeded (stored as secret {ns}/{name})");
    Ok(())
}

pub fn logout(ctx: &Ctx, a: &LogoutArgs) -> Result<()> {
    let key = ServerKey::parse(&a.server).with_context(|| format!("server {:?}", a.server))?;
    let ns = ctx.namespace(a.namespace.as_deref());
    validate_namespace(&ns)?;
    let names = erase_login(ctx.store.as_ref(), &ns, &key)?;
    if names.is_empty() {
        println!("Not logged in to {key}");
        return Ok(());
    }
    println!("Removing login credentials for {key}");
    Ok(())
}
