//! Integration tests for the `op://` and `vault://` reference backends, run against
//! a fake `op` CLI (a shell script) and a fake Vault HTTP server.
//!
//! Both backends read process-global environment variables (`PATH`,
//! `PULLSECRET_OP_BIN`, `VAULT_*`), so every test takes `ENV_LOCK` through `EnvGuard`
//! and gets the variables it touched restored afterwards, even if it panics.

// Tests print diagnostics for whoever reads a failure.
#![allow(clippy::print_stdout, clippy::print_stderr)]
#![cfg(unix)]

#[path = "support/fake_vault.rs"]
mod fake_vault;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pullsecret::secret::{RefError, RefResolver, SecretRef};
use secrecy::ExposeSecret;

use fake_vault::FakeVault;

static ENV_LOCK: Mutex<()> = Mutex::new(());

/// Holds `ENV_LOCK` and puts back every variable it changed when dropped.
struct EnvGuard {
    saved: Vec<(String, Option<OsString>)>,
    _lock: MutexGuard<'static, ()>,
}

impl EnvGuard {
    fn new() -> Self {
        // A test that panicked while holding the lock already had its variables
        // restored by its guard, so a poisoned lock is safe to reuse.
        let lock = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        Self {
            saved: Vec::new(),
            _lock: lock,
        }
    }

    fn remember(&mut self, key: &str) {
        if !self.saved.iter().any(|(k, _)| k == key) {
            self.saved.push((key.to_string(), std::env::var_os(key)));
        }
    }

    fn set(&mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) {
        self.remember(key);
        std::env::set_var(key, value);
    }

    fn remove(&mut self, key: &str) {
        self.remember(key);
        std::env::remove_var(key);
    }
}

impl Drop for EnvGuard {
    fn drop(&mut self) {
        for (key, value) in self.saved.drain(..).rev() {
            match value {
                Some(v) => std::env::set_var(&key, v),
                None => std::env::remove_var(&key),
            }
        }
    }
}

fn parse(s: &str) -> SecretRef {
    SecretRef::parse(s)
        .expect("valid reference")
        .expect("is a reference")
}

// ---------------------------------------------------------------------------
// op://
// ---------------------------------------------------------------------------

