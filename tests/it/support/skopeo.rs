//! skopeo in a private environment: push an OCI layout, pull into one, or run any command,
//! bounded by a timeout.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use wait_timeout::ChildExt as _;

use super::{require_bin, Env};

/// Upper bound for one skopeo run; small test images copy in well under a second.
const SKOPEO_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) fn skopeo_push(
    layout: &Path,
    tag: &str,
    addr: &str,
    repo: &str,
    creds: Option<(&str, &str)>,
    all: bool,
) {
    let env = Env::new();
    let src = format!("oci:{}:{tag}", layout.display());
    let dest = format!("docker://{addr}/{repo}:{tag}");
    // --preserve-digests: skopeo would otherwise gzip the tar layers for a docker:// destination,
    // and every digest returned to the caller would be wrong.
    let mut args = vec!["copy", "--preserve-digests", "--dest-tls-verify=false"];
    if all {
        args.push("--all");
    }
    let creds_arg = creds.map(|(u, p)| format!("{u}:{p}"));
    if let Some(c) = &creds_arg {
        args.extend(["--dest-creds", c]);
    }
    args.extend([src.as_str(), dest.as_str()]);
    let out = skopeo(&env, &args);
    assert!(
        out.status.success(),
        "skopeo push to {dest} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Copies `ADDR/reference` (`repo:tag` or `repo@digest`) into an OCI layout at `dest` (tagged
/// `pulled`) with skopeo in a private environment; the caller checks the outcome.
pub fn skopeo_pull(
    registry_addr: &str,
    reference: &str,
    creds: Option<(&str, &str)>,
    dest: &Path,
) -> Output {
    let env = Env::new();
    let src = format!("docker://{registry_addr}/{reference}");
    let dst = format!("oci:{}:pulled", dest.display());
    let creds_arg = creds.map(|(u, p)| format!("{u}:{p}"));
    let mut args = vec!["copy", "--preserve-digests", "--src-tls-verify=false"];
    if let Some(c) = &creds_arg {
        args.extend(["--src-creds", c]);
    }
    args.extend([src.as_str(), dst.as_str()]);
    skopeo(&env, &args)
}

/// The auth file skopeo uses under `env` (`REGISTRY_AUTH_FILE`); write `credHelpers` here to make
/// skopeo call a credential helper.
pub fn skopeo_auth_file(env: &Env) -> PathBuf {
    env.path("runtime").join("containers/auth.json")
}

/// Runs `skopeo --insecure-policy ARGS` under `env` with a private auth file (created empty if
/// missing) and temp dir, bounded by a timeout; stdout and stderr are captured.
pub fn skopeo(env: &Env, args: &[&str]) -> Output {
    let bin = require_bin("skopeo", "apt-get install skopeo")
        .expect("skopeo is required by registry tests");
    let auth = skopeo_auth_file(env);
    if !auth.exists() {
        std::fs::create_dir_all(auth.parent().expect("parent")).expect("mkdir containers");
        std::fs::write(&auth, r#"{"auths":{}}"#).expect("write auth.json");
    }
    let tmp = env.path("runtime").join("tmp");
    std::fs::create_dir_all(&tmp).expect("mkdir tmp");
    let (out_path, err_path) = (tmp.join("skopeo.stdout"), tmp.join("skopeo.stderr"));
    let mut cmd = env.cmd(bin);
    // --insecure-policy: the system policy.json is not ours to depend on.
    cmd.arg("--insecure-policy")
        .args(args)
        .env("REGISTRY_AUTH_FILE", &auth)
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        // Files, not pipes: nothing has to drain them while we wait with a timeout.
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"));
    let mut child = cmd.spawn().expect("spawn skopeo");
    let status = match child.wait_timeout(SKOPEO_TIMEOUT).expect("wait skopeo") {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("skopeo {args:?} timed out after {SKOPEO_TIMEOUT:?}");
        }
    };
    Output {
        status,
        stdout: std::fs::read(&out_path).unwrap_or_default(),
        stderr: std::fs::read(&err_path).unwrap_or_default(),
    }
}
