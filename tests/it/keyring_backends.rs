//! OS keyring backends for real: gnome-keyring's Secret Service under dbus-run-session, kernel
//! keyutils, importing docker's own keychain entries, and clear errors when a backend is missing.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helper_protocol::TABLE;
use crate::support::keyring::Keyring;
use crate::support::{eventually, require_bin, run_with_stdin, stderr, stdout, Env};

const NOT_FOUND: &str = "credentials not found in native keychain\n";

/// An environment whose commands talk to `keyring` with `store = "secret-service"`.
fn secret_service_env(keyring: &Keyring) -> Env {
    let mut env = Env::new();
    env.set("DBUS_SESSION_BUS_ADDRESS", &keyring.bus);
    env.set("PULLSECRET_STORE", "secret-service");
    env
}

fn helper(env: &Env, verb: &str, input: &str) -> (String, Option<i32>) {
    let mut c = env.helper();
    c.arg(verb);
    let out = run_with_stdin(c, input.as_bytes());
    (stdout(&out), out.status.code())
}

fn cli(env: &Env, args: &[&str], input: &str) -> std::process::Output {
    run_with_stdin(env.pullsecret(args), input.as_bytes())
}

/// Object paths of Secret Service items whose attributes match, asked with dbus-send (not us).
fn items_with(bus: &str, attrs: &[(&str, &str)]) -> Vec<String> {
    let dict: Vec<String> = attrs.iter().map(|(k, v)| format!("{k},{v}")).collect();
    let out = Command::new("dbus-send")
        .args([
            "--session",
            "--print-reply",
            "--dest=org.freedesktop.secrets",
            "/org/freedesktop/secrets",
        ])
        .arg("org.freedesktop.Secret.Service.SearchItems")
        .arg(format!("dict:string:string:{}", dict.join(",")))
        .env("DBUS_SESSION_BUS_ADDRESS", bus)
        .output()
        .expect("dbus-send");
    assert!(out.status.success(), "SearchItems failed: {}", stderr(&out));
    stdout(&out)
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("object path \"")
                .and_then(|p| p.strip_suffix('"'))
        })
        .map(str::to_string)
        .collect()
}

/// No file-store data was written (the lock directory of keyring stores holds no secrets).
fn assert_no_file_store_data(env: &Env) {
    let files: Vec<_> = env
        .store_snapshot()
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| !p.components().any(|c| c.as_os_str() == "keyring-v1"))
        .collect();
    assert!(files.is_empty(), "the file store was written: {files:?}");
}