/// Writes an executable `sh` script. Callers hold the env lock, and every test
/// that spawns does too, so no fork can inherit the write fd (ETXTBSY).
fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A fake `op` that records its argv (one word per line) next to itself, refuses
/// anything but the exact `read --no-newline op://vault/item/field` call, and
/// prints `value` without a newline as `op read --no-newline` does.
fn fake_op_script(dir: &Path, name: &str, value: &str) -> PathBuf {
    let argv_file = dir.join(format!("{name}.argv"));
    write_script(
        dir,
        name,
        &format!(
            r#"printf '%s\n' "$@" > '{argv}'
if [ "$#" -ne 3 ] || [ "$1" != read ] || [ "$2" != --no-newline ] || [ "$3" != op://vault/item/field ]; then
  echo "fake op: unexpected arguments: $*" >&2
  exit 64
fi
printf '%s' '{value}'
"#,
            argv = argv_file.display(),
        ),
    )
}

#[test]
fn op_reads_through_the_op_cli_found_on_path() {
    let mut env = EnvGuard::new();
    let dir = tempfile::tempdir().unwrap();
    fake_op_script(dir.path(), "op", "op-s3cret-from-path");
    let mut path = OsString::from(dir.path());
    if let Some(old) = std::env::var_os("PATH") {
        path.push(":");
        path.push(old);
    }
    env.set("PATH", path);
    env.remove("PULLSECRET_OP_BIN");

    let value = RefResolver::default()
        .resolve(&parse("op://vault/item/field"))
        .expect("fake op resolves");
    assert_eq!(value.expose_secret(), "op-s3cret-from-path");
    let argv = std::fs::read_to_string(dir.path().join("op.argv")).unwrap();
    assert_eq!(argv, "read\n--no-newline\nop://vault/item/field\n");
}

#[test]
fn op_bin_env_overrides_path() {
    let mut env = EnvGuard::new();
    let dir = tempfile::tempdir().unwrap();
    // An `op` on PATH that must not be the one run.
    fake_op_script(dir.path(), "op", "wrong-op-from-path");
    let chosen = fake_op_script(dir.path(), "my-op", "op-s3cret-from-env");
    let mut path = OsString::from(dir.path());
    if let Some(old) = std::env::var_os("PATH") {
        path.push(":");
        path.push(old);
    }
    env.set("PATH", path);
    env.set("PULLSECRET_OP_BIN", &chosen);

    let value = RefResolver::default()
        .resolve(&parse("op://vault/item/field"))
        .expect("fake op resolves");
    assert_eq!(value.expose_secret(), "op-s3cret-from-env");
    assert!(!dir.path().join("op.argv").exists(), "the PATH op ran");
}

#[test]
fn op_failure_names_op_but_hides_its_output() {
    let mut env = EnvGuard::new();
    let dir = tempfile::tempdir().unwrap();
    let canary = "CANARY-op-output-7f3a9c";
    let op = write_script(
        dir.path(),
        "op",
        &format!("echo '{canary}'\necho '[ERROR] {canary}' >&2\nexit 1\n"),
    );
    env.set("PULLSECRET_OP_BIN", &op);

    let err = RefResolver::default()
        .resolve(&parse("op://vault/item/field"))
        .expect_err("op exited 1");
    assert!(
        matches!(&err, RefError::CmdFailed { cmd, .. } if cmd == "op read"),
        "{err:?}"
    );
    let shown = err.to_string();
    assert!(shown.contains("op"), "{shown}");
    assert!(!shown.contains(canary), "{shown}");
    assert!(!format!("{err:?}").contains(canary), "{err:?}");
}

#[test]
fn op_that_hangs_is_killed_after_the_timeout() {
    let mut env = EnvGuard::new();
    let dir = tempfile::tempdir().unwrap();
    // `exec` so the kill reaches the sleeping process itself, not just a parent shell.
    let op = write_script(dir.path(), "op", "exec sleep 30\n");
    env.set("PULLSECRET_OP_BIN", &op);

    let resolver = RefResolver {
        cmd_timeout: Duration::from_millis(300),
        store: None,
    };
    let started = Instant::now();
    let err = resolver
        .resolve(&parse("op://vault/item/field"))
        .expect_err("op hangs");
    let elapsed = started.elapsed();
    assert!(
        matches!(&err, RefError::CmdTimeout { cmd, .. } if cmd == "op read"),
        "{err:?}"
    );
    assert!(err.to_string().contains("did not finish"), "{err}");
    // wait_timeout's timed wait can wake a few microseconds before the deadline (CI saw
    // 299.96 ms), so the lower bound allows for that; the upper bound is what proves the kill.
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(10),
        "{elapsed:?}"
    );
}

