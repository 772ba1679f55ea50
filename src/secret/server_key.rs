//! `ServerKey`: the normalized key a registry secret is stored and looked up under.

use std::fmt;

/// The key docker uses for Docker Hub in `auths` and in credential helpers.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Docker Hub's canonical domain, as image references and server keys name it.
pub const DOCKER_HUB_DOMAIN: &str = "docker.io";
/// The older Docker Hub domain (docker rewrites it to `docker.io` in image references).
pub const LEGACY_HUB_DOMAIN: &str = "index.docker.io";
/// The host Docker Hub's registry API answers on.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
/// Every registry host that is Docker Hub.
pub const DOCKER_HUB_HOSTS: [&str; 3] = [DOCKER_HUB_DOMAIN, LEGACY_HUB_DOMAIN, DOCKER_HUB_API_HOST];

/// Whether `host` is one of Docker Hub's registry hosts ([`DOCKER_HUB_HOSTS`]).
pub fn is_docker_hub_host(host: &str) -> bool {
    DOCKER_HUB_HOSTS.contains(&host)
}

/// Docker Hub's web host, which docker's credential lookups also accept for Hub.
const HUB_WEB_HOST: &str = "registry.hub.docker.com";

/// A registry host (`host[:port]`, or Docker Hub) with an optional repository
/// path prefix for namespaced keys such as `quay.io/org`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerKey {
    host: String,
    path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerKeyError {
    #[error("empty registry server")]
    Empty,
    #[error("invalid registry server {0:?}")]
    Invalid(String),
}

impl ServerKey {
    /// Normalizes what users and tools write for a registry: scheme, `/v1/`/`/v2/`
    /// suffixes and trailing slashes go; Docker Hub aliases become one key.
    pub fn parse(input: &str) -> Result<Self, ServerKeyError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(ServerKeyError::Empty);
        }
        let rest = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"))
            .unwrap_or(s);
        let (host, path) = match rest.split_once('/') {
            Some((h, p)) => (h, p),
            None => (rest, ""),
        };
        let host = host.to_ascii_lowercase();
        if host.is_empty()
            || !host
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b".-:[]_".contains(&c))
        {
            return Err(ServerKeyError::Invalid(s.to_string()));
        }
        let mut segments: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        // `/v1/` and `/v2/` name the API, not a repository.
        if matches!(segments.first(), Some(&"v1") | Some(&"v2")) {
            segments.remove(0);
        }
        if segments
            .iter()
            .any(|p| *p == "." || *p == ".." || p.contains(['?', '#', '@', ' ']))
        {
            return Err(ServerKeyError::Invalid(s.to_string()));
        }
        let path = (!segments.is_empty()).then(|| segments.join("/"));
        let host = if is_docker_hub_host(&host) || host == HUB_WEB_HOST {
            DOCKER_HUB_DOMAIN.to_string()
        } else {
            host
        };
        Ok(Self { host, path })
    }

    pub fn is_docker_hub(&self) -> bool {
        self.host == DOCKER_HUB_DOMAIN
    }

    /// `host[:port]`; `docker.io` for Docker Hub.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// This key and its less specific parents, most specific first:
    /// `quay.io/org/repo`, `quay.io/org`, `quay.io`.
    pub fn candidates(&self) -> Vec<ServerKey> {
        let mut out = vec![self.clone()];
        if let Some(path) = &self.path {
            let parts: Vec<&str> = path.split('/').collect();
            for n in (0..parts.len()).rev() {
                let path = (n > 0).then(|| parts[..n].join("/"));
                out.push(Self {
                    host: self.host.clone(),
                    path,
                });
            }
        }
        out
    }

    /// How many path segments the key carries; more means more specific.
    pub fn specificity(&self) -> usize {
        self.path.as_deref().map_or(0, |p| p.split('/').count())
    }

    /// A stored-secret name for this key (DNS-1123): `quay.io`, `docker.io`,
    /// `127.0.0.1-5000`; lossy conversions get a short hash so distinct keys stay distinct.
    pub fn secret_name(&self) -> String {
        let text = match &self.path {
            None => self.host.clone(),
            Some(p) => format!("{}/{}", self.host, p),
        };
        let mut out: String = text
            .chars()
            .map(|c| {
                if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        while out.contains("--") || out.contains("..") || out.contains(".-") || out.contains("-.") {
            out = out
                .replace("--", "-")
                .replace("..", ".")
                .replace(".-", "-")
                .replace("-.", "-");
        }
        let mut out = out.trim_matches(|c| c == '-' || c == '.').to_string();
        if out != text || out.is_empty() {
            use sha2::Digest;
            let h = sha2::Sha256::digest(text.as_bytes());
            out.truncate(200);
            out = format!(
                "{}-{}",
                out.trim_end_matches(['-', '.']),
                &hex::encode(h)[..8]
            )
            .trim_start_matches('-')
            .to_string();
        }
        out
    }

    /// The registry-level key with the path dropped.
    pub fn registry(&self) -> ServerKey {
        Self {
            host: self.host.clone(),
            path: None,
        }
    }
}

impl fmt::Display for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.path, self.is_docker_hub()) {
            (None, true) => f.write_str(DOCKER_HUB_KEY),
            (None, false) => f.write_str(&self.host),
            (Some(p), _) => write!(f, "{}/{}", self.host, p),
        }
    }
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerKey({self})")
    }
}

