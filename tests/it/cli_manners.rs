//! CLI manners: a closed stdout ends a command quietly, shell completions and the man page,
//! help texts, and the `secret list` output formats.

use std::process::Stdio;

use crate::support::{run_with_stdin, stderr, stdout, Env};

fn seed(env: &Env) {
    let out = env
        .pullsecret(&[
            "secret",
            "create",
            "docker-registry",
            "regcred",
            "--docker-server=reg.example:5000",
            "--docker-username=u",
            "--docker-password=p",
            "--docker-email=u@example.com",
        ])
        .output()
        .expect("create");
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Runs `args` with stdout a pipe whose reading end is already closed, so every write fails.
fn closed_stdout(env: &Env, args: &[&str], input: &[u8]) -> std::process::Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut child = env
        .pullsecret(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        let _ = stdin.write_all(input);
    }
    child.wait_with_output().expect("wait")
}

#[test]
fn a_closed_stdout_ends_every_printing_command_quietly() {
    let env = Env::new();
    seed(&env);
    let request = br#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"reg.example:5000/app"}"#;
    let cases: Vec<(Vec<&str>, &[u8])> = vec![
        (vec!["secret", "list"], b""),
        (vec!["secret", "list", "-A", "-o", "wide"], b""),
        (vec!["secret", "list", "-o", "json"], b""),
        (vec!["secret", "list", "-o", "yaml"], b""),
        (vec!["secret", "list", "-o", "name"], b""),
        (vec!["secret", "inspect", "regcred"], b""),
        (vec!["secret", "export", "regcred"], b""),
        (
            vec!["secret", "export", "regcred", "--format", "auth.json"],
            b"",
        ),
        (
            vec![
                "secret",
                "create",
                "docker-registry",
                "dry",
                "--docker-username=u",
                "--docker-password=p",
                "--dry-run=client",
                "-o",
                "yaml",
            ],
            b"",
        ),
        (
            vec!["secret", "create", "generic", "gen", "--from-literal=k=v"],
            b"",
        ),
        (vec!["secret", "delete", "gen"], b""),
        (
            vec![
                "login",
                "reg.example:5000",
                "-u",
                "me",
                "--password-stdin",
                "--no-verify",
            ],
            b"pw",
        ),
        (vec!["logout", "reg.example:5000"], b""),
        (vec!["doctor", "reg.example:5000"], b""),
        (vec!["kubelet-credential-provider"], request),
        (vec!["proxy", "print-config", "containerd"], b""),
        (vec!["completion", "bash"], b""),
        (vec!["man"], b""),
        (vec!["--help"], b""),
        (vec!["secret", "list", "--help"], b""),
        (vec!["--version"], b""),
    ];
    for (args, input) in cases {
        let out = closed_stdout(&env, &args, input);
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.contains("Broken pipe"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
}

#[test]
fn completions_man_page_and_help() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = env
            .pullsecret(&["completion", shell])
            .output()
            .expect("completion");
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let text = stdout(&out);
        assert!(
            text.contains("pullsecret") && text.contains("kubelet-credential-provider"),
            "{shell}: {text}"
        );
    }
    let bash = stdout(
        &env.pullsecret(&["completion", "bash"])
            .output()
            .expect("bash"),
    );
    if let Some(sh) = crate::support::require_bin("bash", "apt-get install bash") {
        let check = run_with_stdin(
            {
                let mut c = std::process::Command::new(sh);
                c.arg("-n");
                c
            },
            bash.as_bytes(),
        );
        assert!(check.status.success(), "{}", stderr(&check));
    }
    let man = env.pullsecret(&["man"]).output().expect("man");
    assert!(man.status.success(), "{}", stderr(&man));
    let page = stdout(&man);
    assert!(page.contains(".TH pullsecret"), "{page}");
    assert!(page.contains("completion"), "{page}");

    let help = stdout(&env.pullsecret(&["proxy", "--help"]).output().expect("help"));
    assert!(help.contains("proxy.toml"), "{help}");
}

#[test]
fn secret_list_formats() {
    let env = Env::new();
    seed(&env);
    let run = |args: &[&str]| {
        let out = env.pullsecret(args).output().expect("list");
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    assert_eq!(run(&["secret", "list", "-o", "name"]), "secret/regcred\n");
    let wide = run(&["secret", "list", "-o", "wide"]);
    let mut lines = wide.lines();
    assert_eq!(
        lines
            .next()
            .map(|h| h.split_whitespace().collect::<Vec<_>>()),
        Some(vec![
            "NAME", "TYPE", "SERVER", "USERNAME", "SCOPE", "CREATED", "EMAIL", "ORIGIN"
        ])
    );
    let row = lines.next().unwrap_or_default();
    assert!(
        row.starts_with("regcred ") && row.contains("u@example.com") && row.ends_with("created"),
        "{wide}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&run(&["secret", "list", "-o", "json"])).expect("json");
    let created = json[0]["created"].as_str().unwrap_or_default().to_string();
    assert!(
        humantime::parse_rfc3339(&created).is_ok() && created.ends_with('Z'),
        "{created:?}"
    );
    let yaml: serde_json::Value =
        serde_yaml::from_str(&run(&["secret", "list", "-o", "yaml"])).expect("yaml");
    assert_eq!(yaml[0]["name"], "regcred");
    assert_eq!(yaml[0]["created"].as_str(), Some(created.as_str()));
    assert_eq!(yaml[0]["password"], "********");
}
