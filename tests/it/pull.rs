//! `pullsecret pull` against the real distribution registry (anonymous, htpasswd, token auth)
//! and a small fake registry for transfer faults (Range ignored, connection cut mid-blob).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::images::{push_docker_image, push_docker_list, DOCKER_MANIFEST};
use crate::support::images::{
    push_image, push_index, sha256_digest, ImageInfo, OCI_CONFIG, OCI_INDEX, OCI_LAYER_TAR,
    OCI_MANIFEST,
};
use crate::support::registry::{Registry, RegistryAuth};
use crate::support::skopeo::skopeo;
use crate::support::token_issuer::TokenIssuerConfig;
use crate::support::{stderr, stdout, store_secret, Env};

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Deterministic incompressible bytes, so layers of one test never collide with another's.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn pull(env: &Env, image: &str, dir: &Path, extra: &[&str]) -> Output {
    let dir = dir.display().to_string();
    let mut args = vec!["pull", image, "--insecure", "--output", dir.as_str()];
    args.extend_from_slice(extra);
    env.pullsecret(&args).output().expect("run pullsecret pull")
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

fn index_json(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("read index.json"))
        .expect("index.json is JSON")
}

/// index.json entries as (ref name, digest, media type).
fn entries(dir: &Path) -> Vec<(String, String, String)> {
    index_json(dir)["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            (
                m["annotations"][REF_NAME]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                m["digest"].as_str().unwrap_or("").to_string(),
                m["mediaType"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn partial_path(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256")
        .join(format!(".partial-{}", digest.trim_start_matches("sha256:")))
}

/// Every file in the layout's blob directory whose name mentions `digest`'s hex.
fn files_for(dir: &Path, digest: &str) -> Vec<String> {
    let hex = digest.trim_start_matches("sha256:");
    std::fs::read_dir(dir.join("blobs/sha256"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.contains(hex))
                .collect()
        })
        .unwrap_or_default()
}

/// The layout holds the image's manifest, config and layers byte for byte, filed under `tag`.
fn assert_holds(dir: &Path, img: &ImageInfo, tag: &str) {
    assert!(
        entries(dir).contains(&(tag.into(), img.manifest_digest.clone(), OCI_MANIFEST.into())),
        "index.json lacks {tag} → {}: {:?}",
        img.manifest_digest,
        entries(dir)
    );
    let read = |d: &str| std::fs::read(blob_path(dir, d)).unwrap_or_default();
    assert_eq!(read(&img.manifest_digest), img.manifest, "manifest bytes");
    assert_eq!(read(img.config_digest()), img.config.data, "config bytes");
    for l in &img.layers {
        assert_eq!(read(&l.digest), l.data, "layer {}", l.digest);
    }
    let layout: Value =
        serde_json::from_slice(&std::fs::read(dir.join("oci-layout")).expect("oci-layout"))
            .expect("oci-layout JSON");
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
}

/// skopeo reads the layout: inspect, and a full copy (which re-verifies every blob digest).
fn assert_skopeo_accepts(dir: &Path, tag: &str) {
    let env = Env::new();
    let src = format!("oci:{}:{tag}", dir.display());
    let out = skopeo(&env, &["inspect", &src]);
    assert!(
        out.status.success(),
        "skopeo inspect {src}: {}",
        stderr(&out)
    );
    let copy = tempfile::tempdir().expect("copy dir");
    let dst = format!("dir:{}", copy.path().display());
    let out = skopeo(&env, &["copy", &src, &dst]);
    assert!(out.status.success(), "skopeo copy {src}: {}", stderr(&out));
}

/// Statuses of the registry's answers to GETs of one blob, from its access log.
fn blob_get_statuses(reg: &Registry, digest: &str) -> Vec<u16> {
    let needle = format!("/blobs/{digest} ");
    reg.access_log()
        .lines()
        .filter(|l| l.contains("\"GET ") && l.contains(&needle))
        .filter_map(|l| l.split('"').nth(2)?.split_whitespace().next()?.parse().ok())
        .collect()
}

#[test]
fn public_pull_writes_a_layout_skopeo_accepts_and_reuses_blobs() {
    let Some(reg) = Registry::start(RegistryAuth::Anonymous) else {
        return;
    };
    let v1 = push_image(
        reg.addr(),
        "pub/app",
        "v1",
        None,
        &[noise(1, 300_000), noise(2, 5), noise(3, 1 << 20)],
    );
    let v2 = push_image(reg.addr(), "pub/app", "v2", None, &[noise(4, 1000)]);
    let env = Env::new();
    let dir = tempfile::tempdir().expect("out");
    let out_dir = dir.path().join("layout");

    let out = pull(&env, &format!("{}/pub/app:v1", reg.addr()), &out_dir, &[]);
    assert_ok(&out, "public pull");
    assert_eq!(
        stdout(&out).lines().last(),
        Some(v1.manifest_digest.as_str())
    );
    // Not a terminal: one plain line per blob.
    for l in &v1.layers {
        let short = &l.digest["sha256:".len()..][..12];
        assert!(
            stderr(&out).contains(&format!("{short}: done ")),
            "no progress line for {short}: {}",
            stderr(&out)
        );
    }
    assert_holds(&out_dir, &v1, "v1");
    assert_skopeo_accepts(&out_dir, "v1");

    // A second tag joins the first; pulling v1 again replaces its entry and fetches nothing.
    assert_ok(
        &pull(
            &env,
            &format!("{}/pub/app:v2", reg.addr()),
            &out_dir,
            &["--quiet"],
        ),
        "pull v2",
    );
    let gets_before = reg.count_requests("GET", "/blobs/");
    let again = pull(&env, &format!("{}/pub/app:v1", reg.addr()), &out_dir, &[]);
    assert_ok(&again, "second pull of v1");
    assert_eq!(
        reg.count_requests("GET", "/blobs/"),
        gets_before,
        "present blobs must be reused"
    );
    assert!(stderr(&again).contains(": exists "), "{}", stderr(&again));
    let mut names: Vec<String> = entries(&out_dir).into_iter().map(|e| e.0).collect();
    names.sort();
    assert_eq!(names, ["v1", "v2"]);
    assert_holds(&out_dir, &v2, "v2");
    assert_skopeo_accepts(&out_dir, "v2");

    // --quiet: the digest on stdout and nothing on stderr.
    let quiet = pull(
        &env,
        &format!("{}/pub/app:v2", reg.addr()),
        &out_dir,
        &["--quiet"],
    );
    assert_ok(&quiet, "quiet pull");
    assert_eq!(stdout(&quiet), format!("{}\n", v2.manifest_digest));
    assert_eq!(stderr(&quiet), "");
}

#[test]
fn concurrent_pulls_into_one_layout_share_blobs_and_both_land() {
    let Some(reg) = Registry::start(RegistryAuth::Anonymous) else {
        return;
    };
    // Both images share the big first layer, so the two pulls contend for its partial file.
    let shared = noise(90, 3 << 20);
    let a = push_image(
        reg.addr(),
        "con/app",
        "a",
        None,
        &[shared.clone(), noise(91, 10)],
    );
    let b = push_image(reg.addr(), "con/app", "b", None, &[shared, noise(92, 10)]);
    let env = Env::new();
    let dir = env.path("out");
    let children: Vec<_> = ["a", "b"]
        .iter()
        .map(|tag| {
            let dir = dir.display().to_string();
            let image = format!("{}/con/app:{tag}", reg.addr());
            env.pullsecret(&["pull", &image, "--insecure", "--output", &dir])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn pull")
        })
        .collect();
    for c in children {
        assert_ok(&c.wait_with_output().expect("wait"), "concurrent pull");
    }
    assert_holds(&dir, &a, "a");
    assert_holds(&dir, &b, "b");
    assert_eq!(entries(&dir).len(), 2, "{:?}", entries(&dir));
    let leftovers: Vec<String> = std::fs::read_dir(dir.join("blobs/sha256"))
        .expect("blobs")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn private_pull_on_htpasswd_with_a_stored_secret_and_the_lookup_chain() {
    let auth = RegistryAuth::Htpasswd {
        users: vec![("alice".into(), "alice-Secret-77".into())],
    };
    let Some(reg) = Registry::start(auth) else {
        return;
    };
    let img = push_image(
        reg.addr(),
        "team/private",
        "v1",
        Some(("alice", "alice-Secret-77")),
        &[noise(10, 200_000), noise(11, 70_000)],
    );
    let image = format!("{}/team/private:v1", reg.addr());

    let env = Env::new();
    let anon = pull(&env, &image, &env.path("anon"), &[]);
    assert!(!anon.status.success(), "anonymous pull of a private image");
    assert!(stderr(&anon).contains("unauthorized"), "{}", stderr(&anon));

    store_secret(&env, "regcred", reg.addr(), "alice", "alice-Secret-77");
    let dir = env.path("by-secret");
    let out = pull(&env, &image, &dir, &["--secret", "regcred"]);
    assert_ok(&out, "pull --secret");
    assert_holds(&dir, &img, "v1");
    assert!(!stderr(&out).contains("alice-Secret-77"));

    // No flag: the store answers through the lookup chain.
    let dir = env.path("by-chain");
    assert_ok(&pull(&env, &image, &dir, &[]), "pull via lookup chain");
    assert_holds(&dir, &img, "v1");

    let dir = env.path("by-creds");
    assert_ok(
        &pull(&env, &image, &dir, &["--creds", "alice:alice-Secret-77"]),
        "pull --creds",
    );
    assert_holds(&dir, &img, "v1");
}

#[test]
fn wrong_password_is_an_unauthorized_error_naming_the_registry() {
    let canary = "Wr0ng-Canary-Pw-31337";
    let auth = RegistryAuth::Htpasswd {
        users: vec![("alice".into(), "right-pw".into())],
    };
    let Some(basic) = Registry::start(auth) else {
        return;
    };
    push_image(
        basic.addr(),
        "team/app",
        "v1",
        Some(("alice", "right-pw")),
        &[noise(20, 1000)],
    );
    let token = Registry::start(RegistryAuth::Token(TokenIssuerConfig::new().user(
        "alice",
        "right-pw",
        &[("team/*", &["pull", "push"])],
    )))
    .expect("started once already");
    push_image(
        token.addr(),
        "team/app",
        "v1",
        Some(("alice", "right-pw")),
        &[noise(21, 1000)],
    );
    for reg in [&basic, &token] {
        let mut env = Env::new();
        store_secret(&env, "regcred", reg.addr(), "alice", canary);
        let image = format!("{}/team/app:v1", reg.addr());
        let creds = format!("alice:{canary}");
        // (extra arguments, the source the error must name)
        let cases: [(&[&str], &str); 3] = [
            (&["--creds", &creds], "--creds"),
            (&["--secret", "regcred"], "secret default/regcred"),
            (&[], "secret default/regcred"),
        ];
        let mut outs: Vec<(Output, &str)> = cases
            .iter()
            .map(|(extra, from)| (pull(&env, &image, &env.path("out"), extra), *from))
            .collect();
        env.set("PULLSECRET_PULL_CREDS", &creds);
        outs.push((
            pull(&env, &image, &env.path("out"), &[]),
            "PULLSECRET_PULL_CREDS",
        ));
        for (out, from) in &outs {
            let err = stderr(out);
            assert!(
                !out.status.success(),
                "wrong password from {from} accepted by {}",
                reg.addr()
            );
            assert!(err.contains("unauthorized"), "{err}");
            let want = format!("credentials from {from} were rejected by {}", reg.addr());
            assert!(err.contains(&want), "no {want:?} in: {err}");
            assert!(
                !err.contains(canary) && !stdout(out).contains(canary),
                "password leaked: {err}"
            );
            assert!(!env.path("out").join("index.json").exists());
        }
    }
}

#[test]
fn private_pull_with_token_auth() {
    let issuer =
        TokenIssuerConfig::new().user("bob", "bob-pw-9", &[("secret/*", &["pull", "push"])]);
    let Some(reg) = Registry::start(RegistryAuth::Token(issuer)) else {
        return;
    };
    let img = push_image(
        reg.addr(),
        "secret/app",
        "v3",
        Some(("bob", "bob-pw-9")),
        &[noise(30, 123_456)],
    );
    let issuer = reg.issuer().expect("issuer");
    issuer.clear_requests();
    let env = Env::new();
    store_secret(&env, "bobcred", reg.addr(), "bob", "bob-pw-9");
    let dir = env.path("out");
    let out = pull(
        &env,
        &format!("{}/secret/app:v3", reg.addr()),
        &dir,
        &["--secret", "bobcred"],
    );
    assert_ok(&out, "token pull");
    assert_holds(&dir, &img, "v3");
    let reqs = issuer.requests();
    assert!(!reqs.is_empty());
    for r in &reqs {
        assert_eq!(r.user.as_deref(), Some("bob"), "{r:?}");
        assert_eq!(r.scopes, ["repository:secret/app:pull"], "{r:?}");
        assert_eq!(r.status, 200);
    }
}

#[test]
fn token_expiring_mid_pull_is_refreshed() {
    let issuer = TokenIssuerConfig::new()
        .user("carol", "carol-pw", &[("slow/*", &["pull", "push"])])
        .expires_in(1);
    let Some(reg) = Registry::start(RegistryAuth::Token(issuer)) else {
        return;
    };
    let layers: Vec<Vec<u8>> = (0..3).map(|i| noise(40 + i, 50_000)).collect();
    let img = push_image(
        reg.addr(),
        "slow/app",
        "v1",
        Some(("carol", "carol-pw")),
        &layers,
    );
    let issuer = reg.issuer().expect("issuer");
    issuer.clear_requests();
    // Each blob request waits longer than a token lives, so every one needs a fresh token.
    let proxy = DelayProxy::start(reg.addr(), Duration::from_millis(1300));
    let env = Env::new();
    let dir = env.path("out");
    let out = pull(
        &env,
        &format!("{}/slow/app:v1", proxy.addr),
        &dir,
        &["--creds", "carol:carol-pw", "--concurrency", "1"],
    );
    assert_ok(&out, "pull with expiring tokens");
    assert_holds(&dir, &img, "v1");
    let reqs = issuer.requests();
    assert!(
        reqs.len() > 1,
        "tokens were not refreshed: {} token request(s)",
        reqs.len()
    );
    assert!(reqs
        .iter()
        .all(|r| r.status == 200 && r.user.as_deref() == Some("carol")));
}

#[test]
fn multi_arch_index_one_platform_or_all() {
    let Some(reg) = Registry::start(RegistryAuth::Anonymous) else {
        return;
    };
    let idx = push_index(
        reg.addr(),
        "multi/app",
        "v1",
        None,
        &[noise(50, 40_000), noise(51, 9_000)],
    );
    let (amd, arm) = (idx.platform("linux/amd64"), idx.platform("linux/arm64/v8"));
    let image = format!("{}/multi/app:v1", reg.addr());
    let env = Env::new();

    let dir = env.path("arm");
    let out = pull(&env, &image, &dir, &["--platform", "linux/arm64"]);
    assert_ok(&out, "pull --platform linux/arm64");
    assert_eq!(stdout(&out).trim(), arm.manifest_digest);
    assert_eq!(entries(&dir).len(), 1);
    assert_holds(&dir, arm, "v1");
    for l in &amd.layers {
        assert!(!blob_path(&dir, &l.digest).exists(), "amd64 layer pulled");
    }
    assert!(!blob_path(&dir, &idx.index_digest).exists());
    assert_skopeo_accepts(&dir, "v1");

    if std::env::consts::ARCH == "x86_64" {
        let dir = env.path("host");
        assert_ok(&pull(&env, &image, &dir, &[]), "pull for this host");
        assert_holds(&dir, amd, "v1");
    }

    let dir = env.path("all");
    let out = pull(&env, &image, &dir, &["--all-platforms"]);
    assert_ok(&out, "pull --all-platforms");
    assert_eq!(stdout(&out).trim(), idx.index_digest);
    assert_eq!(
        entries(&dir),
        [(
            "v1".to_string(),
            idx.index_digest.clone(),
            OCI_INDEX.to_string()
        )]
    );
    assert_eq!(
        std::fs::read(blob_path(&dir, &idx.index_digest)).expect("index blob"),
        idx.index
    );
    for m in [amd, arm] {
        assert_eq!(
            std::fs::read(blob_path(&dir, &m.manifest_digest)).expect("manifest blob"),
            m.manifest
        );
        for d in m.layer_digests().iter().chain([&m.config.digest]) {
            assert!(
                blob_path(&dir, d).is_file(),
                "{} blob {d} missing",
                m.platform
            );
        }
    }
    assert_skopeo_accepts(&dir, "v1");

    let out = pull(
        &env,
        &image,
        &env.path("none"),
        &["--platform", "linux/s390x"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("linux/s390x") && stderr(&out).contains("linux/arm64/v8"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_blob_that_does_not_match_its_digest_is_refused_and_removed() {
    let Some(reg) = Registry::start(RegistryAuth::Anonymous) else {
        return;
    };
    let img = push_image(
        reg.addr(),
        "bad/app",
        "v1",
        None,
        &[noise(60, 100_000), noise(61, 80_000)],
    );
    let bad = &img.layers[1];
    let hex = bad.digest.trim_start_matches("sha256:");
    let data = reg
        .storage_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    // Same length, different bytes: only the digest can tell.
    let mut corrupt = std::fs::read(&data).expect("registry blob data");
    corrupt[50_000] ^= 0xff;
    std::fs::write(&data, &corrupt).expect("corrupt the blob");

    let env = Env::new();
    let dir = env.path("out");
    let out = pull(&env, &format!("{}/bad/app:v1", reg.addr()), &dir, &[]);
    assert!(!out.status.success(), "corrupt blob accepted");
    let err = stderr(&out);
    assert!(
        err.contains(&bad.digest),
        "error does not name the blob: {err}"
    );
    assert!(err.contains("does not match its digest"), "{err}");
    assert_eq!(files_for(&dir, &bad.digest), Vec::<String>::new());
    assert!(!dir.join("index.json").exists());

    // A different length is refused the same way.
    std::fs::write(&data, &corrupt[..corrupt.len() - 7]).expect("truncate the blob");
    let out = pull(&env, &format!("{}/bad/app:v1", reg.addr()), &dir, &[]);
    assert!(!out.status.success(), "short blob accepted");
    assert!(stderr(&out).contains(&bad.digest), "{}", stderr(&out));
    assert_eq!(files_for(&dir, &bad.digest), Vec::<String>::new());
}

#[test]
fn a_partial_blob_is_resumed_with_range() {
    let Some(reg) = Registry::start(RegistryAuth::Anonymous) else {
        return;
    };
    let img = push_image(reg.addr(), "resume/app", "v1", None, &[noise(70, 2 << 20)]);
    let layer = &img.layers[0];
    let half = layer.data.len() / 2;
    let env = Env::new();
    let dir = env.path("out");
    std::fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
    std::fs::write(partial_path(&dir, &layer.digest), &layer.data[..half]).expect("partial");

    let out = pull(&env, &format!("{}/resume/app:v1", reg.addr()), &dir, &[]);
    assert_ok(&out, "resumed pull");
    let short = &layer.digest["sha256:".len()..][..12];
    let resumed = format!("{short}: resumed at {half} bytes");
    assert!(stderr(&out).contains(&resumed), "{}", stderr(&out));
    assert_holds(&dir, &img, "v1");
    assert!(!partial_path(&dir, &layer.digest).exists());
    assert_eq!(blob_get_statuses(&reg, &layer.digest), [206]);
    assert_skopeo_accepts(&dir, "v1");

    // A partial whose bytes are not the blob's prefix: the resumed result fails verification,
    // and the pull starts that blob over once instead of failing.
    let dir = env.path("garbage");
    std::fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
    std::fs::write(partial_path(&dir, &layer.digest), noise(71, half)).expect("partial");
    let out = pull(&env, &format!("{}/resume/app:v1", reg.addr()), &dir, &[]);
    assert_ok(&out, "pull over a bad partial");
    assert_holds(&dir, &img, "v1");
    assert_eq!(blob_get_statuses(&reg, &layer.digest), [206, 206, 200]);
}

#[test]
fn a_server_ignoring_range_restarts_from_zero_and_a_cut_transfer_resumes() {
    let layer = noise(80, 600_000);
    let fake = FakeRegistry::start("fake/app", "v1", &layer);
    let env = Env::new();

    // Range ignored: the 200 body is taken from byte 0 and the result verifies.
    fake.honor_range.store(false, Ordering::SeqCst);
    let dir = env.path("ignored");
    std::fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
    std::fs::write(partial_path(&dir, &fake.layer_digest), &layer[..1000]).expect("partial");
    let out = pull(&env, &format!("{}/fake/app:v1", fake.addr), &dir, &[]);
    assert_ok(&out, "pull from a server ignoring Range");
    assert_eq!(
        std::fs::read(blob_path(&dir, &fake.layer_digest)).unwrap(),
        layer
    );
    let log = fake.blob_requests(&fake.layer_digest);
    assert_eq!(log, [(Some("bytes=1000-".to_string()), 200)]);
    assert!(
        stderr(&out).contains("ignored the Range request"),
        "{}",
        stderr(&out)
    );

    // The first transfer breaks off half way; the retry asks for the rest only.
    fake.honor_range.store(true, Ordering::SeqCst);
    fake.cut_next_blob.store(true, Ordering::SeqCst);
    fake.clear_log();
    let dir = env.path("cut");
    let out = pull(&env, &format!("{}/fake/app:v1", fake.addr), &dir, &[]);
    assert_ok(&out, "pull with a cut transfer");
    assert_eq!(
        std::fs::read(blob_path(&dir, &fake.layer_digest)).unwrap(),
        layer
    );
    let log = fake.blob_requests(&fake.layer_digest);
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0], (None, 200));
    let resumed_at = log[1]
        .0
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok())
        .expect("second request has a Range");
    assert!(resumed_at > 0 && resumed_at <= layer.len() / 2, "{log:?}");
    assert_eq!(log[1].1, 206);
}

// ---------------------------------------------------------------------------------------------
// A TCP forwarder that holds back each blob request, so a pull outlives its tokens
// ---------------------------------------------------------------------------------------------

struct DelayProxy {
    addr: String,
    stop: Arc<AtomicBool>,
}

impl DelayProxy {
    fn start(upstream: &str, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("addr").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let (upstream, flag) = (upstream.to_string(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut c_read, mut s_write) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                let (mut s_read, mut c_write) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_read, &mut c_write);
                    let _ = c_write.shutdown(Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match c_read.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        // Requests are small and arrive in one read: delay those for blobs.
                        if buf[..n].windows(7).any(|w| w == b"/blobs/") {
                            std::thread::sleep(delay);
                        }
                        if s_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_write.shutdown(Shutdown::Write);
                });
            }
        });
        Self { addr, stop }
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

// ---------------------------------------------------------------------------------------------
// A fake anonymous registry serving one image, with switchable transfer faults
// ---------------------------------------------------------------------------------------------

/// (Range header, status) of each blob GET, per path.
type BlobLog = Vec<(String, Option<String>, u16)>;

struct FakeRegistry {
    addr: String,
    layer_digest: String,
    honor_range: Arc<AtomicBool>,
    /// Cut the next blob body half way (headers promise all of it).
    cut_next_blob: Arc<AtomicBool>,
    log: Arc<Mutex<BlobLog>>,
    stop: Arc<AtomicBool>,
}

impl FakeRegistry {
    fn start(repo: &str, tag: &str, layer: &[u8]) -> Self {
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer)]},
        }))
        .expect("config");
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(&config), "size": config.len()},
            "layers": [{"mediaType": OCI_LAYER_TAR, "digest": sha256_digest(layer), "size": layer.len()}],
        }))
        .expect("manifest");
        let mut content: HashMap<String, (Vec<u8>, &'static str)> = HashMap::new();
        let manifest_digest = sha256_digest(&manifest);
        content.insert(
            format!("/v2/{repo}/manifests/{tag}"),
            (manifest.clone(), OCI_MANIFEST),
        );
        content.insert(
            format!("/v2/{repo}/manifests/{manifest_digest}"),
            (manifest, OCI_MANIFEST),
        );
        content.insert(
            format!("/v2/{repo}/blobs/{}", sha256_digest(&config)),
            (config, "application/octet-stream"),
        );
        content.insert(
            format!("/v2/{repo}/blobs/{}", sha256_digest(layer)),
            (layer.to_vec(), "application/octet-stream"),
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake registry");
        let addr = listener.local_addr().expect("addr").to_string();
        let fake = Self {
            addr,
            layer_digest: sha256_digest(layer),
            honor_range: Arc::new(AtomicBool::new(true)),
            cut_next_blob: Arc::new(AtomicBool::new(false)),
            log: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let content = Arc::new(content);
        let (honor, cut, log, stop) = (
            fake.honor_range.clone(),
            fake.cut_next_blob.clone(),
            fake.log.clone(),
            fake.stop.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = conn else { continue };
                let (content, honor, cut, log) =
                    (content.clone(), honor.clone(), cut.clone(), log.clone());
                std::thread::spawn(move || {
                    serve_fake(stream, &content, &honor, &cut, &log);
                });
            }
        });
        fake
    }

    fn blob_requests(&self, digest: &str) -> Vec<(Option<String>, u16)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _, _)| p.ends_with(digest))
            .map(|(_, r, s)| (r.clone(), *s))
            .collect()
    }

    fn clear_log(&self) {
        self.log.lock().unwrap().clear();
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

/// Answers requests on one connection until the client closes it (keep-alive, as reqwest pools).
fn serve_fake(
    stream: TcpStream,
    content: &HashMap<String, (Vec<u8>, &'static str)>,
    honor_range: &AtomicBool,
    cut: &AtomicBool,
    log: &Mutex<BlobLog>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut range = None;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("range") {
                    range = Some(v.trim().to_string());
                }
            }
        }
        let head = |status: &str, ctype: &str, len: usize, extra: &str| {
            format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len}\r\n\
                 Docker-Distribution-API-Version: registry/2.0\r\n{extra}\r\n"
            )
        };
        if path == "/v2/" {
            let _ = out.write_all(head("200 OK", "application/json", 2, "").as_bytes());
            let _ = out.write_all(b"{}");
            continue;
        }
        let Some((body, ctype)) = content.get(&path) else {
            let msg = br#"{"errors":[{"code":"NOT_FOUND","message":"no such thing"}]}"#;
            let _ =
                out.write_all(head("404 Not Found", "application/json", msg.len(), "").as_bytes());
            let _ = out.write_all(msg);
            continue;
        };
        let digest = format!("Docker-Content-Digest: {}\r\n", sha256_digest(body));
        if !path.contains("/blobs/") || method != "GET" {
            let _ = out.write_all(head("200 OK", ctype, body.len(), &digest).as_bytes());
            if method == "GET" {
                let _ = out.write_all(body);
            }
            continue;
        }
        let start = range
            .as_deref()
            .filter(|_| honor_range.load(Ordering::SeqCst))
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n < body.len());
        let status = if start.is_some() { 206 } else { 200 };
        log.lock()
            .unwrap()
            .push((path.clone(), range.clone(), status));
        let (status_line, part, extra) = match start {
            Some(s) => (
                "206 Partial Content",
                &body[s..],
                format!(
                    "{digest}Content-Range: bytes {s}-{}/{}\r\n",
                    body.len() - 1,
                    body.len()
                ),
            ),
            None => ("200 OK", &body[..], digest),
        };
        let _ = out.write_all(head(status_line, ctype, part.len(), &extra).as_bytes());
        if body.len() > 1000 && cut.swap(false, Ordering::SeqCst) {
            let _ = out.write_all(&part[..part.len() / 2]);
            let _ = out.flush();
            let _ = out.shutdown(Shutdown::Both);
            return;
        }
        let _ = out.write_all(part);
    }
}

