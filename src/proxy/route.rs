//! Request routing: `/v2/<name>/(manifests|blobs)/<ref>`, `/v2/<name>/tags/list`,
//! `/v2/<name>/referrers/<digest>` and `/v2/_catalog` parsed and validated, and the upstream
//! chosen by `?ns=`, then an alias path prefix, then the default.

use crate::registry::digest::Digest;
use crate::registry::reference::RepositoryName;

/// What a `/v2/…` request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /v2/`
    Base,
    Manifest {
        upstream: usize,
        repo: String,
        reference: ManifestRef,
        ns: Option<String>,
    },
    Blob {
        upstream: usize,
        repo: String,
        digest: Digest,
        ns: Option<String>,
    },
    /// `GET /v2/<name>/tags/list[?n=&last=]`
    Tags {
        upstream: usize,
        repo: String,
        /// The name as the client wrote it (alias prefix and all), for the body and `Link`.
        name: String,
        page: Page,
        ns: Option<String>,
    },
    /// `GET /v2/<name>/referrers/<digest>[?artifactType=]`
    Referrers {
        upstream: usize,
        repo: String,
        digest: Digest,
        artifact_type: Option<String>,
        ns: Option<String>,
    },
    /// `GET /v2/_catalog`
    Catalog,
}

/// `n` and `last` of a list request (distribution spec: content discovery).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// At most this many entries; `None`: all of them.
    pub n: Option<usize>,
    /// Only entries lexically after this one.
    pub last: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestRef {
    Tag(String),
    Digest(Digest),
}

impl ManifestRef {
    pub fn as_str(&self) -> &str {
        match self {
            ManifestRef::Tag(t) => t,
            ManifestRef::Digest(d) => d.as_str(),
        }
    }
}

/// Why a path was refused, with the OCI error code to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

/// The names an upstream answers to, for routing.
#[derive(Debug, Clone)]
pub struct UpstreamNames {
    pub name: String,
    pub host: String,
    pub aliases: Vec<String>,
    pub docker_hub: bool,
}

impl UpstreamNames {
    fn answers_to(&self, s: &str) -> bool {
        self.name == s || self.host == s || self.aliases.iter().any(|a| a == s)
    }
}

/// Parses `path` (already percent-decoding-free: we refuse `%`) and `query` into a route.
pub fn route(
    path: &str,
    query: Option<&str>,
    upstreams: &[UpstreamNames],
    default: Option<usize>,
) -> Result<Route, RouteError> {
    let err = |status, code, message: String| RouteError {
        status,
        code,
        message,
    };
    if path == "/v2" || path == "/v2/" {
        return Ok(Route::Base);
    }
    if path == "/v2/_catalog" {
        return Ok(Route::Catalog);
    }
    let rest = path
        .strip_prefix("/v2/")
        .ok_or_else(|| err(404, "NOT_FOUND", "not a registry API path".into()))?;
    if rest.len() > 4096 || rest.contains('%') {
        return Err(err(400, "NAME_INVALID", "invalid repository name".into()));
    }
    let (name, kind, reference) = if let Some(name) = rest.strip_suffix("/tags/list") {
        (name, "tags", "")
    } else if let Some(i) = rest.rfind("/manifests/") {
        (&rest[..i], "manifests", &rest[i + "/manifests/".len()..])
    } else if let Some(i) = rest.rfind("/blobs/") {
        (&rest[..i], "blobs", &rest[i + "/blobs/".len()..])
    } else if let Some(i) = rest.rfind("/referrers/") {
        (&rest[..i], "referrers", &rest[i + "/referrers/".len()..])
    } else {
        return Err(err(404, "NOT_FOUND", "unknown registry API path".into()));
    };
    let ns = query_param(query, "ns").filter(|s| !s.is_empty());
    let client_name = name;
    let name = RepositoryName::parse(name)
        .map_err(|_| err(400, "NAME_INVALID", "invalid repository name".into()))?;
    let (upstream, repo) = pick(name.as_str(), ns.as_deref(), upstreams, default)?;
    let repo = if upstreams[upstream].docker_hub && !repo.contains('/') {
        format!("library/{repo}")
    } else {
        repo
    };
    match kind {
        "manifests" => {
            let reference = if reference.contains(':') {
                ManifestRef::Digest(
                    Digest::parse(reference)
                        .map_err(|_| err(400, "DIGEST_INVALID", "invalid digest".into()))?,
                )
            } else if valid_tag(reference) {
                ManifestRef::Tag(reference.to_string())
            } else {
                // No manifest can have this tag (the distribution spec's tag grammar).
                return Err(err(404, "MANIFEST_UNKNOWN", "manifest unknown".into()));
            };
            Ok(Route::Manifest {
                upstream,
                repo,
                reference,
                ns,
            })
        }
        "tags" => Ok(Route::Tags {
            upstream,
            repo,
            name: client_name.to_string(),
            page: page(query)?,
            ns,
        }),
        "referrers" => {
            let digest = Digest::parse(reference)
                .map_err(|_| err(400, "DIGEST_INVALID", "invalid digest".into()))?;
            Ok(Route::Referrers {
                upstream,
                repo,
                digest,
                artifact_type: query_param(query, "artifactType").filter(|s| !s.is_empty()),
                ns,
            })
        }
        _ => {
            let digest = Digest::parse(reference)
                .map_err(|_| err(400, "DIGEST_INVALID", "invalid digest".into()))?;
            Ok(Route::Blob {
                upstream,
                repo,
                digest,
                ns,
            })
        }
    }
}

