//! A real CNCF distribution registry (`docker-registry serve`) on loopback: anonymous,
//! htpasswd or token auth (the issuer from [`super::token_issuer`]), with its access log.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::http::http_request;
use super::token_issuer::{TokenIssuer, TokenIssuerConfig};
use super::{require_bin, try_eventually};

/// Registry start-up on a loaded 2-core machine (parallel tests, cargo builds) can take a few seconds.
const START_TIMEOUT: Duration = Duration::from_secs(10);

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
        let mut child = Command::new(&self.bin)
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
        let started = super::until_ready(&mut child, START_TIMEOUT, || {
            http_request("GET", &self.addr, "/v2/", &[], b"")
                .map(|_| ())
                .map_err(|e| format!("GET /v2/: {e}"))
        });
        self.child = Some(child);
        match started {
            Ok(None) => true,
            Ok(Some(status)) => {
                eprintln!("docker-registry on {} exited early: {status}", self.addr);
                self.child = None;
                false
            }
            Err(_) => {
                self.kill();
                false
            }
        }
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
    let (mut last, mut since) = (len(), Instant::now());
    // Past the deadline the log is read as it is.
    let _ = try_eventually(Duration::from_secs(3), || {
        let now = len();
        if now != last {
            (last, since) = (now, Instant::now());
        }
        since.elapsed() >= Duration::from_millis(150)
    });
}

pub fn free_loopback_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").to_string()
}

/// A double-quoted YAML scalar (JSON strings are valid YAML).
fn yaml_str(s: impl AsRef<std::ffi::OsStr>) -> String {
    serde_json::to_string(&s.as_ref().to_string_lossy()).expect("quote")
}