#[test]
fn op_missing_binary_is_a_spawn_error() {
    let mut env = EnvGuard::new();
    let dir = tempfile::tempdir().unwrap();
    env.set("PULLSECRET_OP_BIN", dir.path().join("no-such-op"));

    let err = RefResolver::default()
        .resolve(&parse("op://vault/item/field"))
        .expect_err("no op binary");
    assert!(
        matches!(&err, RefError::Spawn { cmd, .. } if cmd == "op read"),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------
// vault://
// ---------------------------------------------------------------------------

const REGISTRY_REF: &str = "vault://secret/ci/registry.password";
const REGISTRY_PATH: &str = "/v1/secret/data/ci/registry";

/// Takes the env lock and clears every variable the Vault backend reads, so a
/// developer's own Vault settings cannot leak into a test.
fn vault_env(addr: Option<&str>) -> EnvGuard {
    let mut env = EnvGuard::new();
    for key in [
        "VAULT_ADDR",
        "VAULT_TOKEN",
        "VAULT_NAMESPACE",
        "VAULT_CACERT",
        "VAULT_APPROLE_ROLE_ID",
        "VAULT_APPROLE_SECRET_ID",
    ] {
        env.remove(key);
    }
    // A proxy configured on the host would otherwise intercept calls to 127.0.0.1.
    env.set("NO_PROXY", "127.0.0.1,localhost");
    if let Some(addr) = addr {
        env.set("VAULT_ADDR", addr);
    }
    env
}

fn vault_err(r: &str) -> RefError {
    let err = RefResolver::default()
        .resolve(&parse(r))
        .expect_err("vault read should fail");
    assert!(matches!(err, RefError::Vault(_)), "{err:?}");
    err
}

#[test]
fn vault_token_read_of_kv_v2() {
    let vault = FakeVault::start();
    let mut env = vault_env(Some(&vault.url()));
    env.set("VAULT_TOKEN", fake_vault::TOKEN);

    let value = RefResolver::default()
        .resolve(&parse(REGISTRY_REF))
        .expect("vault read");
    assert_eq!(value.expose_secret(), fake_vault::PASSWORD);

    let reqs = vault.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].path, REGISTRY_PATH);
    assert_eq!(reqs[0].header("X-Vault-Token"), Some(fake_vault::TOKEN));
    assert_eq!(reqs[0].header("X-Vault-Namespace"), None);
}

#[test]
fn vault_sends_namespace_header_when_set() {
    let vault = FakeVault::start();
    // A trailing slash on VAULT_ADDR is common and must not double the `/`.
    let mut env = vault_env(Some(&format!("{}/", vault.url())));
    env.set("VAULT_TOKEN", fake_vault::TOKEN);
    env.set("VAULT_NAMESPACE", "team-a/ci");

    let value = RefResolver::default()
        .resolve(&parse(REGISTRY_REF))
        .expect("vault read");
    assert_eq!(value.expose_secret(), fake_vault::PASSWORD);

    let reqs = vault.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].path, REGISTRY_PATH);
    assert_eq!(reqs[0].header("X-Vault-Token"), Some(fake_vault::TOKEN));
    assert_eq!(reqs[0].header("X-Vault-Namespace"), Some("team-a/ci"));
}

#[test]
fn vault_approle_login_then_read_with_client_token() {
    let vault = FakeVault::start();
    let mut env = vault_env(Some(&vault.url()));
    env.set("VAULT_APPROLE_ROLE_ID", fake_vault::ROLE_ID);
    env.set("VAULT_APPROLE_SECRET_ID", fake_vault::SECRET_ID);
    env.set("VAULT_NAMESPACE", "team-a");

    let value = RefResolver::default()
        .resolve(&parse(REGISTRY_REF))
        .expect("vault read via AppRole");
    assert_eq!(value.expose_secret(), fake_vault::PASSWORD);

    let reqs = vault.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    let login = &reqs[0];
    assert_eq!(login.method, "POST");
    assert_eq!(login.path, "/v1/auth/approle/login");
    assert_eq!(login.header("X-Vault-Token"), None);
    assert_eq!(login.header("X-Vault-Namespace"), Some("team-a"));
    let body: serde_json::Value = serde_json::from_slice(&login.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"role_id": fake_vault::ROLE_ID, "secret_id": fake_vault::SECRET_ID})
    );
    let read = &reqs[1];
    assert_eq!(read.method, "GET");
    assert_eq!(read.path, REGISTRY_PATH);
    assert_eq!(read.header("X-Vault-Token"), Some(fake_vault::CLIENT_TOKEN));
    assert_eq!(read.header("X-Vault-Namespace"), Some("team-a"));
}

#[test]
fn vault_approle_rejected_login_hides_the_secret_id() {
    let vault = FakeVault::start();
    let mut env = vault_env(Some(&vault.url()));
    let wrong_secret_id = "0d6a1e0b-wrong-secret-id-canary";
    env.set("VAULT_APPROLE_ROLE_ID", fake_vault::ROLE_ID);
    env.set("VAULT_APPROLE_SECRET_ID", wrong_secret_id);

    let shown = vault_err(REGISTRY_REF).to_string();
    assert!(
        shown.contains(&format!("{}/v1/auth/approle/login", vault.url())),
        "{shown}"
    );
    assert!(shown.contains("400"), "{shown}");
    assert!(!shown.contains(wrong_secret_id), "{shown}");
    // No read is attempted without a token.
    assert_eq!(vault.requests().len(), 1);
}

