//! `pullsecret login` checks credentials against real distribution registries (htpasswd and
//! token auth) before storing them; a refused or unreachable registry stores nothing.

use crate::support::registry::{free_loopback_addr, Registry, RegistryAuth};
use crate::support::token_issuer::TokenIssuerConfig;
use crate::support::{run_with_stdin, stderr, stdout, Env};

fn login(
    env: &Env,
    server: &str,
    user: &str,
    password: &str,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec!["login", server, "-u", user, "--password-stdin"];
    args.extend_from_slice(extra);
    run_with_stdin(env.pullsecret(&args), password.as_bytes())
}

fn helper_get(env: &Env, server: &str) -> String {
    let mut get = env.helper();
    get.arg("get");
    stdout(&run_with_stdin(get, server.as_bytes()))
}

/// Right credentials are stored; wrong ones fail, name the refusal, and keep the old secret.
fn right_then_wrong(env: &Env, server: &str, user: &str, right: &str) {
    let out = login(env, server, user, right, &[]);
    assert!(out.status.success(), "right password: {}", stderr(&out));
    assert!(
        stdout(&out).starts_with("Login Succeeded"),
        "{}",
        stdout(&out)
    );
    let stored = helper_get(env, server);
    assert!(
        stored.contains(&format!("\"Secret\":\"{right}\"")),
        "{stored}"
    );

    let before = env.store_snapshot();
    let out = login(env, server, user, "wrong-pw-7f3a", &[]);
    assert!(!out.status.success(), "a wrong password was accepted");
    let err = stderr(&out);
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(err.contains("nothing was stored"), "{err}");
    assert!(!err.contains("wrong-pw-7f3a") && !stdout(&out).contains("wrong-pw-7f3a"));
    assert_eq!(
        env.store_snapshot(),
        before,
        "a refused login changed the store"
    );
    assert_eq!(helper_get(env, server), stored);
}

#[test]
fn login_verifies_with_htpasswd_registry() {
    let Some(reg) = Registry::start(RegistryAuth::Htpasswd {
        users: vec![("alice".into(), "right-pw".into())],
    }) else {
        return;
    };
    let env = Env::new();
    right_then_wrong(&env, reg.addr(), "alice", "right-pw");
    // An unknown user is refused the same way.
    let out = login(&env, reg.addr(), "mallory", "right-pw", &["--insecure"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("refused the credentials"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn login_verifies_with_token_registry() {
    let issuer = TokenIssuerConfig::new().user("bob", "token-pw", &[("private/*", &["pull"])]);
    let Some(reg) = Registry::start(RegistryAuth::Token(issuer)) else {
        return;
    };
    let env = Env::new();
    right_then_wrong(&env, reg.addr(), "bob", "token-pw");
    // The check asked the token endpoint with Basic credentials and no scope, as docker does.
    let requests = reg.issuer().expect("issuer").requests();
    assert!(
        requests
            .iter()
            .any(|r| r.user.as_deref() == Some("bob") && r.scopes.is_empty() && r.status == 200),
        "{requests:?}"
    );
}

#[test]
fn login_to_a_closed_port_stores_nothing_unless_no_verify() {
    let env = Env::new();
    let addr = free_loopback_addr();
    let before = env.store_snapshot();
    let out = login(&env, &addr, "alice", "pw", &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("cannot reach the registry"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert_eq!(env.store_snapshot(), before);

    let out = login(&env, &addr, "alice", "pw", &["--no-verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(helper_get(&env, &addr).contains("\"Secret\":\"pw\""));
}

/// Runs argv[1:] on a new pseudo-terminal (its controlling terminal), answers the username
/// prompt, waits until the terminal's echo is off before typing the password, then prints
/// everything the terminal showed and exits with the command's status.
const PTY_SCRIPT: &str = r#"
import fcntl, os, select, subprocess, sys, termios, time
master, slave = os.openpty()
p = subprocess.Popen(sys.argv[1:], stdin=slave, stdout=slave, stderr=slave,
                     start_new_session=True,
                     preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
deadline = time.time() + 30
out = b""
def read_until(want):
    global out
    while want not in out:
        if time.time() > deadline:
            sys.stdout.buffer.write(out); sys.exit(90)
        if select.select([master], [], [], 0.1)[0]:
            out += os.read(master, 4096)
read_until(b"Username: ")
os.write(master, b"alice\n")
read_until(b"Password: ")
while termios.tcgetattr(slave)[3] & termios.ECHO:
    if time.time() > deadline:
        sys.exit(91)
    select.select([], [], [], 0.01)
os.write(master, b"tty-pw-4411\n")
code = p.wait(timeout=30)
while select.select([master], [], [], 0.2)[0]:
    try:
        chunk = os.read(master, 4096)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
sys.stdout.buffer.write(out)
sys.exit(code)
"#;

#[test]
fn login_prompts_on_a_terminal_without_echoing_the_password() {
    let Some(python) = crate::support::require_bin("python3", "apt-get install python3") else {
        return;
    };
    let env = Env::new();
    let addr = free_loopback_addr();
    let out = env
        .cmd(python)
        .args(["-c", PTY_SCRIPT, env!("CARGO_BIN_EXE_pullsecret")])
        .args(["login", &addr, "--no-verify"])
        .output()
        .expect("python3");
    let shown = stdout(&out);
    assert!(out.status.success(), "{shown}{}", stderr(&out));
    assert!(shown.contains("Login Succeeded"), "{shown}");
    assert!(
        !shown.contains("tty-pw-4411"),
        "the password was echoed: {shown}"
    );
    let got = helper_get(&env, &addr);
    assert!(
        got.contains("\"Username\":\"alice\"") && got.contains("\"Secret\":\"tty-pw-4411\""),
        "{got}"
    );
}
