//! `pullsecret doctor [SERVER]`: which store is in use and which source answers for a registry.

use anyhow::Result;
use clap::Args;

use super::output::outln;
use super::Ctx;
use crate::store::chain::Chain;

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Registry to look up (e.g. ghcr.io, docker.io, 127.0.0.1:5000/org/repo).
    server: Option<String>,
}

pub fn run(ctx: &Ctx, a: &DoctorArgs) -> Result<()> {
    let backend = ctx.store.backend_name();
    outln!("store: {backend} ({})", ctx.store_why);
    outln!("  where: {}", where_secrets_live(backend, ctx));
    outln!("namespace: {}", ctx.config.namespace());
    let Some(server) = &a.server else {
        return Ok(());
    };
    let chain = Chain {
        store: ctx.store.as_ref(),
        namespace: ctx.config.namespace(),
        kube_dirs: ctx.config.kube_secret_dirs.clone(),
    };
    let (result, attempts) = chain.explain(server);
    for at in &attempts {
        outln!("  {}: {}", at.source, at.outcome);
    }
    match result {
        Ok(Some((secret, source))) => {
            outln!("answer: username {:?} from {source}", secret.username)
        }
        Ok(None) => outln!("answer: none (clients will pull anonymously)"),
        Err(e) => outln!("answer: error: {e}"),
    }
    Ok(())
}

/// Where the backend in use keeps secrets, in words a user can check with the backend's own tools.
fn where_secrets_live(backend: &str, ctx: &Ctx) -> String {
    match backend {
        "file" => format!(
            "encrypted files in {}, master key {}",
            ctx.paths.data_dir.display(),
            ctx.paths.key_file.display()
        ),
        "secret-service" => "items with attributes service=pullsecret, namespace, name in the default collection (secret-tool search service pullsecret)".into(),
        "keyutils" => "user keys pullsecret:* in the kernel user keyring @u (keyctl show @u); they do not survive a reboot".into(),
        "keychain" => "generic passwords of service pullsecret in the login keychain".into(),
        "wincred" => "generic credentials *.pullsecret in the Windows Credential Manager".into(),
        other => other.to_string(),
    }
}
