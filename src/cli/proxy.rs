//! `pullsecret proxy`: run the pull-through mirror, or print runtime config pointing at it.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};

use super::Cli;
use crate::config::Config;
use crate::proxy::config::ProxyConfig;
use crate::store::{FileStore, StorePaths};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ProxyArgs {
    /// Listen address, overriding the config (`127.0.0.1:5000`).
    #[arg(long)]
    listen: Option<String>,
    /// Cache directory, overriding the config.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<ProxyCmd>,
}

#[derive(Subcommand, Debug)]
enum ProxyCmd {
    /// Print the lines that point a runtime at this proxy.
    PrintConfig {
        #[arg(value_parser = ["containerd", "docker", "podman", "kubelet"])]
        runtime: String,
    },
}

/// Here the global `--config` names the proxy's TOML (default `$XDG_CONFIG_HOME/pullsecret/proxy.toml`,
/// else the embedded Docker Hub mirror); the store settings come from the default config.toml.
pub fn run(cli: &Cli, a: &ProxyArgs) -> Result<()> {
    let mut cfg = ProxyConfig::load(cli.config.as_deref())?;
    if let Some(l) = &a.listen {
        cfg.listen = l.clone();
    }
    if let Some(d) = &a.cache_dir {
        cfg.cache_dir = Some(d.clone());
    }
    if let Some(ProxyCmd::PrintConfig { runtime }) = &a.command {
        print!("{}", print_config(&cfg, runtime));
        return Ok(());
    }
    let general = Config::load(None)?;
    let namespace = general.namespace();
    let store = Arc::new(FileStore::new(
        StorePaths::from_env(cli.store_dir.as_deref()),
        general.limits,
    ));
    let tls = match &cfg.tls {
        Some(t) => Some(
            crate::proxy::tls::acceptor(t, store.as_ref(), &namespace).map_err(|e| anyhow!(e))?,
        ),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let proxy = crate::proxy::build(&cfg, store, namespace).map_err(|e| anyhow!(e))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&cfg.listen)
            .await
            .with_context(|| format!("listening on {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, cache = %cfg.cache_dir().display(), "proxy listening");
        eprintln!(
            "pullsecret proxy listening on {scheme}://{addr} (cache {})",
            cfg.cache_dir().display()
        );
        crate::proxy::serve(proxy, listener, tls).await?;
        Ok(())
    })
}

fn print_config(cfg: &ProxyConfig, runtime: &str) -> String {
    let listen = &cfg.listen;
    let mut out = String::new();
    match runtime {
        "containerd" => {
            for u in &cfg.upstreams {
                let host = u.host().unwrap_or_default();
                let dir = if u.is_docker_hub() {
                    "docker.io".to_string()
                } else {
                    host.clone()
                };
                let server = if u.is_docker_hub() {
                    "https://registry-1.docker.io".to_string()
                } else {
                    u.url.clone()
                };
                out.push_str(&format!(
                    "# /etc/containerd/certs.d/{dir}/hosts.toml\nserver = \"{server}\"\n\n[host.\"http://{listen}\"]\n  capabilities = [\"pull\", \"resolve\"]\n\n"
                ));
            }
        }
        "docker" => {
            out.push_str(&format!(
                "# /etc/docker/daemon.json (dockerd mirrors Docker Hub only)\n{{\n  \"registry-mirrors\": [\"http://{listen}\"]\n}}\n"
            ));
        }
        "podman" => {
            out.push_str("# /etc/containers/registries.conf.d/pullsecret.conf\n");
            for u in &cfg.upstreams {
                let host = u.host().unwrap_or_default();
                let prefix = if u.is_docker_hub() {
                    "docker.io".to_string()
                } else {
                    host.clone()
                };
                out.push_str(&format!(
                    "[[registry]]\nprefix = \"{prefix}\"\nlocation = \"{host}\"\n\n[[registry.mirror]]\n# podman sends no ?ns=, so the upstream is named in the path\nlocation = \"{listen}/{}\"\ninsecure = true\n\n",
                    u.name
                ));
            }
        }
        _ => {
            out.push_str(include_str!(
                "../../config/kubelet-credential-provider.yaml"
            ));
        }
    }
    out
}
