//! Image references (`[registry/]repository[:tag][@digest]`) parsed and normalized
//! the way docker does, and `RepositoryName`, a validated repository path.

use std::fmt;
use std::str::FromStr;

use super::digest::{Digest, DigestError};

/// Docker Hub's canonical domain in references; of Hub's other hosts, only the legacy
/// `index.docker.io` is rewritten to it, as docker's `splitDockerDomain` does.
pub use crate::secret::DOCKER_HUB_DOMAIN;
use crate::secret::LEGACY_HUB_DOMAIN;
/// Namespace of Docker Hub's official images: `alpine` is `library/alpine`.
const OFFICIAL_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";
/// Longest `registry/repository` docker accepts.
pub const NAME_MAX_LEN: usize = 255;
const TAG_MAX_LEN: usize = 128;

/// A normalized image reference: the registry is always present (`docker.io`
/// for Docker Hub), Hub official images carry `library/`, and at least one of
/// tag and digest identifies the image (`latest` when the input named neither).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: RepositoryName,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// A repository path such as `library/alpine`: one or more `/`-separated
/// lowercase components (`[a-z0-9]+` joined by `.`, `_`, `__` or dashes),
/// at most 255 characters. Holds no `..`, empty segment, or percent escape,
/// so it is safe in URL paths and file paths.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepositoryName(String);

#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("empty image reference")]
    Empty,
    #[error("invalid reference format")]
    InvalidFormat,
    #[error("invalid reference format: repository name must be lowercase")]
    Uppercase,
    #[error("invalid reference format: repository name longer than {NAME_MAX_LEN} characters")]
    NameTooLong,
    #[error("invalid repository name: a 64-character hexadecimal string is an image ID")]
    HexIdentifier,
    #[error("invalid reference format: {0}")]
    Digest(#[from] DigestError),
}

impl Reference {
    /// Parses what a user or a manifest writes for an image, normalizing like
    /// docker's `ParseNormalizedNamed`: `alpine` → `docker.io/library/alpine`,
    /// `index.docker.io/x` → `docker.io/library/x`. Both a tag and a digest
    /// may be given and both are kept.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        // Docker refuses a bare image ID as a name so `docker pull <id>` can
        // never be mistaken for a repository called that.
        if is_hex_identifier(input) {
            return Err(ReferenceError::HexIdentifier);
        }
        let (name_and_tag, digest) = match input.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest)),
            None => (input, None),
        };
        // A tag can only follow the last path component: `:` before a `/`
        // belongs to a registry port.
        let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_and_tag[last_slash..].find(':') {
            Some(at) => {
                let colon = last_slash + at;
                (&name_and_tag[..colon], Some(&name_and_tag[colon + 1..]))
            }
            None => (name_and_tag, None),
        };
        if name.is_empty() {
            return Err(ReferenceError::InvalidFormat);
        }
        if let Some(tag) = tag {
            if !is_valid_tag(tag) {
                return Err(ReferenceError::InvalidFormat);
            }
        }

        let (registry, path) = split_registry(name);
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase);
        }
        if !is_valid_domain(registry) {
            return Err(ReferenceError::InvalidFormat);
        }
        if !is_valid_path(&path) {
            return Err(ReferenceError::InvalidFormat);
        }
        // Docker measures the normalized name, registry included.
        if registry.len() + 1 + path.len() > NAME_MAX_LEN {
            return Err(ReferenceError::NameTooLong);
        }
        let digest = match digest {
            Some(d) => Some(Digest::parse(d)?),
            None => None,
        };
        Ok(Self {
            registry: registry.to_string(),
            repository: RepositoryName(path),
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// `host[:port]` as written, with Docker Hub as `docker.io`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path on the registry, e.g. `library/alpine`.
    pub fn repository(&self) -> &str {
        self.repository.as_str()
    }

    pub fn repository_name(&self) -> &RepositoryName {
        &self.repository
    }

    /// The tag as written; `None` when the input named none.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What goes after `/manifests/`: the digest when there is one (it pins
    /// the content, the tag is then only informative), else the tag, else
    /// `latest`.
    pub fn reference_str(&self) -> &str {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.as_str(),
            (None, Some(tag)) => tag,
            (None, None) => DEFAULT_TAG,
        }
    }

    /// Whether the registry is Docker Hub.
    pub fn is_docker_hub(&self) -> bool {
        self.registry == DOCKER_HUB_DOMAIN
    }

    /// Docker's short form: `docker.io/` and (for single-component Hub names)
    /// `library/` dropped; tag and digest as written, no default tag added.
    pub fn familiar(&self) -> String {
        let mut out = String::new();
        if self.is_docker_hub() {
            let repo = self.repository();
            match repo.strip_prefix(OFFICIAL_PREFIX) {
                Some(rest) if !rest.contains('/') => out.push_str(rest),
                _ => out.push_str(repo),
            }
        } else {
            out.push_str(&self.registry);
            out.push('/');
            out.push_str(self.repository());
        }
        if let Some(tag) = &self.tag {
            out.push(':');
            out.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            out.push('@');
            out.push_str(digest.as_str());
        }
        out
    }
}

