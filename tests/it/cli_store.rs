//! The `pullsecret secret` CLI on the encrypted file store: concurrency, keys, limits, bad input.

use std::process::Stdio;

use crate::support::{run_with_stdin, stderr, stdout, Env};

fn create(env: &Env, name: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "secret",
        "create",
        "docker-registry",
        name,
        "--docker-username",
        "u",
    ];
    args.extend_from_slice(extra);
    if !extra.iter().any(|a| a.starts_with("--docker-server")) {
        args.push("--docker-server=reg.example:5000");
    }
    if !extra.iter().any(|a| a.starts_with("--docker-password")) {
        args.push("--docker-password=pw");
    }
    env.pullsecret(&args).output().expect("run pullsecret")
}

#[test]
fn twenty_concurrent_creates_all_land() {
    let env = Env::new();
    let children: Vec<_> = (0..20)
        .map(|i| {
            env.pullsecret(&[
                "secret",
                "create",
                "docker-registry",
                &format!("s{i}"),
                "--docker-server",
                &format!("r{i}.example"),
                "--docker-username",
                "u",
                "--docker-password",
                "p",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().expect("wait");
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = env
        .pullsecret(&["secret", "list", "-o", "json"])
        .output()
        .expect("list");
    assert!(out.status.success(), "{}", stderr(&out));
    let items: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    let mut names: Vec<String> = items
        .iter()
        .map(|i| i["name"].as_str().unwrap_or("").to_string())
        .collect();
    names.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("s{i}")).collect();
    want.sort();
    assert_eq!(names, want);
}

#[test]
fn files_are_private_and_sealed() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    assert!(
        create(&env, "regcred", &["--docker-password=plain-canary-1"])
            .status
            .success()
    );
    let snap = env.store_snapshot();
    assert!(
        snap.len() >= 2,
        "expected a key file and a namespace file: {snap:?}"
    );
    for (path, bytes) in &snap {
        let mode = std::fs::metadata(path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
        assert!(
            !String::from_utf8_lossy(bytes).contains("plain-canary-1"),
            "plaintext in {}",
            path.display()
        );
    }
    // The key lives under XDG_CONFIG_HOME, the data under XDG_DATA_HOME.
    assert!(env.path("config/pullsecret/master.key").exists());
    assert!(env.path("data/pullsecret/secrets-v1/default.enc").exists());
}

#[test]
fn wrong_or_missing_master_key_is_clear_and_changes_nothing() {
    let env = Env::new();
    assert!(create(&env, "one", &[]).status.success());
    let key = env.path("config/pullsecret/master.key");

    std::fs::remove_file(&key).expect("rm key");
    let before = env.store_snapshot();
    let out = create(&env, "two", &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("master key") && stderr(&out).contains("missing"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        env.store_snapshot(),
        before,
        "nothing may change without the key"
    );

    // A different key: decrypt fails, nothing is overwritten.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&key, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n").expect("write key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let before = env.store_snapshot();
    let out = create(&env, "three", &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("wrong master key"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.store_snapshot(), before);
}

#[test]
fn wrong_master_key_writes_no_new_namespace() {
    let env = Env::new();
    assert!(create(&env, "one", &["-n", "team-a"]).status.success());
    let key = env.path("config/pullsecret/master.key");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&key, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n").expect("write key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let before = env.store_snapshot();
    let out = create(&env, "two", &["-n", "team-b"]);
    assert!(
        !out.status.success(),
        "a new namespace was sealed with the wrong key"
    );
    let err = stderr(&out);
    assert!(
        err.contains("wrong master key") && err.contains("team-a"),
        "{err}"
    );
    assert_eq!(env.store_snapshot(), before, "nothing may be written");
    assert!(!env.path("data/pullsecret/secrets-v1/team-b.enc").exists());
}

#[test]
fn a_damaged_namespace_is_skipped_across_namespaces_and_named() {
    let env = Env::new();
    assert!(create(&env, "good", &[]).status.success());
    assert!(create(
        &env,
        "lost",
        &["-n", "broken", "--docker-server=other.example"]
    )
    .status
    .success());
    let broken = env.path("data/pullsecret/secrets-v1/broken.enc");
    let bytes = std::fs::read(&broken).expect("read");
    let cut = &bytes[..bytes.len() / 2];
    std::fs::write(&broken, cut).expect("truncate");
    // No line of the damaged file may reach any output.
    let check_no_contents = |what: &str, text: &str| {
        for line in String::from_utf8_lossy(cut).lines() {
            let line = line.trim();
            if line.len() > 12 {
                assert!(!text.contains(line), "{what} shows the file: {text}");
            }
        }
    };
    let one_warning = |what: &str, err: &str| {
        assert_eq!(err.lines().count(), 1, "{what}: {err}");
        assert!(
            err.contains("WARN") && err.contains("\"broken\"") && err.contains("broken.enc"),
            "{what}: {err}"
        );
        check_no_contents(what, err);
    };

    let out = env
        .pullsecret(&["secret", "list", "-A", "-o", "name"])
        .output()
        .expect("list");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "secret/good\n");
    one_warning("secret list -A", &stderr(&out));

    let mut get = env.helper();
    get.arg("get");
    let out = run_with_stdin(get, b"reg.example:5000");
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("\"Username\":\"u\""),
        "{}",
        stdout(&out)
    );
    one_warning("helper get", &stderr(&out));

    // The damaged namespace itself still fails, clearly.
    let out = env
        .pullsecret(&["secret", "list", "-n", "broken"])
        .output()
        .expect("list");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.starts_with("error: cannot decrypt namespace \"broken\"") && err.contains("broken.enc"),
        "{err}"
    );
    check_no_contents("secret list -n broken", &err);
}

#[test]
fn limits_are_enforced_with_a_hint() {
    let mut env = Env::new();
    env.set("PULLSECRET_MAX_SECRETS_PER_NAMESPACE", "2");
    assert!(create(&env, "a", &[]).status.success());
    assert!(create(&env, "b", &[]).status.success());
    let out = create(&env, "c", &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("limits.max_secrets_per_namespace"),
        "{}",
        stderr(&out)
    );

    let env = Env::new();
    let big = format!("--docker-password={}", "x".repeat(5000));
    let out = create(&env, "big", &[&big]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("limits.max_secret_bytes"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("xxxxxxxx"));
}

/// Importing `text` (as file `file`) fails with a one-line `error:` and the store (holding one
/// secret, `keep`) is unchanged.
fn import_is_refused_in_one_line(file: &str, text: &str) {
    let env = Env::new();
    assert!(create(&env, "keep", &[]).status.success());
    let before = env.store_snapshot();
    let p = env.path(file);
    std::fs::write(&p, text).expect("write");
    let out = env
        .pullsecret(&["secret", "import", "-f", p.to_str().unwrap_or_default()])
        .output()
        .expect("run");
    assert!(!out.status.success(), "{file} was accepted");
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "{file}: {err}");
    assert!(err.starts_with("error: "), "{file}: {err}");
    assert_eq!(env.store_snapshot(), before, "{file} changed the store");
}

/// `pullsecret ARGS` fails for the reason `why` names and the store (holding one secret,
/// `keep`) is unchanged.
fn command_is_refused_and_changes_nothing(args: &[&str], why: &str) {
    let env = Env::new();
    assert!(create(&env, "keep", &[]).status.success());
    let before = env.store_snapshot();
    let out = env.pullsecret(args).output().expect("run");
    assert!(!out.status.success(), "{args:?} was accepted");
    assert!(stderr(&out).contains(why), "{args:?}: {}", stderr(&out));
    assert_eq!(env.store_snapshot(), before, "{args:?} changed the store");
}

#[test]
fn import_of_malformed_json_is_one_line_and_changes_nothing() {
    import_is_refused_in_one_line("malformed.json", "{\"kind\": \"Secret\", ");
}

#[test]
fn import_of_malformed_yaml_is_one_line_and_changes_nothing() {
    import_is_refused_in_one_line("malformed.yaml", "kind: Secret\nmetadata: [\n");
}

#[test]
fn import_with_bad_base64_data_is_one_line_and_changes_nothing() {
    import_is_refused_in_one_line(
        "badb64.json",
        r#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"x"},"type":"Opaque","data":{"k":"!!!notbase64"}}"#,
    );
}

#[test]
fn import_with_a_bad_docker_auth_is_one_line_and_changes_nothing() {
    import_is_refused_in_one_line(
        "badauth.json",
        r#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"x"},"type":"kubernetes.io/dockerconfigjson","data":{".dockerconfigjson":"eyJhdXRocyI6eyJyIjp7ImF1dGgiOiJibTlqYjJ4dmJnPT0ifX19"}}"#,
    );
}

#[test]
fn import_of_an_unknown_secret_type_is_one_line_and_changes_nothing() {
    import_is_refused_in_one_line(
        "unknowntype.json",
        r#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"x"},"type":"example.com/weird","data":{}}"#,
    );
}

#[test]
fn create_without_a_username_changes_nothing() {
    command_is_refused_and_changes_nothing(
        &[
            "secret",
            "create",
            "docker-registry",
            "x",
            "--docker-password=p",
        ],
        "--docker-username not set",
    );
}

#[test]
fn create_with_an_invalid_name_changes_nothing() {
    command_is_refused_and_changes_nothing(
        &[
            "secret",
            "create",
            "docker-registry",
            "Bad_Name",
            "--docker-username=u",
            "--docker-password=p",
        ],
        "invalid name \"Bad_Name\"",
    );
}

#[test]
fn create_from_missing_files_changes_nothing() {
    command_is_refused_and_changes_nothing(
        &[
            "secret",
            "create",
            "generic",
            "g",
            "--from-file=/nonexistent/file",
        ],
        "cannot read /nonexistent/file",
    );
    command_is_refused_and_changes_nothing(
        &[
            "secret",
            "create",
            "tls",
            "t",
            "--cert=/nonexistent",
            "--key=/nonexistent",
        ],
        "cannot read /nonexistent",
    );
}

#[test]
fn import_from_a_missing_docker_config_changes_nothing() {
    command_is_refused_and_changes_nothing(
        &[
            "secret",
            "import",
            "--from-docker-config=/nonexistent/config.json",
        ],
        "does not exist",
    );
}

#[test]
fn create_over_an_existing_secret_changes_nothing() {
    command_is_refused_and_changes_nothing(
        &[
            "secret",
            "create",
            "docker-registry",
            "keep",
            "--docker-username=u",
            "--docker-password=p",
        ],
        "already exists",
    );
}

#[test]
fn password_stdin_and_refs_resolve_at_use_time() {
    let mut env = Env::new();
    let mut c = env.pullsecret(&[
        "login",
        "127.0.0.1:5999",
        "-u",
        "alice",
        "--password-stdin",
        "--no-verify",
    ]);
    c.stdout(Stdio::piped());
    let out = run_with_stdin(c, b"from-stdin\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(create(
        &env,
        "byref",
        &[
            "--docker-server=ref.example",
            "--docker-password-ref=env://REF_PW"
        ]
    )
    .status
    .success());

    let mut get = env.helper();
    get.arg("get");
    let out = run_with_stdin(get, b"127.0.0.1:5999");
    assert_eq!(
        stdout(&out),
        "{\"ServerURL\":\"127.0.0.1:5999\",\"Username\":\"alice\",\"Secret\":\"from-stdin\"}\n"
    );

    env.set("REF_PW", "first");
    let mut get = env.helper();
    get.arg("get");
    assert!(stdout(&run_with_stdin(get, b"ref.example")).contains("\"Secret\":\"first\""));
    env.extra.retain(|(k, _)| k != "REF_PW");
    env.set("REF_PW", "rotated");
    let mut get = env.helper();
    get.arg("get");
    assert!(stdout(&run_with_stdin(get, b"ref.example")).contains("\"Secret\":\"rotated\""));

    let out = env
        .pullsecret(&["logout", "127.0.0.1:5999"])
        .output()
        .expect("logout");
    assert!(out.status.success());
    let mut get = env.helper();
    get.arg("get");
    assert_eq!(
        stdout(&run_with_stdin(get, b"127.0.0.1:5999")),
        "credentials not found in native keychain\n"
    );
}

#[test]
fn import_and_export_round_trip_through_every_format() {
    let env = Env::new();
    // docker config.json with two registries (auth and identity token) and a helper entry.
    let docker = env.path("docker/config.json");
    std::fs::write(
        &docker,
        r#"{"auths":{"https://index.docker.io/v1/":{"auth":"aHViOmh1Yi1wdw=="},"ghcr.io":{"identitytoken":"id-tok"}},"credHelpers":{"gcr.io":"gcloud"}}"#,
    )
    .expect("config");
    let out = env
        .pullsecret(&["secret", "import", "--from-docker-config"])
        .output()
        .expect("import");
    assert!(out.status.success(), "{}", stderr(&out));
    let list = stdout(
        &env.pullsecret(&["secret", "list", "-o", "json"])
            .output()
            .expect("list"),
    );
    let items: Vec<serde_json::Value> = serde_json::from_str(&list).expect("json");
    let pairs: Vec<(String, String)> = items
        .iter()
        .map(|i| {
            (
                i["server"].as_str().unwrap_or("").into(),
                i["username"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert!(
        pairs.contains(&("https://index.docker.io/v1/".into(), "hub".into())),
        "{pairs:?}"
    );
    assert!(
        pairs.contains(&("ghcr.io".into(), "<token>".into())),
        "{pairs:?}"
    );

    // Export as a containers auth.json and import that into another namespace: same credentials.
    let name = items
        .iter()
        .find(|i| i["server"] == "ghcr.io")
        .and_then(|i| i["name"].as_str())
        .unwrap_or_default()
        .to_string();
    let auth_json = stdout(
        &env.pullsecret(&["secret", "export", &name, "--format", "auth.json"])
            .output()
            .expect("export"),
    );
    std::fs::write(env.path("auth.json"), &auth_json).expect("write");
    let out = env
        .pullsecret(&[
            "secret",
            "import",
            &format!("--from-auth-json={}", env.path("auth.json").display()),
            "-n",
            "copy",
        ])
        .output()
        .expect("import");
    assert!(out.status.success(), "{}", stderr(&out));
    let mut get = env.helper();
    get.arg("get").env("PULLSECRET_NAMESPACE", "copy");
    assert_eq!(
        stdout(&run_with_stdin(get, b"ghcr.io")),
        "{\"ServerURL\":\"ghcr.io\",\"Username\":\"\\u003ctoken\\u003e\",\"Secret\":\"id-tok\"}\n"
    );

    // A Kubernetes List of Secrets (as kubectl prints one), with stringData and an Opaque secret.
    let list = r#"{"apiVersion":"v1","kind":"List","items":[
      {"apiVersion":"v1","kind":"Secret","metadata":{"name":"k8s-reg","namespace":"team"},"type":"kubernetes.io/dockerconfigjson",
       "stringData":{".dockerconfigjson":"{\"auths\":{\"quay.io\":{\"username\":\"robot\",\"password\":\"r-pw\"}}}"}},
      {"apiVersion":"v1","kind":"Secret","metadata":{"name":"opaque"},"type":"Opaque","data":{"token":"dG9rLTE="}}]}"#;
    let out = run_with_stdin(
        env.pullsecret(&["secret", "import", "-f", "-", "--use-file-namespace"]),
        list.as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = stdout(
        &env.pullsecret(&[
            "secret",
            "inspect",
            "k8s-reg",
            "-n",
            "team",
            "--show-secret",
        ])
        .output()
        .expect("inspect"),
    );
    assert!(shown.contains("\"password\": \"r-pw\""), "{shown}");
    let shown = stdout(
        &env.pullsecret(&["secret", "inspect", "opaque", "--show-secret"])
            .output()
            .expect("inspect"),
    );
    assert!(shown.contains("tok-1"), "{shown}");

    // create docker-registry --from-file=.dockerconfigjson=PATH, then export as dockerconfigjson.
    let payload = stdout(
        &env.pullsecret(&[
            "secret",
            "export",
            "k8s-reg",
            "-n",
            "team",
            "--format",
            "dockerconfigjson",
        ])
        .output()
        .expect("export"),
    );
    assert_eq!(
        payload.trim_end(),
        r#"{"auths":{"quay.io":{"username":"robot","password":"r-pw","auth":"cm9ib3Q6ci1wdw=="}}}"#
    );
    std::fs::write(env.path("dcj.json"), payload).expect("write");
    let out = env
        .pullsecret(&[
            "secret",
            "create",
            "docker-registry",
            "from-file",
            &format!(
                "--from-file=.dockerconfigjson={}",
                env.path("dcj.json").display()
            ),
        ])
        .output()
        .expect("create");
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = stdout(
        &env.pullsecret(&["secret", "inspect", "from-file"])
            .output()
            .expect("inspect"),
    );
    assert!(
        shown.contains("\"server\": \"quay.io\"") && shown.contains("\"password\": \"********\""),
        "{shown}"
    );
}

/// The names of the docker-registry secrets in the default namespace, sorted.
fn registry_names(env: &Env) -> Vec<String> {
    let out = env
        .pullsecret(&["secret", "list", "-o", "json"])
        .output()
        .expect("list");
    assert!(out.status.success(), "{}", stderr(&out));
    let items: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    let mut names: Vec<String> = items
        .iter()
        .map(|i| i["name"].as_str().unwrap_or("").to_string())
        .collect();
    names.sort();
    names
}

/// A named secret and an imported one for a server, so logout can be shown to spare them.
pub fn named_and_imported(env: &Env, server: &str) {
    assert!(create(
        env,
        "named",
        &[
            &format!("--docker-server={server}"),
            "--docker-password=named-pw"
        ]
    )
    .status
    .success());
    let payload = format!(r#"{{"auths":{{"{server}":{{"username":"imp","password":"imp-pw"}}}}}}"#);
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "imported"},
        "type": "kubernetes.io/dockerconfigjson", "stringData": {".dockerconfigjson": payload},
    });
    let out = run_with_stdin(
        env.pullsecret(&["secret", "import", "-f", "-"]),
        secret.to_string().as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The name login gives 127.0.0.1:5999 (lossy, so with a hash of the key).
const LOGIN_NAME: &str = "127.0.0.1-5999-651fc576";

#[test]
fn logout_and_erase_remove_only_what_login_stored() {
    let env = Env::new();
    let server = "127.0.0.1:5999";
    named_and_imported(&env, server);

    // The helper's store (docker/podman login) neither replaces nor renames the named secrets.
    let mut store = env.helper();
    store.arg("store");
    let out = run_with_stdin(
        store,
        format!(r#"{{"ServerURL":"{server}","Username":"alice","Secret":"login-pw"}}"#).as_bytes(),
    );
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(registry_names(&env), [LOGIN_NAME, "imported", "named"]);
    let mut erase = env.helper();
    erase.arg("erase");
    let out = run_with_stdin(erase, server.as_bytes());
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(registry_names(&env), ["imported", "named"]);

    // `pullsecret logout` likewise; a second logout finds nothing of login's.
    let out = run_with_stdin(
        env.pullsecret(&[
            "login",
            server,
            "-u",
            "alice",
            "--password-stdin",
            "--no-verify",
        ]),
        b"login-pw",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(registry_names(&env), [LOGIN_NAME, "imported", "named"]);
    let out = env
        .pullsecret(&["logout", server])
        .output()
        .expect("logout");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("Removing login credentials for {server}\n")
    );
    assert_eq!(registry_names(&env), ["imported", "named"]);
    let out = env
        .pullsecret(&["logout", server])
        .output()
        .expect("logout");
    assert_eq!(stdout(&out), format!("Not logged in to {server}\n"));

    // Only `secret delete NAME` removes a named secret.
    let out = env
        .pullsecret(&["secret", "delete", "named", "imported"])
        .output()
        .expect("delete");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(registry_names(&env).is_empty());
}

#[test]
fn login_and_doctor_name_the_secrets_a_match_shadows() {
    let env = Env::new();
    assert!(create(&env, "team", &["--docker-server=reg.example:5000"])
        .status
        .success());
    assert!(
        create(&env, "org", &["--docker-server=reg.example:5000/org"])
            .status
            .success()
    );
    let out = run_with_stdin(
        env.pullsecret(&[
            "login",
            "reg.example:5000",
            "-u",
            "me",
            "--password-stdin",
            "--no-verify",
        ]),
        b"login-pw",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let login_name = stdout(&out)
        .trim_end()
        .strip_prefix("Login Succeeded (stored as secret default/")
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or_default()
        .to_string();
    assert!(
        login_name.starts_with("reg.example-5000"),
        "{}",
        stdout(&out)
    );
    // Login's secret is the newest (or, within the same second, first by name).
    assert_eq!(
        stderr(&out),
        format!(
            "note: 2 secrets match reg.example:5000; default/{login_name} answers (the most specific server key wins, then the most recently written secret, then the name in alphabetical order); not used: default/team (server reg.example:5000)\n"
        )
    );
    let mut get = env.helper();
    get.arg("get");
    assert!(stdout(&run_with_stdin(get, b"reg.example:5000")).contains("login-pw"));

    // For a repository under org/, the namespaced key wins and doctor names the other two.
    let out = env
        .pullsecret(&["doctor", "reg.example:5000/org/app"])
        .output()
        .expect("doctor");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("  pullsecret store: found secret default/org\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "  pullsecret store: also matching, not used: default/{login_name} (server reg.example:5000), default/team (server reg.example:5000) ("
        )),
        "{text}"
    );
    assert!(
        text.contains("answer: username \"u\" from pullsecret store, secret default/org"),
        "{text}"
    );
}

#[test]
fn invalid_limit_env_values_are_errors_naming_the_variable() {
    for (var, value) in [
        ("PULLSECRET_MAX_SECRET_BYTES", "4k"),
        ("PULLSECRET_MAX_SECRETS_PER_NAMESPACE", "-1"),
        ("PULLSECRET_MAX_SECRETS_PER_NAMESPACE", "0"),
    ] {
        let mut env = Env::new();
        env.set(var, value);
        let out = create(&env, "a", &[]);
        assert!(!out.status.success(), "{var}={value} was accepted");
        assert_eq!(
            stderr(&out),
            format!("error: {var}=\"{value}\" is not a whole number of at least 1\n")
        );
        assert!(env.store_snapshot().is_empty(), "{var}={value} wrote");
        let mut get = env.helper();
        get.arg("get");
        let out = run_with_stdin(get, b"reg.example:5000");
        assert!(!out.status.success());
        assert!(stdout(&out).contains(var), "{}", stdout(&out));
    }
}

/// A Kubernetes Secret of `kind: Secret` with one Opaque key, in `namespace` when given.
fn opaque_secret(name: &str, namespace: Option<&str>) -> String {
    let mut meta = serde_json::json!({ "name": name });
    if let Some(ns) = namespace {
        meta["namespace"] = ns.into();
    }
    serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": meta,
        "type": "Opaque", "data": {"token": "dG9r"},
    })
    .to_string()
}

#[test]
fn import_and_create_refuse_reserved_and_unasked_namespaces() {
    let env = Env::new();
    assert!(create(&env, "keep", &[]).status.success());
    let before = env.store_snapshot();
    let import = |doc: &str, extra: &[&str]| {
        let mut args = vec!["secret", "import", "-f", "-"];
        args.extend_from_slice(extra);
        run_with_stdin(env.pullsecret(&args), doc.as_bytes())
    };
    let refused = |out: &std::process::Output, what: &str, needle: &str| {
        assert!(!out.status.success(), "{what} was accepted");
        let err = stderr(out);
        assert_eq!(err.trim_end().lines().count(), 1, "{what}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(needle),
            "{what}: {err}"
        );
        assert_eq!(env.store_snapshot(), before, "{what} changed the store");
    };

    // A Secret from another namespace needs --use-file-namespace, even with -n given.
    let other = opaque_secret("moved", Some("other"));
    refused(
        &import(&other, &[]),
        "file namespace",
        "--use-file-namespace",
    );
    refused(
        &import(&other, &["-n", "mine"]),
        "file namespace with -n",
        "--use-file-namespace",
    );
    // The proxy's client namespace is never written by import or create, flag or not.
    let clients = opaque_secret("alice", Some("proxy-clients"));
    refused(
        &import(&clients, &[]),
        "proxy-clients",
        "--use-file-namespace",
    );
    refused(
        &import(&clients, &["--use-file-namespace"]),
        "proxy-clients with the flag",
        "reserved",
    );
    refused(
        &import(&opaque_secret("alice", None), &["-n", "proxy-clients"]),
        "-n proxy-clients",
        "reserved",
    );
    refused(
        &create(&env, "alice", &["-n", "proxy-clients"]),
        "create -n proxy-clients",
        "pullsecret proxy client add",
    );

    // Asked for, or the same namespace as the target: imported where the file says.
    let out = import(&other, &["--use-file-namespace"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "secret/moved imported into other\n");
    let out = import(&opaque_secret("here", Some("default")), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "secret/here imported into default\n");
}

#[test]
fn other_credential_helpers_time_out_naming_the_helper() {
    let mut env = Env::new();
    let bin = env.path("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    // A shell writes the script, so no writable fd of ours can leak into a concurrent fork
    // (which would make exec fail with ETXTBSY).
    let script = bin.join("docker-credential-slow");
    let made = std::process::Command::new("sh")
        .arg("-c")
        .arg("printf '#!/bin/sh\\nexec sleep 30\\n' > \"$1\" && chmod 755 \"$1\"")
        .arg("sh")
        .arg(&script)
        .status()
        .expect("sh");
    assert!(made.success());
    std::fs::write(
        env.path("docker/config.json"),
        r#"{"credHelpers":{"slow.example":"slow"}}"#,
    )
    .expect("config");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    env.set("PATH", &path);
    env.set("PULLSECRET_HELPER_TIMEOUT_MS", "300");

    let started = std::time::Instant::now();
    let mut get = env.helper();
    get.arg("get");
    let out = run_with_stdin(get, b"slow.example");
    let took = started.elapsed();
    assert!(!out.status.success(), "{}", stdout(&out));
    assert_eq!(
        stdout(&out),
        "command \"docker-credential-slow\" did not finish within 300 ms and was killed\n"
    );
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");

    env.set("PULLSECRET_HELPER_TIMEOUT_MS", "soon");
    let mut get = env.helper();
    get.arg("get");
    let out = run_with_stdin(get, b"slow.example");
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("PULLSECRET_HELPER_TIMEOUT_MS=\"soon\""),
        "{}",
        stdout(&out)
    );
}

#[test]
fn relative_file_reference_is_stored_absolute() {
    let env = Env::new();
    let work = env.path("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    std::fs::write(work.join("pw.txt"), "file-pw\n").expect("write");
    let out = env
        .pullsecret(&[
            "secret",
            "create",
            "docker-registry",
            "byfile",
            "--docker-server=file.example",
            "--docker-username=u",
            "--docker-password-ref=file://./pw.txt",
        ])
        .current_dir(&work)
        .output()
        .expect("create");
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = stdout(
        &env.pullsecret(&["secret", "inspect", "byfile"])
            .output()
            .expect("inspect"),
    );
    let want = format!("\"password\": \"file://{}\"", work.join("pw.txt").display());
    assert!(shown.contains(&want), "{shown}");

    // Resolved from another directory, it still reads the same file.
    let mut get = env.helper();
    get.arg("get").current_dir("/");
    let out = run_with_stdin(get, b"file.example");
    assert_eq!(
        stdout(&out),
        "{\"ServerURL\":\"file.example\",\"Username\":\"u\",\"Secret\":\"file-pw\"}\n"
    );
}

/// A Kubernetes Secret (as kubectl writes it) holding two registries, with emails.
fn two_registry_secret() -> String {
    use pullsecret::secret::RegistrySecret;
    use secrecy::SecretString;
    let mut quay = RegistrySecret::new("quay.io", "robot", SecretString::from("quay-pw"));
    quay.email = Some("robot@example.com".into());
    let mut ghcr = RegistrySecret::new("ghcr.io/org", "octo", SecretString::from("ghcr-pw"));
    ghcr.email = Some("octo@example.com".into());
    pullsecret::store::kube::docker_registry_json("regcred", None, &[quay, ghcr])
}

#[test]
fn import_of_a_secret_with_several_registries_keeps_one_secret() {
    let env = Env::new();
    let secret = two_registry_secret();
    let out = run_with_stdin(
        env.pullsecret(&["secret", "import", "-f", "-"]),
        secret.as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "secret/regcred imported into default\n");
    assert_eq!(registry_names(&env), ["regcred"]);

    // The table names the primary (the first in the file: Go sorts the keys) plus the rest.
    let table = stdout(&env.pullsecret(&["secret", "list"]).output().expect("list"));
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(row.contains("ghcr.io/org +1"), "{table}");

    // inspect lists every registry.
    let shown: serde_json::Value = serde_json::from_str(&stdout(
        &env.pullsecret(&["secret", "inspect", "regcred", "--show-secret"])
            .output()
            .expect("inspect"),
    ))
    .expect("json");
    assert_eq!(shown["server"], "ghcr.io/org");
    assert_eq!(shown["password"], "ghcr-pw");
    assert_eq!(
        shown["also"],
        serde_json::json!([{"server": "quay.io", "username": "robot", "password": "quay-pw", "email": "robot@example.com"}])
    );

    // Export writes the same Secret back, byte for byte.
    let exported = env
        .pullsecret(&["secret", "export", "regcred"])
        .output()
        .expect("export");
    assert!(exported.status.success(), "{}", stderr(&exported));
    assert_eq!(stdout(&exported), secret);

    // The helper answers each registry with its own credentials.
    for (server, answer) in [
        (
            "quay.io",
            r#"{"ServerURL":"quay.io","Username":"robot","Secret":"quay-pw"}"#,
        ),
        (
            "ghcr.io/org/app",
            r#"{"ServerURL":"ghcr.io/org/app","Username":"octo","Secret":"ghcr-pw"}"#,
        ),
    ] {
        let mut get = env.helper();
        get.arg("get");
        assert_eq!(
            stdout(&run_with_stdin(get, server.as_bytes())),
            format!("{answer}\n")
        );
    }
    let mut get = env.helper();
    get.arg("get");
    let out = run_with_stdin(get, b"ghcr.io/other/app");
    assert_eq!(
        stdout(&out),
        "credentials not found in native keychain\n",
        "only ghcr.io/org was stored"
    );
    let mut list = env.helper();
    list.arg("list");
    assert_eq!(
        stdout(&run_with_stdin(list, b"")),
        "{\"ghcr.io/org\":\"octo\",\"quay.io\":\"robot\"}\n"
    );
}
