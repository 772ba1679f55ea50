//! Test images: OCI images and indexes built here (reproducible tars) and pushed with skopeo,
//! and Docker v2s2 images and manifest lists pushed by hand with exactly the bytes a test
//! chooses (skopeo would convert or recompress them).

use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use super::http::http_request;
use super::skopeo::skopeo_push;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// A content-addressed blob with its bytes.
#[derive(Clone, Debug)]
pub struct Blob {
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
    pub data: Vec<u8>,
}

impl Blob {
    fn new(media_type: &str, data: Vec<u8>) -> Self {
        Self {
            media_type: media_type.into(),
            digest: sha256_digest(&data),
            size: data.len() as u64,
            data,
        }
    }

    fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// A pushed single-platform OCI image.
#[derive(Clone, Debug)]
pub struct ImageInfo {
    pub manifest_digest: String,
    /// The exact manifest bytes the registry serves.
    pub manifest: Vec<u8>,
    pub config: Blob,
    /// Uncompressed tars (`application/vnd.oci.image.layer.v1.tar`), in manifest order.
    pub layers: Vec<Blob>,
    /// `linux/amd64` or `linux/arm64/v8`.
    pub platform: String,
}

impl ImageInfo {
    pub fn config_digest(&self) -> &str {
        &self.config.digest
    }

    pub fn layer_digests(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.digest.clone()).collect()
    }
}

/// A pushed multi-platform OCI index.
#[derive(Clone, Debug)]
pub struct IndexInfo {
    pub index_digest: String,
    /// The exact index bytes the registry serves.
    pub index: Vec<u8>,
    /// linux/amd64 first, then linux/arm64/v8.
    pub manifests: Vec<ImageInfo>,
}

impl IndexInfo {
    pub fn platform(&self, platform: &str) -> &ImageInfo {
        self.manifests
            .iter()
            .find(|m| m.platform == platform)
            .unwrap_or_else(|| panic!("no {platform} manifest"))
    }
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A one-file ustar archive (mode 0644, uid/gid 0, mtime 0) so layers are real, reproducible tars.
pub fn tar_one_file(name: &str, content: &[u8]) -> Vec<u8> {
    assert!(name.len() < 100, "tar member name too long");
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let field = |h: &mut [u8; 512], at: usize, len: usize, value: u64| {
        let s = format!("{value:0width$o}\0", width = len - 1);
        h[at..at + len].copy_from_slice(s.as_bytes());
    };
    field(&mut h, 100, 8, 0o644);
    field(&mut h, 108, 8, 0);
    field(&mut h, 116, 8, 0);
    field(&mut h, 124, 12, content.len() as u64);
    field(&mut h, 136, 12, 0);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

/// Builds the config, layer tars and manifest of one platform. Layer `i` holds `content[i]` as
/// file `layer-<i>.bin`, or `layer-<arch>-<i>.bin` when `distinct_per_arch`, so platforms differ.
fn build_image(
    layers: &[Vec<u8>],
    arch: &str,
    variant: Option<&str>,
    distinct_per_arch: bool,
) -> (Blob, Blob, Vec<Blob>) {
    let layer_blobs: Vec<Blob> = layers
        .iter()
        .enumerate()
        .map(|(i, content)| {
            let name = if distinct_per_arch {
                format!("layer-{arch}-{i}.bin")
            } else {
                format!("layer-{i}.bin")
            };
            Blob::new(OCI_LAYER_TAR, tar_one_file(&name, content))
        })
        .collect();
    // Uncompressed layers: the diff_id is the blob digest.
    let mut config = json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": arch,
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": layer_blobs.iter().map(|l| l.digest.clone()).collect::<Vec<_>>()},
    });
    if let Some(v) = variant {
        config["variant"] = json!(v);
    }
    let config = Blob::new(
        OCI_CONFIG,
        serde_json::to_vec(&config).expect("config json"),
    );
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": layer_blobs.iter().map(Blob::descriptor).collect::<Vec<_>>(),
    });
    let manifest = Blob::new(
        OCI_MANIFEST,
        serde_json::to_vec(&manifest).expect("manifest json"),
    );
    (manifest, config, layer_blobs)
}

