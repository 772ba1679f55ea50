//! Pushing by hand to an anonymous registry: Docker v2s2 images and manifest lists with exactly
//! the bytes a test chooses (skopeo would convert or recompress them).

use serde_json::{json, Value};

use crate::registry_support::{http_request, sha256_digest, tar_one_file};

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// A pushed Docker v2s2 image.
pub struct DockerImage {
    pub manifest_digest: String,
    pub manifest: Vec<u8>,
    pub config_digest: String,
    pub config: Vec<u8>,
    /// (digest, bytes) in manifest order.
    pub layers: Vec<(String, Vec<u8>)>,
}

impl DockerImage {
    /// The descriptor an index uses for this manifest.
    pub fn descriptor(&self, arch: &str) -> Value {
        json!({"mediaType": DOCKER_MANIFEST, "digest": self.manifest_digest,
               "size": self.manifest.len(),
               "platform": {"architecture": arch, "os": "linux"}})
    }
}

/// Uploads one blob (POST then monolithic PUT) unless the registry has it.
pub fn push_blob(addr: &str, repo: &str, data: &[u8]) -> String {
    let digest = sha256_digest(data);
    let head = http_request(
        "HEAD",
        addr,
        &format!("/v2/{repo}/blobs/{digest}"),
        &[],
        &[],
    )
    .expect("HEAD blob");
    if head.status == 200 {
        return digest;
    }
    let start = http_request(
        "POST",
        addr,
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        &[],
    )
    .expect("POST upload");
    assert_eq!(start.status, 202, "start upload: {}", start.text());
    let location = start
        .header("Location")
        .expect("upload Location")
        .to_string();
    // distribution answers an absolute URL; the request line wants the path.
    let path = match location.find("/v2/") {
        Some(i) => location[i..].to_string(),
        None => location,
    };
    let sep = if path.contains('?') { '&' } else { '?' };
    let put = http_request(
        "PUT",
        addr,
        &format!("{path}{sep}digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        data,
    )
    .expect("PUT blob");
    assert_eq!(put.status, 201, "finish upload: {}", put.text());
    digest
}

/// Puts manifest `bytes` under `reference` (a tag or its digest) with `media_type`.
pub fn put_manifest(addr: &str, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
    let r = http_request(
        "PUT",
        addr,
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Content-Type", media_type)],
        bytes,
    )
    .expect("PUT manifest");
    assert_eq!(r.status, 201, "PUT manifest {reference}: {}", r.text());
}

/// Pushes a Docker v2s2 image (docker config and uncompressed docker layer media types) whose
/// layer `i` is a tar holding `layers[i]`; tagged `tag` unless `tag` is empty.
pub fn push_docker_image(
    addr: &str,
    repo: &str,
    tag: &str,
    arch: &str,
    layers: &[Vec<u8>],
) -> DockerImage {
    let tars: Vec<Vec<u8>> = layers
        .iter()
        .enumerate()
        .map(|(i, c)| tar_one_file(&format!("layer-{i}.bin"), c))
        .collect();
    let layer_digests: Vec<String> = tars.iter().map(|t| push_blob(addr, repo, t)).collect();
    let config = serde_json::to_vec(&json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": arch,
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": layer_digests},
    }))
    .expect("config");
    let config_digest = push_blob(addr, repo, &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": tars.iter().zip(&layer_digests).map(|(t, d)| json!({
            "mediaType": DOCKER_LAYER_TAR, "digest": d, "size": t.len()
        })).collect::<Vec<_>>(),
    }))
    .expect("manifest");
    let manifest_digest = sha256_digest(&manifest);
    put_manifest(addr, repo, &manifest_digest, DOCKER_MANIFEST, &manifest);
    if !tag.is_empty() {
        put_manifest(addr, repo, tag, DOCKER_MANIFEST, &manifest);
    }
    DockerImage {
        manifest_digest,
        manifest,
        config_digest,
        config,
        layers: layer_digests.into_iter().zip(tars).collect(),
    }
}

/// Pushes a Docker manifest list with exactly `entries` (duplicates allowed) under `tag`;
/// returns its digest and bytes.
pub fn push_docker_list(addr: &str, repo: &str, tag: &str, entries: &[Value]) -> (String, Vec<u8>) {
    let list = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": entries,
    }))
    .expect("list");
    put_manifest(addr, repo, tag, DOCKER_LIST, &list);
    (sha256_digest(&list), list)
}
