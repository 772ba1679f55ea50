//! No leaks: a unique canary password goes through every subcommand with `RUST_LOG=trace`
//! and may appear only where the user asked for it.

use base64::Engine;

use crate::support::{run_with_stdin, stderr, stdout, Env};

const CANARY: &str = "canary-7f3a9c-Pw<&>";

fn contains_canary(text: &str) -> bool {
    text.contains(CANARY) || text.contains("canary-7f3a9c")
}

/// Plain or inside any base64 run in `text` (Secret JSON and auth fields encode it).
fn carries_canary(text: &str) -> bool {
    if contains_canary(text) {
        return true;
    }
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '='))
        .filter(|w| w.len() >= 16)
        .filter_map(|w| base64::engine::general_purpose::STANDARD.decode(w).ok())
        .any(|b| carries_canary(&String::from_utf8_lossy(&b)))
}

#[test]
fn canary_appears_only_where_asked() {
    let mut env = Env::new();
    env.set("RUST_LOG", "trace");
    let run = |args: &[&str], input: Option<&[u8]>| {
        let cmd = env.pullsecret(args);
        run_with_stdin(cmd, input.unwrap_or(b""))
    };

    // Creating with the canary in several ways, and errors that involve it.
    let mut quiet: Vec<(String, std::process::Output)> = vec![
        ("create".into(), run(&["secret", "create", "docker-registry", "regcred", "--docker-server=reg.example", "--docker-username=alice", "--docker-password-stdin"], Some(CANARY.as_bytes()))),
        ("create-dup".into(), run(&["secret", "create", "docker-registry", "regcred", "--docker-server=reg.example", "--docker-username=alice", &format!("--docker-password={CANARY}")], None)),
        ("create-badserver".into(), run(&["secret", "create", "docker-registry", "x", "--docker-server=bad host", "--docker-username=alice", &format!("--docker-password={CANARY}")], None)),
        ("create-generic".into(), run(&["secret", "create", "generic", "gen", &format!("--from-literal=token={CANARY}")], None)),
        ("login".into(), run(&["login", "login.example", "-u", "bob", "--password-stdin", "--no-verify"], Some(CANARY.as_bytes()))),
        ("list".into(), run(&["secret", "list"], None)),
        ("list-json".into(), run(&["secret", "list", "-A", "-o", "json"], None)),
        ("inspect".into(), run(&["secret", "inspect", "regcred"], None)),
        ("inspect-yaml".into(), run(&["secret", "inspect", "gen", "-o", "yaml"], None)),
        ("doctor".into(), run(&["doctor", "reg.example"], None)),
        ("import-bad".into(), run(&["secret", "import", "-f", "-"], Some(format!("{{\"kind\":\"Secret\",\"metadata\":{{\"name\":\"y\"}},\"type\":\"Opaque\",\"data\":{{\"k\":\"{CANARY}\"}}}}").as_bytes()))),
    ];
    let mut helper_list = env.helper();
    helper_list.arg("list");
    quiet.push(("helper-list".into(), run_with_stdin(helper_list, b"")));
    let mut helper_erase = env.helper();
    helper_erase.arg("erase");
    quiet.push((
        "helper-erase-missing".into(),
        run_with_stdin(helper_erase, b"nothing.example"),
    ));

    for (what, out) in &quiet {
        assert!(
            !carries_canary(&stdout(out)),
            "{what}: canary on stdout: {}",
            stdout(out)
        );
        assert!(!carries_canary(&stderr(out)), "{what}: canary on stderr");
    }
    // The runs above did work (so the check is not vacuous).
    assert!(
        quiet[0].1.status.success(),
        "create failed: {}",
        stderr(&quiet[0].1)
    );
    assert!(stdout(&quiet[7].1).contains("********"));

    // Where the user asks for the secret, it is there.
    let asked = [
        run(&["secret", "inspect", "regcred", "--show-secret"], None),
        run(&["secret", "export", "regcred"], None),
        run(
            &[
                "secret",
                "export",
                "regcred",
                "--format",
                "dockerconfigjson",
            ],
            None,
        ),
        run(
            &["secret", "export", "regcred", "--format", "auth.json"],
            None,
        ),
        run(
            &[
                "secret",
                "create",
                "docker-registry",
                "dry",
                "--docker-username=a",
                &format!("--docker-password={CANARY}"),
                "--dry-run=client",
                "-o",
                "json",
            ],
            None,
        ),
    ];
    for out in &asked {
        assert!(out.status.success(), "{}", stderr(out));
        assert!(
            carries_canary(&stdout(out)),
            "asked-for output lacks the secret: {}",
            stdout(out)
        );
        assert!(
            !carries_canary(&stderr(out)),
            "canary in logs: {}",
            stderr(out)
        );
    }
    let mut get = env.helper();
    get.arg("get");
    let out = run_with_stdin(get, b"reg.example");
    assert!(
        stdout(&out).contains("canary-7f3a9c-Pw\\u003c\\u0026\\u003e"),
        "{}",
        stdout(&out)
    );

    // Deleting leaves no trace in the store's files.
    assert!(run(
        &["secret", "delete", "regcred", "gen", "login.example"],
        None
    )
    .status
    .success());
    for (path, bytes) in env.store_snapshot() {
        assert!(
            !String::from_utf8_lossy(&bytes).contains("canary-7f3a9c"),
            "plaintext canary in {}",
            path.display()
        );
    }
}
