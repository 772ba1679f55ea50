//! Test support: isolated home/XDG directories, our binaries, external tools, the canary
//! secret, and one `eventually` for every wait. Each real component a test starts has its own
//! module below.
//!
//! Every polling wait goes through [`eventually`] (or [`try_eventually`] when the caller
//! handles the timeout). `PULLSECRET_TEST_PATIENCE` multiplies every such deadline (a number,
//! default 1; e.g. `PULLSECRET_TEST_PATIENCE=3` on a slow or heavily shared machine).

pub mod fault_server;
pub mod garage;
pub mod http;
pub mod images;
pub mod keyring;
pub mod postgres;
pub mod proxy;
pub mod registry;
pub mod skopeo;
pub mod token_issuer;
pub mod webdriver;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// True when CI demands every external component (set by tests/run.sh).
pub fn e2e() -> bool {
    std::env::var("PULLSECRET_E2E").is_ok_and(|v| v == "1")
}

/// The path of an external tool, or `None` (after a notice) when it is missing outside E2E mode.
pub fn require_bin(name: &str, install: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => Some(p),
        None if e2e() => panic!("{name} not found on PATH: {install}"),
        None => {
            eprintln!("SKIPPED: {name} not found ({install}); set PULLSECRET_E2E=1 to make this a failure");
            None
        }
    }
}

/// What a polled condition reports: `true`/`false`, or `Ok(value)` / `Err(why not yet)`.
pub trait Check {
    type Output;
    fn check(self) -> Result<Self::Output, String>;
}

impl Check for bool {
    type Output = ();
    fn check(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("still false".into())
        }
    }
}

impl<T> Check for Result<T, String> {
    type Output = T;
    fn check(self) -> Result<T, String> {
        self
    }
}

/// `PULLSECRET_TEST_PATIENCE`: the factor every `eventually` deadline is multiplied by.
fn patience() -> f64 {
    std::env::var("PULLSECRET_TEST_PATIENCE")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|p| p.is_finite() && *p > 0.0)
        .unwrap_or(1.0)
}

/// Polls `condition` (first at once, then every 10 ms backing off to 100 ms) until it holds or
/// `deadline` (times the patience) has passed; panics naming `what` and the last answer then.
pub fn eventually<C: Check>(
    deadline: Duration,
    what: &str,
    condition: impl FnMut() -> C,
) -> C::Output {
    try_eventually(deadline, condition).unwrap_or_else(|(waited, last)| {
        panic!("timed out after {waited:?} waiting for {what}; last: {last}")
    })
}

/// [`eventually`] for callers that handle the timeout themselves (retry, kill, ignore): the
/// value, or how long it waited and the condition's last answer.
pub fn try_eventually<C: Check>(
    deadline: Duration,
    mut condition: impl FnMut() -> C,
) -> Result<C::Output, (Duration, String)> {
    let started = Instant::now();
    let deadline = deadline.mul_f64(patience());
    let mut pause = Duration::from_millis(10);
    loop {
        match condition().check() {
            Ok(v) => return Ok(v),
            Err(last) if started.elapsed() >= deadline => return Err((started.elapsed(), last)),
            Err(_) => {}
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The upstream password every fault, bad-input and load test configures (the fault server
/// demands it); nothing the proxy writes (logs, response headers and bodies, /metrics) may
/// carry it.
pub const CANARY: &str = "canary-5e71d0-upstream-pw";
pub const CANARY_USER: &str = "fault-bot";

/// The forms the canary could leak in: plain, as Basic credentials, and base64 alone.
pub fn canary_forms() -> [String; 3] {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    [
        CANARY.to_string(),
        b64(&format!("{CANARY_USER}:{CANARY}")),
        b64(CANARY),
    ]
}

/// Panics naming `what` (never quoting `text`, which would print the secret) when `text`
/// carries the canary in any form.
pub fn assert_no_canary(what: &str, text: &str) {
    for (i, form) in canary_forms().iter().enumerate() {
        assert!(
            !text.contains(form.as_str()),
            "the canary secret (form {i}) leaked into {what}"
        );
    }
}

/// Stores the canary as a docker-registry secret named `name` for `server`.
pub fn store_canary_secret(env: &Env, name: &str, server: &str) {
    store_secret(env, name, server, CANARY_USER, CANARY);
}

/// `pullsecret secret create docker-registry NAME` with the password on stdin.
pub fn store_secret(env: &Env, name: &str, server: &str, user: &str, password: &str) {
    let cmd = env.pullsecret(&[
        "secret",
        "create",
        "docker-registry",
        name,
        "--docker-server",
        server,
        "--docker-username",
        user,
        "--docker-password-stdin",
    ]);
    let out = run_with_stdin(cmd, password.as_bytes());
    assert!(
        out.status.success(),
        "secret create {name}: {}",
        stderr(&out)
    );
}

/// A private HOME with XDG and docker/containers config dirs, so tests never see the user's files.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub extra: Vec<(String, String)>,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["home", "data", "config", "runtime", "docker"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        Self {
            dir,
            // A live keyring answers in a few ms, but a loaded CI machine can exceed the 200 ms
            // default; the test that wants the default (a silent bus) sets it back.
            extra: vec![("PULLSECRET_PROBE_MS".to_string(), "5000".to_string())],
        }
    }

    pub fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    pub fn set(&mut self, k: &str, v: &str) {
        self.extra.push((k.to_string(), v.to_string()));
    }

    /// A command for `bin` with the private environment applied.
    pub fn cmd(&self, bin: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(bin);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path("home"))
            .env("XDG_DATA_HOME", self.path("data"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("XDG_RUNTIME_DIR", self.path("runtime"))
            .env("DOCKER_CONFIG", self.path("docker"));
        for (k, v) in &self.extra {
            c.env(k, v);
        }
        c
    }

    pub fn pullsecret(&self, args: &[&str]) -> Command {
        let mut c = self.cmd(env!("CARGO_BIN_EXE_pullsecret"));
        c.args(args);
        c
    }

    pub fn helper(&self) -> Command {
        self.cmd(env!("CARGO_BIN_EXE_docker-credential-pullsecret"))
    }

    /// Every file under the store's data and config dirs with its bytes, to prove nothing changed.
    pub fn store_snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        for root in [self.path("data"), self.path("config")] {
            walk(&root, &mut out);
        }
        out.sort();
        out
    }
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else if !p.ends_with(".lock") {
            out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
        }
    }
}

