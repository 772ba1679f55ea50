//! `pullsecret proxy`: run the pull-through mirror, or print runtime config pointing at it.

// The listening banner.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};

use super::output::{out, outln};
use super::proxy_ops as ops;
use super::Cli;
use crate::config::Config;
use crate::proxy::config::ProxyConfig;
use crate::secret::{DOCKER_HUB_API_HOST, DOCKER_HUB_DOMAIN};
use crate::store::{FileStore, StorePaths};

#[derive(Args, Debug)]
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

impl ProxyArgs {
    /// `pullsecret proxy` itself (not one of its subcommands): the long-running server.
    pub fn serves(&self) -> bool {
        self.command.is_none()
    }
}

#[derive(Subcommand, Debug)]
enum ProxyCmd {
    /// Print the lines that point a runtime at this proxy.
    PrintConfig {
        /// The runtime to print configuration for.
        #[arg(value_parser = ["containerd", "docker", "podman", "kubelet"])]
        runtime: String,
    },
    /// Prefetch images into the cache (with global-private or global secrets).
    Warm {
        /// Image references to fetch (`[registry/]repository[:tag][@digest]`).
        #[arg(required = true)]
        images: Vec<String>,
        /// Platforms to fetch from multi-platform images (repeatable); default all.
        #[arg(long)]
        platform: Vec<String>,
    },
    /// Evict least recently used blobs down to cache.max_size (or --max-size) and drop orphans.
    Gc {
        /// Size to evict down to (e.g. `10GiB`), instead of cache.max_size.
        #[arg(long)]
        max_size: Option<String>,
    },
    /// Print cache size, entries and (from a running proxy's /metrics) the hit ratio.
    Status,
    /// Manage client credentials for `[auth] enabled = true`.
    #[command(subcommand)]
    Client(ClientCmd),
}

