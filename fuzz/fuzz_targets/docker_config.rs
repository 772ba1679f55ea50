//! docker `config.json` / containers `auth.json` / legacy `.dockercfg` parsing on
//! arbitrary text: never panics; lookups return entries the file holds; and a
//! file written back out (`to_json`) reads as the same credentials.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullsecret::secret::{RegistrySecret, ServerKey};
use pullsecret::store::docker_config::{AuthLookup, DockerConfig};
use secrecy::ExposeSecret;

const PATH: &str = "/fuzz/config.json";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = DockerConfig::parse(text, PATH) {
        check(&cfg, false);
    }
    if let Ok(cfg) = DockerConfig::parse_legacy(text, "/fuzz/.dockercfg") {
        check(&cfg, true);
    }
});

fn check(cfg: &DockerConfig, legacy: bool) {
    let entries = cfg.entries();

    // Look up every key the file names, and a few fixed ones.
    let mut keys: Vec<ServerKey> = ["docker.io", "ghcr.io/org/repo", "localhost:5000"]
        .iter()
        .filter_map(|k| ServerKey::parse(k).ok())
        .collect();
    keys.extend(
        cfg.auths()
            .iter()
            .filter_map(|(k, _)| ServerKey::parse(k).ok()),
    );
    keys.extend(
        cfg.cred_helpers()
            .iter()
            .filter_map(|(k, _)| ServerKey::parse(k).ok()),
    );
    for key in &keys {
        match cfg.lookup(key) {
            Some(AuthLookup::Credentials(s)) => {
                let found = ServerKey::parse(&s.server).expect("a found key parses");
                assert!(key.candidates().contains(&found), "{key:?} found {found:?}");
                assert!(cfg.auths().iter().any(|(k, _)| *k == s.server));
                assert!(!(s.username.is_empty() && s.password.expose_secret().is_empty()));
            }
            Some(AuthLookup::Helper(h)) => {
                assert!(!h.is_empty());
                assert!(cfg.cred_helpers().iter().any(|(_, v)| *v == h));
            }
            None => {}
        }
    }
    let _ = (cfg.creds_store(), cfg.is_legacy(), cfg.path());

    // What docker would write back holds the same credentials.
    let written = cfg.to_json();
    let again = if legacy {
        DockerConfig::parse_legacy(&written, "/fuzz/.dockercfg")
    } else {
        DockerConfig::parse(&written, PATH)
    }
    .unwrap_or_else(|e| panic!("written config does not parse: {e}\n{written}"));
    let again_entries = again.entries();
    match (&entries, &again_entries) {
        (Ok(_), Ok(_)) if folds_lossily(cfg) => {}
        (Ok(a), Ok(b)) => assert_eq!(
            sorted(a),
            sorted(b),
            "credentials changed when written back:\n{written}"
        ),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("entries() went from {a:?} to {b:?} when written back:\n{written}"),
    }
    assert_eq!(again.creds_store(), cfg.creds_store());
    let mut helpers_before = cfg.cred_helpers().to_vec();
    let mut helpers_after = again.cred_helpers().to_vec();
    helpers_before.sort();
    helpers_after.sort();
    assert_eq!(helpers_before, helpers_after);
    // Writing is idempotent, except that serde_json (without its `float_roundtrip`
    // feature) may read a float in an unknown key back one ULP off.
    if !has_float(&serde_json::from_str(&written).expect("written config is JSON")) {
        assert_eq!(again.to_json(), written);
    }
}

/// Whether writing folds a `username`/`password` pair into `auth` the way docker
/// does and loses something on the way back, as docker does too: the pair is
/// split at the first `:`, and NULs around the password are trimmed.
fn folds_lossily(cfg: &DockerConfig) -> bool {
    cfg.auths().iter().any(|(_, e)| {
        let set = |v: &Option<secrecy::SecretString>| {
            v.as_ref().is_some_and(|v| !v.expose_secret().is_empty())
        };
        !set(&e.auth)
            && !set(&e.identity_token)
            && (e.username.as_deref().is_some_and(|u| u.contains(':'))
                || e.password
                    .as_ref()
                    .is_some_and(|p| p.expose_secret().contains('\0')))
    })
}

fn has_float(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Number(n) => n.is_f64(),
        serde_json::Value::Array(a) => a.iter().any(has_float),
        serde_json::Value::Object(o) => o.values().any(has_float),
        _ => false,
    }
}

/// Credentials as comparable tuples, in key order (Go writes maps sorted).
fn sorted(v: &[RegistrySecret]) -> Vec<(String, String, String, Option<String>)> {
    let mut out: Vec<_> = v
        .iter()
        .map(|s| {
            (
                s.server.clone(),
                s.username.clone(),
                s.password.expose_secret().to_string(),
                s.email.clone(),
            )
        })
        .collect();
    out.sort();
    out
}