#[test]
fn secret_service_create_list_get_erase() {
    let home = tempfile::tempdir().expect("tempdir");
    let Some(keyring) = Keyring::start(home.path()) else {
        return;
    };
    let env = secret_service_env(&keyring);

    let out = cli(
        &env,
        &[
            "secret",
            "create",
            "docker-registry",
            "regcred",
            "--docker-server=reg.example:5000",
            "--docker-username=alice",
            "--docker-password-stdin",
        ],
        "s3cr3t\n",
    );
    assert!(out.status.success(), "create: {}", stderr(&out));
    let out = cli(&env, &["secret", "list", "-o", "json"], "");
    assert!(out.status.success(), "list: {}", stderr(&out));
    assert!(
        stdout(&out).contains("regcred") && stdout(&out).contains("reg.example:5000"),
        "{}",
        stdout(&out)
    );
    // The item is in gnome-keyring, under our attributes, and nothing went to the file store.
    let items = items_with(
        &keyring.bus,
        &[
            ("service", "pullsecret"),
            ("namespace", "default"),
            ("name", "regcred"),
        ],
    );
    assert_eq!(items.len(), 1, "{items:?}");
    assert_no_file_store_data(&env);

    assert_eq!(
        helper(&env, "get", "reg.example:5000"),
        (
            "{\"ServerURL\":\"reg.example:5000\",\"Username\":\"alice\",\"Secret\":\"s3cr3t\"}\n"
                .into(),
            Some(0)
        )
    );
    assert_eq!(
        helper(&env, "list", "unused"),
        ("{\"reg.example:5000\":\"alice\"}\n".into(), Some(0))
    );
    // Replacing a secret updates its item in place.
    let out = cli(
        &env,
        &[
            "secret",
            "create",
            "docker-registry",
            "regcred",
            "--overwrite",
            "--docker-server=reg.example:5000",
            "--docker-username=alice",
            "--docker-password=n3w",
        ],
        "",
    );
    assert!(out.status.success(), "overwrite: {}", stderr(&out));
    assert_eq!(
        items_with(&keyring.bus, &[("service", "pullsecret")]),
        items
    );
    assert!(helper(&env, "get", "reg.example:5000")
        .0
        .contains("\"Secret\":\"n3w\""));
    let out = cli(&env, &["doctor", "reg.example:5000"], "");
    let text = stdout(&out);
    assert!(
        text.starts_with(
            "store: secret-service (store = \"secret-service\" from PULLSECRET_STORE)"
        ),
        "{text}"
    );
    assert!(!text.contains("n3w"), "doctor printed the secret");

    // erase removes only what login stored: the named secret stays until `secret delete`.
    assert_eq!(
        helper(&env, "erase", "reg.example:5000"),
        (String::new(), Some(0))
    );
    assert!(helper(&env, "get", "reg.example:5000")
        .0
        .contains("\"Secret\":\"n3w\""));
    let out = cli(&env, &["secret", "delete", "regcred"], "");
    assert!(out.status.success(), "delete: {}", stderr(&out));
    assert_eq!(
        helper(&env, "get", "reg.example:5000"),
        (NOT_FOUND.into(), Some(1))
    );
    assert!(items_with(&keyring.bus, &[("service", "pullsecret")]).is_empty());

    // `auto` picks the Secret Service when it answers, and says so.
    let mut auto = Env::new();
    auto.set("DBUS_SESSION_BUS_ADDRESS", &keyring.bus);
    let out = cli(&auto, &["doctor"], "");
    assert!(
        stdout(&out).starts_with(
            "store: secret-service (store = \"auto\" from the default: the Secret Service answered"
        ),
        "{}",
        stdout(&out)
    );
}

#[test]
fn secret_service_passes_the_helper_protocol_table() {
    let Some(oracle) = require_bin(
        "docker-credential-secretservice",
        "apt-get install golang-docker-credential-helpers",
    ) else {
        return;
    };
    let home = tempfile::tempdir().expect("tempdir");
    let Some(keyring) = Keyring::start(home.path()) else {
        return;
    };
    let env = secret_service_env(&keyring);
    for (verb, input) in TABLE {
        let mut theirs = env.cmd(&oracle);
        theirs.arg(verb);
        let theirs = run_with_stdin(theirs, input.as_bytes());
        let ours = helper(&env, verb, input);
        assert_eq!(
            ours,
            (stdout(&theirs), theirs.status.code()),
            "row {verb} {input:?}: ours on the Secret Service (left) differs from docker-credential-secretservice (right)"
        );
    }
    assert_no_file_store_data(&env);
}