/// Writes an OCI image layout holding `blobs`, with `top` tagged `tag` in index.json.
fn write_layout(dir: &Path, blobs: &[&Blob], top: &Blob, tag: &str) {
    let blob_dir = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blob_dir).expect("mkdir blobs");
    for b in blobs.iter().copied().chain([top]) {
        std::fs::write(
            blob_dir.join(b.digest.trim_start_matches("sha256:")),
            &b.data,
        )
        .expect("write blob");
    }
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("write oci-layout");
    let mut desc = top.descriptor();
    desc["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    let index = json!({"schemaVersion": 2, "manifests": [desc]});
    std::fs::write(dir.join("index.json"), index.to_string()).expect("write index.json");
}

/// Pushes a linux/amd64 OCI image whose layer `i` is a tar holding `layers[i]` to
/// `registry_addr/repo:tag` with skopeo (digests preserved, so the returned ones are the registry's).
pub fn push_image(
    registry_addr: &str,
    repo: &str,
    tag: &str,
    creds: Option<(&str, &str)>,
    layers: &[Vec<u8>],
) -> ImageInfo {
    let (manifest, config, layer_blobs) = build_image(layers, "amd64", None, false);
    let layout = tempfile::tempdir().expect("layout tempdir");
    let mut blobs: Vec<&Blob> = layer_blobs.iter().collect();
    blobs.push(&config);
    write_layout(layout.path(), &blobs, &manifest, tag);
    skopeo_push(layout.path(), tag, registry_addr, repo, creds, false);
    ImageInfo {
        manifest_digest: manifest.digest,
        manifest: manifest.data,
        config,
        layers: layer_blobs,
        platform: "linux/amd64".into(),
    }
}

/// Pushes an OCI index with linux/amd64 and linux/arm64/v8 images (`skopeo copy --all`). Both get
/// one layer per `layers` entry with the same content under per-arch file names, so every blob of
/// one platform differs from the other's.
pub fn push_index(
    registry_addr: &str,
    repo: &str,
    tag: &str,
    creds: Option<(&str, &str)>,
    layers: &[Vec<u8>],
) -> IndexInfo {
    let layout = tempfile::tempdir().expect("layout tempdir");
    let mut all_blobs: Vec<Blob> = Vec::new();
    let mut images = Vec::new();
    let mut entries = Vec::new();
    for (arch, variant, platform) in [
        ("amd64", None, "linux/amd64"),
        ("arm64", Some("v8"), "linux/arm64/v8"),
    ] {
        let (manifest, config, layer_blobs) = build_image(layers, arch, variant, true);
        let mut desc = manifest.descriptor();
        desc["platform"] = json!({"architecture": arch, "os": "linux"});
        if let Some(v) = variant {
            desc["platform"]["variant"] = json!(v);
        }
        entries.push(desc);
        all_blobs.extend(layer_blobs.iter().cloned());
        all_blobs.push(config.clone());
        all_blobs.push(manifest.clone());
        images.push(ImageInfo {
            manifest_digest: manifest.digest,
            manifest: manifest.data,
            config,
            layers: layer_blobs,
            platform: platform.into(),
        });
    }
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
    let index = Blob::new(OCI_INDEX, serde_json::to_vec(&index).expect("index json"));
    write_layout(
        layout.path(),
        &all_blobs.iter().collect::<Vec<_>>(),
        &index,
        tag,
    );
    skopeo_push(layout.path(), tag, registry_addr, repo, creds, true);
    IndexInfo {
        index_digest: index.digest,
        index: index.data,
        manifests: images,
    }
}

// ---------------------------------------------------------------------------------------------
// Docker v2s2, pushed by hand to an anonymous registry
// ---------------------------------------------------------------------------------------------

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

#[test]
fn tar_one_file_is_a_ustar_archive() {
    let tar = tar_one_file("f", b"hi");
    assert_eq!(tar.len(), 512 * 4);
    assert_eq!(&tar[257..262], b"ustar");
}