#[test]
fn docker_v2s2_image_lands_as_oci_that_skopeo_finds_by_tag() {
    let Some(reg) = Registry::start(RegistryAuth::Anonymous) else {
        return;
    };
    let img = push_docker_image(
        reg.addr(),
        "dock/app",
        "v1",
        "amd64",
        &[noise(100, 200_000), noise(101, 3_000)],
    );
    let env = Env::new();
    let dir = env.path("oci");
    let out = pull(&env, &format!("{}/dock/app:v1", reg.addr()), &dir, &[]);
    assert_ok(&out, "pull of a docker image");
    let (name, digest, media_type) = entries(&dir).pop().expect("one entry");
    assert_eq!((name.as_str(), media_type.as_str()), ("v1", OCI_MANIFEST));
    assert_ne!(digest, img.manifest_digest, "the manifest was converted");
    assert_eq!(stdout(&out).trim(), digest);
    assert!(
        stderr(&out).contains(&format!(
            "converted {} to OCI {digest}",
            img.manifest_digest
        )),
        "{}",
        stderr(&out)
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(blob_path(&dir, &digest)).expect("manifest"))
            .expect("manifest JSON");
    assert_eq!(manifest["mediaType"], OCI_MANIFEST);
    assert_eq!(manifest["config"]["mediaType"], OCI_CONFIG);
    assert_eq!(manifest["config"]["digest"], img.config_digest.as_str());
    for (l, (d, data)) in manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .zip(&img.layers)
    {
        assert_eq!(l["mediaType"], OCI_LAYER_TAR);
        assert_eq!(l["digest"], d.as_str());
        assert_eq!(std::fs::read(blob_path(&dir, d)).expect("layer"), *data);
    }
    assert_eq!(
        std::fs::read(blob_path(&dir, &img.config_digest)).expect("config"),
        img.config
    );
    assert_skopeo_accepts(&dir, "v1");

    // --format preserve: the registry's bytes and digest, filed under their Docker media type.
    let dir = env.path("preserve");
    let out = pull(
        &env,
        &format!("{}/dock/app:v1", reg.addr()),
        &dir,
        &["--format", "preserve"],
    );
    assert_ok(&out, "pull --format preserve");
    assert_eq!(stdout(&out).trim(), img.manifest_digest);
    assert_eq!(
        entries(&dir),
        [(
            "v1".to_string(),
            img.manifest_digest.clone(),
            DOCKER_MANIFEST.to_string()
        )]
    );
    assert_eq!(
        std::fs::read(blob_path(&dir, &img.manifest_digest)).expect("manifest"),
        img.manifest
    );
    // skopeo 1.9 (containers/image 5.23) skips non-OCI index.json entries when it looks up a
    // tag, but reads a layout's only image without one.
    let skopeo_env = Env::new();
    let by_tag = skopeo(
        &skopeo_env,
        &["inspect", &format!("oci:{}:v1", dir.display())],
    );
    assert!(
        stderr(&by_tag).contains("no descriptor found for reference") || by_tag.status.success(),
        "{}",
        stderr(&by_tag)
    );
    let only = format!("oci:{}", dir.display());
    let out = skopeo(&skopeo_env, &["inspect", "--raw", &only]);
    assert!(
        out.status.success(),
        "skopeo inspect {only}: {}",
        stderr(&out)
    );
    assert_eq!(out.stdout, img.manifest);

    // A manifest list becomes an OCI index naming the converted manifests.
    let arm = push_docker_image(reg.addr(), "dock/app", "", "arm64", &[noise(102, 5_000)]);
    let (list_digest, _) = push_docker_list(
        reg.addr(),
        "dock/app",
        "multi",
        &[img.descriptor("amd64"), arm.descriptor("arm64")],
    );
    let dir = env.path("all");
    let out = pull(
        &env,
        &format!("{}/dock/app:multi", reg.addr()),
        &dir,
        &["--all-platforms"],
    );
    assert_ok(&out, "pull --all-platforms of a manifest list");
    let (_, index_digest, media_type) = entries(&dir).pop().expect("one entry");
    assert_eq!(media_type, OCI_INDEX);
    assert!(
        stderr(&out).contains(&format!("converted {list_digest} to OCI {index_digest}")),
        "{}",
        stderr(&out)
    );
    let index: Value =
        serde_json::from_slice(&std::fs::read(blob_path(&dir, &index_digest)).expect("index"))
            .expect("index JSON");
    assert_eq!(index["mediaType"], OCI_INDEX);
    for (entry, arch) in index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .zip(["amd64", "arm64"])
    {
        assert_eq!(entry["mediaType"], OCI_MANIFEST);
        assert_eq!(entry["platform"]["architecture"], arch);
        let d = entry["digest"].as_str().expect("digest");
        let bytes = std::fs::read(blob_path(&dir, d)).expect("child manifest");
        assert_eq!(sha256_digest(&bytes), d);
        assert_eq!(entry["size"], bytes.len());
    }
    assert_skopeo_accepts(&dir, "multi");
}

