//! The kubelet image credential provider protocol (`credentialprovider.kubelet.k8s.io/v1`).

use secrecy::ExposeSecret;
use serde::Deserialize;

use crate::gojson::quote;
use crate::secret::RegistrySecret;

pub const API_VERSION: &str = "credentialprovider.kubelet.k8s.io/v1";

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

/// Parses a request and returns the image it asks about.
pub fn parse_request(text: &str) -> Result<String, KubeletError> {
    let r: Request =
        serde_json::from_str(text).map_err(|e| KubeletError::Invalid(e.to_string()))?;
    if r.api_version != API_VERSION {
        return Err(KubeletError::Invalid(format!(
            "apiVersion {:?}, want {API_VERSION:?}",
            r.api_version
        )));
    }
    if r.kind != "CredentialProviderRequest" {
        return Err(KubeletError::Invalid(format!(
            "kind {:?}, want \"CredentialProviderRequest\"",
            r.kind
        )));
    }
    if r.image.is_empty() {
        return Err(KubeletError::Invalid("empty image".into()));
    }
    Ok(r.image)
}

/// The registry part of an image reference (`docker.io` when the reference has none).
pub fn image_registry(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// The image without tag or digest, with docker's defaults: `nginx` → `docker.io/library/nginx`.
pub fn image_repository(image: &str) -> String {
    let no_digest = image.split('@').next().unwrap_or(image);
    // A ':' after the last '/' starts the tag.
    let name = match no_digest.rfind(':') {
        Some(i) if i > no_digest.rfind('/').unwrap_or(0) => &no_digest[..i],
        _ => no_digest,
    };
    let registry = image_registry(name);
    if name.starts_with(&format!("{registry}/")) {
        return name.to_string();
    }
    if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    }
}

/// The `auth` key for a matched secret: its registry, plus its path when namespaced;
/// Docker Hub as `docker.io`, the form kubelet matches images against.
pub fn auth_key(server: &str) -> Option<String> {
    let key = crate::secret::ServerKey::parse(server).ok()?;
    Some(match key.path() {
        Some(p) => format!("{}/{p}", key.host()),
        None => key.host().to_string(),
    })
}

/// A response with `auth` keyed by `key` (or empty when no credentials matched).
pub fn response(key: Option<(&str, &RegistrySecret)>, cache_duration: &str) -> String {
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
        "{{\"kind\":\"CredentialProviderResponse\",\"apiVersion\":\"{API_VERSION}\",\"cacheKeyType\":\"Registry\",\"cacheDuration\":{},\"auth\":{auth}}}\n",
        quote(cache_duration)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_of_image() {
        assert_eq!(
            image_registry("reg.example.com/org/app:1.0"),
            "reg.example.com"
        );
        assert_eq!(image_registry("127.0.0.1:5000/app"), "127.0.0.1:5000");
        assert_eq!(image_registry("library/alpine"), "docker.io");
        assert_eq!(image_registry("alpine"), "docker.io");
        assert_eq!(image_repository("reg:5000/org/app:1.0"), "reg:5000/org/app");
        assert_eq!(image_repository("nginx:latest"), "docker.io/library/nginx");
        assert_eq!(image_repository("bitnami/redis"), "docker.io/bitnami/redis");
        assert_eq!(
            auth_key("https://index.docker.io/v1/").as_deref(),
            Some("docker.io")
        );
        assert_eq!(
            auth_key("reg.example.com/org").as_deref(),
            Some("reg.example.com/org")
        );
        assert_eq!(
            image_repository("reg:5000/org/app@sha256:ab"),
            "reg:5000/org/app"
        );
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
            Ok("a/b".into())
        );
    }
}
