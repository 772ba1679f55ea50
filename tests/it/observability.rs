//! What an operator sees by default: one start-up summary at info naming each upstream's
//! credential source, warnings for upstream refusals and refused client logins (names, never
//! values), and every stderr line JSON with `--log-format json`.

use std::process::Stdio;
use std::time::Duration;

use crate::support::http::{basic_auth, http_request};
use crate::support::images::push_image;
use crate::support::proxy::free_port;
use crate::support::registry::{Registry, RegistryAuth};
use crate::support::token_issuer::TokenIssuerConfig;
use crate::support::{run_with_stdin, stderr, try_eventually, Env};

#[test]
fn default_logs_summarise_start_up_and_warn_on_refusals_all_json() {
    let env = Env::new();
    let issuer = TokenIssuerConfig::new()
        .user("pusher", "push-pw", &[("*", &["pull", "push"])])
        .user("robot", "robot-pw", &[("private/*", &["pull"])]);
    let Some(reg) = Registry::start(RegistryAuth::Token(issuer)) else {
        return;
    };
    push_image(
        reg.addr(),
        "private/app",
        "v1",
        Some(("pusher", "push-pw")),
        &[vec![4u8; 1000]],
    );
    // A stored secret with a wrong password: the upstream refuses it.
    let out = run_with_stdin(
        env.pullsecret(&[
            "secret",
            "create",
            "docker-registry",
            "stale",
            "-n",
            "team-a",
            "--docker-server",
            reg.addr(),
            "--docker-username",
            "robot",
            "--docker-password-stdin",
        ]),
        b"wrong-observability-pw",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_with_stdin(
        env.pullsecret(&[
            "proxy",
            "client",
            "add",
            "a-client",
            "-n",
            "team-a",
            "--password-stdin",
        ]),
        b"a-pw",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let addr = format!("127.0.0.1:{}", free_port());
    let config = env.path("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{addr}\"\ncache_dir = \"{}\"\ndefault_upstream = \"up\"\n[auth]\nenabled = true\n\
             [[upstream]]\nname = \"up\"\nurl = \"http://{reg}\"\ninsecure = true\n\
             [[upstream]]\nname = \"cfg\"\nurl = \"http://127.0.0.1:1\"\ninsecure = true\nusername = \"u\"\npassword = \"env://NOT_SET\"\nscope = \"global\"\n\
             [[upstream]]\nname = \"named\"\nurl = \"http://127.0.0.2:1\"\ninsecure = true\nsecret = \"team-a/stale\"\n\
             [[upstream]]\nname = \"anon\"\nurl = \"http://127.0.0.3:1\"\ninsecure = true\n",
            env.path("cache").display(),
            reg = reg.addr()
        ),
    )
    .expect("config");
    let log = env.path("proxy.log");
    let mut child = env
        .pullsecret(&[
            "proxy",
            "--config",
            config.to_str().unwrap_or_default(),
            "--log-format",
            "json",
        ])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("proxy");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    if try_eventually(Duration::from_secs(15), || read().contains("proxy started")).is_err() {
        let _ = child.kill();
        panic!("no start-up summary: {}", read());
    }
    // A refused client login and an upstream refusal.
    let wrong = basic_auth("a-client", "not-a-pw");
    let r = http_request(
        "GET",
        &addr,
        "/v2/private/app/manifests/v1",
        &[("Authorization", &wrong)],
        b"",
    )
    .expect("request");
    assert_eq!(r.status, 401);
    let a = basic_auth("a-client", "a-pw");
    let r = http_request(
        "GET",
        &addr,
        "/v2/private/app/manifests/v1",
        &[("Authorization", &a)],
        b"",
    )
    .expect("request");
    assert_eq!(r.status, 401, "{}", r.text());
    let warned = try_eventually(Duration::from_secs(10), || {
        read().contains("upstream request failed") && read().contains("client login refused")
    });
    if warned.is_err() {
        let _ = child.kill();
        panic!("no warnings: {}", read());
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = read();
    let mut lines = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a stderr line is not JSON ({e}): {line}"));
        lines.push(v);
    }
    let has = |level: &str, needle: &str| {
        lines
            .iter()
            .any(|v| v["level"] == level && v.to_string().contains(needle))
    };
    assert!(has("INFO", "listening on http://"), "{text}");
    assert!(has("INFO", "store lookup by server key"), "{text}");
    assert!(has("INFO", "config username (scope global)"), "{text}");
    assert!(has("INFO", "secret team-a/stale"), "{text}");
    assert!(has("INFO", "anonymous (no stored secret"), "{text}");
    assert!(
        has("WARN", "client login refused") && has("WARN", "a-client"),
        "{text}"
    );
    assert!(has("WARN", "upstream request failed"), "{text}");
    for secret in ["not-a-pw", "wrong-observability-pw", "a-pw\""] {
        assert!(!text.contains(secret), "{secret} in the log: {text}");
    }
}
