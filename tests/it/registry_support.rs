//! Registry test support: a real CNCF distribution registry (anonymous, htpasswd or token auth), an in-process RS256 token issuer, and skopeo image push/pull helpers.

// Shared by registry tests that land over time; not every helper has a caller yet.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use wait_timeout::ChildExt as _;

use crate::support::{require_bin, Env};

/// Registry start-up on a loaded 2-core machine (parallel tests, cargo builds) can take a few seconds.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Every socket read/write in this module; a loopback peer that is silent this long is broken.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound for one skopeo run; small test images copy in well under a second.
const SKOPEO_TIMEOUT: Duration = Duration::from_secs(60);

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

// ---------------------------------------------------------------------------------------------
// Registry process
// ---------------------------------------------------------------------------------------------

/// How the registry authenticates clients.
#[derive(Clone, Debug)]
pub enum RegistryAuth {
    Anonymous,
    /// Basic auth against a bcrypt htpasswd file of (user, password).
    Htpasswd {
        users: Vec<(String, String)>,
    },
    /// Bearer tokens from an in-process [`TokenIssuer`] started with this config.
    Token(TokenIssuerConfig),
}

/// A `docker-registry serve` process on 127.0.0.1 with storage and logs in a temp dir; killed on drop.
pub struct Registry {
    child: Option<Child>,
    bin: PathBuf,
    addr: String,
    auth_yaml: String,
    /// `http.tls` lines when serving HTTPS.
    tls_yaml: String,
    issuer: Option<TokenIssuer>,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry, or returns `None` (after a SKIPPED notice) when a needed tool is missing outside E2E mode.
    /// skopeo is required too: every registry test seeds content with it.
    pub fn start(auth: RegistryAuth) -> Option<Self> {
        Self::start_with(auth, String::new())
    }

    /// Like `start`, serving HTTPS with this certificate and key (PEM files).
    pub fn start_tls(
        auth: RegistryAuth,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Option<Self> {
        Self::start_with(
            auth,
            format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                yaml_str(cert),
                yaml_str(key)
            ),
        )
    }