impl std::str::FromStr for ServerKey {
    type Err = ServerKeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> String {
        ServerKey::parse(s).unwrap().to_string()
    }

    #[test]
    fn docker_hub_aliases_become_the_v1_url() {
        for s in [
            "docker.io",
            "index.docker.io",
            "registry-1.docker.io",
            "https://index.docker.io/v1/",
            "https://index.docker.io/v1",
            "https://registry-1.docker.io/v2/",
            "http://docker.io",
            "DOCKER.IO",
        ] {
            assert_eq!(key(s), DOCKER_HUB_KEY, "{s}");
        }
    }

    #[test]
    fn scheme_and_api_suffix_are_stripped() {
        assert_eq!(key("https://host:5000/v2/"), "host:5000");
        assert_eq!(key("http://host:5000"), "host:5000");
        assert_eq!(key("host:5000/"), "host:5000");
        assert_eq!(key("https://Quay.IO/v1/"), "quay.io");
        assert_eq!(key("127.0.0.1:5000"), "127.0.0.1:5000");
    }

    #[test]
    fn repository_paths_make_namespaced_keys() {
        assert_eq!(key("quay.io/org/repo"), "quay.io/org/repo");
        assert_eq!(key("https://quay.io/org/"), "quay.io/org");
        assert_eq!(key("docker.io/library/alpine"), "docker.io/library/alpine");
    }

    #[test]
    fn candidates_go_from_most_to_least_specific() {
        let c: Vec<String> = ServerKey::parse("quay.io/org/repo")
            .unwrap()
            .candidates()
            .iter()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(c, ["quay.io/org/repo", "quay.io/org", "quay.io"]);
        let hub: Vec<String> = ServerKey::parse("docker.io/library/alpine")
            .unwrap()
            .candidates()
            .iter()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(
            hub,
            [
                "docker.io/library/alpine",
                "docker.io/library",
                DOCKER_HUB_KEY
            ]
        );
    }

    #[test]
    fn secret_names_are_dns1123_and_distinct() {
        let n = |s: &str| ServerKey::parse(s).unwrap().secret_name();
        assert_eq!(n("quay.io"), "quay.io");
        assert_eq!(n("docker.io"), "docker.io");
        assert!(n("127.0.0.1:5000").starts_with("127.0.0.1-5000-"));
        assert_ne!(n("quay.io/org"), n("quay.io-org"));
        for s in [
            "127.0.0.1:5000",
            "quay.io/org/repo",
            "[::1]:5000",
            "Reg_1.example.com",
        ] {
            assert_eq!(crate::secret::validate_name(&n(s)), Ok(()), "{s}");
        }
    }

    #[test]
    fn garbage_is_rejected() {
        assert_eq!(ServerKey::parse("  "), Err(ServerKeyError::Empty));
        assert!(ServerKey::parse("host with space").is_err());
        assert!(ServerKey::parse("quay.io/../etc").is_err());
        assert!(ServerKey::parse("https:///v2/").is_err());
    }
}
