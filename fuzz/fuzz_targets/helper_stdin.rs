//! The credential helper's stdin handling (`store|get|erase|list`) against a file
//! store in a temp dir: never panics, exits 0 or 1, answers in the protocol's JSON,
//! and what `store` accepts, `get` gives back.
//!
//! The first input byte picks the verb, the rest is stdin. Each input starts from
//! the same seeded store, so a crash reproduces from its input alone. The store
//! lives under `fuzz/target/scratch/`.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pullsecret::helper::{run, Helper};
use pullsecret::secret::Limits;
use pullsecret::store::{FileStore, StorePaths};
use serde_json::Value;

const VERBS: [&str; 4] = ["store", "get", "erase", "list"];
const NAMESPACE: &str = "fuzz";

struct Env {
    store: FileStore,
    data_dir: PathBuf,
    pristine: PathBuf,
    kube_dir: PathBuf,
}

/// Set when the last input may have changed the store.
static DIRTY: AtomicBool = AtomicBool::new(false);

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let root = scratch_dir();
        // `get` also reads docker/containers config files found from the
        // environment: point every one of them into the temp dir, never at the
        // real user's files (which could name helper programs to run).
        let home = root.join("home");
        std::fs::create_dir_all(home.join(".docker")).unwrap();
        std::env::set_var("HOME", &home);
        std::env::set_var("DOCKER_CONFIG", home.join(".docker"));
        std::env::set_var("REGISTRY_AUTH_FILE", home.join("auth.json"));
        std::env::set_var("XDG_RUNTIME_DIR", root.join("run"));
        std::env::set_var("XDG_CONFIG_HOME", home.join(".config"));
        std::fs::write(
            home.join(".docker").join("config.json"),
            // `docker:secret`
            r#"{"auths":{"registry.example.com":{"auth":"ZG9ja2VyOnNlY3JldA=="}}}"#,
        )
        .unwrap();
        let kube_dir = root.join("kube");
        std::fs::create_dir_all(&kube_dir).unwrap();
        std::fs::write(
            kube_dir.join("pull.json"),
            // {"auths":{"kube.example.com":{"username":"k","password":"p"}}}
            r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"pull"},"type":"kubernetes.io/dockerconfigjson","data":{".dockerconfigjson":"eyJhdXRocyI6eyJrdWJlLmV4YW1wbGUuY29tIjp7InVzZXJuYW1lIjoiayIsInBhc3N3b3JkIjoicCJ9fX0="}}"#,
        )
        .unwrap();

        let data_dir = root.join("data");
        let store = FileStore::new(
            StorePaths {
                data_dir: data_dir.clone(),
                key_file: root.join("key").join("master.key"),
            },
            Limits::default(),
        );
        let env = Env {
            store,
            data_dir,
            pristine: root.join("pristine"),
            kube_dir,
        };
        for (server, user, secret) in [
            ("https://index.docker.io/v1/", "hubuser", "hubpass"),
            ("ghcr.io", "gh", "ghp_token"),
            ("localhost:5000", "local", "pw"),
            ("quay.io/org", "org+robot", "robotpass"),
        ] {
            let input = format!(
                r#"{{"ServerURL":"{server}","Username":"{user}","Secret":"{secret}"}}"#
            );
            let (code, out) = invoke(&env, "store", input.as_bytes());
            assert_eq!(code, 0, "seeding the store: {out}");
        }
        copy_dir(&env.data_dir, &env.pristine);
        env
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, input)) = data.split_first() else {
        return;
    };
    let env = env();
    if DIRTY.swap(false, Ordering::Relaxed) {
        std::fs::remove_dir_all(&env.data_dir).unwrap();
        copy_dir(&env.pristine, &env.data_dir);
    }
    let verb = VERBS[usize::from(sel) % VERBS.len()];
    if matches!(verb, "store" | "erase") {
        DIRTY.store(true, Ordering::Relaxed);
    }
    let (code, out) = invoke(env, verb, input);
    assert!(code == 0 || code == 1, "{verb}: exit code {code}");
    match (verb, code) {
        ("get", 0) => {
            let v = one_json_line(&out);
            let obj = v.as_object().expect("get answers an object");
            let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            assert_eq!(keys, ["ServerURL", "Username", "Secret"], "{out:?}");
            assert!(obj.values().all(Value::is_string), "{out:?}");
        }
        ("list", 0) => {
            let v = one_json_line(&out);
            let obj = v.as_object().expect("list answers an object");
            assert!(obj.values().all(Value::is_string), "{out:?}");
        }
        ("store", 0) => {
            assert!(out.is_empty(), "store printed {out:?}");
            check_stored(env, input);
        }
        ("erase", 0) => assert!(out.is_empty(), "erase printed {out:?}"),
        (_, _) => {
            // One error line, as docker-credential-helpers prints it.
            assert!(
                out.ends_with('\n') && !out.trim_end_matches('\n').is_empty(),
                "{out:?}"
            );
        }
    }
});

/// After a successful `store`, `get` for the same server returns what was stored.
/// Checked only for plain inputs whose meaning is clear without Go's decoder rules
/// (no case-variant duplicate fields, no newlines in the server URL).
fn check_stored(env: &Env, input: &[u8]) {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(input) else {
        return;
    };
    let field = |name: &str| -> Option<&str> {
        let mut found = obj.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name));
        let (_, v) = found.next()?;
        if found.next().is_some() {
            return None;
        }
        v.as_str()
    };
    let (Some(server), Some(user), Some(secret)) =
        (field("serverurl"), field("username"), field("secret"))
    else {
        return;
    };
    if server.trim() != server || server.contains(['\n', '\r']) {
        return;
    }
    let (code, out) = invoke(env, "get", server.as_bytes());
    assert_eq!(code, 0, "stored {server:?}, then get said {out:?}");
    let v = one_json_line(&out);
    assert_eq!(v["ServerURL"], server, "{out:?}");
    assert_eq!(v["Username"], user, "{out:?}");
    assert_eq!(v["Secret"], secret, "stored {server:?}: secret differs");
}

fn invoke(env: &Env, verb: &str, mut input: &[u8]) -> (i32, String) {
    let helper = Helper {
        store: &env.store,
        namespace: NAMESPACE.to_string(),
        kube_dirs: vec![env.kube_dir.clone()],
    };
    let mut out = Vec::new();
    let code = run(
        &helper,
        "docker-credential-pullsecret",
        &[verb.to_string()],
        &mut input,
        &mut out,
    );
    let out = String::from_utf8(out).expect("helper output is UTF-8");
    (code, out)
}

fn one_json_line(out: &str) -> Value {
    let line = out.strip_suffix('\n').expect("answer ends with a newline");
    assert!(!line.contains('\n'), "answer is one line: {out:?}");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("answer is not JSON ({e}): {out:?}"))
}

/// `fuzz/target/scratch/helper_stdin-<pid>`: libFuzzer exits without running
/// destructors, so a temp dir would be left behind; instead each run removes
/// the dirs of runs that are gone.
fn scratch_dir() -> PathBuf {
    let parent = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("scratch");
    std::fs::create_dir_all(&parent).unwrap();
    for entry in std::fs::read_dir(&parent).unwrap().flatten() {
        let name = entry.file_name();
        let pid = name.to_str().and_then(|n| n.strip_prefix("helper_stdin-"));
        if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dir = parent.join(format!("helper_stdin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}