    fn start_with(auth: RegistryAuth, tls_yaml: String) -> Option<Self> {
        let bin = require_bin("docker-registry", "apt-get install docker-registry")?;
        require_bin("skopeo", "apt-get install skopeo")?;
        let dir = tempfile::tempdir().expect("registry tempdir");
        let auth_yaml = match &auth {
            RegistryAuth::Anonymous => String::new(),
            RegistryAuth::Htpasswd { users } => {
                let htpasswd = require_bin("htpasswd", "apt-get install apache2-utils")?;
                let mut file = String::new();
                for (user, password) in users {
                    // -B: distribution only accepts bcrypt entries.
                    let out = Command::new(&htpasswd)
                        .args(["-Bbn", user, password])
                        .output()
                        .expect("run htpasswd");
                    assert!(
                        out.status.success(),
                        "htpasswd failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    file.push_str(String::from_utf8_lossy(&out.stdout).trim());
                    file.push('\n');
                }
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, file).expect("write htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: pullsecret-test\n    path: {}\n",
                    yaml_str(&path)
                )
            }
            RegistryAuth::Token(config) => {
                require_bin("openssl", "apt-get install openssl")?;
                let issuer = TokenIssuer::start(config.clone());
                let cert = dir.path().join("token-cert.pem");
                std::fs::write(&cert, issuer.cert_pem()).expect("write token cert");
                let yaml = format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    yaml_str(issuer.realm()),
                    yaml_str(&config.service),
                    yaml_str(&config.issuer),
                    yaml_str(&cert)
                );
                return Self::launch(bin, dir, yaml, tls_yaml, Some(issuer));
            }
        };
        Self::launch(bin, dir, auth_yaml, tls_yaml, None)
    }

    fn launch(
        bin: PathBuf,
        dir: tempfile::TempDir,
        auth_yaml: String,
        tls_yaml: String,
        issuer: Option<TokenIssuer>,
    ) -> Option<Self> {
        let mut reg = Self {
            child: None,
            bin,
            addr: String::new(),
            auth_yaml,
            tls_yaml,
            issuer,
            dir,
        };
        // The free port is found by binding :0 and releasing it, so another process may grab it
        // before the registry binds; a fresh port on retry makes that race harmless.
        for _ in 0..3 {
            reg.addr = free_loopback_addr();
            if reg.spawn_and_wait() {
                return Some(reg);
            }
        }
        panic!("docker-registry did not start; its log:\n{}", reg.log());
    }

    /// Writes the config for `self.addr`, spawns the process and waits for `GET /v2/` to answer.
    fn spawn_and_wait(&mut self) -> bool {
        let d = self.dir.path();
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: {addr}\n  secret: pullsecret-test-http-secret\n{tls}\
             health:\n  storagedriver:\n    enabled: false\n\
             {auth}",
            auth = self.auth_yaml,
            tls = self.tls_yaml,
            storage = yaml_str(d.join("storage")),
            addr = self.addr,
        );
        let config_path = d.join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        // distribution writes the access log to stdout and its own log to stderr; appending keeps
        // earlier runs' lines across stop()/restart().
        let open = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(d.join(name))
                .expect("open registry log")
        };
        let child = Command::new(&self.bin)
            .arg("serve")
            .arg(&config_path)
            // REGISTRY_* variables would override the config file.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", d)
            .stdin(Stdio::null())
            .stdout(open("access.log"))
            .stderr(open("registry.log"))
            .spawn()
            .expect("spawn docker-registry");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                eprintln!("docker-registry on {} exited early: {status}", self.addr);
                self.child = None;
                return false;
            }
            if http_request("GET", &self.addr, "/v2/", &[], b"").is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The token issuer when started with [`RegistryAuth::Token`].
    pub fn issuer(&self) -> Option<&TokenIssuer> {
        self.issuer.as_ref()
    }

    /// The registry's filesystem storage root.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Kills the process (storage kept), to simulate an upstream that is down.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts the process again on the same address and storage after [`Registry::stop`].
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn_and_wait(),
            "docker-registry did not restart on {}; log:\n{}",
            self.addr,
            self.log()
        );
    }

    /// The access log so far (Apache combined format, one line per request).
    pub fn access_log(&self) -> String {
        settle(&self.dir.path().join("access.log"));
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// The registry's own (logrus) log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Requests in the access log with exactly `method` whose URI contains `path_substring`.
    pub fn count_requests(&self, method: &str, path_substring: &str) -> usize {
        self.access_log()
            .lines()
            .filter_map(request_line)
            .filter(|(m, uri)| *m == method && uri.contains(path_substring))
            .count()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The method and URI of a combined-format line: `… "GET /v2/x/blobs/sha256:… HTTP/1.1" 200 …`.
fn request_line(line: &str) -> Option<(&str, &str)> {
    let quoted = line.split('"').nth(1)?;
    let mut parts = quoted.split(' ');
    Some((parts.next()?, parts.next()?))
}

/// distribution logs a request just after its response is sent, so a client can see the response
/// first; wait until the log file has not grown for 150 ms (long enough for a registry that was
/// descheduled on a loaded machine to write its line).
fn settle(path: &Path) {
    let len = || std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut last = len();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(150));
        let now = len();
        if now == last {
            return;
        }
        last = now;
    }
}

pub fn free_loopback_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").to_string()
}

/// A double-quoted YAML scalar (JSON strings are valid YAML).
fn yaml_str(s: impl AsRef<std::ffi::OsStr>) -> String {
    serde_json::to_string(&s.as_ref().to_string_lossy()).expect("quote")
}

