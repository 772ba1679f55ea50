//! The accept loop: connection limits, TLS handshakes, the sendfile fast path then hyper on
//! each connection, timeouts for slow and departed clients, and graceful shutdown with a deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;

use super::server::{self, Proxy};
use super::watchdog;

/// Serves until SIGINT/SIGTERM, then stops accepting and lets in-flight requests finish (up to 30 s).
pub async fn serve(
    proxy: Arc<Proxy>,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> std::io::Result<()> {
    watch_missing_secrets(&proxy);
    let limits = Arc::new(ConnLimits::new(
        proxy.settings.max_connections,
        proxy.settings.max_connections_per_client,
    ));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer): (tokio::net::TcpStream, SocketAddr) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(slot) = limits.admit(peer.ip()) else {
                    // Over the limit: close at once rather than queue without bound.
                    tracing::warn!(peer = %peer.ip(), "connection limit reached; closing");
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
                let conn_proxy = proxy.clone();
                let service = {
                    let proxy = proxy.clone();
                    hyper::service::service_fn(move |req| {
                        let proxy = proxy.clone();
                        async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, peer.ip()).await) }
                    })
                };
                let watcher = graceful.watcher();
                let acceptor = tls.clone();
                // `served` owns the socket, so `fd` stays open while it and `client_gone` run.
                let served = async move {
                    let settings = &conn_proxy.settings;
                    match acceptor {
                        None => {
                            let mut stream = stream;
                            // Cached blobs go out with sendfile(2); the rest of the connection to hyper.
                            if settings.sendfile && !fast_path(&conn_proxy, &mut stream).await {
                                return;
                            }
                            let conn = connection_builder(settings)
                                .serve_connection(TokioIo::new(stream), service)
                                .into_owned();
                            let _ = watcher.watch(conn).await;
                        }
                        Some(acceptor) => {
                            // The handshake runs in the connection's task so a slow client blocks no one.
                            let handshake = settings.header_read_timeout;
                            let Ok(Ok(tls_stream)) = tokio::time::timeout(handshake, acceptor.accept(stream)).await else {
                                return;
                            };
                            let conn = connection_builder(settings)
                                .serve_connection(TokioIo::new(tls_stream), service)
                                .into_owned();
                            let _ = watcher.watch(conn).await;
                        }
                    }
                };
                tokio::spawn(watchdog::tracked(async move {
                    tokio::select! {
                        _ = served => {}
                        _ = client_gone(fd) => {}
                    }
                    drop(slot);
                }));
            }
            _ = &mut shutdown => {
                tracing::info!("shutting down: no new connections; waiting for requests in flight");
                proxy.stopping.send_replace(true);
                exit_after(proxy.settings.shutdown_timeout);
                break;
            }
        }
    }
    drop(listener);
    let drained = async {
        graceful.shutdown().await;
        // sendfile transfers are outside hyper's bookkeeping; wait for them too.
        while proxy
            .fast_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let deadline = proxy.settings.shutdown_timeout;
    if tokio::time::timeout(deadline, drained).await.is_err() {
        tracing::warn!(
            deadline_secs = deadline.as_secs(),
            "requests still in flight at the shutdown deadline; abandoning them (partial fills are discarded at next start)"
        );
    }
    Ok(())
}

/// Serves what the sendfile path takes; `true` when the connection goes on to hyper.
#[cfg(target_os = "linux")]
async fn fast_path(proxy: &Arc<Proxy>, stream: &mut tokio::net::TcpStream) -> bool {
    matches!(super::fastpath::serve(proxy, stream).await, Ok(true))
}

#[cfg(not(target_os = "linux"))]
async fn fast_path(_: &Arc<Proxy>, _: &mut tokio::net::TcpStream) -> bool {
    true
}

/// Resolves once the client has closed its side of the connection (or it failed), checked
/// once a second: a client that gave up while its request waits (a queued fill) must not keep
/// its socket in CLOSE-WAIT and its connection slot taken. hyper notices only when it writes.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
async fn client_gone(fd: std::os::fd::RawFd) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout; the caller keeps `fd` open while this runs.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        if n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 {
            return;
        }
    }
}

/// Without POLLRDHUP a departed client is noticed when hyper next writes to it.
#[cfg(not(target_os = "linux"))]
async fn client_gone(_: std::os::fd::RawFd) {
    std::future::pending::<()>().await
}

/// Ends the process `deadline` after shutdown began, whatever the runtime is doing: a worker
/// stuck in a blocking call also stops tokio's timers, so the deadline runs on its own thread.
fn exit_after(deadline: Duration) {
    let spawned = std::thread::Builder::new()
        .name("shutdown-deadline".into())
        .spawn(move || {
            std::thread::sleep(deadline + Duration::from_millis(500));
            tracing::warn!(
                deadline_secs = deadline.as_secs(),
                "shutdown deadline passed with work still stuck; exiting anyway"
            );
            std::process::exit(1);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no shutdown-deadline thread; shutdown may wait for stuck work");
    }
}

/// hyper's connection settings: both protocols, tasks it spawns tracked by the watchdog.
fn connection_builder(settings: &server::Settings) -> auto::Builder<watchdog::TrackedExecutor> {
    let mut builder = auto::Builder::new(watchdog::TrackedExecutor);
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(None);
    builder
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
        let crate::secret::SecretName {
            namespace: ns,
            name,
        } = crate::secret::SecretName::parse(&spec, &proxy.settings.namespace);
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

/// Connection counts, overall and per client address.
struct ConnLimits {
    max: usize,
    per_client: usize,
    open: std::sync::Mutex<(usize, std::collections::HashMap<std::net::IpAddr, usize>)>,
}

/// Releases a connection's place when the connection ends.
struct ConnSlot {
    limits: Arc<ConnLimits>,
    ip: std::net::IpAddr,
}

impl ConnLimits {
    fn new(max: usize, per_client: usize) -> Self {
        Self {
            max: max.max(1),
            per_client: per_client.max(1),
            open: std::sync::Mutex::new((0, Default::default())),
        }
    }

    fn admit(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<ConnSlot> {
        let mut g = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let from_ip = g.1.get(&ip).copied().unwrap_or(0);
        if g.0 >= self.max || from_ip >= self.per_client {
            return None;
        }
        g.0 += 1;
        g.1.insert(ip, from_ip + 1);
        Some(ConnSlot {
            limits: self.clone(),
            ip,
        })
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut g = self.limits.open.lock().unwrap_or_else(|e| e.into_inner());
        g.0 = g.0.saturating_sub(1);
        if let Some(n) = g.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                g.1.remove(&self.ip);
            }
        }
    }
}