/// The fully normalized form, `registry/repository[:tag][@digest]`, with
/// `:latest` when neither tag nor digest was given.
impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        match (&self.tag, &self.digest) {
            (None, None) => write!(f, ":{DEFAULT_TAG}"),
            (tag, digest) => {
                if let Some(tag) = tag {
                    write!(f, ":{tag}")?;
                }
                if let Some(digest) = digest {
                    write!(f, "@{digest}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl RepositoryName {
    /// Validates a repository path as it appears in `/v2/<name>/…`: no
    /// registry part, no tag, no normalization (`alpine` stays `alpine`).
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if input.len() > NAME_MAX_LEN {
            return Err(ReferenceError::NameTooLong);
        }
        if input.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase);
        }
        if !is_valid_path(input) {
            return Err(ReferenceError::InvalidFormat);
        }
        Ok(Self(input.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `/`-separated components, each non-empty and never `.` or `..`.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepositoryName({})", self.0)
    }
}

impl FromStr for RepositoryName {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for RepositoryName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Splits `name` into registry and repository path the way docker's
/// `splitDockerDomain` does: the first component is a registry only if it is
/// `localhost`, contains `.` or `:`, or has an uppercase letter (repository
/// paths never do). Otherwise the image is on Docker Hub.
fn split_registry(name: &str) -> (&str, String) {
    let (registry, path) = match name.split_once('/') {
        None => (DOCKER_HUB_DOMAIN, name),
        Some((first, rest)) => {
            if first == LEGACY_HUB_DOMAIN {
                (DOCKER_HUB_DOMAIN, rest)
            } else if first == "localhost"
                || first.contains(['.', ':'])
                || first.bytes().any(|b| b.is_ascii_uppercase())
            {
                (first, rest)
            } else {
                (DOCKER_HUB_DOMAIN, name)
            }
        }
    };
    // Hub's official images live under `library/`.
    let path = if registry == DOCKER_HUB_DOMAIN && !path.contains('/') {
        format!("{OFFICIAL_PREFIX}{path}")
    } else {
        path.to_string()
    };
    (registry, path)
}

/// `host[:port]` where host is a DNS-like name (components of letters,
/// digits and inner dashes, joined by dots), an IPv4 address, or a bracketed
/// IPv6 address without zone; the port is digits.
fn is_valid_domain(domain: &str) -> bool {
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return false;
        };
        if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("[ipv6]", port),
                None => return false,
            },
        }
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (host, port),
            None => return is_valid_host_name(domain),
        }
    };
    (host == "[ipv6]" || is_valid_host_name(host))
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
}

fn is_valid_host_name(host: &str) -> bool {
    host.split('.').all(|label| {
        let bytes = label.as_bytes();
        match (bytes.first(), bytes.last()) {
            (Some(first), Some(last)) => {
                first.is_ascii_alphanumeric()
                    && last.is_ascii_alphanumeric()
                    && bytes
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            }
            _ => false,
        }
    })
}

fn is_valid_path(path: &str) -> bool {
    path.split('/').all(is_valid_path_component)
}

/// `[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*`: alphanumeric runs joined by one
/// `.`, one or two `_`, or any number of `-`.
fn is_valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        // An alphanumeric run is required at the start and after every separator.
        let run_start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == run_start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        let sep_start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let ok = match &bytes[sep_start..i] {
            b"." | b"_" | b"__" => true,
            sep => sep.iter().all(|b| *b == b'-'),
        };
        if !ok {
            return false;
        }
    }
}