// ---------------------------------------------------------------------------------------------
// Minimal HTTP/1.1 client (blocking std sockets, so it also works inside async tests)
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One request to `addr` (`host:port`) with `Connection: close`; `path` includes any query.
pub fn http_request(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let mut stream =
        TcpStream::connect_timeout(&addr.parse().map_err(std::io::Error::other)?, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    // Every response a test reads is scanned, error bodies included.
    crate::support::assert_no_canary(
        &format!("the response to {method} {path}"),
        &String::from_utf8_lossy(&raw),
    );
    parse_response(&raw, method == "HEAD")
}

fn parse_response(raw: &[u8], head: bool) -> std::io::Result<HttpResponse> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let head_text = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("no status line"))?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked && !head {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// `Basic base64(user:password)`.
pub fn basic_auth(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

// ---------------------------------------------------------------------------------------------
// Token issuer
// ---------------------------------------------------------------------------------------------

/// Repository access a user may be granted: `repo` is exact or a glob where `*` matches anything
/// (including `/`); `actions` may contain `*` for every action.
#[derive(Clone, Debug)]
pub struct Grant {
    pub repo: String,
    pub actions: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct TokenUser {
    pub name: String,
    pub password: String,
    pub grants: Vec<Grant>,
}

/// Who may get which tokens from a [`TokenIssuer`].
#[derive(Clone, Debug)]
pub struct TokenIssuerConfig {
    /// The `service` (JWT `aud`) the registry expects.
    pub service: String,
    /// The JWT `iss` the registry trusts.
    pub issuer: String,
    pub users: Vec<TokenUser>,
    /// Repository globs anyone (also anonymous) may pull.
    pub public_repos: Vec<String>,
    /// `expires_in` of responses and the JWT lifetime, in seconds (distribution adds 60 s leeway).
    pub expires_in: i64,
}

impl Default for TokenIssuerConfig {
    fn default() -> Self {
        Self {
            service: "pullsecret-test-registry".into(),
            issuer: "pullsecret-test-issuer".into(),
            users: Vec::new(),
            public_repos: Vec::new(),
            expires_in: 300,
        }
    }
}

impl TokenIssuerConfig {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a user with `(repo glob, actions)` grants, e.g. `&[("team/*", &["pull", "push"])]`.
    pub fn user(mut self, name: &str, password: &str, grants: &[(&str, &[&str])]) -> Self {
        let grants = grants
            .iter()
            .map(|(repo, actions)| Grant {
                repo: repo.to_string(),
                actions: actions.iter().map(|a| a.to_string()).collect(),
            })
            .collect();
        self.users.push(TokenUser {
            name: name.into(),
            password: password.into(),
            grants,
        });
        self
    }

    /// Lets anyone, anonymous included, pull repositories matching `repo_glob`.
    pub fn public(mut self, repo_glob: &str) -> Self {
        self.public_repos.push(repo_glob.into());
        self
    }

    pub fn expires_in(mut self, secs: i64) -> Self {
        self.expires_in = secs;
        self
    }

    fn check_password(&self, user: &str, password: &str) -> bool {
        self.users
            .iter()
            .any(|u| u.name == user && u.password == password)
    }
}

/// One entry of the JWT `access` claim.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

/// A token request as the issuer saw it, recorded for assertions.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// `GET` (docker/skopeo style) or `POST` (OAuth2 form, containerd style).
    pub method: String,
    /// `password` / `refresh_token` for POST; `None` for GET.
    pub grant_type: Option<String>,
    /// The authenticated user; `None` when anonymous or when authentication failed.
    pub user: Option<String>,
    /// The user name offered, even if its password was wrong.
    pub offered_user: Option<String>,
    pub service: Option<String>,
    /// Every requested scope, repeated `scope` params and space-separated values flattened.
    pub scopes: Vec<String>,
    pub granted: Vec<Access>,
    pub status: u16,
    pub refresh_token_issued: bool,
}

/// The RSA key (PKCS#8 DER) and its self-signed certificate, made once per test process because
/// RSA key generation is the slow part of starting an issuer.
struct SigningKey {
    pkcs8: Vec<u8>,
    cert_der: Vec<u8>,
    cert_pem: String,
}

fn signing_key() -> Arc<SigningKey> {
    static KEY: OnceLock<Arc<SigningKey>> = OnceLock::new();
    KEY.get_or_init(|| {
        let dir = tempfile::tempdir().expect("key tempdir");
        let key_pem = dir.path().join("key.pem");
        let key_der = dir.path().join("key.der");
        let cert = dir.path().join("cert.pem");
        let openssl = |args: &[&std::ffi::OsStr]| {
            let out = Command::new("openssl")
                .args(args)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req".as_ref(),
            "-x509".as_ref(),
            "-newkey".as_ref(),
            "rsa:2048".as_ref(),
            "-nodes".as_ref(),
            "-subj".as_ref(),
            "/CN=pullsecret-test-token-issuer".as_ref(),
            "-days".as_ref(),
            "2".as_ref(),
            "-keyout".as_ref(),
            key_pem.as_os_str(),
            "-out".as_ref(),
            cert.as_os_str(),
        ]);
        openssl(&[
            "pkcs8".as_ref(),
            "-topk8".as_ref(),
            "-nocrypt".as_ref(),
            "-outform".as_ref(),
            "DER".as_ref(),
            "-in".as_ref(),
            key_pem.as_os_str(),
            "-out".as_ref(),
            key_der.as_os_str(),
        ]);
        let cert_pem = std::fs::read_to_string(&cert).expect("read cert");
        let b64: String = cert_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        Arc::new(SigningKey {
            pkcs8: std::fs::read(&key_der).expect("read key"),
            cert_der: STANDARD.decode(b64).expect("cert base64"),
            cert_pem,
        })
    })
    .clone()
}

/// The authenticated user (`None`: anonymous) and the refresh token to hand out, if any.
type Identity = (Option<String>, Option<String>);
/// An error status and JSON body.
type Refusal = (u16, Value);

struct IssuerState {
    config: Mutex<TokenIssuerConfig>,
    key: Arc<SigningKey>,
    keypair: ring::signature::RsaKeyPair,
    requests: Mutex<Vec<TokenRequest>>,
    refresh_tokens: Mutex<HashMap<String, String>>,
    counter: AtomicU64,
}

/// The `auth.token` server: answers `GET /token?service=…&scope=…` (optional Basic credentials)
/// and the OAuth2 `POST /token` password and refresh_token grants with RS256 JWTs; stops on drop.
pub struct TokenIssuer {
    addr: SocketAddr,
    realm: String,
    state: Arc<IssuerState>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TokenIssuer {
    /// Listens on 127.0.0.1 (free port). Needs `openssl` on PATH for the one-time key generation.
    pub fn start(config: TokenIssuerConfig) -> Self {
        let key = signing_key();
        let keypair = ring::signature::RsaKeyPair::from_pkcs8(&key.pkcs8).expect("RSA PKCS#8 key");
        let state = Arc::new(IssuerState {
            config: Mutex::new(config),
            key,
            keypair,
            requests: Mutex::new(Vec::new()),
            refresh_tokens: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token issuer");
        let addr = listener.local_addr().expect("issuer addr");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = conn else { continue };
                    let state = state.clone();
                    // One thread per connection so a stalled client cannot block the others.
                    std::thread::spawn(move || serve_token_conn(&state, stream));
                }
            })
        };
        Self {
            addr,
            realm: format!("http://{addr}/token"),
            state,
            stop,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/token`.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    pub fn service(&self) -> String {
        self.state.config.lock().unwrap().service.clone()
    }

    /// The signing certificate (PEM), the registry's `rootcertbundle`.
    pub fn cert_pem(&self) -> &str {
        &self.state.key.cert_pem
    }

    /// Every token request so far, oldest first.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn clear_requests(&self) {
        self.state.requests.lock().unwrap().clear();
    }

    /// Changes the config of the running issuer (rotate a password, revoke a grant, shorten expiry).
    pub fn configure(&self, change: impl FnOnce(&mut TokenIssuerConfig)) {
        change(&mut self.state.config.lock().unwrap());
    }

    /// Signs a token directly, e.g. one that is already expired (`lifetime_secs` < -60).
    pub fn mint(&self, subject: &str, access: &[Access], lifetime_secs: i64) -> String {
        let config = self.state.config.lock().unwrap().clone();
        self.state.sign(&config, subject, access, lifetime_secs)
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the loop sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct IncomingRequest {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn read_request(stream: &TcpStream) -> std::io::Result<IncomingRequest> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad request");
    let mut reader = BufReader::new(stream.take(1 << 20));
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().ok_or_else(bad)?.to_string();
    let target = parts.next().ok_or_else(bad)?.to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(bad());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len.min(1 << 16)];
    reader.read_exact(&mut body)?;
    Ok(IncomingRequest {
        method,
        target,
        headers,
        body,
    })
}

fn serve_token_conn(state: &IssuerState, mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let Ok(req) = read_request(&stream) else {
        return;
    };
    let (status, body) = state.handle(&req);
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    let body = body.to_string();
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status == 401 {
        head.push_str("WWW-Authenticate: Basic realm=\"pullsecret-test-issuer\"\r\n");
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}

impl IssuerState {
    fn handle(&self, req: &IncomingRequest) -> (u16, Value) {
        let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
        if path != "/token" {
            return (
                404,
                json!({"errors": [{"code": "NOT_FOUND", "message": "only /token is served"}]}),
            );
        }
        let params = match req.method.as_str() {
            "GET" => parse_form(query),
            "POST" => parse_form(&String::from_utf8_lossy(&req.body)),
            _ => {
                return (
                    405,
                    json!({"errors": [{"code": "UNSUPPORTED", "message": "GET or POST"}]}),
                )
            }
        };
        let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let scopes: Vec<String> = params
            .iter()
            .filter(|(n, _)| n == "scope")
            .flat_map(|(_, v)| {
                v.split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut record = TokenRequest {
            method: req.method.clone(),
            grant_type: None,
            user: None,
            offered_user: None,
            service: param("service"),
            scopes: scopes.clone(),
            granted: Vec::new(),
            status: 200,
            refresh_token_issued: false,
        };
        let config = self.config.lock().unwrap().clone();
        // Who is asking, and whether they get a refresh token.
        let outcome = if req.method == "GET" {
            let offline = param("offline_token").as_deref() == Some("true");
            self.authenticate_basic(&config, req, offline, &mut record)
        } else {
            record.grant_type = param("grant_type");
            self.authenticate_grant(&config, &param, &mut record)
        };
        let (user, refresh) = match outcome {
            Ok(v) => v,
            Err((status, body)) => {
                record.status = status;
                self.requests.lock().unwrap().push(record);
                return (status, body);
            }
        };
        let granted: Vec<Access> = scopes
            .iter()
            .filter_map(|s| grant(&config, user.as_deref(), s))
            .collect();
        let token = self.sign(
            &config,
            user.as_deref().unwrap_or(""),
            &granted,
            config.expires_in,
        );
        let mut body = json!({
            "token": token,
            "access_token": token,
            "expires_in": config.expires_in,
            "issued_at": rfc3339(now_secs()),
        });
        if let Some(rt) = &refresh {
            body["refresh_token"] = json!(rt);
        }
        record.user = user;
        record.granted = granted;
        record.refresh_token_issued = refresh.is_some();
        self.requests.lock().unwrap().push(record);
        (200, body)
    }

    /// docker/skopeo style: optional Basic credentials; a refresh token only with `offline_token=true`.
    fn authenticate_basic(
        &self,
        config: &TokenIssuerConfig,
        req: &IncomingRequest,
        offline: bool,
        record: &mut TokenRequest,
    ) -> Result<Identity, Refusal> {
        let basic = req
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .and_then(|(_, v)| v.strip_prefix("Basic "))
            .and_then(|b| STANDARD.decode(b.trim()).ok())
            .and_then(|b| String::from_utf8(b).ok());
        let Some((user, password)) = basic.as_deref().and_then(|s| s.split_once(':')) else {
            return Ok((None, None));
        };
        record.offered_user = Some(user.to_string());
        if !config.check_password(user, password) {
            let msg = "invalid username or password";
            return Err((
                401,
                json!({"errors": [{"code": "UNAUTHORIZED", "message": msg}]}),
            ));
        }
        let refresh = offline.then(|| self.new_refresh(user));
        Ok((Some(user.to_string()), refresh))
    }

    /// containerd style OAuth2 form: `grant_type=password` (always gets a refresh token) or
    /// `grant_type=refresh_token`.
    fn authenticate_grant(
        &self,
        config: &TokenIssuerConfig,
        param: &dyn Fn(&str) -> Option<String>,
        record: &mut TokenRequest,
    ) -> Result<Identity, Refusal> {
        let invalid = |why: &str| {
            (
                401,
                json!({"error": "invalid_grant", "error_description": why}),
            )
        };
        match param("grant_type").as_deref() {
            Some("password") => {
                let user = param("username").unwrap_or_default();
                record.offered_user = Some(user.clone());
                if !config.check_password(&user, &param("password").unwrap_or_default()) {
                    return Err(invalid("invalid username or password"));
                }
                let refresh = self.new_refresh(&user);
                Ok((Some(user), Some(refresh)))
            }
            Some("refresh_token") => {
                let rt = param("refresh_token").unwrap_or_default();
                let owner = self.refresh_tokens.lock().unwrap().get(&rt).cloned();
                // A refresh token dies with its user.
                let user = owner
                    .filter(|u| config.users.iter().any(|x| &x.name == u))
                    .ok_or_else(|| invalid("unknown refresh token"))?;
                record.offered_user = Some(user.clone());
                Ok((Some(user), Some(rt)))
            }
            _ => Err((400, json!({"error": "unsupported_grant_type"}))),
        }
    }

    fn new_refresh(&self, user: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let mut salt = [0u8; 8];
        let _ = getrandom::fill(&mut salt);
        let token = format!("refresh-{n}-{}", hex::encode(salt));
        self.refresh_tokens
            .lock()
            .unwrap()
            .insert(token.clone(), user.to_string());
        token
    }

    fn sign(
        &self,
        config: &TokenIssuerConfig,
        subject: &str,
        access: &[Access],
        lifetime: i64,
    ) -> String {
        let now = now_secs();
        let jti = self.counter.fetch_add(1, Ordering::SeqCst);
        // distribution 2.8 checks the signature with the key in the `x5c` certificate, after
        // verifying that certificate against `rootcertbundle`.
        let header =
            json!({"typ": "JWT", "alg": "RS256", "x5c": [STANDARD.encode(&self.key.cert_der)]});
        let claims = json!({
            "iss": config.issuer,
            "sub": subject,
            "aud": config.service,
            "exp": now + lifetime,
            "nbf": now.min(now + lifetime),
            "iat": now,
            "jti": format!("pullsecret-test-{jti}"),
            "access": access,
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0; self.keypair.public().modulus_len()];
        self.keypair
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .expect("RS256 sign");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

/// The access granted for one requested scope (`type:name:actions`): the requested actions that
/// the user's grants (or the public list) allow; `None` when nothing is granted.
fn grant(config: &TokenIssuerConfig, user: Option<&str>, scope: &str) -> Option<Access> {
    let (rest, actions) = scope.rsplit_once(':')?;
    let (kind, name) = rest.split_once(':')?;
    // `repository(plugin)` is a repository with a resource class.
    let kind = kind.split('(').next().unwrap_or(kind);
    if kind != "repository" {
        return None;
    }
    let mut allowed: Vec<&str> = Vec::new();
    if config.public_repos.iter().any(|p| glob_match(p, name)) {
        allowed.push("pull");
    }
    if let Some(u) = user.and_then(|u| config.users.iter().find(|x| x.name == u)) {
        for g in u.grants.iter().filter(|g| glob_match(&g.repo, name)) {
            allowed.extend(g.actions.iter().map(String::as_str));
        }
    }
    let all = allowed.contains(&"*");
    let mut granted: Vec<String> = Vec::new();
    for a in actions.split(',').filter(|a| !a.is_empty()) {
        if (all || allowed.contains(&a)) && !granted.iter().any(|g| g == a) {
            granted.push(a.to_string());
        }
    }
    (!granted.is_empty()).then(|| Access {
        kind: kind.into(),
        name: name.into(),
        actions: granted,
    })
}

/// `*` matches any run of characters, `/` included; everything else is literal.
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// `application/x-www-form-urlencoded` (also query strings) into ordered pairs.
fn parse_form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

/// Percent-encodes a form/query value.
pub fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|c| match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (c as char).to_string()
            }
            _ => format!("%{c:02X}"),
        })
        .collect()
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// `YYYY-MM-DDTHH:MM:SSZ` for Unix seconds (civil-from-days, proleptic Gregorian).
fn rfc3339(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// ---------------------------------------------------------------------------------------------
// Images: OCI layouts built here, copied with skopeo
// ---------------------------------------------------------------------------------------------

/// A content-addressed blob with its bytes.
#[derive(Clone, Debug)]
pub struct Blob {
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
    pub data: Vec<u8>,
}

impl Blob {
    fn new(media_type: &str, data: Vec<u8>) -> Self {
        Self {
            media_type: media_type.into(),
            digest: sha256_digest(&data),
            size: data.len() as u64,
            data,
        }
    }

    fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// A pushed single-platform OCI image.
#[derive(Clone, Debug)]
pub struct ImageInfo {
    /// `ADDR/repo:tag`, or `ADDR/repo@digest` for a manifest inside an index.
    pub reference: String,
    pub manifest_digest: String,
    /// The exact manifest bytes the registry serves.
    pub manifest: Vec<u8>,
    pub config: Blob,
    /// Uncompressed tars (`application/vnd.oci.image.layer.v1.tar`), in manifest order.
    pub layers: Vec<Blob>,
    /// `linux/amd64` or `linux/arm64/v8`.
    pub platform: String,
}

impl ImageInfo {
    pub fn config_digest(&self) -> &str {
        &self.config.digest
    }

    pub fn layer_digests(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.digest.clone()).collect()
    }
}

/// A pushed multi-platform OCI index.
#[derive(Clone, Debug)]
pub struct IndexInfo {
    /// `ADDR/repo:tag`.
    pub reference: String,
    pub index_digest: String,
    /// The exact index bytes the registry serves.
    pub index: Vec<u8>,
    /// linux/amd64 first, then linux/arm64/v8.
    pub manifests: Vec<ImageInfo>,
}

impl IndexInfo {
    pub fn platform(&self, platform: &str) -> &ImageInfo {
        self.manifests
            .iter()
            .find(|m| m.platform == platform)
            .unwrap_or_else(|| panic!("no {platform} manifest"))
    }
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A one-file ustar archive (mode 0644, uid/gid 0, mtime 0) so layers are real, reproducible tars.
pub fn tar_one_file(name: &str, content: &[u8]) -> Vec<u8> {
    assert!(name.len() < 100, "tar member name too long");
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let field = |h: &mut [u8; 512], at: usize, len: usize, value: u64| {
        let s = format!("{value:0width$o}\0", width = len - 1);
        h[at..at + len].copy_from_slice(s.as_bytes());
    };
    field(&mut h, 100, 8, 0o644);
    field(&mut h, 108, 8, 0);
    field(&mut h, 116, 8, 0);
    field(&mut h, 124, 12, content.len() as u64);
    field(&mut h, 136, 12, 0);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

/// Builds the config, layer tars and manifest of one platform. Layer `i` holds `content[i]` as
/// file `layer-<i>.bin`, or `layer-<arch>-<i>.bin` when `distinct_per_arch`, so platforms differ.
fn build_image(
    layers: &[Vec<u8>],
    arch: &str,
    variant: Option<&str>,
    distinct_per_arch: bool,
) -> (Blob, Blob, Vec<Blob>) {
    let layer_blobs: Vec<Blob> = layers
        .iter()
        .enumerate()
        .map(|(i, content)| {
            let name = if distinct_per_arch {
                format!("layer-{arch}-{i}.bin")
            } else {
                format!("layer-{i}.bin")
            };
            Blob::new(OCI_LAYER_TAR, tar_one_file(&name, content))
        })
        .collect();
    // Uncompressed layers: the diff_id is the blob digest.
    let mut config = json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": arch,
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": layer_blobs.iter().map(|l| l.digest.clone()).collect::<Vec<_>>()},
    });
    if let Some(v) = variant {
        config["variant"] = json!(v);
    }
    let config = Blob::new(
        OCI_CONFIG,
        serde_json::to_vec(&config).expect("config json"),
    );
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": layer_blobs.iter().map(Blob::descriptor).collect::<Vec<_>>(),
    });
    let manifest = Blob::new(
        OCI_MANIFEST,
        serde_json::to_vec(&manifest).expect("manifest json"),
    );
    (manifest, config, layer_blobs)
}

/// Writes an OCI image layout holding `blobs`, with `top` tagged `tag` in index.json.
fn write_layout(dir: &Path, blobs: &[&Blob], top: &Blob, tag: &str) {
    let blob_dir = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blob_dir).expect("mkdir blobs");
    for b in blobs.iter().copied().chain([top]) {
        std::fs::write(
            blob_dir.join(b.digest.trim_start_matches("sha256:")),
            &b.data,
        )
        .expect("write blob");
    }
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("write oci-layout");
    let mut desc = top.descriptor();
    desc["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    let index = json!({"schemaVersion": 2, "manifests": [desc]});
    std::fs::write(dir.join("index.json"), index.to_string()).expect("write index.json");
}

/// Pushes a linux/amd64 OCI image whose layer `i` is a tar holding `layers[i]` to
/// `registry_addr/repo:tag` with skopeo (digests preserved, so the returned ones are the registry's).
pub fn push_image(
    registry_addr: &str,
    repo: &str,
    tag: &str,
    creds: Option<(&str, &str)>,
    layers: &[Vec<u8>],
) -> ImageInfo {
    let (manifest, config, layer_blobs) = build_image(layers, "amd64", None, false);
    let layout = tempfile::tempdir().expect("layout tempdir");
    let mut blobs: Vec<&Blob> = layer_blobs.iter().collect();
    blobs.push(&config);
    write_layout(layout.path(), &blobs, &manifest, tag);
    skopeo_push(layout.path(), tag, registry_addr, repo, creds, false);
    ImageInfo {
        reference: format!("{registry_addr}/{repo}:{tag}"),
        manifest_digest: manifest.digest,
        manifest: manifest.data,
        config,
        layers: layer_blobs,
        platform: "linux/amd64".into(),
    }
}

/// Pushes an OCI index with linux/amd64 and linux/arm64/v8 images (`skopeo copy --all`). Both get
/// one layer per `layers` entry with the same content under per-arch file names, so every blob of
/// one platform differs from the other's.
pub fn push_index(
    registry_addr: &str,
    repo: &str,
    tag: &str,
    creds: Option<(&str, &str)>,
    layers: &[Vec<u8>],
) -> IndexInfo {
    let layout = tempfile::tempdir().expect("layout tempdir");
    let mut all_blobs: Vec<Blob> = Vec::new();
    let mut images = Vec::new();
    let mut entries = Vec::new();
    for (arch, variant, platform) in [
        ("amd64", None, "linux/amd64"),
        ("arm64", Some("v8"), "linux/arm64/v8"),
    ] {
        let (manifest, config, layer_blobs) = build_image(layers, arch, variant, true);
        let mut desc = manifest.descriptor();
        desc["platform"] = json!({"architecture": arch, "os": "linux"});
        if let Some(v) = variant {
            desc["platform"]["variant"] = json!(v);
        }
        entries.push(desc);
        all_blobs.extend(layer_blobs.iter().cloned());
        all_blobs.push(config.clone());
        all_blobs.push(manifest.clone());
        images.push(ImageInfo {
            reference: format!("{registry_addr}/{repo}@{}", manifest.digest),
            manifest_digest: manifest.digest,
            manifest: manifest.data,
            config,
            layers: layer_blobs,
            platform: platform.into(),
        });
    }
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
    let index = Blob::new(OCI_INDEX, serde_json::to_vec(&index).expect("index json"));
    write_layout(
        layout.path(),
        &all_blobs.iter().collect::<Vec<_>>(),
        &index,
        tag,
    );
    skopeo_push(layout.path(), tag, registry_addr, repo, creds, true);
    IndexInfo {
        reference: format!("{registry_addr}/{repo}:{tag}"),
        index_digest: index.digest,
        index: index.data,
        manifests: images,
    }
}

fn skopeo_push(
    layout: &Path,
    tag: &str,
    addr: &str,
    repo: &str,
    creds: Option<(&str, &str)>,
    all: bool,
) {
    let env = Env::new();
    let src = format!("oci:{}:{tag}", layout.display());
    let dest = format!("docker://{addr}/{repo}:{tag}");
    // --preserve-digests: skopeo would otherwise gzip the tar layers for a docker:// destination,
    // and every digest returned to the caller would be wrong.
    let mut args = vec!["copy", "--preserve-digests", "--dest-tls-verify=false"];
    if all {
        args.push("--all");
    }
    let creds_arg = creds.map(|(u, p)| format!("{u}:{p}"));
    if let Some(c) = &creds_arg {
        args.extend(["--dest-creds", c]);
    }
    args.extend([src.as_str(), dest.as_str()]);
    let out = skopeo(&env, &args);
    assert!(
        out.status.success(),
        "skopeo push to {dest} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Copies `ADDR/reference` (`repo:tag` or `repo@digest`) into an OCI layout at `dest` (tagged
/// `pulled`) with skopeo in a private environment; the caller checks the outcome.
pub fn skopeo_pull(
    registry_addr: &str,
    reference: &str,
    creds: Option<(&str, &str)>,
    dest: &Path,
) -> Output {
    let env = Env::new();
    let src = format!("docker://{registry_addr}/{reference}");
    let dst = format!("oci:{}:pulled", dest.display());
    let creds_arg = creds.map(|(u, p)| format!("{u}:{p}"));
    let mut args = vec!["copy", "--preserve-digests", "--src-tls-verify=false"];
    if let Some(c) = &creds_arg {
        args.extend(["--src-creds", c]);
    }
    args.extend([src.as_str(), dst.as_str()]);
    skopeo(&env, &args)
}

/// The auth file skopeo uses under `env` (`REGISTRY_AUTH_FILE`); write `credHelpers` here to make
/// skopeo call a credential helper.
pub fn skopeo_auth_file(env: &Env) -> PathBuf {
    env.path("runtime").join("containers/auth.json")
}

/// Runs `skopeo --insecure-policy ARGS` under `env` with a private auth file (created empty if
/// missing) and temp dir, bounded by a timeout; stdout and stderr are captured.
pub fn skopeo(env: &Env, args: &[&str]) -> Output {
    let bin = require_bin("skopeo", "apt-get install skopeo")
        .expect("skopeo is required by registry tests");
    let auth = skopeo_auth_file(env);
    if !auth.exists() {
        std::fs::create_dir_all(auth.parent().expect("parent")).expect("mkdir containers");
        std::fs::write(&auth, r#"{"auths":{}}"#).expect("write auth.json");
    }
    let tmp = env.path("runtime").join("tmp");
    std::fs::create_dir_all(&tmp).expect("mkdir tmp");
    let (out_path, err_path) = (tmp.join("skopeo.stdout"), tmp.join("skopeo.stderr"));
    let mut cmd = env.cmd(bin);
    // --insecure-policy: the system policy.json is not ours to depend on.
    cmd.arg("--insecure-policy")
        .args(args)
        .env("REGISTRY_AUTH_FILE", &auth)
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        // Files, not pipes: nothing has to drain them while we wait with a timeout.
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"));
    let mut child = cmd.spawn().expect("spawn skopeo");
    let status = match child.wait_timeout(SKOPEO_TIMEOUT).expect("wait skopeo") {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("skopeo {args:?} timed out after {SKOPEO_TIMEOUT:?}");
        }
    };
    Output {
        status,
        stdout: std::fs::read(&out_path).unwrap_or_default(),
        stderr: std::fs::read(&err_path).unwrap_or_default(),
    }
}

#[test]
fn registry_support_pure_helpers() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_825_599), "2000-02-29T11:59:59Z");
    assert_eq!(rfc3339(1_767_225_600), "2026-01-01T00:00:00Z");
    assert!(glob_match("team/*", "team/a/b") && glob_match("a*c", "abbc") && glob_match("x", "x"));
    assert!(!glob_match("team/*", "other/a") && !glob_match("x", "xy"));
    assert_eq!(percent_decode("a%2Fb+c%3a"), "a/b c:");
    assert_eq!(
        percent_decode(&form_encode("repository:a/b:pull,push")),
        "repository:a/b:pull,push"
    );
    assert_eq!(
        dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").as_deref(),
        Some(&b"abcde"[..])
    );
    let tar = tar_one_file("f", b"hi");
    assert_eq!(tar.len(), 512 * 4);
    assert_eq!(&tar[257..262], b"ustar");
}