#[test]
fn non_tty_pull_prints_progress_lines_then_the_summary_on_its_own_line() {
    let Some(reg) = Registry::start(RegistryAuth::Anonymous) else {
        return;
    };
    let img = push_image(reg.addr(), "prog/app", "v1", None, &[noise(110, 3 << 20)]);
    let layer = &img.layers[0];
    let short = &layer.digest["sha256:".len()..][..12];
    let env = Env::new();
    let dir = env.path("out");
    let out = pull(&env, &format!("{}/prog/app:v1", reg.addr()), &dir, &[]);
    assert_ok(&out, "pull");
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    // `<short>: 1.2/3.0 MiB (40%)`, at each tenth crossed, rising, then the done line.
    let progress: Vec<u64> = lines
        .iter()
        .filter_map(|l| l.strip_prefix(&format!("{short}: ")))
        .filter(|l| l.contains(" MiB ("))
        .map(|l| {
            assert!(l.contains("/3.0 MiB ("), "{l}");
            l.rsplit('(')
                .next()
                .and_then(|p| p.strip_suffix("%)"))
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("bad progress line {l:?}"))
        })
        .collect();
    assert!(progress.len() >= 5, "too few progress lines:\n{err}");
    assert!(progress.windows(2).all(|w| w[0] < w[1]), "{progress:?}");
    assert!(progress.iter().all(|p| *p < 100), "{progress:?}");
    let done = lines
        .iter()
        .position(|l| l.starts_with(&format!("{short}: done ")))
        .expect("done line");
    let last_progress = lines
        .iter()
        .rposition(|l| l.starts_with(&format!("{short}: ")) && l.contains(" MiB ("))
        .expect("progress line");
    assert!(last_progress < done, "{err}");
    // The summary is a line of its own, the last one.
    let summary = lines.last().expect("summary");
    assert!(
        summary.starts_with(&format!("{}/prog/app:v1 → ", reg.addr())),
        "{err}"
    );
    assert!(err.ends_with('\n'), "{err:?}");
}

