//! `pullsecret login` / `logout`: store or remove a registry's credentials keyed by server, like docker.

// Prompts and notes go to the terminal.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{BufRead, IsTerminal, Read, Write};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use secrecy::SecretString;

use super::output::outln;
use super::Ctx;
use crate::registry::auth::Credentials;
use crate::registry_login::{self, Target};
use crate::secret::{RegistrySecret, ServerKey, DOCKER_HUB_KEY};
use crate::store::chain::{describe, Chain, RULE};
use crate::store::login::{erase_login, store_login};
use crate::store::validate_namespace;

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Registry server (default Docker Hub).
    #[arg(default_value = "docker.io")]
    server: String,
    /// User name (prompted for on a terminal when not given).
    #[arg(short = 'u', long)]
    username: Option<String>,
    /// Password (visible in `ps`; prefer --password-stdin, or the prompt on a terminal).
    #[arg(short = 'p', long, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    password_stdin: bool,
    /// Namespace to store the login secret in (default from PULLSECRET_NAMESPACE or config).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Store without first checking the credentials against the registry's `/v2/`.
    #[arg(long)]
    no_verify: bool,
    /// Check over plain HTTP (loopback registries fall back to it without this flag).
    #[arg(long)]
    insecure: bool,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// Registry server (default Docker Hub).
    #[arg(default_value = "docker.io")]
    server: String,
    /// Namespace whose login secret to remove (default from PULLSECRET_NAMESPACE or config).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

/// How long the check may wait for the registry (and its token endpoint).
const VERIFY_TIMEOUT: Duration = Duration::from_secs(30);

pub fn login(ctx: &Ctx, a: &LoginArgs) -> Result<()> {
    let key = ServerKey::parse(&a.server).with_context(|| format!("server {:?}", a.server))?;
    let ns = ctx.namespace(a.namespace.as_deref());
    validate_namespace(&ns)?;
    let username = match &a.username {
        Some(u) => u.clone(),
        None if !a.password_stdin && std::io::stdin().is_terminal() => prompt_username()?,
        None => bail!("give -u USERNAME (no terminal to ask on)"),
    };
    if username.is_empty() {
        bail!("empty username");
    }
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
        (None, false) if std::io::stdin().is_terminal() => {
            let p = zeroize::Zeroizing::new(
                rpassword::prompt_password("Password: ").context("reading the password")?,
            );
            if p.is_empty() {
                bail!("empty password");
            }
            SecretString::from(p.to_string())
        }
        (None, false) => bail!("give --password-stdin (or -p)"),
    };
    if !a.no_verify {
        verify(&key, a.insecure, &username, &password)
            .context("login failed; nothing was stored (use --no-verify to store anyway)")?;
    }
    let entry = RegistrySecret::new(key.to_string(), username, password);
    let name = store_login(ctx.store.as_ref(), &ns, entry)?;
    outln!("Login Succeeded (stored as secret {ns}/{name})");
    report_shadowing(ctx, &ns, &key)?;
    Ok(())
}

/// When other secrets match the server too, says on stderr which one answers and names the rest.
fn report_shadowing(ctx: &Ctx, ns: &str, key: &ServerKey) -> Result<()> {
    let chain = Chain {
        store: ctx.store.as_ref(),
        namespace: ns.to_string(),
        kube_dirs: Vec::new(),
    };
    let matches = chain.store_matches(key)?;
    if let [first, rest @ ..] = matches.as_slice() {
        if !rest.is_empty() {
            eprintln!(
                "note: {} secrets match {key}; {}/{} answers ({RULE}); not used: {}",
                matches.len(),
                first.secret.namespace,
                first.secret.name,
                describe(rest)
            );
        }
    }
    Ok(())
}

/// `GET /v2/` with the credentials, through the token flow, as docker, podman and skopeo do.
fn verify(key: &ServerKey, insecure: bool, username: &str, password: &SecretString) -> Result<()> {
    let host = if key.to_string() == DOCKER_HUB_KEY {
        crate::secret::DOCKER_HUB_API_HOST
    } else {
        key.host()
    };
    let target = Target {
        host: host.to_string(),
        insecure,
        timeout: VERIFY_TIMEOUT,
    };
    let creds = Credentials::new(username.to_string(), password.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(registry_login::verify(&target, &creds))?;
    Ok(())
}

fn prompt_username() -> Result<String> {
    eprint!("Username: ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .take(4096)
        .read_line(&mut line)
        .context("reading the username")?;
    Ok(line.trim().to_string())
}

pub fn logout(ctx: &Ctx, a: &LogoutArgs) -> Result<()> {
    let key = ServerKey::parse(&a.server).with_context(|| format!("server {:?}", a.server))?;
    let ns = ctx.namespace(a.namespace.as_deref());
    validate_namespace(&ns)?;
    let names = erase_login(ctx.store.as_ref(), &ns, &key)?;
    if names.is_empty() {
        outln!("Not logged in to {key}");
        return Ok(());
    }
    outln!("Removing login credentials for {key}");
    Ok(())
}