#[test]
fn vault_wrong_token_names_url_and_403_but_not_the_token() {
    let vault = FakeVault::start();
    let mut env = vault_env(Some(&vault.url()));
    let wrong = "hvs.WrongTokenCanary-5b2e";
    env.set("VAULT_TOKEN", wrong);

    let err = vault_err(REGISTRY_REF);
    let shown = err.to_string();
    assert!(
        shown.contains(&format!("{}{REGISTRY_PATH}", vault.url())),
        "{shown}"
    );
    assert!(shown.contains("403"), "{shown}");
    assert!(!shown.contains(wrong), "{shown}");
    assert!(!format!("{err:?}").contains(wrong), "{err:?}");

    let reqs = vault.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].header("X-Vault-Token"), Some(wrong));
}

#[test]
fn vault_missing_key_in_existing_secret() {
    let vault = FakeVault::start();
    let mut env = vault_env(Some(&vault.url()));
    env.set("VAULT_TOKEN", fake_vault::TOKEN);

    let shown = vault_err("vault://secret/ci/registry.token").to_string();
    assert!(shown.contains("\"token\""), "{shown}");
    assert!(shown.contains("secret/ci/registry"), "{shown}");
    // The error must not echo the other values of the secret it did read.
    assert!(!shown.contains(fake_vault::PASSWORD), "{shown}");
}

#[test]
fn vault_non_string_key_is_an_error() {
    let vault = FakeVault::start();
    let mut env = vault_env(Some(&vault.url()));
    env.set("VAULT_TOKEN", fake_vault::TOKEN);

    let shown = vault_err("vault://secret/ci/registry.port").to_string();
    assert!(shown.contains("\"port\""), "{shown}");
    assert!(shown.contains("not a string"), "{shown}");
}

#[test]
fn vault_missing_path_is_a_404_error() {
    let vault = FakeVault::start();
    let mut env = vault_env(Some(&vault.url()));
    env.set("VAULT_TOKEN", fake_vault::TOKEN);

    let shown = vault_err("vault://secret/ci/nope.password").to_string();
    assert!(
        shown.contains(&format!("{}/v1/secret/data/ci/nope", vault.url())),
        "{shown}"
    );
    assert!(shown.contains("404"), "{shown}");
    assert!(!shown.contains(fake_vault::TOKEN), "{shown}");
}

#[test]
fn vault_addr_unset_is_a_clear_error() {
    let mut env = vault_env(None);
    env.set("VAULT_TOKEN", fake_vault::TOKEN);

    let shown = vault_err(REGISTRY_REF).to_string();
    assert!(shown.contains("VAULT_ADDR is not set"), "{shown}");
    assert!(!shown.contains(fake_vault::TOKEN), "{shown}");
}

#[test]
fn vault_without_any_credentials_says_what_to_set() {
    let vault = FakeVault::start();
    let _env = vault_env(Some(&vault.url()));

    let shown = vault_err(REGISTRY_REF).to_string();
    assert!(shown.contains("VAULT_TOKEN"), "{shown}");
    assert!(shown.contains("VAULT_APPROLE_ROLE_ID"), "{shown}");
    assert!(vault.requests().is_empty());
}

#[test]
fn vault_unreadable_cacert_is_named() {
    let vault = FakeVault::start();
    let mut env = vault_env(Some(&vault.url()));
    env.set("VAULT_TOKEN", fake_vault::TOKEN);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-ca.pem");
    env.set("VAULT_CACERT", &missing);

    let shown = vault_err(REGISTRY_REF).to_string();
    assert!(shown.contains("VAULT_CACERT"), "{shown}");
    assert!(shown.contains(&missing.display().to_string()), "{shown}");
    assert!(vault.requests().is_empty());
}