/// `n` (a count; 400 `PAGINATION_NUMBER_INVALID` otherwise, as distribution answers) and `last`.
fn page(query: Option<&str>) -> Result<Page, RouteError> {
    let n = match query_param(query, "n") {
        None => None,
        Some(v) => Some(v.parse::<usize>().map_err(|_| RouteError {
            status: 400,
            code: "PAGINATION_NUMBER_INVALID",
            message: "invalid number of results requested".into(),
        })?),
    };
    let last = query_param(query, "last").filter(|s| !s.is_empty());
    Ok(Page { n, last })
}

/// The first `key=value` of `query`, percent-decoded; `None` when absent or malformed.
fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(percent_decode)
}

fn pick(
    name: &str,
    ns: Option<&str>,
    upstreams: &[UpstreamNames],
    default: Option<usize>,
) -> Result<(usize, String), RouteError> {
    if let Some(ns) = ns {
        return upstreams
            .iter()
            .position(|u| u.answers_to(ns))
            .map(|i| (i, name.to_string()))
            // 404 lets containerd fall through to the next host.
            .ok_or_else(|| RouteError {
                status: 404,
                code: "NAME_UNKNOWN",
                message: format!("no upstream for namespace {ns}"),
            });
    }
    if let Some((first, rest)) = name.split_once('/') {
        if let Some(i) = upstreams.iter().position(|u| u.answers_to(first)) {
            return Ok((i, rest.to_string()));
        }
    }
    default
        .map(|i| (i, name.to_string()))
        .ok_or_else(|| RouteError {
            status: 404,
            code: "NAME_UNKNOWN",
            message: "no upstream for this repository".into(),
        })
}