#[test]
fn import_what_docker_credential_secretservice_stored() {
    let Some(oracle) = require_bin(
        "docker-credential-secretservice",
        "apt-get install golang-docker-credential-helpers",
    ) else {
        return;
    };
    let home = tempfile::tempdir().expect("tempdir");
    let Some(keyring) = Keyring::start(home.path()) else {
        return;
    };
    let mut env = Env::new();
    env.set("DBUS_SESSION_BUS_ADDRESS", &keyring.bus);
    for creds in [
        r#"{"ServerURL":"https://reg.example:5000","Username":"alice","Secret":"d0cker-pw"}"#,
        r#"{"ServerURL":"https://index.docker.io/v1/","Username":"<token>","Secret":"hub-idtoken"}"#,
    ] {
        let mut c = env.cmd(&oracle);
        c.arg("store");
        let out = run_with_stdin(c, creds.as_bytes());
        assert!(
            out.status.success(),
            "docker-credential-secretservice store: {}",
            stdout(&out)
        );
    }

    // Import into the file store (named explicitly), then the helper answers from it.
    env.set("PULLSECRET_STORE", "file");
    let out = cli(&env, &["secret", "import", "--from-docker-keychain"], "");
    assert!(
        out.status.success(),
        "import: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let printed = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        printed.contains("imported")
            && !printed.contains("d0cker-pw")
            && !printed.contains("hub-idtoken"),
        "{printed}"
    );
    assert_eq!(
        helper(&env, "get", "reg.example:5000"),
        ("{\"ServerURL\":\"reg.example:5000\",\"Username\":\"alice\",\"Secret\":\"d0cker-pw\"}\n".into(), Some(0))
    );
    assert_eq!(
        helper(&env, "get", "docker.io"),
        ("{\"ServerURL\":\"docker.io\",\"Username\":\"\\u003ctoken\\u003e\",\"Secret\":\"hub-idtoken\"}\n".into(), Some(0))
    );
    // Importing again without --overwrite changes nothing and says why.
    let before = env.store_snapshot();
    let out = cli(&env, &["secret", "import", "--from-docker-keychain"], "");
    assert!(
        !out.status.success() && stderr(&out).contains("already exists"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.store_snapshot(), before);
}

#[test]
fn a_locked_collection_is_reported_with_its_fix() {
    let home = tempfile::tempdir().expect("tempdir");
    let Some(keyring) = Keyring::start(home.path()) else {
        return;
    };
    let env = secret_service_env(&keyring);
    let out = cli(
        &env,
        &[
            "secret",
            "create",
            "docker-registry",
            "r",
            "--docker-server=lock.example",
            "--docker-username=u",
            "--docker-password=pw",
        ],
        "",
    );
    assert!(out.status.success(), "create: {}", stderr(&out));
    let lock = Command::new("dbus-send")
        .args([
            "--session",
            "--print-reply",
            "--dest=org.freedesktop.secrets",
            "/org/freedesktop/secrets",
        ])
        .args([
            "org.freedesktop.Secret.Service.Lock",
            "array:objpath:/org/freedesktop/secrets/collection/login",
        ])
        .env("DBUS_SESSION_BUS_ADDRESS", &keyring.bus)
        .output()
        .expect("dbus-send");
    assert!(lock.status.success(), "Lock: {}", stderr(&lock));

    let (text, code) = helper(&env, "get", "lock.example");
    assert_eq!(code, Some(1));
    assert!(
        text.starts_with("secret-service store unavailable: the keyring collection is locked"),
        "{text}"
    );
    assert!(
        text.contains("gnome-keyring-daemon --replace --unlock")
            && text.contains("store = \"file\""),
        "{text}"
    );

    // The fix it names works.
    let fix = run_with_stdin(
        {
            let mut c = Command::new("gnome-keyring-daemon");
            c.args(["--replace", "--unlock", "--components=secrets"])
                .env("DBUS_SESSION_BUS_ADDRESS", &keyring.bus)
                .env("HOME", home.path())
                .env("XDG_DATA_HOME", home.path().join(".local/share"));
            c
        },
        b"test-keyring-password",
    );
    assert!(fix.status.success(), "{}", stderr(&fix));
    let got = eventually(Duration::from_secs(10), "get to work after the fix", || {
        let got = helper(&env, "get", "lock.example");
        if got.1 == Some(0) {
            Ok(got)
        } else {
            Err(format!("still failing after the fix: {}", got.0))
        }
    });
    assert_eq!(
        got.0,
        "{\"ServerURL\":\"lock.example\",\"Username\":\"u\",\"Secret\":\"pw\"}\n"
    );
}

#[test]
fn explicit_secret_service_without_dbus_is_a_clear_error_and_writes_nothing() {
    let mut env = Env::new();
    env.set("PULLSECRET_STORE", "secret-service");
    let (text, code) = helper(
        &env,
        "store",
        r#"{"ServerURL":"nobus.example","Username":"u","Secret":"canary-nobus"}"#,
    );
    assert_eq!(code, Some(1));
    assert!(
        text.starts_with(
            "secret-service store unavailable: no D-Bus session (DBUS_SESSION_BUS_ADDRESS is unset"
        ),
        "{text}"
    );
    assert!(
        text.contains("dbus-run-session") && text.contains("store = \"file\""),
        "{text}"
    );
    assert!(!text.contains("canary-nobus"));
    assert_eq!(helper(&env, "get", "nobus.example").1, Some(1));
    let out = cli(
        &env,
        &[
            "secret",
            "create",
            "docker-registry",
            "x",
            "--docker-server=nobus.example",
            "--docker-username=u",
            "--docker-password=canary-nobus",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("secret-service store unavailable: no D-Bus session"),
        "{}",
        stderr(&out)
    );
    assert!(
        env.store_snapshot().is_empty(),
        "an explicit backend must never fall back to the file store"
    );

    // The same config with `auto` uses the file store and says why.
    let mut auto = Env::new();
    auto.set("PULLSECRET_STORE", "auto");
    let out = cli(&auto, &["doctor"], "");
    assert!(
        stdout(&out).starts_with("store: file (store = \"auto\" from PULLSECRET_STORE: no D-Bus session (DBUS_SESSION_BUS_ADDRESS is unset), so the encrypted file store)"),
        "{}",
        stdout(&out)
    );
}

/// A session bus with no Secret Service on it and none it could activate.
struct BareBus {
    daemon: Child,
    address: String,
}

impl BareBus {
    fn start(dir: &Path) -> Option<Self> {
        require_bin("dbus-daemon", "apt-get install dbus-daemon")?;
        std::fs::create_dir_all(dir.join("services")).expect("mkdir");
        let config = dir.join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}/bus</listen>
  <auth>EXTERNAL</auth>
  <servicedir>{}/services</servicedir>
  <policy context="default"><allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/><allow own="*"/></policy>
</busconfig>
"#,
                dir.display(),
                dir.display()
            ),
        )
        .expect("write bus config");
        let mut daemon = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon");
        let mut line = String::new();
        std::io::BufReader::new(daemon.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("address");
        Some(Self {
            daemon,
            address: line.trim().to_string(),
        })
    }
}