#[test]
fn vault_follows_a_same_origin_redirect_with_the_token() {
    let vault = FakeVault::start();
    let mut env = vault_env(Some(&vault.url()));
    env.set("VAULT_TOKEN", fake_vault::TOKEN);
    vault.redirect(
        "/v1/secret/data/old/registry",
        &format!("{}{REGISTRY_PATH}", vault.url()),
    );

    let value = RefResolver::default()
        .resolve(&parse("vault://secret/old/registry.password"))
        .expect("vault read through a same-origin redirect");
    assert_eq!(value.expose_secret(), fake_vault::PASSWORD);
    let reqs = vault.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[1].path, REGISTRY_PATH);
    assert_eq!(reqs[1].header("X-Vault-Token"), Some(fake_vault::TOKEN));
}

#[test]
fn vault_token_never_follows_a_redirect_to_another_origin() {
    let vault = FakeVault::start();
    // Another port on the same host is another origin.
    let elsewhere = FakeVault::start();
    let mut env = vault_env(Some(&vault.url()));
    env.set("VAULT_TOKEN", fake_vault::TOKEN);
    env.set("VAULT_NAMESPACE", "team-a/ci");
    vault.redirect(
        REGISTRY_PATH,
        &format!("{}{REGISTRY_PATH}", elsewhere.url()),
    );
    vault.redirect(
        "/v1/auth/approle/login",
        &format!("{}/v1/auth/approle/login", elsewhere.url()),
    );

    let shown = vault_err(REGISTRY_REF).to_string();
    assert!(shown.contains("307"), "{shown}");
    assert!(shown.contains(&elsewhere.url()), "{shown}");
    assert!(!shown.contains(fake_vault::TOKEN), "{shown}");

    // AppRole login: the secret id is not sent on either.
    env.remove("VAULT_TOKEN");
    env.set("VAULT_APPROLE_ROLE_ID", fake_vault::ROLE_ID);
    env.set("VAULT_APPROLE_SECRET_ID", fake_vault::SECRET_ID);
    let shown = vault_err(REGISTRY_REF).to_string();
    assert!(shown.contains("AppRole login"), "{shown}");
    assert!(!shown.contains(fake_vault::SECRET_ID), "{shown}");

    for req in elsewhere.requests() {
        assert_eq!(req.header("X-Vault-Token"), None, "{req:?}");
        assert_eq!(req.header("X-Vault-Namespace"), None, "{req:?}");
        assert!(
            !String::from_utf8_lossy(&req.body).contains(fake_vault::SECRET_ID),
            "the secret id reached another origin"
        );
    }
    assert_eq!(vault.requests().len(), 2);
}

#[test]
fn vault_unreachable_names_url_and_cause() {
    // Bind then drop: the port is very likely free, so the connect is refused.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{addr}");
    let mut env = vault_env(Some(&url));
    env.set("VAULT_TOKEN", fake_vault::TOKEN);

    let shown = vault_err(REGISTRY_REF).to_string();
    assert!(shown.contains(&format!("{url}{REGISTRY_PATH}")), "{shown}");
    // The cause must survive stripping reqwest's copy of the URL.
    assert!(!shown.contains("url ()"), "{shown}");
    assert!(
        shown.to_ascii_lowercase().contains("connect"),
        "no cause in: {shown}"
    );
    assert!(!shown.contains(fake_vault::TOKEN), "{shown}");
}

// ---------------------------------------------------------------------------
// vault:// over TLS with VAULT_CACERT, served by `openssl s_server -WWW`
// ---------------------------------------------------------------------------

/// A private CA, a leaf for 127.0.0.1 signed by it, and an `openssl s_server`
/// serving `www/` over TLS; killed on drop.
struct TlsVault {
    dir: tempfile::TempDir,
    child: std::process::Child,
    url: String,
}

