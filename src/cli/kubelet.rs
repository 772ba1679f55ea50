//! `pullsecret kubelet-credential-provider`: answer one kubelet request from the lookup chain.

use std::io::Read;

use anyhow::{Context, Result};

use super::output::out;
use super::{Cli, Ctx};
use crate::kubelet::{auth_key, lookup_key, parse_request, response, CacheKeyType};
use crate::store::chain::Chain;

pub fn run(cli: &Cli) -> Result<()> {
    let mut text = String::new();
    std::io::stdin()
        .take(1 << 20)
        .read_to_string(&mut text)
        .context("reading the request from stdin")?;
    let request = parse_request(&text)?;
    let ctx = Ctx::new(cli)?;
    let chain = Chain {
        store: ctx.store.as_ref(),
        namespace: ctx.config.namespace(),
        kube_dirs: ctx.config.kube_secret_dirs.clone(),
    };
    let duration =
        std::env::var("PULLSECRET_KUBELET_CACHE_DURATION").unwrap_or_else(|_| "5m0s".into());
    let found = chain.lookup(&lookup_key(&request.image))?;
    let out = match &found {
        Some((secret, _)) => {
            let (key, cache) = auth_key(&secret.server)
                .unwrap_or_else(|| (request.image.registry().to_string(), CacheKeyType::Registry));
            response(request.api_version, Some((&key, secret)), cache, &duration)
        }
        None => response(request.api_version, None, CacheKeyType::Image, &duration),
    };
    out!("{out}");
    Ok(())
}