/// Runs `cmd` with `input` on stdin.
pub fn run_with_stdin(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    child.wait_with_output().expect("wait")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// The arrange steps most proxy tests share: a token-auth registry whose issuer knows `pusher`
/// (every right) and some pull-only users, images pushed as `pusher`, secrets and proxy clients
/// stored in the test's [`Env`], then the proxy started with one `[[upstream]]` for the
/// registry. Each step runs when it is called, in the order written.
pub struct Scenario<'e> {
    env: &'e Env,
    reg: registry::Registry,
    config: String,
    upstream: (String, String),
}

impl<'e> Scenario<'e> {
    /// The user every [`Scenario`] registry lets push anything.
    pub const PUSHER: (&'static str, &'static str) = ("pusher", "push-pw");

    /// Starts the registry: `users` are `(name, password, repository glob)` with pull rights on
    /// the glob. `None` (after a SKIPPED notice) when a tool is missing outside E2E mode.
    pub fn token_registry(env: &'e Env, users: &[(&str, &str, &str)]) -> Option<Self> {
        let mut issuer = token_issuer::TokenIssuerConfig::new().user(
            Self::PUSHER.0,
            Self::PUSHER.1,
            &[("*", &["pull", "push"])],
        );
        for (name, password, repos) in users {
            issuer = issuer.user(name, password, &[(repos, &["pull"])]);
        }
        let reg = registry::Registry::start(registry::RegistryAuth::Token(issuer))?;
        Some(Self {
            env,
            reg,
            config: String::new(),
            upstream: ("up".into(), String::new()),
        })
    }

    /// The registry, e.g. for its address or issuer before the proxy starts.
    pub fn registry(&self) -> &registry::Registry {
        &self.reg
    }

    /// Pushes a linux/amd64 image as `pusher` (see [`images::push_image`]).
    pub fn push(&self, repo: &str, tag: &str, layers: &[Vec<u8>]) -> images::ImageInfo {
        images::push_image(self.reg.addr(), repo, tag, Some(Self::PUSHER), layers)
    }

    /// `secret create docker-registry NAME` for the registry in the default namespace.
    pub fn secret(self, name: &str, user: &str, password: &str) -> Self {
        store_secret(self.env, name, self.reg.addr(), user, password);
        self
    }

    /// Like [`Scenario::secret`] in namespace `ns` with `--scope scope`, overwriting.
    pub fn scoped_secret(
        self,
        ns: &str,
        name: &str,
        (user, password): (&str, &str),
        scope: &str,
    ) -> Self {
        store_scoped_secret(self.env, ns, name, self.reg.addr(), (user, password), scope);
        self
    }