impl TlsVault {
    /// `None` when no `openssl` CLI is installed: the test then has nothing to run against.
    fn start() -> Option<Self> {
        use std::process::{Command, Stdio};
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let openssl = |args: &[&str]| -> Option<()> {
            let status = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .ok()?;
            assert!(status.success(), "openssl {args:?} failed");
            Some(())
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
                &["-subj", "/CN=pullsecret test CA"],
            ]
            .concat(),
        )?;
        openssl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "leaf.key",
                    "-out",
                    "leaf.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            ]
            .concat(),
        )?;
        // webpki matches the IP SAN (never the CN) and refuses a CA cert as the leaf.
        std::fs::write(
            d.join("leaf.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ])?;
        // -WWW serves `GET /PATH` from the file ./PATH, so the KV v2 body lives at
        // the API path; s_server checks no token, which the plain-HTTP tests cover.
        let www = d.join("www");
        std::fs::create_dir_all(www.join("v1/secret/data/ci")).unwrap();
        std::fs::write(
            www.join("v1/secret/data/ci/registry"),
            r#"{"request_id":"0f3c","lease_id":"","renewable":false,"lease_duration":0,"data":{"data":{"password":"tls-reg-pass"},"metadata":{"created_time":"2018-03-22T02:24:06.945319214Z","custom_metadata":null,"deletion_time":"","destroyed":false,"version":2}},"wrap_info":null,"warnings":null,"auth":null}"#,
        )
        .unwrap();
        // stdout goes to a file, not a pipe: s_server keeps logging per connection,
        // and a pipe nobody drains any more would kill it with SIGPIPE.
        let log_path = d.join("s_server.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = Command::new("openssl")
            .args(["s_server", "-accept", "127.0.0.1:0", "-WWW"])
            .arg("-cert")
            .arg(d.join("leaf.pem"))
            .arg("-key")
            .arg(d.join("leaf.key"))
            .current_dir(&www)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        // s_server announces the port it bound as `ACCEPT 127.0.0.1:PORT`.
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let port = text
                .lines()
                .find_map(|l| l.strip_prefix("ACCEPT "))
                .and_then(|addr| addr.rsplit(':').next())
                .map(str::to_string);
            match port {
                Some(p) => break p,
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("openssl s_server did not report its port: {text}");
                }
            }
        };
        Some(Self {
            dir,
            child,
            url: format!("https://127.0.0.1:{port}"),
        })
    }
}

impl Drop for TlsVault {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn vault_cacert_trusts_a_private_ca() {
    let mut env = vault_env(None);
    let Some(tls) = TlsVault::start() else {
        eprintln!("skipped: no openssl CLI");
        return;
    };
    env.set("VAULT_ADDR", &tls.url);
    env.set("VAULT_TOKEN", fake_vault::TOKEN);

    // Without the CA the server's certificate is not trusted, and the error says so.
    let shown = vault_err(REGISTRY_REF).to_string();
    assert!(shown.contains(&tls.url), "{shown}");
    assert!(shown.contains("certificate"), "{shown}");

    env.set("VAULT_CACERT", tls.dir.path().join("ca.pem"));
    let value = RefResolver::default()
        .resolve(&parse(REGISTRY_REF))
        .expect("vault read over TLS with VAULT_CACERT");
    assert_eq!(value.expose_secret(), "tls-reg-pass");
}

#[test]
fn vault_cacert_that_is_not_pem_is_named() {
    let mut env = vault_env(None);
    let Some(tls) = TlsVault::start() else {
        eprintln!("skipped: no openssl CLI");
        return;
    };
    env.set("VAULT_ADDR", &tls.url);
    env.set("VAULT_TOKEN", fake_vault::TOKEN);
    // A DER copy of the right CA: a common mistake that must not be silently ignored.
    let der = tls.dir.path().join("ca.der");
    let status = std::process::Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(tls.dir.path().join("ca.pem"))
        .arg("-out")
        .arg(&der)
        .status()
        .unwrap();
    assert!(status.success());
    env.set("VAULT_CACERT", &der);

    let shown = vault_err(REGISTRY_REF).to_string();
    assert!(shown.contains("VAULT_CACERT"), "{shown}");
    assert!(shown.contains(&der.display().to_string()), "{shown}");
}
