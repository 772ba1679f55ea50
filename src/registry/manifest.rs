//! Manifest media types, the Accept header, and choosing a platform from an index.

use serde::Deserialize;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Every manifest type we understand, as real clients send it.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Registries refuse manifests over 4 MiB; so do we.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl Platform {
    /// `os/arch[/variant]`.
    pub fn parse(s: &str) -> Option<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Some(Self {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => Some(Self {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => None,
        }
    }

    /// The platform of this host, named as OCI names it.
    pub fn host() -> Self {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            other => (other, None),
        };
        Self {
            os: "linux".into(),
            architecture: arch.into(),
            variant: variant.map(str::to_string),
        }
    }

    /// Whether an index entry for `other` serves this platform; an arm64 entry without
    /// a variant serves `arm64/v8`, as containerd's matcher treats it.
    pub fn matches(&self, other: &Platform) -> bool {
        if self.os != other.os || self.architecture != other.architecture {
            return false;
        }
        let norm = |v: &Option<String>, arch: &str| match (v.as_deref(), arch) {
            (None, "arm64") => Some("v8".to_string()),
            (v, _) => v.map(str::to_string),
        };
        match (&self.variant, &other.variant) {
            (None, _) => true,
            _ => {
                norm(&self.variant, &self.architecture) == norm(&other.variant, &other.architecture)
            }
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
pub struct ImageManifest {
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
pub struct ImageIndex {
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// The index entry for `want`.
pub fn select<'a>(index: &'a ImageIndex, want: &Platform) -> Option<&'a Descriptor> {
    index
        .manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| want.matches(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_matching_is_variant_aware() {
        let arm64 = Platform::parse("linux/arm64").unwrap();
        let arm64v8 = Platform::parse("linux/arm64/v8").unwrap();
        let armv7 = Platform::parse("linux/arm/v7").unwrap();
        let armv6 = Platform::parse("linux/arm/v6").unwrap();
        assert!(arm64v8.matches(&arm64));
        assert!(arm64.matches(&arm64v8));
        assert!(!armv7.matches(&armv6));
        assert!(!Platform::parse("linux/amd64").unwrap().matches(&arm64));
        assert!(Platform::parse("linux").is_none());
    }

    #[test]
    fn selects_from_an_index() {
        let idx: ImageIndex = serde_json::from_str(
            r#"{"manifests":[
              {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:a","size":1,"platform":{"os":"linux","architecture":"amd64"}},
              {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:b","size":1,"platform":{"os":"linux","architecture":"arm","variant":"v7"}}]}"#,
        )
        .unwrap();
        assert_eq!(
            select(&idx, &Platform::parse("linux/arm/v7").unwrap()).map(|d| d.digest.as_str()),
            Some("sha256:b")
        );
        assert_eq!(
            select(&idx, &Platform::parse("linux/amd64").unwrap()).map(|d| d.digest.as_str()),
            Some("sha256:a")
        );
        assert!(select(&idx, &Platform::parse("linux/s390x").unwrap()).is_none());
    }
}
