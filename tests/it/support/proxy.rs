//! Test support for the proxy: start `pullsecret proxy` on a free loopback port with a config,
//! and a streaming blob GET that hashes what it receives.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{eventually, try_eventually, Env};

pub struct ProxyProcess {
    child: Child,
    pub addr: String,
    pub cache: PathBuf,
    log: PathBuf,
}

/// An `[[upstream]]` table for a plain-HTTP registry at `addr`, with more `keys` (TOML lines).
pub fn plain_upstream(name: &str, addr: &str, keys: &str) -> String {
    format!("[[upstream]]\nname = \"{name}\"\nurl = \"http://{addr}\"\ninsecure = true\n{keys}")
}

/// The proxy's `/token` answer (docker-style GET, Basic `creds` when given) for pulling `repo`:
/// asserted to be 200 with a token in it.
pub fn token_answer(addr: &str, creds: Option<(&str, &str)>, repo: &str) -> serde_json::Value {
    let auth = creds.map(|(u, p)| super::http::basic_auth(u, p));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let path = format!("/token?service=pullsecret&scope=repository:{repo}:pull");
    let r = super::http::http_request("GET", addr, &path, &headers, b"").expect("token");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert!(
        v["token"].as_str().is_some_and(|t| !t.is_empty()),
        "no token: {v}"
    );
    v
}

