//! The kubelet image credential provider protocol (`credentialprovider.kubelet.k8s.io/v1`, and
//! `v1beta1` for older kubelets): each answer carries the request's apiVersion.

use secrecy::ExposeSecret;
use serde::Deserialize;

use crate::gocompat::json::quote;
use crate::registry::reference::Reference;
use crate::secret::RegistrySecret;

pub const API_VERSION: &str = "credentialprovider.kubelet.k8s.io/v1";
/// What kubelets before 1.26 send; the same request and response shape.
pub const API_VERSION_V1BETA1: &str = "credentialprovider.kubelet.k8s.io/v1beta1";

/// A parsed request: the image asked about and the apiVersion to answer with.
#[derive(Debug, PartialEq, Eq)]
pub struct ProviderRequest {
    pub image: Reference,
    pub api_version: &'static str,
}

/// How kubelet may reuse an answer (`cacheKeyType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheKeyType {
    /// For every image of the registry: only for a registry-wide secret.
    Registry,
    /// For this image only: a repository-scoped secret, or no credentials (another repository
    /// of the registry may still match a scoped secret).
    Image,
}

impl CacheKeyType {
    fn as_str(self) -> &'static str {
        match self {
            CacheKeyType::Registry => "Registry",
            CacheKeyType::Image => "Image",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KubeletError {
    #[error("invalid CredentialProviderRequest: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    api_version: String,
    kind: String,
    image: String,
}

/// Parses a request: the image it asks about and the apiVersion to answer with.
pub fn parse_request(text: &str) -> Result<ProviderRequest, KubeletError> {
    let r: Request =
        serde_json::from_str(text).map_err(|e| KubeletError::Invalid(e.to_string()))?;
    let api_version = match r.api_version.as_str() {
        API_VERSION => API_VERSION,
        API_VERSION_V1BETA1 => API_VERSION_V1BETA1,
        other => {
            return Err(KubeletError::Invalid(format!(
                "apiVersion {other:?}, want {API_VERSION:?} or {API_VERSION_V1BETA1:?}"
            )))
        }
    };
    if r.kind != "CredentialProviderRequest" {
        return Err(KubeletError::Invalid(format!(
            "kind {:?}, want \"CredentialProviderRequest\"",
            r.kind
        )));
    }
    if r.image.is_empty() {
        return Err(KubeletError::Invalid("empty image".into()));
    }
    Ok(ProviderRequest {
        image: image_reference(&r.image)?,
        api_version,
    })
}

/// The image a request asks about, parsed as docker parses it: `nginx` is
/// `docker.io/library/nginx:latest`.
fn image_reference(image: &str) -> Result<Reference, KubeletError> {
    Reference::parse(image).map_err(|e| KubeletError::Invalid(format!("image {image:?}: {e}")))
}

/// What the lookup chain is asked for: registry and repository, without tag or digest, so
/// namespaced secrets (`quay.io/org`) win.
pub fn lookup_key(image: &Reference) -> String {
    format!("{}/{}", image.registry(), image.repository())
}

/// The `auth` key for a matched secret: its registry, plus its path when namespaced;
/// Docker Hub as `docker.io`, the form kubelet matches images against. With it, how kubelet
/// may cache the answer: per image for a repository-scoped key, per registry otherwise.
pub fn auth_key(server: &str) -> Option<(String, CacheKeyType)> {
    let key = crate::secret::ServerKey::parse(server).ok()?;
    Some(match key.path() {
        Some(p) => (format!("{}/{p}", key.host()), CacheKeyType::Image),
        None => (key.host().to_string(), CacheKeyType::Registry),
    })
}

/// A response in `api_version` with `auth` keyed by `key` (or empty when no credentials
/// matched, then cached per image).
pub fn response(
    api_version: &str,
    key: Option<(&str, &RegistrySecret)>,
    cache_key_type: CacheKeyType,
    cache_duration: &str,
) -> String {
    let auth = match key {
        Some((k, s)) => format!(
            "{{{}:{{\"username\":{},\"password\":{}}}}}",
            quote(k),
            quote(&s.username),
            quote(s.password.expose_secret())
        ),
        None => "{}".into(),
    };
    format!(
        "{{\"kind\":\"CredentialProviderResponse\",\"apiVersion\":{},\"cacheKeyType\":\"{}\",\"cacheDuration\":{},\"auth\":{auth}}}\n",
        quote(api_version),
        cache_key_type.as_str(),
        quote(cache_duration)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_of_image() {
        let image = |s: &str| image_reference(s).unwrap();
        assert_eq!(
            image("reg.example.com/org/app:1.0").registry(),
            "reg.example.com"
        );
        assert_eq!(image("127.0.0.1:5000/app").registry(), "127.0.0.1:5000");
        assert_eq!(image("library/alpine").registry(), "docker.io");
        assert_eq!(image("alpine").registry(), "docker.io");
        assert_eq!(
            lookup_key(&image("reg:5000/org/app:1.0")),
            "reg:5000/org/app"
        );
        assert_eq!(
            lookup_key(&image("nginx:latest")),
            "docker.io/library/nginx"
        );
        assert_eq!(
            lookup_key(&image("bitnami/redis")),
            "docker.io/bitnami/redis"
        );
        assert_eq!(
            auth_key("https://index.docker.io/v1/"),
            Some(("docker.io".into(), CacheKeyType::Registry))
        );
        assert_eq!(
            auth_key("reg.example.com/org"),
            Some(("reg.example.com/org".into(), CacheKeyType::Image))
        );
        let digest = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            lookup_key(&image(&format!("reg:5000/org/app@{digest}"))),
            "reg:5000/org/app"
        );
        assert!(image_reference("Upper/Case").is_err());
    }

    #[test]
    fn rejects_bad_requests() {
        assert!(parse_request("{").is_err());
        assert!(parse_request(
            r#"{"apiVersion":"v0","kind":"CredentialProviderRequest","image":"a"}"#
        )
        .is_err());
        assert_eq!(
            parse_request(
                r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"a/b"}"#
            ),
            Ok(ProviderRequest {
                image: Reference::parse("a/b").unwrap(),
                api_version: API_VERSION
            })
        );
        assert_eq!(
            parse_request(
                r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1beta1","kind":"CredentialProviderRequest","image":"a/b"}"#
            ),
            Ok(ProviderRequest {
                image: Reference::parse("a/b").unwrap(),
                api_version: API_VERSION_V1BETA1
            })
        );
    }
}