/// `[\w][\w.-]{0,127}`.
fn is_valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    match bytes.first() {
        Some(first) if word(*first) => {
            bytes.len() <= TAG_MAX_LEN
                && bytes[1..]
                    .iter()
                    .all(|b| word(*b) || *b == b'.' || *b == b'-')
        }
        _ => false,
    }
}

fn is_hex_identifier(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FFF64: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    fn ok(input: &str) -> Reference {
        match Reference::parse(input) {
            Ok(r) => r,
            Err(e) => panic!("{input:?} should parse, got {e}"),
        }
    }

    fn err(input: &str) -> ReferenceError {
        match Reference::parse(input) {
            Ok(r) => panic!("{input:?} should fail, parsed as {r}"),
            Err(e) => e,
        }
    }

    /// The brief's headline cases.
    #[test]
    fn normalizes_familiar_names() {
        let r = ok("alpine");
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.repository(), "library/alpine");
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), None);
        assert_eq!(r.reference_str(), "latest");
        assert_eq!(r.to_string(), "docker.io/library/alpine:latest");
        assert_eq!(r.familiar(), "alpine");

        let r = ok("localhost:5000/x");
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.repository(), "x");
        assert_eq!(r.to_string(), "localhost:5000/x:latest");
        assert_eq!(r.familiar(), "localhost:5000/x");

        let r = ok("127.0.0.1:5000/ns/repo");
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "ns/repo");

        let r = ok("localhost/x");
        assert_eq!(r.registry(), "localhost");
    }

    #[test]
    fn keeps_tag_and_digest_together() {
        let input = format!("host:5000/ns/repo:v1@sha256:{FFF64}");
        let r = ok(&input);
        assert_eq!(r.registry(), "host:5000");
        assert_eq!(r.repository(), "ns/repo");
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(
            r.digest().map(Digest::as_str),
            Some(&*format!("sha256:{FFF64}"))
        );
        // The digest pins the content; it is what the proxy asks for.
        assert_eq!(r.reference_str(), format!("sha256:{FFF64}"));
        assert_eq!(r.to_string(), input);
    }

    #[test]
    fn digest_only() {
        let r = ok(&format!("busybox@sha256:{FFF64}"));
        assert_eq!(r.tag(), None);
        assert_eq!(r.reference_str(), format!("sha256:{FFF64}"));
        assert_eq!(
            r.to_string(),
            format!("docker.io/library/busybox@sha256:{FFF64}")
        );
        assert_eq!(r.familiar(), format!("busybox@sha256:{FFF64}"));
    }

    #[test]
    fn only_docker_io_and_index_docker_io_are_hub() {
        assert_eq!(ok("index.docker.io/foo").registry(), "docker.io");
        assert_eq!(ok("index.docker.io/foo").repository(), "library/foo");
        assert_eq!(ok("docker.io/foo").repository(), "library/foo");
        // Docker leaves the other Hub host names alone.
        let r = ok("registry-1.docker.io/foo");
        assert_eq!(r.registry(), "registry-1.docker.io");
        assert_eq!(r.repository(), "foo");
        assert!(!r.is_docker_hub());
    }

    /// distribution/reference `TestReferenceParse`, read through docker's
    /// normalization (`ParseNormalizedNamed`). Rows: input, registry,
    /// repository, tag, digest. Where docker's raw `Parse` would report an
    /// empty domain, the normalized registry is `docker.io`.
    #[test]
    fn docker_reference_parse_cases() {
        let d256 = format!("sha256:{FFF64}");
        let d512 = format!("sha512:{FFF64}{FFF64}");
        type Case = (
            String,
            &'static str,
            String,
            Option<&'static str>,
            Option<String>,
        );
        let cases: Vec<Case> = vec![
            (
                "test_com".into(),
                "docker.io",
                "library/test_com".into(),
                None,
                None,
            ),
            (
                "test.com:tag".into(),
                "docker.io",
                "library/test.com".into(),
                Some("tag"),
                None,
            ),
            (
                "test.com:5000".into(),
                "docker.io",
                "library/test.com".into(),
                Some("5000"),
                None,
            ),
            (
                "test.com/repo:tag".into(),
                "test.com",
                "repo".into(),
                Some("tag"),
                None,
            ),
            (
                "test:5000/repo".into(),
                "test:5000",
                "repo".into(),
                None,
                None,
            ),
            (
                "test:5000/repo:tag".into(),
                "test:5000",
                "repo".into(),
                Some("tag"),
                None,
            ),
            (
                format!("test:5000/repo@{d256}"),
                "test:5000",
                "repo".into(),
                None,
                Some(d256.clone()),
            ),
            (
                format!("test:5000/repo:tag@{d256}"),
                "test:5000",
                "repo".into(),
                Some("tag"),
                Some(d256.clone()),
            ),
            (
                "lowercase:Uppercase".into(),
                "docker.io",
                "library/lowercase".into(),
                Some("Uppercase"),
                None,
            ),
            (
                "sub-dom1.foo.com/bar/baz/quux".into(),
                "sub-dom1.foo.com",
                "bar/baz/quux".into(),
                None,
                None,
            ),
            (
                "sub-dom1.foo.com/bar/baz/quux:some-long-tag".into(),
                "sub-dom1.foo.com",
                "bar/baz/quux".into(),
                Some("some-long-tag"),
                None,
            ),
            (
                "b.gcr.io/test.example.com/my-app:test.example.com".into(),
                "b.gcr.io",
                "test.example.com/my-app".into(),
                Some("test.example.com"),
                None,
            ),
            (
                "xn--n3h.com/myimage:xn--n3h.com".into(),
                "xn--n3h.com",
                "myimage".into(),
                Some("xn--n3h.com"),
                None,
            ),
            (
                format!("xn--7o8h.com/myimage:xn--7o8h.com@{d512}"),
                "xn--7o8h.com",
                "myimage".into(),
                Some("xn--7o8h.com"),
                Some(d512.clone()),
            ),
            (
                "foo_bar.com:8080".into(),
                "docker.io",
                "library/foo_bar.com".into(),
                Some("8080"),
                None,
            ),
            (
                "foo/foo_bar.com:8080".into(),
                "docker.io",
                "foo/foo_bar.com".into(),
                Some("8080"),
                None,
            ),
            (
                "192.168.1.1".into(),
                "docker.io",
                "library/192.168.1.1".into(),
                None,
                None,
            ),
            (
                "192.168.1.1:tag".into(),
                "docker.io",
                "library/192.168.1.1".into(),
                Some("tag"),
                None,
            ),
            (
                "192.168.1.1:5000".into(),
                "docker.io",
                "library/192.168.1.1".into(),
                Some("5000"),
                None,
            ),
            (
                "192.168.1.1/repo".into(),
                "192.168.1.1",
                "repo".into(),
                None,
                None,
            ),
            (
                "192.168.1.1:5000/repo".into(),
                "192.168.1.1:5000",
                "repo".into(),
                None,
                None,
            ),
            (
                "192.168.1.1:5000/repo:5050".into(),
                "192.168.1.1:5000",
                "repo".into(),
                Some("5050"),
                None,
            ),
            (
                "[2001:db8::1]/repo".into(),
                "[2001:db8::1]",
                "repo".into(),
                None,
                None,
            ),
            (
                "[2001:db8:1:2:3:4:5:6]/repo:tag".into(),
                "[2001:db8:1:2:3:4:5:6]",
                "repo".into(),
                Some("tag"),
                None,
            ),
            (
                "[2001:db8::1]:5000/repo".into(),
                "[2001:db8::1]:5000",
                "repo".into(),
                None,
                None,
            ),
            (
                "[2001:db8::1]:5000/repo:tag".into(),
                "[2001:db8::1]:5000",
                "repo".into(),
                Some("tag"),
                None,
            ),
            (
                format!("[2001:db8::1]:5000/repo@{d256}"),
                "[2001:db8::1]:5000",
                "repo".into(),
                None,
                Some(d256.clone()),
            ),
            (
                format!("[2001:db8::1]:5000/repo:tag@{d256}"),
                "[2001:db8::1]:5000",
                "repo".into(),
                Some("tag"),
                Some(d256.clone()),
            ),
            (
                "[2001:db8::]:5000/repo".into(),
                "[2001:db8::]:5000",
                "repo".into(),
                None,
                None,
            ),
            (
                "[::1]:5000/repo".into(),
                "[::1]:5000",
                "repo".into(),
                None,
                None,
            ),
        ];
        for (input, registry, repository, tag, digest) in cases {
            let r = ok(&input);
            assert_eq!(r.registry(), registry, "registry of {input:?}");
            assert_eq!(r.repository(), repository, "repository of {input:?}");
            assert_eq!(r.tag(), tag, "tag of {input:?}");
            assert_eq!(
                r.digest().map(|d| d.to_string()),
                digest,
                "digest of {input:?}"
            );
            // Display round-trips through the parser to the same value.
            assert_eq!(
                ok(&r.to_string()),
                r.with_default_tag(),
                "round trip of {input:?}"
            );
        }
    }

    #[test]
    fn docker_reference_parse_error_cases() {
        let cases: Vec<(String, ReferenceError)> = vec![
            (String::new(), ReferenceError::Empty),
            (":justtag".into(), ReferenceError::InvalidFormat),
            (format!("@sha256:{FFF64}"), ReferenceError::InvalidFormat),
            (
                "repo@sha256:ffffffffffffffffffffffffffffffffff".into(),
                ReferenceError::Digest(DigestError::InvalidLength {
                    algorithm: crate::registry::digest::Algorithm::Sha256,
                    expected: 64,
                    found: 34,
                }),
            ),
            (
                format!("validname@invaliddigest:{FFF64}"),
                ReferenceError::Digest(DigestError::UnsupportedAlgorithm),
            ),
            ("Uppercase:tag".into(), ReferenceError::Uppercase),
            (
                "test:5000/Uppercase/lowercase:tag".into(),
                ReferenceError::Uppercase,
            ),
            (
                format!("{}a:tag", "a/".repeat(128)),
                ReferenceError::NameTooLong,
            ),
            // Docker's raw parser accepts this 255-character name; normalized,
            // `docker.io/` pushes it over the limit, as in ParseNormalizedNamed.
            (
                format!("{}a:tag-puts-this-over-max", "a/".repeat(127)),
                ReferenceError::NameTooLong,
            ),
            ("aa/asdf$$^/aa".into(), ReferenceError::InvalidFormat),
            ("[2001:db8::1]".into(), ReferenceError::InvalidFormat),
            ("[2001:db8::1]:5000".into(), ReferenceError::InvalidFormat),
            ("[2001:db8::1]:tag".into(), ReferenceError::InvalidFormat),
            (
                "[fe80::1%eth0]:5000/repo".into(),
                ReferenceError::InvalidFormat,
            ),
            (
                "[fe80::1%@invalidzone]:5000/repo".into(),
                ReferenceError::InvalidFormat,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(err(&input), want, "input {input:?}");
        }
    }

    /// distribution/reference `TestValidateReferenceName`.
    #[test]
    fn docker_validate_reference_name_cases() {
        let valid = [
            "docker/docker",
            "library/debian",
            "debian",
            "docker.io/docker/docker",
            "docker.io/library/debian",
            "docker.io/debian",
            "index.docker.io/docker/docker",
            "index.docker.io/library/debian",
            "index.docker.io/debian",
            "127.0.0.1:5000/docker/docker",
            "127.0.0.1:5000/library/debian",
            "127.0.0.1:5000/debian",
            "192.168.0.1",
            "192.168.0.1:80",
            "192.168.0.1:8/debian",
            "192.168.0.2:25000/debian",
            "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
            "[fc00::1]:5000/docker",
            "[fc00::1]:5000/docker/docker",
            "[fc00:1:2:3:4:5:6:7]:5000/library/debian",
            "docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
            // An uppercase first component is taken as a registry host.
            "Docker/docker",
            "DOCKER/docker",
        ];
        for input in valid {
            ok(input);
        }
        let invalid = [
            "https://github.com/docker/docker",
            "docker/Docker",
            "-docker",
            "-docker/docker",
            "-docker.io/docker/docker",
            "docker///docker",
            "docker.io/docker/Docker",
            "docker.io/docker///docker",
            "[fc00::1]",
            "[fc00::1]:5000",
            "fc00::1:5000/debian",
            "[fe80::1%eth0]:5000/debian",
            "[2001:db8:3:4::192.0.2.33]:5000/debian",
            "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
        ];
        for input in invalid {
            err(input);
        }
        assert_eq!(
            err("1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a"),
            ReferenceError::HexIdentifier
        );
    }

    /// distribution/reference `TestValidateRemoteName`.
    #[test]
    fn docker_validate_remote_name_cases() {
        let valid = [
            "docker/docker",
            "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
            "docker-rules/docker",
            "docker---rules/docker",
            "doc/docker",
            "d/docker",
            "jess/t",
            "dock__er/docker",
        ];
        for input in valid {
            ok(input);
            RepositoryName::parse(input).expect(input);
        }
        let invalid = [
            "docker/Docker",
            "docker///docker",
            "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
            "-docker/docker",
            "docker-/docker",
            "-docker-/docker",
            "____/____",
            "_docker/_docker",
            "dock..er/docker",
            "dock_.er/docker",
            "dock-.er/docker",
            "docker/",
            "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255/docker",
        ];
        for input in invalid {
            err(input);
        }
    }

    /// distribution/reference `TestParseRepositoryInfo`: every spelling of a
    /// name gives the same familiar name, full name, registry and path.
    #[test]
    fn docker_repository_info_cases() {
        // (path, familiar, full, ambiguous spelling, registry)
        let cases = [
            (
                "fooo/bar",
                "fooo/bar",
                "docker.io/fooo/bar",
                Some("index.docker.io/fooo/bar"),
                "docker.io",
            ),
            (
                "library/ubuntu",
                "ubuntu",
                "docker.io/library/ubuntu",
                Some("library/ubuntu"),
                "docker.io",
            ),
            (
                "nonlibrary/ubuntu",
                "nonlibrary/ubuntu",
                "docker.io/nonlibrary/ubuntu",
                None,
                "docker.io",
            ),
            (
                "other/library",
                "other/library",
                "docker.io/other/library",
                None,
                "docker.io",
            ),
            (
                "private/moonbase",
                "127.0.0.1:8000/private/moonbase",
                "127.0.0.1:8000/private/moonbase",
                None,
                "127.0.0.1:8000",
            ),
            (
                "privatebase",
                "127.0.0.1:8000/privatebase",
                "127.0.0.1:8000/privatebase",
                None,
                "127.0.0.1:8000",
            ),
            (
                "private/moonbase",
                "example.com/private/moonbase",
                "example.com/private/moonbase",
                None,
                "example.com",
            ),
            (
                "privatebase",
                "example.com/privatebase",
                "example.com/privatebase",
                None,
                "example.com",
            ),
            (
                "private/moonbase",
                "example.com:8000/private/moonbase",
                "example.com:8000/private/moonbase",
                None,
                "example.com:8000",
            ),
            (
                "privatebasee",
                "example.com:8000/privatebasee",
                "example.com:8000/privatebasee",
                None,
                "example.com:8000",
            ),
            (
                "library/ubuntu-12.04-base",
                "ubuntu-12.04-base",
                "docker.io/library/ubuntu-12.04-base",
                Some("index.docker.io/library/ubuntu-12.04-base"),
                "docker.io",
            ),
            (
                "library/foo",
                "foo",
                "docker.io/library/foo",
                Some("docker.io/foo"),
                "docker.io",
            ),
            (
                "library/foo/bar",
                "library/foo/bar",
                "docker.io/library/foo/bar",
                None,
                "docker.io",
            ),
            (
                "store/foo/bar",
                "store/foo/bar",
                "docker.io/store/foo/bar",
                None,
                "docker.io",
            ),
            ("bar", "Foo/bar", "Foo/bar", None, "Foo"),
            ("bar", "FOO/bar", "FOO/bar", None, "FOO"),
        ];
        for (path, familiar, full, ambiguous, registry) in cases {
            let spellings = [Some(familiar), Some(full), ambiguous];
            for input in spellings.into_iter().flatten() {
                let r = ok(input);
                assert_eq!(r.repository(), path, "path of {input:?}");
                assert_eq!(r.registry(), registry, "registry of {input:?}");
                assert_eq!(r.familiar(), familiar, "familiar of {input:?}");
                assert_eq!(r.to_string(), format!("{full}:latest"), "full of {input:?}");
            }
        }
    }

    /// distribution/reference `TestParseReferenceWithTagAndDigest`.
    #[test]
    fn docker_tag_and_digest_familiar_round_trip() {
        let short = "busybox:latest@sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa";
        let r = ok(short);
        assert_eq!(r.to_string(), format!("docker.io/library/{short}"));
        assert_eq!(r.tag(), Some("latest"));
        assert!(r.digest().is_some());
        assert_eq!(r.familiar(), short);
    }

    /// distribution/reference `TestParseAnyReference` (named inputs only; a
    /// bare digest is not an image reference here).
    #[test]
    fn docker_parse_any_reference_cases() {
        let d = "sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c";
        let cases = [
            ("redis".to_string(), "docker.io/library/redis:latest".to_string()),
            ("redis:latest".into(), "docker.io/library/redis:latest".into()),
            ("docker.io/library/redis:latest".into(), "docker.io/library/redis:latest".into()),
            (format!("redis@{d}"), format!("docker.io/library/redis@{d}")),
            (format!("docker.io/library/redis@{d}"), format!("docker.io/library/redis@{d}")),
            ("dmcgowan/myapp".into(), "docker.io/dmcgowan/myapp:latest".into()),
            ("dmcgowan/myapp:latest".into(), "docker.io/dmcgowan/myapp:latest".into()),
            ("docker.io/mcgowan/myapp:latest".into(), "docker.io/mcgowan/myapp:latest".into()),
            (format!("dmcgowan/myapp@{d}"), format!("docker.io/dmcgowan/myapp@{d}")),
            (format!("docker.io/dmcgowan/myapp@{d}"), format!("docker.io/dmcgowan/myapp@{d}")),
            // 63 hex characters is a name, not an image ID.
            (
                "dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9".into(),
                "docker.io/library/dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9:latest".into(),
            ),
            ("dbcc1".into(), "docker.io/library/dbcc1:latest".into()),
        ];
        for (input, want) in cases {
            assert_eq!(ok(&input).to_string(), want, "input {input:?}");
        }
    }

    /// distribution/reference `TestNormalizedSplitHostname`.
    #[test]
    fn docker_normalized_split_hostname_cases() {
        let cases = [
            ("test.com/foo", "test.com", "foo"),
            ("test_com/foo", "docker.io", "test_com/foo"),
            ("docker/migrator", "docker.io", "docker/migrator"),
            ("test.com:8080/foo", "test.com:8080", "foo"),
            ("test-com:8080/foo", "test-com:8080", "foo"),
            ("foo", "docker.io", "library/foo"),
            ("xn--n3h.com/foo", "xn--n3h.com", "foo"),
            ("xn--n3h.com:18080/foo", "xn--n3h.com:18080", "foo"),
            ("docker.io/foo", "docker.io", "library/foo"),
            ("docker.io/library/foo", "docker.io", "library/foo"),
            ("docker.io/library/foo/bar", "docker.io", "library/foo/bar"),
        ];
        for (input, registry, path) in cases {
            let r = ok(input);
            assert_eq!(
                (r.registry(), r.repository()),
                (registry, path),
                "input {input:?}"
            );
        }
    }

    /// distribution/reference `TestParseDockerRef` (Display adds `latest`
    /// the same way; unlike ParseDockerRef, the tag is kept beside a digest).
    #[test]
    fn docker_parse_docker_ref_cases() {
        let d = "sha256:e6693c20186f837fc393390135d8a598a96a833917917789d63766cab6c59582";
        let cases = [
            (
                "busybox".to_string(),
                "docker.io/library/busybox:latest".to_string(),
            ),
            (
                "busybox:latest".into(),
                "docker.io/library/busybox:latest".into(),
            ),
            (
                format!("busybox@{d}"),
                format!("docker.io/library/busybox@{d}"),
            ),
            (
                "library/busybox".into(),
                "docker.io/library/busybox:latest".into(),
            ),
            (
                "docker.io/busybox".into(),
                "docker.io/library/busybox:latest".into(),
            ),
            (
                "docker.io/library/busybox".into(),
                "docker.io/library/busybox:latest".into(),
            ),
            (
                "docker.io/busybox:latest".into(),
                "docker.io/library/busybox:latest".into(),
            ),
            (
                "library/busybox:latest".into(),
                "docker.io/library/busybox:latest".into(),
            ),
            (
                "docker.io/library/busybox:latest".into(),
                "docker.io/library/busybox:latest".into(),
            ),
            (
                "gcr.io/library/busybox".into(),
                "gcr.io/library/busybox:latest".into(),
            ),
            (
                format!("gcr.io/library/busybox:latest@{d}"),
                format!("gcr.io/library/busybox:latest@{d}"),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(ok(&input).to_string(), want, "input {input:?}");
        }
    }

    #[test]
    fn registry_choice_edge_cases() {
        // Docker's raw parser falls back to an empty domain here; a registry
        // that is neither Hub nor a valid host would be unusable, so refuse.
        assert_eq!(err("foo_bar.com/x"), ReferenceError::InvalidFormat);
        // A lone `localhost` is a Hub image name, as in docker.
        assert_eq!(
            ok("localhost").to_string(),
            "docker.io/library/localhost:latest"
        );
        // Case is kept in the registry, as docker keeps it.
        assert_eq!(ok("Example.COM/x").registry(), "Example.COM");
    }

    #[test]
    fn tag_grammar() {
        assert_eq!(
            ok(&format!("a:{}", "t".repeat(128))).tag().map(str::len),
            Some(128)
        );
        assert_eq!(
            err(&format!("a:{}", "t".repeat(129))),
            ReferenceError::InvalidFormat
        );
        assert_eq!(err("a:-tag"), ReferenceError::InvalidFormat);
        assert_eq!(err("a:.tag"), ReferenceError::InvalidFormat);
        assert_eq!(err("a:"), ReferenceError::InvalidFormat);
        assert_eq!(err("a:b:c"), ReferenceError::InvalidFormat);
        assert_eq!(err("a:b@"), ReferenceError::Digest(DigestError::Empty));
        assert_eq!(ok("a:_x.Y-1").tag(), Some("_x.Y-1"));
    }

    #[test]
    fn rejects_non_ascii_and_traversal() {
        for input in [
            "é",
            "docker.io/é",
            "a:é",
            "ex.com/../x",
            "ex.com/a/%2e%2e/b",
            "ex.com/./x",
            "ex.com//x",
            " alpine",
            "alpine ",
            "ex.com:/x",
            "ex.com:99a/x",
            ".ex.com/x",
            "ex..com/x",
        ] {
            err(input);
        }
    }

    #[test]
    fn repository_name_validates_proxy_paths() {
        for input in ["library/alpine", "a", "a/b/c/d/e", "my-org/my_app.v2/x__y"] {
            let name = RepositoryName::parse(input).expect(input);
            assert_eq!(name.as_str(), input);
            assert_eq!(name.to_string(), input);
            assert_eq!(name.segments().collect::<Vec<_>>().join("/"), input);
        }
        let cases = [
            ("", ReferenceError::Empty),
            ("..", ReferenceError::InvalidFormat),
            ("../etc", ReferenceError::InvalidFormat),
            ("a/../b", ReferenceError::InvalidFormat),
            ("a/./b", ReferenceError::InvalidFormat),
            ("a//b", ReferenceError::InvalidFormat),
            ("/a", ReferenceError::InvalidFormat),
            ("a/", ReferenceError::InvalidFormat),
            ("a/%2e%2e/b", ReferenceError::InvalidFormat),
            ("a\\b", ReferenceError::InvalidFormat),
            ("a:tag", ReferenceError::InvalidFormat),
            ("a@sha256", ReferenceError::InvalidFormat),
            ("ex.com:5000/a", ReferenceError::InvalidFormat),
            ("Library/alpine", ReferenceError::Uppercase),
        ];
        for (input, want) in cases {
            assert_eq!(RepositoryName::parse(input), Err(want), "input {input:?}");
        }
        let max = format!("{}a", "a/".repeat(127));
        assert_eq!(max.len(), 255);
        RepositoryName::parse(&max).expect("255 characters is allowed");
        assert_eq!(
            RepositoryName::parse(&format!("a/{max}")),
            Err(ReferenceError::NameTooLong)
        );
    }

    #[test]
    fn never_panics_on_arbitrary_input() {
        for input in crate::registry::fuzz_inputs() {
            if let Ok(r) = Reference::parse(&input) {
                // Whatever parses must print to something that parses again.
                let again = Reference::parse(&r.to_string());
                assert!(again.is_ok(), "{input:?} → {r} does not reparse");
                let _ = r.familiar();
            }
            let _ = RepositoryName::parse(&input);
        }
    }

    impl Reference {
        /// The value `Display` describes: `latest` filled in when neither
        /// tag nor digest was written.
        fn with_default_tag(mut self) -> Self {
            if self.tag.is_none() && self.digest.is_none() {
                self.tag = Some(DEFAULT_TAG.to_string());
            }
            self
        }
    }
}
