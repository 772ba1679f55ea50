//! `pullsecret proxy`: the pull-through registry mirror (server, routing, cache, fills).

pub mod blob_store;
pub mod client_auth;
pub mod config;
pub mod evict;
pub mod fill;
pub mod grants;
pub mod metrics;
pub mod route;
pub mod server;
pub mod tls;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

use self::blob_store::BlobStore;
use self::config::ProxyConfig;
use self::server::Proxy;
use self::upstream::Upstream;
use crate::registry::auth::TokenCache;
use crate::store::SecretStore;

/// Builds the proxy state from config: opens the cache (cleaning crash leftovers) and the upstreams.
pub fn build(
    cfg: &ProxyConfig,
    secrets: Arc<dyn SecretStore + Send + Sync>,
    namespace: String,
) -> Result<Arc<Proxy>, String> {
    let cache = cfg.cache_dir();
    let store = BlobStore::open(&cache).map_err(|e| format!("cache {}: {e}", cache.display()))?;
    let tokens = Arc::new(TokenCache::default());
    let timeout = Duration::from_secs(cfg.limits.upstream_timeout_secs.max(1));
    let mut upstreams = Vec::new();
    for u in &cfg.upstreams {
        upstreams.push(Arc::new(Upstream::new(u.clone(), tokens.clone(), timeout)?));
        if u.secret.is_some() {
            tracing::info!(upstream = %u.name, secret = ?u.secret, "upstream credentials come from a stored secret, resolved per pull");
        }
    }
    let default = match &cfg.default_upstream {
        Some(name) => cfg.upstreams.iter().position(|u| &u.name == name),
        None if cfg.upstreams.len() == 1 => Some(0),
        None => None,
    };
    let settings = server::Settings {
        namespace: cfg.namespace.clone().unwrap_or(namespace),
        max_fills: cfg.limits.max_concurrent_fills,
        max_cache_bytes: cfg.cache.max_size.as_deref().and_then(evict::parse_size),
        link_ttl: cfg.cache.link_ttl.unwrap_or(Duration::from_secs(3600)),
        auth_enabled: cfg.auth.enabled,
        token_ttl: cfg.auth.token_ttl.unwrap_or(Duration::from_secs(300)),
        realm: cfg.auth.realm.clone(),
        tls: cfg.tls.is_some(),
    };
    let proxy = Proxy::new(store, upstreams, default, secrets, settings)
        .map_err(|e| format!("cache: {e}"))?;
    Ok(Arc::new(proxy))
}

/// Serves until SIGINT/SIGTERM, then stops accepting and lets in-flight requests finish (up to 30 s).
pub async fn serve(
    proxy: Arc<Proxy>,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> std::io::Result<()> {
    watch_missing_secrets(&proxy);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer): (tokio::net::TcpStream, SocketAddr) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let proxy = proxy.clone();
                let service = hyper::service::service_fn(move |req| {
                    let proxy = proxy.clone();
                    async move { Ok::<_, std::convert::Infallible>(proxy.handle(req).await) }
                });
                match &tls {
                    None => {
                        let builder = auto::Builder::new(TokioExecutor::new());
                        let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                        let conn = graceful.watch(conn);
                        tokio::spawn(async move {
                            let _ = conn.await;
                        });
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        let watcher = graceful.watcher();
                        tokio::spawn(async move {
                            // The handshake runs in the connection's task so a slow client blocks no one.
                            let Ok(Ok(tls_stream)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await else {
                                return;
                            };
                            let builder = auto::Builder::new(TokioExecutor::new());
                            let conn = builder.serve_connection(TokioIo::new(tls_stream), service).into_owned();
                            let _ = watcher.watch(conn).await;
                        });
                    }
                }
            }
            _ = &mut shutdown => {
                tracing::info!("shutting down: no new connections; waiting for requests in flight");
                break;
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after 30 s; abandoning them (partial fills are discarded at next start)");
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// A config may name a secret that does not exist yet: the proxy starts anyway, says which, and
/// checks again with backoff (1 s doubling to 60 s) until it appears. Pulls look it up themselves.
fn watch_missing_secrets(proxy: &Arc<Proxy>) {
    for up in &proxy.upstreams {
        let Some(spec) = up.cfg.secret.clone() else {
            continue;
        };
        let (ns, name) = match spec.split_once('/') {
            Some((n, s)) => (n.to_string(), s.to_string()),
            None => (proxy.settings.namespace.clone(), spec.clone()),
        };
        let store = proxy.secrets.clone();
        let upstream = up.cfg.name.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_secs(1);
            let mut warned = false;
            loop {
                let (s, n, st) = (ns.clone(), name.clone(), store.clone());
                let found =
                    tokio::task::spawn_blocking(move || st.get(&s, &n).map(|x| x.is_some())).await;
                match found {
                    Ok(Ok(true)) => {
                        if warned {
                            tracing::info!(%upstream, secret = %format!("{ns}/{name}"), "secret now exists; pulls use it");
                        }
                        return;
                    }
                    _ => {
                        if !warned {
                            tracing::warn!(%upstream, secret = %format!("{ns}/{name}"), "secret does not exist yet; pulls from this upstream fail until it is created");
                            warned = true;
                        }
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(60));
            }
        });
    }
}