impl Drop for BareBus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

#[test]
fn explicit_secret_service_on_a_bus_without_one_names_the_missing_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(bus) = BareBus::start(dir.path()) else {
        return;
    };
    let mut env = Env::new();
    env.set("DBUS_SESSION_BUS_ADDRESS", &bus.address);
    env.set("PULLSECRET_STORE", "secret-service");
    let (text, code) = helper(&env, "get", "any.example");
    assert_eq!(code, Some(1));
    assert!(
        text.contains(
            "org.freedesktop.secrets is not running and was not provided by any .service files"
        ),
        "{text}"
    );
    assert!(
        text.contains("gnome-keyring-daemon --unlock --components=secrets"),
        "{text}"
    );
    // `auto` on that bus falls back to the file store, and says why.
    env.set("PULLSECRET_STORE", "auto");
    let out = cli(&env, &["doctor"], "");
    assert!(stdout(&out).contains("org.freedesktop.secrets is not running on the session bus, so the encrypted file store"), "{}", stdout(&out));
}

/// A namespace no other test (or run) uses, and the removal of its keys afterwards: the
/// user keyring `@u` is shared by every process of this uid.
struct KeyutilsNamespace {
    name: String,
}

impl KeyutilsNamespace {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Self {
            name: format!("t-{tag}-{}-{nanos}", std::process::id()),
        }
    }

    fn keys(&self) -> Vec<String> {
        let out = Command::new("keyctl")
            .args(["show", "@u"])
            .output()
            .expect("keyctl show");
        stdout(&out)
            .lines()
            .filter_map(|l| l.split("user: ").nth(1))
            .filter(|d| {
                d.contains(&format!(":{}/", self.name)) || d.ends_with(&format!(":{}", self.name))
            })
            .map(str::to_string)
            .collect()
    }
}

impl Drop for KeyutilsNamespace {
    fn drop(&mut self) {
        for key in self.keys() {
            let _ = Command::new("keyctl")
                .args(["purge", "user", &key])
                .output();
        }
    }
}