#[derive(Subcommand, Debug)]
enum ClientCmd {
    /// Add (or replace) a client that logs in as USER and acts in NAMESPACE.
    Add {
        /// The user name the client logs in with.
        user: String,
        /// The namespace whose secrets the client may use.
        #[arg(short = 'n', long)]
        namespace: String,
        /// Read the password from stdin.
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Remove a client.
    Remove {
        /// The user name of the client to remove.
        user: String,
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
    match &a.command {
        Some(ProxyCmd::PrintConfig { runtime }) => {
            out!("{}", print_config(&cfg, runtime));
            return Ok(());
        }
        Some(ProxyCmd::Gc { max_size }) => return ops::gc(&cfg, max_size.as_deref()),
        Some(ProxyCmd::Status) => return ops::status(&cfg),
        Some(ProxyCmd::Client(c)) => return client_cmd(cli, c),
        _ => {}
    }
    let general = Config::load(None)?;
    let namespace = general.namespace();
    let (store, fleet_db) = proxy_store(cli, Some(&cfg))?;
    let tls = match &cfg.tls {
        Some(t) => Some(
            crate::proxy::tls::acceptor(t, store.as_ref(), &namespace).map_err(|e| anyhow!(e))?,
        ),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let admin_store = store.clone();
    let proxy = crate::proxy::build(&cfg, store, namespace).map_err(|e| anyhow!(e))?;
    if let Some(ProxyCmd::Warm { images, platform }) = &a.command {
        // A one-off process takes no leases and serves no peers: it only fills the bucket.
        let join = || join_fleet(&proxy, &cfg, fleet_db.map(|(db, _)| (db, None)), "");
        return ops::warm(&proxy, images, platform, join);
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    // More workers than CPUs keep a small machine serving while one is stuck in a slow system
    // call; the default (one per CPU) measured best in benches/compare.sh.
    if cfg.limits.worker_threads > 0 {
        rt.worker_threads(cfg.limits.worker_threads);
    }
    let rt = rt
        .enable_all()
        .on_thread_park(crate::proxy::watchdog::on_park)
        .on_thread_unpark(crate::proxy::watchdog::on_unpark)
        .build()
        .context("starting the runtime")?;
    crate::proxy::watchdog::keep_driver_polled(rt.handle().clone());
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&cfg.listen)
            .await
            .with_context(|| format!("listening on {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        let banner = format!(
            "pullsecret proxy listening on {scheme}://{addr} (cache {})",
            cfg.cache_dir().display()
        );
        if cli.log_format == "json" {
            eprintln!(
                "{}",
                serde_json::json!({"level": "INFO", "fields": {"message": banner, "addr": addr.to_string(), "cache": cfg.cache_dir().display().to_string()}})
            );
        } else {
            eprintln!("{banner}");
        }
        crate::proxy::log_summary(&proxy, &format!("{scheme}://{addr}"));
        join_fleet(&proxy, &cfg, fleet_db, &format!("{scheme}://{addr}"))?;
        if let Some(admin) = &cfg.admin {
            // The admin API on its own address, so the registry port can be exposed alone.
            let l = tokio::net::TcpListener::bind(&admin.listen)
                .await
                .with_context(|| format!("admin listener on {}", admin.listen))?;
            tracing::info!(admin = %l.local_addr()?, "admin API listening");
            let state = std::sync::Arc::new(crate::admin::api::AdminState {
                store: admin_store,
                proxy: proxy.clone(),
                audit: Default::default(),
            });
            let admin_tls = match &admin.tls {
                Some(t) => Some(
                    crate::proxy::tls::acceptor(t, state.store.as_ref(), &state.proxy.settings.namespace)
                        .map_err(|e| anyhow!(e))?,
                ),
                None => None,
            };
            tokio::spawn(crate::admin::serve(state, l, admin_tls));
        }
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
                    DOCKER_HUB_DOMAIN.to_string()
                } else {
                    host.clone()
                };
                let server = if u.is_docker_hub() {
                    format!("https://{DOCKER_HUB_API_HOST}")
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
                    DOCKER_HUB_DOMAIN.to_string()
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

fn client_cmd(cli: &Cli, c: &ClientCmd) -> Result<()> {
    use crate::proxy::client_auth::{client_secret, CLIENTS_NAMESPACE};
    use crate::store::validate_namespace;
    let (store, _) = proxy_store(cli, None)?;
    let store = store.as_ref();
    match c {
        ClientCmd::Add {
            user, namespace, ..
        } => {
            crate::secret::validate_name(user)?;
            validate_namespace(namespace)?;
            let mut pw = zeroize::Zeroizing::new(String::new());
            std::io::Read::read_to_string(&mut std::io::stdin().take(64 * 1024), &mut pw)
                .context("reading the password")?;
            let pw = pw.trim_end_matches(['\n', '\r']);
            if pw.is_empty() {
                anyhow::bail!("empty password on stdin");
            }
            store.put(client_secret(user, namespace, pw), true)?;
            outln!("proxy client {user} added (namespace {namespace})");
        }
        ClientCmd::Remove { user } => {
            store.delete(CLIENTS_NAMESPACE, std::slice::from_ref(user))?;
            outln!("proxy client {user} removed");
        }
    }
    Ok(())
}

/// The database and peer key a fleet replica coordinates with (no key: no leases or peers).
type FleetDb = Option<(
    crate::store::database::Database,
    Option<zeroize::Zeroizing<[u8; 32]>>,
)>;

/// The proxy's store: shared state in PostgreSQL when `--state`, `PULLSECRET_STATE`, proxy.toml's
/// or config.toml's `[state]` names one (in that order), else the local file store.
fn proxy_store(
    cli: &Cli,
    cfg: Option<&ProxyConfig>,
) -> Result<(Arc<dyn crate::store::SecretStore + Send + Sync>, FleetDb)> {
    let mut general = Config::load(None)?;
    if let Some(p) = cfg.and_then(|c| c.state.postgres.clone()) {
        general.state.postgres = Some(p);
    }
    if let Some(s) = &cli.state {
        general.state_override = Some(s.clone());
    }
    let paths = StorePaths::from_env(cli.store_dir.as_deref());
    Ok(match crate::store::open_state(&general, &paths)? {
        Some((pg, why)) => {
            tracing::info!("{why}");
            let fleet = Some((pg.database(), Some(pg.peer_key())));
            (Arc::new(pg), fleet)
        }
        None => (Arc::new(FileStore::new(paths, general.limits)), None),
    })
}

/// Fleet mode: the shared bucket (`[cache] backend = "s3"`) and the database's leases, when
/// either is configured.
fn join_fleet(
    proxy: &Arc<crate::proxy::server::Proxy>,
    cfg: &ProxyConfig,
    db: FleetDb,
    listening: &str,
) -> Result<()> {
    let refs = crate::store::StoreRefs(proxy.secrets.as_ref());
    let shared = crate::proxy::shared_blobs::SharedBlobs::from_config(&cfg.cache, &refs)
        .map_err(|e| anyhow!(e))?;
    if shared.is_none() && db.is_none() {
        return Ok(());
    }
    let max_shared = match (&shared, cfg.cache.max_size.as_deref()) {
        (Some(_), Some(text)) => Some(
            crate::proxy::evict::parse_size(text)
                .ok_or_else(|| anyhow!("cache.max_size {text:?}: expected a size such as 50GiB"))?,
        ),
        _ => None,
    };
    // `PULLSECRET_ADVERTISE` first: on Kubernetes it is built from the pod's IP.
    if shared.is_some() && db.is_none() && cfg.cache.max_size.is_some() {
        tracing::warn!("cache.max_size bounds the shared bucket only with [state] (PostgreSQL); without it the bucket is not evicted");
    }
    let advertise = std::env::var("PULLSECRET_ADVERTISE")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .or_else(|| cfg.fleet.advertise.clone())
        .unwrap_or_else(|| listening.to_string());
    let serves_peers = db.as_ref().is_some_and(|(_, k)| k.is_some());
    if serves_peers && (advertise.contains("://0.0.0.0") || advertise.contains("://[::]")) {
        tracing::warn!(%advertise, "fleet: other replicas cannot reach an unspecified address; set [fleet] advertise or PULLSECRET_ADVERTISE");
    }
    let (pool, key) = match db {
        Some((db, key)) => (Some(db.pool().clone()), key),
        None => (None, None),
    };
    let mut timing = crate::proxy::fleet::Timing::default();
    if let Some(d) = cfg.fleet.bookkeeping_interval {
        timing.interval = d.max(std::time::Duration::from_millis(100));
    }
    if let Some(d) = cfg.fleet.evict_grace {
        timing.evict_grace = d;
    }
    let fleet = crate::proxy::fleet::Fleet::new(shared, pool, advertise, key, max_shared, timing);
    tracing::info!(
        replica = %fleet.id,
        advertise = %fleet.advertise,
        bucket = %fleet.shared.as_ref().map_or("(none)", |s| s.bucket.as_str()),
        leases = fleet.coordinated(),
        "fleet: joined"
    );
    proxy.attach_fleet(fleet);
    Ok(())
}
