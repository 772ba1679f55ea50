//! Kubernetes Secret parsing (JSON or YAML, one Secret, a List, or several
//! documents) on arbitrary text: never panics; and the registry credentials a
//! Secret holds survive being written out as kubectl would and read back.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use pullsecret::secret::{RegistrySecret, DOCKER_HUB_KEY};
use pullsecret::store::kube::{
    docker_registry_json, parse_secrets, registry_entries, TYPE_DOCKERCONFIGJSON,
};
use secrecy::ExposeSecret;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(secrets) = parse_secrets(text) else {
        return;
    };
    assert!(!secrets.is_empty());
    for s in &secrets {
        let _ = format!("{s:?}");
        let Ok(entries) = registry_entries(s) else {
            continue;
        };
        for e in &entries {
            assert!(!(e.username.is_empty() && e.password.expose_secret().is_empty()));
        }
        round_trip(&s.name, s.namespace.as_deref(), &entries);
    }
});

/// `kubectl create secret docker-registry` output for `entries` reads back as the
/// same credentials: one per server (the last wins, an empty server is Docker
/// Hub). A username holding `:` is the exception, as in kubectl: the `auth`
/// field (`user:pass`) it writes splits at the first colon.
fn round_trip(name: &str, namespace: Option<&str>, entries: &[RegistrySecret]) {
    if entries.is_empty() || entries.iter().any(|e| e.username.contains(':')) {
        return;
    }
    let json = docker_registry_json(name, namespace, entries);
    let back = parse_secrets(&json)
        .unwrap_or_else(|e| panic!("written Secret does not parse: {e}\n{json}"));
    assert_eq!(back.len(), 1, "{json}");
    let b = &back[0];
    assert_eq!(b.name, name);
    assert_eq!(b.namespace.as_deref(), namespace);
    assert_eq!(b.kind, TYPE_DOCKERCONFIGJSON);
    let got = registry_entries(b)
        .unwrap_or_else(|e| panic!("written Secret has no entries: {e}\n{json}"));

    let mut want: BTreeMap<String, (String, String, Option<String>)> = BTreeMap::new();
    for e in entries {
        let server = if e.server.is_empty() {
            DOCKER_HUB_KEY
        } else {
            &e.server
        };
        want.insert(
            server.to_string(),
            (
                e.username.clone(),
                e.password.expose_secret().to_string(),
                e.email.clone().filter(|m| !m.is_empty()),
            ),
        );
    }
    let got: BTreeMap<String, (String, String, Option<String>)> = got
        .iter()
        .map(|e| {
            (
                e.server.clone(),
                (
                    e.username.clone(),
                    e.password.expose_secret().to_string(),
                    e.email.clone(),
                ),
            )
        })
        .collect();
    assert_eq!(got, want, "{json}");
}