fn keyutils_env(ns: &KeyutilsNamespace) -> Env {
    let mut env = Env::new();
    env.set("PULLSECRET_STORE", "keyutils");
    env.set("PULLSECRET_NAMESPACE", &ns.name);
    env
}

#[test]
fn keyutils_create_list_get_erase() {
    if require_bin("keyctl", "apt-get install keyutils").is_none() {
        return;
    }
    let ns = KeyutilsNamespace::new("rt");
    let env = keyutils_env(&ns);
    let out = cli(
        &env,
        &[
            "secret",
            "create",
            "docker-registry",
            "regcred",
            "--docker-server=ku.example:5000",
            "--docker-username=alice",
            "--docker-password-stdin",
        ],
        "k3y\n",
    );
    assert!(out.status.success(), "create: {}", stderr(&out));
    let mut keys = ns.keys();
    keys.sort();
    assert_eq!(
        keys,
        [
            format!("pullsecret:index:{}", ns.name),
            format!("pullsecret:secret:{}/regcred", ns.name)
        ]
    );
    assert_no_file_store_data(&env);

    let out = cli(&env, &["secret", "list", "-o", "json"], "");
    assert!(stdout(&out).contains("ku.example:5000"), "{}", stdout(&out));
    let want = "{\"ServerURL\":\"ku.example:5000\",\"Username\":\"alice\",\"Secret\":\"k3y\"}\n";
    assert_eq!(
        helper(&env, "get", "ku.example:5000"),
        (want.into(), Some(0))
    );

    // A process in a session keyring of its own (not linked to @u) still reads it.
    let mut fresh = env.cmd("keyctl");
    fresh.args([
        "session",
        "-",
        env!("CARGO_BIN_EXE_docker-credential-pullsecret"),
        "get",
    ]);
    let out = run_with_stdin(fresh, b"ku.example:5000");
    assert_eq!(
        stdout(&out).lines().last(),
        Some(want.trim_end()),
        "{}",
        stderr(&out)
    );

    // Through the helper: store a second one, list both, erase both.
    assert_eq!(
        helper(
            &env,
            "store",
            r#"{"ServerURL":"other.example","Username":"bob","Secret":"b0b"}"#
        ),
        (String::new(), Some(0))
    );
    assert_eq!(
        helper(&env, "list", "unused"),
        (
            "{\"ku.example:5000\":\"alice\",\"other.example\":\"bob\"}\n".into(),
            Some(0)
        )
    );
    for server in ["ku.example:5000", "other.example"] {
        assert_eq!(helper(&env, "erase", server), (String::new(), Some(0)));
    }
    // erase removed bob's login; the named regcred stays until `secret delete`.
    assert_eq!(
        helper(&env, "get", "ku.example:5000"),
        (want.into(), Some(0))
    );
    let out = cli(&env, &["secret", "delete", "regcred"], "");
    assert!(out.status.success(), "delete: {}", stderr(&out));
    for server in ["ku.example:5000", "other.example"] {
        assert_eq!(helper(&env, "get", server), (NOT_FOUND.into(), Some(1)));
    }
    assert!(ns.keys().is_empty(), "keys left behind: {:?}", ns.keys());
}