    /// A secret in namespace `ns` whose password is the reference `password_ref`.
    pub fn secret_ref(self, ns: &str, name: &str, user: &str, password_ref: &str) -> Self {
        let out = self
            .env
            .pullsecret(&[
                "secret",
                "create",
                "docker-registry",
                name,
                "-n",
                ns,
                "--docker-server",
                self.reg.addr(),
                "--docker-username",
                user,
                "--docker-password-ref",
                password_ref,
            ])
            .output()
            .expect("secret create");
        assert!(out.status.success(), "{}", stderr(&out));
        self
    }

    /// `proxy client add USER -n NS` with `password`.
    pub fn client(self, user: &str, ns: &str, password: &str) -> Self {
        add_proxy_client(self.env, user, ns, password);
        self
    }

    /// Top-level proxy config lines (`[auth]`, `[limits]`, `default_upstream`, …).
    pub fn config(mut self, toml: &str) -> Self {
        self.config.push_str(toml);
        self.config.push('\n');
        self
    }

    /// Names the registry's `[[upstream]]` (default `up`) and adds `keys` to it; `{addr}` in
    /// `keys` stands for the registry's address.
    pub fn upstream(mut self, name: &str, keys: &str) -> Self {
        self.upstream = (name.into(), keys.replace("{addr}", self.reg.addr()));
        self
    }

    /// The `[[upstream]]` table the proxy gets (plain HTTP to the registry).
    pub fn upstream_toml(&self) -> String {
        let (name, keys) = &self.upstream;
        proxy::plain_upstream(name, self.reg.addr(), &format!("{keys}\n"))
    }

    /// Starts the proxy; the registry and the proxy, both stopped on drop.
    pub fn start(self) -> (registry::Registry, proxy::ProxyProcess) {
        let proxy = proxy::ProxyProcess::start(self.env, &self.config, &self.upstream_toml());
        (self.reg, proxy)
    }
}

/// `secret create docker-registry NAME -n NS --scope SCOPE --overwrite` with the password on stdin.
pub fn store_scoped_secret(
    env: &Env,
    ns: &str,
    name: &str,
    server: &str,
    (user, password): (&str, &str),
    scope: &str,
) {
    let c = env.pullsecret(&[
        "secret",
        "create",
        "docker-registry",
        name,
        "-n",
        ns,
        "--scope",
        scope,
        "--docker-server",
        server,
        "--docker-username",
        user,
        "--docker-password-stdin",
        "--overwrite",
    ]);
    let out = run_with_stdin(c, password.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `pullsecret proxy client add USER -n NS --password-stdin`.
pub fn add_proxy_client(env: &Env, user: &str, ns: &str, password: &str) {
    let out = run_with_stdin(
        env.pullsecret(&["proxy", "client", "add", user, "-n", ns, "--password-stdin"]),
        password.as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Polls `ready` until it answers `Ok`, or `child` exits first: `Ok(None)` when ready,
/// `Ok(Some(status))` when the process exited early, `Err((waited, last answer))` on timeout.
pub fn until_ready(
    child: &mut std::process::Child,
    timeout: Duration,
    mut ready: impl FnMut() -> Result<(), String>,
) -> Result<Option<std::process::ExitStatus>, (Duration, String)> {
    try_eventually(timeout, || {
        if let Some(status) = child.try_wait().ok().flatten() {
            return Ok(Some(status));
        }
        ready().map(|()| None)
    })
}

/// Waits up to `timeout` for a signalled `child` to exit; kills it and panics with `what` and
/// its `log` when it does not.
pub fn await_exit(
    mut child: std::process::Child,
    timeout: Duration,
    what: &str,
    log: impl FnOnce() -> String,
) {
    if try_eventually(timeout, || child.try_wait().ok().flatten().is_some()).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{what} did not stop within {timeout:?}; log:\n{}", log());
    }
}

/// A self-signed certificate for 127.0.0.1 and its key, as PEM files `NAME.crt` / `NAME.key` in
/// `env`, for TLS listeners and upstreams; `None` (after a SKIPPED notice) without openssl
/// outside E2E mode.
pub fn loopback_cert(env: &Env, name: &str) -> Option<(PathBuf, PathBuf)> {
    let openssl = require_bin("openssl", "apt-get install openssl")?;
    let (cert, key) = (
        env.path(&format!("{name}.crt")),
        env.path(&format!("{name}.key")),
    );
    let out = Command::new(openssl)
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl: {}", stderr(&out));
    Some((cert, key))
}

/// The value of the first `/metrics` line of the proxy at `addr` that starts with `series`
/// (a name, or a name with its labels); `None` when there is none.
pub fn metric(addr: &str, series: &str) -> Option<f64> {
    let m = http::http_request("GET", addr, "/metrics", &[], b"")
        .ok()?
        .text();
    m.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
