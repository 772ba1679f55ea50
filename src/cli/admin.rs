//! `pullsecret admin token create|list|revoke`: the tokens the admin API accepts.

use anyhow::Result;
use clap::Subcommand;
use secrecy::ExposeSecret;

use super::output::outln;
use super::Ctx;
use crate::admin::tokens;

#[derive(Subcommand, Debug)]
pub enum AdminCmd {
    /// Manage admin API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Create a token and print it once (only its hash is stored).
    Create {
        /// A name for the token (shown in lists and the audit log).
        name: String,
        /// Limit the token to this namespace (default: every namespace).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// List tokens (names, scopes and ages; never values).
    List,
    /// Revoke a token at once.
    Revoke {
        /// The token's name.
        name: String,
    },
}

pub fn run(ctx: &Ctx, cmd: &AdminCmd) -> Result<()> {
    let AdminCmd::Token(cmd) = cmd;
    let store = ctx.store.as_ref();
    match cmd {
        TokenCmd::Create { name, namespace } => {
            let token = tokens::create(store, name, namespace.as_deref())?;
            outln!("{}", token.expose_secret());
        }
        TokenCmd::List => {
            outln!("{:<24} {:<16} CREATED", "NAME", "NAMESPACE");
            for t in tokens::list(store)? {
                outln!(
                    "{:<24} {:<16} {}",
                    t.name,
                    t.namespace.as_deref().unwrap_or("*"),
                    t.created
                );
            }
        }
        TokenCmd::Revoke { name } => {
            tokens::revoke(store, name)?;
            outln!("admin token {name} revoked");
        }
    }
    Ok(())
}