#[test]
fn keyutils_splits_values_over_the_kernel_key_limit() {
    if require_bin("keyctl", "apt-get install keyutils").is_none() {
        return;
    }
    let ns = KeyutilsNamespace::new("big");
    let mut env = keyutils_env(&ns);
    env.set("PULLSECRET_MAX_SECRET_BYTES", "100000");
    // A long identity token, larger than one `user` key (32767 bytes) may hold.
    let token = "e".repeat(50_000);
    let stored = helper(
        &env,
        "store",
        &format!(r#"{{"ServerURL":"big.example","Username":"<token>","Secret":"{token}"}}"#),
    );
    assert_eq!(stored, (String::new(), Some(0)));
    assert_eq!(
        ns.keys()
            .iter()
            .filter(|k| k.contains(&format!("secret:{}/", ns.name)))
            .count(),
        3,
        "{:?}",
        ns.keys()
    );
    let (text, code) = helper(&env, "get", "big.example");
    assert_eq!(code, Some(0));
    assert_eq!(text, format!("{{\"ServerURL\":\"big.example\",\"Username\":\"\\u003ctoken\\u003e\",\"Secret\":\"{token}\"}}\n"));
    assert_eq!(
        helper(&env, "erase", "big.example"),
        (String::new(), Some(0))
    );
    assert!(ns.keys().is_empty(), "keys left behind: {:?}", ns.keys());
}

#[test]
fn auto_gives_a_silent_bus_200_ms_then_uses_the_file_store() {
    // A socket that accepts connections and never answers: a hung session bus.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bus");
    let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    let _acceptor = std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    let mut env = Env::new();
    env.set("PULLSECRET_PROBE_MS", "200");
    env.set(
        "DBUS_SESSION_BUS_ADDRESS",
        &format!("unix:path={}", path.display()),
    );
    let started = Instant::now();
    let out = cli(&env, &["doctor"], "");
    let took = started.elapsed();
    assert!(
        stdout(&out).contains("did not answer within 200 ms, so the encrypted file store"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(took < Duration::from_secs(3), "auto waited {took:?}");
    // And the helper works from the file store meanwhile.
    assert_eq!(
        helper(
            &env,
            "store",
            r#"{"ServerURL":"hung.example","Username":"u","Secret":"p"}"#
        ),
        (String::new(), Some(0))
    );
    assert_eq!(helper(&env, "get", "hung.example").1, Some(0));
}

/// The file store keeps its master key in the Secret Service when one answers as the key is
/// made, records that in a marker, and afterwards says so when the keyring is out of reach.
#[test]
fn file_store_master_key_lives_in_the_keyring_when_one_answers() {
    let probe = Env::new();
    let Some(keyring) = Keyring::start(&probe.path("home")) else {
        return;
    };
    let mut env = Env::new();
    env.set("DBUS_SESSION_BUS_ADDRESS", &keyring.bus);
    env.set("PULLSECRET_STORE", "file");
    let out = cli(
        &env,
        &[
            "login",
            "mk.example",
            "-u",
            "u",
            "--password-stdin",
            "--no-verify",
        ],
        "mk-pw",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !env.path("config/pullsecret/master.key").exists(),
        "the key went to a file"
    );
    assert!(
        env.path("config/pullsecret/master.key.location").exists(),
        "no marker"
    );
    assert!(env.path("data/pullsecret/secrets-v1/default.enc").exists());
    assert_eq!(
        items_with(
            &keyring.bus,
            &[("xdg:schema", "io.github.pullsecret.MasterKey")]
        )
        .len(),
        1
    );
    assert_eq!(
        helper(&env, "get", "mk.example").0,
        "{\"ServerURL\":\"mk.example\",\"Username\":\"u\",\"Secret\":\"mk-pw\"}\n"
    );

    // Without the bus: a clear error naming the Secret Service, and nothing written.
    let mut away = Env::new();
    away.dir = env.dir;
    away.set("PULLSECRET_STORE", "file");
    let before = away.store_snapshot();
    let out = cli(
        &away,
        &[
            "login",
            "other.example",
            "-u",
            "u",
            "--password-stdin",
            "--no-verify",
        ],
        "x",
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("Secret Service"), "{}", stderr(&out));
    assert_eq!(away.store_snapshot(), before);

    // PULLSECRET_MASTER_KEY_STORE=file keeps the key in a 0600 file even with a keyring.
    let mut files = Env::new();
    files.set("DBUS_SESSION_BUS_ADDRESS", &keyring.bus);
    files.set("PULLSECRET_STORE", "file");
    files.set("PULLSECRET_MASTER_KEY_STORE", "file");
    assert!(cli(
        &files,
        &[
            "login",
            "f.example",
            "-u",
            "u",
            "--password-stdin",
            "--no-verify"
        ],
        "f"
    )
    .status
    .success());
    assert!(files.path("config/pullsecret/master.key").exists());
}
