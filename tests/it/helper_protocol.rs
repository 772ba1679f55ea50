//! The helper protocol table: the same inputs to docker-credential-secretservice (the
//! oracle, on a real gnome-keyring) and to ours must give identical stdout and exit codes.

use crate::support::keyring::Keyring;
use crate::support::{require_bin, run_with_stdin, stdout, Env};

/// (verb, stdin) rows run in order against both helpers; state carries across rows.
pub(crate) const TABLE: &[(&str, &str)] = &[
    (
        "store",
        r#"{"ServerURL":"https://reg.example:5000","Username":"alice","Secret":"s3cr3t"}"#,
    ),
    ("get", "https://reg.example:5000"),
    ("get", "https://reg.example:5000\n"),
    ("list", "unused"),
    ("get", "missing.example"),
    (
        "store",
        r#"{"ServerURL":"","Username":"alice","Secret":"x"}"#,
    ),
    (
        "store",
        r#"{"ServerURL":"h.example","Username":"","Secret":"x"}"#,
    ),
    ("store", r#"{x}"#),
    ("store", "not json"),
    ("store", ""),
    (
        "store",
        r#"{"ServerURL":"a.example","Username":"bob","Secret":"x""#,
    ),
    ("store", r#"{"ServerURL":1}"#),
    (
        "store",
        r#"{"serverurl":"case.example","USERNAME":"carol","secret":"c4s3"}"#,
    ),
    ("get", "case.example"),
    ("get", ""),
    ("erase", "never-stored.example"),
    ("erase", "https://reg.example:5000"),
    ("get", "https://reg.example:5000"),
    (
        "store",
        r#"{"ServerURL":"tok.example","Username":"<token>","Secret":"a&b<c>"}"#,
    ),
    ("get", "tok.example"),
    (
        "store",
        r#"{"ServerURL":"ctl.example","Username":"u","Secret":"a\bb\fc\u0001"}"#,
    ),
    ("get", "ctl.example"),
    ("list", "unused"),
    ("bogus", ""),
];

#[test]
fn protocol_matches_docker_credential_secretservice() {
    let Some(oracle) = require_bin(
        "docker-credential-secretservice",
        "apt-get install golang-docker-credential-helpers",
    ) else {
        return;
    };
    let env = Env::new();
    let Some(keyring) = Keyring::start(&env.path("home")) else {
        return;
    };

    for (verb, input) in TABLE {
        let mut theirs = env.cmd(&oracle);
        theirs
            .arg(verb)
            .env("DBUS_SESSION_BUS_ADDRESS", &keyring.bus);
        let theirs = run_with_stdin(theirs, input.as_bytes());
        let mut ours = env.helper();
        ours.arg(verb);
        let ours = run_with_stdin(ours, input.as_bytes());
        assert_eq!(
            (stdout(&ours), ours.status.code()),
            (stdout(&theirs), theirs.status.code()),
            "row {verb} {input:?}: ours (left) differs from docker-credential-secretservice (right)"
        );
    }

    // Usage for a wrong argument count names each binary; otherwise identical.
    let theirs = env.cmd(&oracle).output().expect("run oracle");
    let ours = env.helper().output().expect("run ours");
    assert_eq!(theirs.status.code(), Some(1));
    assert_eq!(ours.status.code(), Some(1));
    let ours_bin = env!("CARGO_BIN_EXE_docker-credential-pullsecret");
    assert_eq!(
        stdout(&ours).replace(ours_bin, "HELPER"),
        stdout(&theirs).replace(oracle.to_str().unwrap_or_default(), "HELPER")
    );
}

#[test]
fn stdin_over_64_kib_is_refused() {
    let env = Env::new();
    let big = format!(
        r#"{{"ServerURL":"big.example","Username":"u","Secret":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let mut c = env.helper();
    c.arg("store");
    let out = run_with_stdin(c, big.as_bytes());
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "bufio.Scanner: token too long\n");
    assert!(
        env.store_snapshot().is_empty(),
        "refused input must store nothing"
    );
}

#[test]
fn identity_tokens_and_normalized_lookups() {
    let env = Env::new();
    let mut c = env.helper();
    c.arg("store");
    let out = run_with_stdin(
        c,
        br#"{"ServerURL":"https://index.docker.io/v1/","Username":"<token>","Secret":"idtok"}"#,
    );
    assert!(out.status.success(), "{}", stdout(&out));
    // Clients ask with bare hosts; every Docker Hub alias finds the entry.
    for q in [
        "docker.io",
        "registry-1.docker.io",
        "https://index.docker.io/v1/",
    ] {
        let mut c = env.helper();
        c.arg("get");
        let out = run_with_stdin(c, q.as_bytes());
        assert_eq!(
            stdout(&out),
            format!("{{\"ServerURL\":\"{q}\",\"Username\":\"\\u003ctoken\\u003e\",\"Secret\":\"idtok\"}}\n")
        );
    }
}