/// Runs `pullsecret ARGS` with stdin, stdout and stderr on a pseudo-terminal (Python's `pty`),
/// returning everything it wrote there, raw.
fn pull_on_a_tty(env: &Env, args: &[&str]) -> (std::process::ExitStatus, String) {
    let script =
        "import os, pty, sys\nsys.exit(os.waitstatus_to_exitcode(pty.spawn(sys.argv[1:])))";
    let mut cmd = env.cmd("python3");
    cmd.args(["-c", script, env!("CARGO_BIN_EXE_pullsecret")])
        .args(args)
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::null());
    let out = cmd.output().expect("run pullsecret on a pty");
    (out.status, String::from_utf8_lossy(&out.stdout).to_string())
}

#[test]
fn tty_bars_give_way_before_the_summary_and_digest_references_print_with_at() {
    let Some(reg) = Registry::start(RegistryAuth::Anonymous) else {
        return;
    };
    let img = push_image(
        reg.addr(),
        "tty/app",
        "v1",
        None,
        &[noise(120, 2 << 20), noise(121, 100)],
    );
    let env = Env::new();
    let dir = env.path("out").display().to_string();
    let by_digest = format!("{}/tty/app@{}", reg.addr(), img.manifest_digest);
    let (status, raw) = pull_on_a_tty(&env, &["pull", &by_digest, "--insecure", "--output", &dir]);
    assert!(status.success(), "{raw:?}");
    assert!(raw.contains('\u{1b}'), "no bars were drawn: {raw:?}");
    let summary = format!("{by_digest} → {dir} (");
    let at = raw
        .find(&summary)
        .unwrap_or_else(|| panic!("no summary: {raw:?}"));
    // Nothing is drawn after the summary, and it starts a line of its own.
    assert!(!raw[at..].contains('\u{1b}'), "{raw:?}");
    assert!(raw[..at].ends_with('\n'), "summary shares a line: {raw:?}");
    // The bars gave way to one plain line per blob, after the last drawing.
    let last_escape = raw.rfind('\u{1b}').expect("escape");
    for l in &img.layers {
        let line = format!("{}: done ", &l.digest["sha256:".len()..][..12]);
        let pos = raw
            .rfind(&line)
            .unwrap_or_else(|| panic!("no {line:?}: {raw:?}"));
        assert!(pos > last_escape, "{raw:?}");
    }

    // A digest that is not there: the error names it as repo@digest too.
    let missing = format!("sha256:{}", "0".repeat(64));
    let out = pull(
        &env,
        &format!("{}/tty/app@{missing}", reg.addr()),
        &env.path("none"),
        &[],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("tty/app@{missing}"))
            && !stderr(&out).contains(&format!("tty/app:{missing}")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn planted_symlinks_in_the_layout_are_never_written_through() {
    use std::os::unix::fs::symlink;
    let Some(reg) = Registry::start(RegistryAuth::Anonymous) else {
        return;
    };
    let img = push_image(
        reg.addr(),
        "link/app",
        "v1",
        None,
        &[noise(130, 300_000), noise(131, 200_000)],
    );
    let image = format!("{}/link/app:v1", reg.addr());
    let env = Env::new();
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).expect("mkdir outside");
    // Files outside the layout, each the size of what its link pretends to be.
    let plant = |dir: &Path, name: &str, size: usize, seed: u64| -> (PathBuf, Vec<u8>) {
        let target = outside.join(format!("{seed}"));
        let bytes = noise(seed, size);
        std::fs::write(&target, &bytes).expect("outside file");
        symlink(&target, dir.join("blobs/sha256").join(name)).expect("plant link");
        (target, bytes)
    };
    let dir = env.path("out");
    std::fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
    let (l0, l1) = (&img.layers[0], &img.layers[1]);
    let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
    let planted = [
        // A final blob path: its size matches, so trusting the link would "reuse" foreign bytes.
        plant(&dir, &hex(&l0.digest), l0.data.len(), 132),
        // A partial: half a layer, which a resume would append to (and truncate when wrong).
        plant(
            &dir,
            &format!(".partial-{}", hex(&l1.digest)),
            l1.data.len() / 2,
            133,
        ),
        plant(&dir, &hex(&img.manifest_digest), img.manifest.len(), 134),
    ];
    let out = pull(&env, &image, &dir, &[]);
    assert_ok(&out, "pull over planted links");
    for (target, bytes) in &planted {
        assert_eq!(
            &std::fs::read(target).expect("outside file"),
            bytes,
            "{target:?} changed"
        );
    }
    assert_holds(&dir, &img, "v1");
    for d in [&l0.digest, &l1.digest, &img.manifest_digest] {
        let meta = std::fs::symlink_metadata(blob_path(&dir, d)).expect("blob");
        assert!(meta.is_file(), "{d} is still a link");
    }

    // index.json, oci-layout and the blob directory: the pull refuses, naming the link.
    for name in ["index.json", "oci-layout", "blobs"] {
        let dir = env.path(&format!("refuse-{name}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let target = outside.join(format!("target-{name}"));
        let before: &[u8] = br#"{"outside":true}"#;
        if name == "blobs" {
            std::fs::create_dir_all(&target).expect("outside dir");
        } else {
            std::fs::write(&target, before).expect("outside file");
        }
        symlink(&target, dir.join(name)).expect("plant link");
        let out = pull(&env, &image, &dir, &[]);
        assert!(!out.status.success(), "pull followed {name}");
        assert!(
            stderr(&out).contains(&format!(
                "{name}: not an OCI image layout: it is a symbolic link"
            )),
            "{}",
            stderr(&out)
        );
        if name == "blobs" {
            let entries = std::fs::read_dir(&target).expect("outside dir").count();
            assert_eq!(entries, 0, "the pull wrote into the linked directory");
        } else {
            assert_eq!(std::fs::read(&target).expect("outside file"), before);
        }
    }
}

#[test]
fn duplicate_index_entries_and_shared_layers_are_fetched_once() {
    let Some(reg) = Registry::start(RegistryAuth::Anonymous) else {
        return;
    };
    let shared = noise(140, 100_000);
    let amd = push_docker_image(
        reg.addr(),
        "dup/app",
        "",
        "amd64",
        &[shared.clone(), noise(141, 1_000)],
    );
    let arm = push_docker_image(
        reg.addr(),
        "dup/app",
        "",
        "arm64",
        &[shared, noise(142, 1_000)],
    );
    assert_eq!(
        amd.layers[0].0, arm.layers[0].0,
        "the first layer is shared"
    );
    // The amd64 manifest is listed twice.
    let list = [
        amd.descriptor("amd64"),
        amd.descriptor("amd64"),
        arm.descriptor("arm64"),
    ];
    push_docker_list(reg.addr(), "dup/app", "v1", &list);
    let env = Env::new();
    for format in ["oci", "preserve"] {
        let dir = env.path(format);
        let (manifests, blobs) = (
            reg.count_requests("GET", "/manifests/"),
            reg.count_requests("GET", "/blobs/"),
        );
        let out = pull(
            &env,
            &format!("{}/dup/app:v1", reg.addr()),
            &dir,
            &["--all-platforms", "--format", format],
        );
        assert_ok(&out, "pull --all-platforms");
        // The list, then each distinct manifest once.
        assert_eq!(
            reg.count_requests("GET", "/manifests/") - manifests,
            3,
            "{format}"
        );
        // Shared layer, two own layers, two configs.
        assert_eq!(reg.count_requests("GET", "/blobs/") - blobs, 5, "{format}");
    }
    // The converted index keeps both entries, naming the one converted manifest.
    let index_digest = entries(&env.path("oci")).pop().expect("entry").1;
    let index: Value = serde_json::from_slice(
        &std::fs::read(blob_path(&env.path("oci"), &index_digest)).expect("index"),
    )
    .expect("index JSON");
    let listed = index["manifests"].as_array().expect("manifests");
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0]["digest"], listed[1]["digest"]);
    assert_skopeo_accepts(&env.path("oci"), "v1");
}
