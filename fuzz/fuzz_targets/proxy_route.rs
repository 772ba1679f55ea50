//! The proxy's path router on arbitrary paths and queries: never panics, and every
//! route it accepts names a repository and digest that are safe to join onto the
//! cache directory and an upstream URL.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pullsecret::proxy::route::{route, ManifestRef, Route, UpstreamNames};
use pullsecret::registry::digest::Algorithm;
use pullsecret::registry::reference::{ReferenceError, RepositoryName};

fn upstreams() -> &'static [UpstreamNames] {
    static U: OnceLock<Vec<UpstreamNames>> = OnceLock::new();
    U.get_or_init(|| {
        let u = |name: &str, host: &str, aliases: &[&str], docker_hub| UpstreamNames {
            name: name.into(),
            host: host.into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            docker_hub,
        };
        vec![
            u(
                "hub",
                "registry-1.docker.io",
                &["docker.io", "index.docker.io"],
                true,
            ),
            u("ghcr", "ghcr.io", &[], false),
            u(
                "local",
                "localhost:5000",
                &["127.0.0.1:5000", "[::1]:5000"],
                false,
            ),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    // First byte: the default upstream (none, or one of the three); the rest is
    // `path[?query]`.
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(target) = std::str::from_utf8(rest) else {
        return;
    };
    let ups = upstreams();
    let default = match sel % 4 {
        0 => None,
        n => Some(usize::from(n - 1)),
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let Ok(r) = route(path, query, ups, default) else {
        return;
    };
    let (upstream, repo, digest) = match &r {
        Route::Base => return,
        Route::Manifest {
            upstream,
            repo,
            reference,
            ..
        } => {
            let digest = match reference {
                ManifestRef::Digest(d) => Some(d),
                ManifestRef::Tag(t) => {
                    assert!(!t.is_empty() && t.len() <= 128, "{target:?}");
                    assert!(
                        t.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
                        "{target:?}: tag {t:?}"
                    );
                    assert!(!t.starts_with(['.', '-']), "{target:?}: tag {t:?}");
                    None
                }
            };
            (*upstream, repo, digest)
        }
        Route::Blob {
            upstream,
            repo,
            digest,
            ..
        } => (*upstream, repo, Some(digest)),
    };
    assert!(upstream < ups.len(), "{target:?}: upstream {upstream}");
    assert!(!repo.starts_with('/'), "{target:?}: repo {repo:?}");
    assert!(
        repo.split('/')
            .all(|s| !s.is_empty() && s != "." && s != ".."),
        "{target:?}: repo {repo:?}"
    );
    assert!(
        !repo.contains(['%', '\\', '\0', '?', '#']),
        "{target:?}: repo {repo:?}"
    );
    // A valid repository name; `library/` may push a Hub name past the length limit.
    match RepositoryName::parse(repo) {
        Ok(_) | Err(ReferenceError::NameTooLong) => {}
        Err(e) => panic!("{target:?}: repo {repo:?} is not a repository name: {e}"),
    }
    if let Some(d) = digest {
        let len = match d.algorithm() {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
            other => panic!("{target:?}: algorithm {other:?}"),
        };
        assert_eq!(d.hex().len(), len, "{target:?}");
        assert!(
            d.hex()
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "{target:?}"
        );
        assert_eq!(d.as_str(), format!("{}:{}", d.algorithm(), d.hex()));
    }
});