/// Decodes `%XX` escapes (containerd encodes `host:port` as `host%3Aport`); `None` if malformed.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`
fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn ups() -> Vec<UpstreamNames> {
        vec![
            UpstreamNames {
                name: "hub".into(),
                host: "registry-1.docker.io".into(),
                aliases: vec!["docker.io".into()],
                docker_hub: true,
            },
            UpstreamNames {
                name: "ghcr".into(),
                host: "ghcr.io".into(),
                aliases: vec![],
                docker_hub: false,
            },
        ]
    }

    #[test]
    fn routes_by_ns_then_prefix_then_default() {
        let u = ups();
        assert_eq!(
            route("/v2/org/app/manifests/1.0", Some("ns=ghcr.io"), &u, Some(0)),
            Ok(Route::Manifest {
                upstream: 1,
                repo: "org/app".into(),
                reference: ManifestRef::Tag("1.0".into()),
                ns: Some("ghcr.io".into())
            })
        );
        assert_eq!(
            route("/v2/ghcr/org/app/manifests/1.0", None, &u, Some(0)),
            Ok(Route::Manifest {
                upstream: 1,
                repo: "org/app".into(),
                reference: ManifestRef::Tag("1.0".into()),
                ns: None
            })
        );
        assert_eq!(
            route("/v2/alpine/manifests/latest", None, &u, Some(0)),
            Ok(Route::Manifest {
                upstream: 0,
                repo: "library/alpine".into(),
                reference: ManifestRef::Tag("latest".into()),
                ns: None
            })
        );
        assert!(matches!(
            route(&format!("/v2/a/b/c/d/blobs/{D}"), None, &u, Some(1)),
            Ok(Route::Blob { upstream: 1, .. })
        ));
        assert_eq!(route("/v2/", None, &u, None), Ok(Route::Base));
        assert!(matches!(
            route("/v2/x/manifests/t", Some("ns=ghcr.io%3A443"), &u, None),
            Err(RouteError { status: 404, .. })
        ));
        let mut with_port = ups();
        with_port[1].aliases.push("ghcr.io:443".into());
        assert!(matches!(
            route(
                "/v2/x/manifests/t",
                Some("ns=ghcr.io%3A443"),
                &with_port,
                None
            ),
            Ok(Route::Manifest { upstream: 1, .. })
        ));
        assert_eq!(
            route("/v2/x/manifests/t", Some("ns=quay.io"), &u, Some(0)).map_err(|e| e.status),
            Err(404)
        );
    }

    #[test]
    fn routes_read_api_lists() {
        let u = ups();
        assert_eq!(
            route(
                "/v2/ghcr/org/app/tags/list",
                Some("n=2&last=v1.0"),
                &u,
                Some(0)
            ),
            Ok(Route::Tags {
                upstream: 1,
                repo: "org/app".into(),
                name: "ghcr/org/app".into(),
                page: Page {
                    n: Some(2),
                    last: Some("v1.0".into())
                },
                ns: None
            })
        );
        assert!(matches!(
            route("/v2/alpine/tags/list", None, &u, Some(0)),
            Ok(Route::Tags { upstream: 0, ref repo, page: Page { n: None, last: None }, .. })
                if repo == "library/alpine"
        ));
        assert!(matches!(
            route("/v2/a/tags/list", Some("n=-1"), &u, Some(0)),
            Err(RouteError {
                status: 400,
                code: "PAGINATION_NUMBER_INVALID",
                ..
            })
        ));
        assert_eq!(
            route("/v2/_catalog", Some("n=1"), &u, None),
            Ok(Route::Catalog)
        );
        assert!(matches!(
            route(
                &format!("/v2/a/referrers/{D}"),
                Some("artifactType=application%2Fvnd.x"),
                &u,
                Some(1)
            ),
            Ok(Route::Referrers { upstream: 1, artifact_type: Some(ref t), .. })
                if t == "application/vnd.x"
        ));
    }

    #[test]
    fn exact_errors_for_impossible_references() {
        let u = ups();
        let code = |p: &str| route(p, None, &u, Some(0)).map_err(|e| (e.status, e.code));
        assert_eq!(
            code("/v2/a/manifests/.INVALID"),
            Err((404, "MANIFEST_UNKNOWN"))
        );
        assert_eq!(
            code("/v2/a/manifests/sha256:totallywrong"),
            Err((400, "DIGEST_INVALID"))
        );
        assert_eq!(
            code("/v2/a/blobs/sha256:totallywrong"),
            Err((400, "DIGEST_INVALID"))
        );
        assert_eq!(
            code("/v2/a/referrers/sha256:totallywrong"),
            Err((400, "DIGEST_INVALID"))
        );
    }

    #[test]
    fn refuses_traversal_and_bad_refs() {
        let u = ups();
        for p in [
            "/v2/../etc/blobs/sha256:00",
            "/v2/%2e%2e/x/manifests/latest",
            "/v2/a/../../b/manifests/latest",
            "/v2//a/manifests/latest",
            "/v2/a/blobs/sha256:../../etc/passwd",
            "/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e",
            "/v2/a/blobs//etc/passwd",
            "/v2/A/manifests/latest",
            "/v2/a/manifests/-bad",
        ] {
            let r = route(p, None, &u, Some(0));
            assert!(
                matches!(
                    r,
                    Err(RouteError {
                        status: 400 | 404,
                        ..
                    })
                ),
                "{p}: {r:?}"
            );
        }
        let long = format!("/v2/{}/manifests/latest", "a/".repeat(3000));
        assert!(route(&long, None, &u, Some(0)).is_err());
    }
}
