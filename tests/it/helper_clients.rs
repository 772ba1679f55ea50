//! Real clients calling our helper: skopeo with `credHelpers` in its auth.json pulls from a
//! real htpasswd registry; docker's CLI `credsStore` path where it runs without a daemon
//! (`docker logout` removes the login secret and keeps named and imported ones).

use crate::support::images::push_image;
use crate::support::registry::{Registry, RegistryAuth};
use crate::support::skopeo::{skopeo, skopeo_auth_file};
use crate::support::{require_bin, run_with_stdin, stderr, Env};

fn helper_on_path(env: &mut Env) {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_docker-credential-pullsecret"));
    let dir = bin
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let path = format!("{dir}:{}", std::env::var("PATH").unwrap_or_default());
    env.set("PATH", &path);
}

#[test]
fn skopeo_uses_our_helper_via_cred_helpers() {
    let mut env = Env::new();
    let Some(reg) = Registry::start(RegistryAuth::Htpasswd {
        users: vec![("alice".into(), "right-pw".into())],
    }) else {
        return;
    };
    push_image(
        reg.addr(),
        "private/app",
        "v1",
        Some(("alice", "right-pw")),
        &[b"helper-test".to_vec()],
    );
    helper_on_path(&mut env);
    let auth = skopeo_auth_file(&env);
    std::fs::create_dir_all(auth.parent().expect("parent")).expect("mkdir");
    std::fs::write(
        &auth,
        format!(r#"{{"credHelpers":{{"{}":"pullsecret"}}}}"#, reg.addr()),
    )
    .expect("auth.json");
    let src = format!("docker://{}/private/app:v1", reg.addr());
    let pull = |env: &Env, name: &str| {
        skopeo(
            env,
            &[
                "copy",
                "--src-tls-verify=false",
                &src,
                &format!("oci:{}:v1", env.path(name).display()),
            ],
        )
    };

    // The right secret, stored through the helper protocol itself (as `docker login` would).
    let mut store = env.helper();
    store.arg("store");
    let out = run_with_stdin(
        store,
        format!(
            r#"{{"ServerURL":"{}","Username":"alice","Secret":"right-pw"}}"#,
            reg.addr()
        )
        .as_bytes(),
    );
    assert!(out.status.success());
    let out = pull(&env, "ok");
    assert!(
        out.status.success(),
        "pull with the right secret: {}",
        stderr(&out)
    );

    // A wrong password: skopeo reports unauthorized.
    let mut store = env.helper();
    store.arg("store");
    run_with_stdin(
        store,
        format!(
            r#"{{"ServerURL":"{}","Username":"alice","Secret":"wrong"}}"#,
            reg.addr()
        )
        .as_bytes(),
    );
    let out = pull(&env, "wrong");
    assert!(!out.status.success());
    assert!(
        stderr(&out).to_lowercase().contains("unauthorized") || stderr(&out).contains("401"),
        "{}",
        stderr(&out)
    );

    // Erased: skopeo goes anonymous and the registry denies it.
    let mut erase = env.helper();
    erase.arg("erase");
    assert!(run_with_stdin(erase, reg.addr().as_bytes())
        .status
        .success());
    let out = pull(&env, "anon");
    assert!(!out.status.success());
    assert!(
        stderr(&out).to_lowercase().contains("unauthorized") || stderr(&out).contains("401"),
        "{}",
        stderr(&out)
    );

    // skopeo login/logout go through the helper too (logout of a missing entry must not fail).
    let login = skopeo(
        &env,
        &[
            "login",
            "--tls-verify=false",
            "-u",
            "alice",
            "-p",
            "right-pw",
            reg.addr(),
        ],
    );
    assert!(login.status.success(), "{}", stderr(&login));
    assert!(pull(&env, "after-login").status.success());
    let logout = skopeo(&env, &["logout", reg.addr()]);
    assert!(logout.status.success(), "{}", stderr(&logout));
    let logout_again = skopeo(&env, &["logout", reg.addr()]);
    assert!(!String::from_utf8_lossy(&logout_again.stderr).contains("stack overflow"));
}

#[test]
fn docker_cli_logout_uses_creds_store_without_a_daemon() {
    let Some(docker) = require_bin("docker", "apt-get install docker.io (client only)") else {
        return;
    };
    let mut env = Env::new();
    helper_on_path(&mut env);
    std::fs::write(
        env.path("docker/config.json"),
        r#"{"credsStore":"pullsecret"}"#,
    )
    .expect("config");
    crate::cli_store::named_and_imported(&env, "127.0.0.1:5999");
    let mut store = env.helper();
    store.arg("store");
    assert!(run_with_stdin(
        store,
        br#"{"ServerURL":"127.0.0.1:5999","Username":"u","Secret":"p"}"#
    )
    .status
    .success());
    let out = env
        .cmd(&docker)
        .args(["logout", "127.0.0.1:5999"])
        .output()
        .expect("docker logout");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let mut get = env.helper();
    get.arg("get");
    let left = run_with_stdin(get, b"127.0.0.1:5999");
    // The named and imported secrets for that server stay (and answer `get` now).
    let list = env
        .pullsecret(&["secret", "list", "-o", "json"])
        .output()
        .expect("list");
    let items: Vec<serde_json::Value> = serde_json::from_slice(&list.stdout).expect("json");
    let mut names: Vec<&str> = items.iter().filter_map(|i| i["name"].as_str()).collect();
    names.sort();
    assert_eq!(names, ["imported", "named"]);
    assert!(
        left.status.success(),
        "{}",
        String::from_utf8_lossy(&left.stdout)
    );
}
