//! `pullsecret doctor [SERVER]`: which store is in use and which source answers for a registry.

use anyhow::Result;
use clap::Args;

use super::Ctx;
use crate::store::chain::Chain;

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Registry to look up (e.g. ghcr.io, docker.io, 127.0.0.1:5000/org/repo).
    server: Option<String>,
}

pub fn run(ctx: &Ctx, a: &DoctorArgs) -> Result<()> {
    println!(
        "store: {} (data {}, master key {})",
        ctx.store.backend_name(),
        ctx.paths.data_dir.display(),
        ctx.paths.key_file.display()
    );
    println!("namespace: {}", ctx.config.namespace());
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
        println!("  {}: {}", at.source, at.outcome);
    }
    match result {
        Ok(Some((secret, source))) => {
            println!("answer: username {:?} from {source}", secret.username)
        }
        Ok(None) => println!("answer: none (clients will pull anonymously)"),
        Err(e) => println!("answer: error: {e}"),
    }
    Ok(())
}