/// A client token from the proxy at `addr` (see [`token_answer`]).
pub fn client_token(addr: &str, creds: Option<(&str, &str)>, repo: &str) -> String {
    token_answer(addr, creds, repo)["token"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

impl ProxyProcess {
    /// Starts the proxy with `upstreams` (TOML `[[upstream]]` tables) and `extra` top-level keys.
    pub fn start(env: &Env, extra: &str, upstreams: &str) -> Self {
        Self::start_with(env, extra, upstreams, false)
    }

    /// Like `start`, with a `[tls]` table in `extra`: readiness is checked by the port answering.
    pub fn start_tls(env: &Env, extra: &str, upstreams: &str) -> Self {
        Self::start_with(env, extra, upstreams, true)
    }

    fn start_with(env: &Env, extra: &str, upstreams: &str, tls: bool) -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        let cache = env.path("proxy-cache");
        let config = env.path("proxy.toml");
        let text = format!(
            "listen = \"{addr}\"\ncache_dir = \"{}\"\n{extra}\n{upstreams}",
            cache.display()
        );
        std::fs::write(&config, text).expect("write proxy config");
        Self::spawn_inner(env, config, addr, cache, tls)
    }

    /// Starts again with the same config (after `kill`).
    fn spawn(env: &Env, config: PathBuf, addr: String, cache: PathBuf) -> Self {
        Self::spawn_inner(env, config, addr, cache, false)
    }

    fn spawn_inner(env: &Env, config: PathBuf, addr: String, cache: PathBuf, tls: bool) -> Self {
        let log = env.path(&format!("proxy-{}.log", free_port()));
        let out = std::fs::File::create(&log).expect("log file");
        let child = env
            .pullsecret(&["proxy", "--config", config.to_str().unwrap_or_default()])
            .env(
                "RUST_LOG",
                env.extra
                    .iter()
                    .find(|(k, _)| k == "RUST_LOG")
                    .map_or("pullsecret=debug", |(_, v)| v.as_str()),
            )
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("start proxy");
        let p = Self {
            child,
            addr,
            cache,
            log,
        };
        let ready = || {
            if tls {
                return TcpStream::connect(&p.addr).is_ok()
                    && p.log().contains("listening on https://");
            }
            let Ok(mut s) = TcpStream::connect(&p.addr) else {
                return false;
            };
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            buf.starts_with("HTTP/1.1 200")
        };
        eventually(Duration::from_secs(15), "the proxy to start", || {
            if ready() {
                Ok(())
            } else {
                Err(format!("its log: {}", p.log()))
            }
        });
        p
    }

    pub fn restart(&mut self, env: &Env) {
        self.kill9();
        let fresh = Self::spawn(
            env,
            env.path("proxy.toml"),
            self.addr.clone(),
            self.cache.clone(),
        );
        // The old process is dead; dropping it again is harmless.
        drop(std::mem::replace(self, fresh));
    }

    /// Sends SIGTERM and waits up to `within` for the process to exit: its exit status (`None`
    /// if it was still running at the deadline, then killed) and how long it took.
    pub fn terminate(&mut self, within: Duration) -> (Option<std::process::ExitStatus>, Duration) {
        let started = Instant::now();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let exited = try_eventually(within, || match self.child.try_wait() {
            Ok(Some(status)) => Ok(status),
            _ => Err("still running".to_string()),
        });
        match exited {
            Ok(status) => (Some(status), started.elapsed()),
            Err(_) => {
                self.kill9();
                (None, started.elapsed())
            }
        }
    }

    /// Starts a new process on the same config, address and cache (after `terminate`).
    pub fn start_again(&mut self, env: &Env) {
        self.restart(env);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Scans /metrics (when the process still answers) and its log for the canary secret.
    pub fn scan_for_canary(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            if let Ok(m) = super::http::http_request("GET", &self.addr, "/metrics", &[], b"") {
                assert!(
                    m.status != 200 || m.text().contains("pullsecret_proxy_requests_total"),
                    "/metrics answered without the proxy's metrics"
                );
            }
        }
        super::assert_no_canary(
            &format!("the proxy log {}", self.log.display()),
            &self.log(),
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (up to 10 s) until `digest` is committed to the cache: a body ends once verified,
    /// the fill's fsync and rename follow. Its path.
    pub fn wait_cached(&self, digest: &str) -> PathBuf {
        let path = self
            .cache
            .join("v1/blobs/sha256")
            .join(digest.trim_start_matches("sha256:"));
        eventually(
            Duration::from_secs(10),
            &format!("{digest} to reach the cache"),
            || path.exists(),
        );
        path
    }

    /// Waits (up to 10 s) until /metrics shows no fill in flight: each finished fill has been
    /// committed and accounted for (evictions included).
    pub fn wait_fills_done(&self) {
        eventually(Duration::from_secs(10), "no fill in flight", || {
            let m = super::http::http_request("GET", &self.addr, "/metrics", &[], b"")
                .map(|r| r.text())
                .unwrap_or_default();
            if m.lines()
                .any(|l| l.trim() == "pullsecret_proxy_fills_in_flight 0")
            {
                Ok(())
            } else {
                Err(format!("fills still in flight: {m}"))
            }
        });
    }

    /// Every temp (partial) file in the cache.
    pub fn tmp_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.cache.join("v1/tmp"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

impl Drop for ProxyProcess {
    /// The final step of every proxy test: /metrics and the whole log are scanned for the canary.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.scan_for_canary();
        }
        self.kill9();
    }
}

/// What a streamed GET saw.
#[derive(Debug)]
pub struct Streamed {
    pub status: u16,
    pub content_length: Option<u64>,
    pub received: u64,
    pub digest: String,
    /// The body ended before Content-Length (connection cut).
    pub truncated: bool,
}

/// GET `path` on `addr`, hashing the body as it streams (never buffering it).
pub fn stream_get(addr: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Streamed> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut r = BufReader::with_capacity(1 << 20, s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut content_length = None;
    let mut head = line.clone();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        head.push_str(&line);
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                content_length = v.trim().parse().ok();
            }
        }
    }
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut received = 0u64;
    // Error bodies are kept (bounded) for the canary scan; blobs are only hashed.
    let mut error_body = Vec::new();
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                h.update(&buf[..n]);
                received += n as u64;
                if status >= 300 && error_body.len() < 64 << 10 {
                    error_body.extend_from_slice(&buf[..n]);
                }
            }
            Err(_) => break,
        }
    }
    head.push_str(&String::from_utf8_lossy(&error_body));
    super::assert_no_canary(&format!("the response to GET {path}"), &head);
    let truncated = content_length.is_some_and(|l| received < l);
    Ok(Streamed {
        status,
        content_length,
        received,
        digest: format!("sha256:{}", hex::encode(h.finalize())),
        truncated,
    })
}
