//! docker `config.json` and containers `auth.json`: read, look up, write.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::gocompat::json::marshal_indent;
use crate::secret::{decode_basic_auth, RegistrySecret, ServerKey, DOCKER_HUB_KEY};

/// Errors name the file and the server key, never a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read {}: {reason}", .path.display())]
    Read { path: PathBuf, reason: String },
    #[error("{} is not valid JSON: {reason}", .path.display())]
    Malformed { path: PathBuf, reason: String },
    #[error("{}: the top level is not a JSON object", .path.display())]
    NotAnObject { path: PathBuf },
    #[error("{}: auth for {server:?} {reason}", .path.display())]
    BadAuth {
        path: PathBuf,
        server: String,
        reason: &'static str,
    },
    #[error("cannot write {}: {reason}", .path.display())]
    Write { path: PathBuf, reason: String },
}

/// What a config file says about one registry.
#[derive(Debug, Clone)]
pub enum AuthLookup {
    /// Credentials stored in the file; `server` is the `auths` key as written.
    Credentials(RegistrySecret),
    /// The name of the `docker-credential-<name>` helper `credHelpers` assigns.
    Helper(String),
}

/// One `auths` entry. Unknown fields (`serveraddress`, …) are kept for rewriting.
#[derive(Clone, Default)]
pub struct AuthEntry {
    pub auth: Option<SecretString>,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub email: Option<String>,
    pub identity_token: Option<SecretString>,
    /// Read and kept, but never used: neither docker helpers nor c/image send it.
    pub registry_token: Option<SecretString>,
    extra: Map<String, Value>,
}

impl fmt::Debug for AuthEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |o: &Option<SecretString>| o.as_ref().map(|_| "********");
        f.debug_struct("AuthEntry")
            .field("auth", &set(&self.auth))
            .field("username", &self.username)
            .field("password", &set(&self.password))
            .field("email", &self.email)
            .field("identity_token", &set(&self.identity_token))
            .field("registry_token", &set(&self.registry_token))
            .field("extra_keys", &self.extra.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl AuthEntry {
    /// The credentials this entry carries: an identity token wins (docker keeps
    /// `auth` = `user:` beside it), then `auth`, then `username`/`password`.
    /// `Ok(None)` for entries without any, such as the empty ones docker's
    /// native stores leave behind.
    fn credentials(&self, server: &str) -> Result<Option<RegistrySecret>, &'static str> {
        let non_empty = |s: &Option<SecretString>| {
            s.as_ref()
                .filter(|v| !v.expose_secret().is_empty())
                .cloned()
        };
        let mut username = self.username.clone().unwrap_or_default();
        let mut password = non_empty(&self.password).unwrap_or_else(|| SecretString::from(""));
        if let Some(auth) = non_empty(&self.auth) {
            let (u, p) = decode_basic_auth(auth.expose_secret())?;
            // Docker trims NULs some old encoders padded the password with.
            username = u;
            password = SecretString::from(p.expose_secret().trim_matches('\0'));
        }
        if let Some(token) = non_empty(&self.identity_token) {
            username = "<token>".to_string();
            password = token;
        }
        if username.is_empty() && password.expose_secret().is_empty() {
            return Ok(None);
        }
        Ok(Some(RegistrySecret {
            server: server.to_string(),
            username,
            password,
            email: self.email.clone().filter(|e| !e.is_empty()),
        }))
    }

    fn from_value(v: &Value) -> Option<Self> {
        let obj = v.as_object()?;
        let mut e = AuthEntry::default();
        for (k, v) in obj {
            // Lenient like docker: a field of the wrong type is ignored.
            let s = v.as_str();
            match k.as_str() {
                "auth" => e.auth = s.map(SecretString::from),
                "username" => e.username = s.map(str::to_string),
                "password" => e.password = s.map(SecretString::from),
                "email" => e.email = s.map(str::to_string),
                "identitytoken" => e.identity_token = s.map(SecretString::from),
                "registrytoken" => e.registry_token = s.map(SecretString::from),
                _ => {
                    e.extra.insert(k.clone(), v.clone());
                }
            }
        }
        Some(e)
    }

    /// Docker's `AuthConfig` field order; `username`/`password` are folded into
    /// `auth` as docker does on save.
    fn to_value(&self) -> Value {
        let mut m = Map::new();
        // Like docker's encodeAuth, an absent username or password counts as empty:
        // an entry with only one of them keeps it (found by the docker_config fuzz target).
        let auth = match &self.auth {
            Some(a) if !a.expose_secret().is_empty() => Some(a.expose_secret().to_string()),
            _ => {
                let user = self.username.as_deref().unwrap_or_default();
                let pass = self.password.as_ref().map_or("", |p| p.expose_secret());
                (!(user.is_empty() && pass.is_empty()))
                    .then(|| RegistrySecret::new("", user, SecretString::from(pass)).basic_auth())
            }
        };
        if let Some(a) = auth {
            m.insert("auth".into(), Value::String(a));
        }
        if let Some(e) = self.email.as_ref().filter(|e| !e.is_empty()) {
            m.insert("email".into(), Value::String(e.clone()));
        }
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        for (k, v) in [
            ("identitytoken", &self.identity_token),
            ("registrytoken", &self.registry_token),
        ] {
            if let Some(v) = v.as_ref().filter(|v| !v.expose_secret().is_empty()) {
                m.insert(k.into(), Value::String(v.expose_secret().to_string()));
            }
        }
        Value::Object(m)
    }

    fn from_secret(s: &RegistrySecret, with_email: bool) -> Self {
        let mut e = AuthEntry::default();
        if s.is_identity_token() {
            e.identity_token = Some(s.password.clone());
        } else {
            e.auth = Some(SecretString::from(s.basic_auth()));
        }
        if with_email {
            e.email = s.email.clone();
        }
        e
    }
}

/// A docker `config.json`, a containers `auth.json` or a legacy `~/.dockercfg`,
/// read leniently. Top-level keys we don't interpret are kept, in place, when
/// the file is written back.
#[derive(Clone, Default)]
pub struct DockerConfig {
    path: PathBuf,
    auths: Vec<(String, AuthEntry)>,
    cred_helpers: Vec<(String, String)>,
    creds_store: Option<String>,
    /// The whole top level in file order; `auths`, `credHelpers` and
    /// `credsStore` are placeholders there, refilled from the fields above.
    top: Map<String, Value>,
    /// `~/.dockercfg`: the `auths` map itself is the top level.
    legacy: bool,
}

impl fmt::Debug for DockerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerConfig")
            .field("path", &self.path)
            .field("auths", &self.auths)
            .field("cred_helpers", &self.cred_helpers)
            .field("creds_store", &self.creds_store)
            .field("other_keys", &self.other_keys())
            .field("legacy", &self.legacy)
            .finish()
    }
}

/// Reads a config file: `Ok(None)` when it does not exist. A file named
/// `.dockercfg` is read in the legacy format.
pub fn load(path: impl AsRef<Path>) -> Result<Option<DockerConfig>, ConfigFileError> {
    let path = path.as_ref();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => Zeroizing::new(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ConfigFileError::Read {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        }
    };
    let legacy = path.file_name().is_some_and(|n| n == ".dockercfg");
    DockerConfig::parse_named(&text, path, legacy).map(Some)
}

impl DockerConfig {
    /// Parses `config.json`/`auth.json` text; errors name `path`.
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<Self, ConfigFileError> {
        Self::parse_named(text, path.as_ref(), false)
    }

    /// Parses legacy `~/.dockercfg` text (`{SERVER:{auth,email}}`).
    pub fn parse_legacy(text: &str, path: impl AsRef<Path>) -> Result<Self, ConfigFileError> {
        Self::parse_named(text, path.as_ref(), true)
    }

    fn parse_named(text: &str, path: &Path, legacy: bool) -> Result<Self, ConfigFileError> {
        let mut cfg = DockerConfig {
            path: path.to_path_buf(),
            legacy,
            ..Default::default()
        };
        // Docker treats an empty file as an empty config.
        if text.trim().is_empty() {
            return Ok(cfg);
        }
        // serde_json's syntax messages give a position, never the input.
        let v: Value = serde_json::from_str(text).map_err(|e| ConfigFileError::Malformed {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let Value::Object(top) = v else {
            return Err(ConfigFileError::NotAnObject {
                path: path.to_path_buf(),
            });
        };
        if legacy {
            cfg.auths = auths_from(&top);
            return Ok(cfg);
        }
        for (k, v) in top {
            match k.as_str() {
                "auths" => {
                    if let Value::Object(a) = &v {
                        cfg.auths = auths_from(a);
                    }
                    cfg.top.insert(k, Value::Null);
                }
                "credHelpers" => {
                    if let Value::Object(h) = &v {
                        cfg.cred_helpers = h
                            .iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                            .collect();
                    }
                    cfg.top.insert(k, Value::Null);
                }
                "credsStore" => {
                    cfg.creds_store = v.as_str().map(str::to_string);
                    cfg.top.insert(k, Value::Null);
                }
                _ => {
                    cfg.top.insert(k, v);
                }
            }
        }
        Ok(cfg)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_legacy(&self) -> bool {
        self.legacy
    }

    /// `credsStore`, which docker consults after `credHelpers` and before the
    /// file, and which containers tools ignore.
    pub fn creds_store(&self) -> Option<&str> {
        self.creds_store.as_deref().filter(|s| !s.is_empty())
    }

    pub fn cred_helpers(&self) -> &[(String, String)] {
        &self.cred_helpers
    }

    /// The `auths` entries in file order, keys as written.
    pub fn auths(&self) -> &[(String, AuthEntry)] {
        &self.auths
    }

    fn other_keys(&self) -> Vec<&String> {
        self.top
            .keys()
            .filter(|k| !matches!(k.as_str(), "auths" | "credHelpers" | "credsStore"))
            .collect()
    }

    /// What the file says for `key`: a `credHelpers` entry for its registry
    /// (helpers are registry-level only), else the most specific `auths`
    /// entry carrying credentials, keys compared after normalization. An entry
    /// whose `auth` is malformed is passed over here; `entries` reports it.
    pub fn lookup(&self, key: &ServerKey) -> Option<AuthLookup> {
        let registry = key.registry();
        for (k, helper) in &self.cred_helpers {
            if !helper.is_empty() && ServerKey::parse(k).is_ok_and(|k| k == registry) {
                return Some(AuthLookup::Helper(helper.clone()));
            }
        }
        for candidate in key.candidates() {
            for (k, entry) in &self.auths {
                if ServerKey::parse(k).is_ok_and(|k| k == candidate) {
                    if let Ok(Some(secret)) = entry.credentials(k) {
                        return Some(AuthLookup::Credentials(secret));
                    }
                }
            }
        }
        None
    }

    /// Every `auths` entry that carries credentials, in file order, for import.
    pub fn entries(&self) -> Result<Vec<RegistrySecret>, ConfigFileError> {
        let mut out = Vec::new();
        for (k, entry) in &self.auths {
            match entry.credentials(k) {
                Ok(Some(s)) => out.push(s),
                Ok(None) => {}
                Err(reason) => {
                    return Err(ConfigFileError::BadAuth {
                        path: self.path.clone(),
                        server: k.clone(),
                        reason,
                    })
                }
            }
        }
        Ok(out)
    }

    /// Stores `secret` under `key`, replacing every entry whose key normalizes
    /// to the same registry key (so `docker.io` and the Hub URL don't both stay).
    pub fn set(&mut self, key: &str, secret: &RegistrySecret) {
        let norm = ServerKey::parse(key).ok();
        self.auths
            .retain(|(k, _)| k != key && (norm.is_none() || ServerKey::parse(k).ok() != norm));
        // Email is decorative everywhere now, but harmless: docker used to
        // write it and c/image ignores fields it doesn't know.
        self.auths
            .push((key.to_string(), AuthEntry::from_secret(secret, true)));
    }

    /// Removes every entry whose key normalizes to `key`; returns how many.
    pub fn remove(&mut self, key: &ServerKey) -> usize {
        let before = self.auths.len();
        self.auths
            .retain(|(k, _)| ServerKey::parse(k).ok().as_ref() != Some(key));
        before - self.auths.len()
    }

    /// The file as docker writes it (`json.MarshalIndent(…, "", "\t")`), with
    /// map keys sorted as Go does and unknown top-level keys kept in place.
    pub fn to_json(&self) -> String {
        let auths = auths_value(self.auths.iter().map(|(k, e)| (k.clone(), e.to_value())));
        if self.legacy {
            return marshal_indent(&auths, "\t");
        }
        let mut top = self.top.clone();
        // Go writes `auths` even when empty; credsStore/credHelpers are omitempty.
        let mut helpers: Vec<&(String, String)> = self.cred_helpers.iter().collect();
        helpers.sort_by(|a, b| a.0.cmp(&b.0));
        let helpers: Map<String, Value> = helpers
            .into_iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        top.insert("auths".into(), auths);
        match self.creds_store() {
            Some(s) => {
                top.insert("credsStore".into(), Value::String(s.to_string()));
            }
            None => {
                top.shift_remove("credsStore");
            }
        }
        if helpers.is_empty() {
            top.shift_remove("credHelpers");
        } else {
            top.insert("credHelpers".into(), Value::Object(helpers));
        }
        marshal_indent(&Value::Object(top), "\t")
    }

    /// Writes the file atomically (temp file, fsync, rename) with mode 0600.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), ConfigFileError> {
        let path = path.as_ref();
        let err = |e: std::io::Error| ConfigFileError::Write {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(err)?;
        }
        let text = Zeroizing::new(self.to_json());
        tmp.write_all(text.as_bytes()).map_err(err)?;
        tmp.as_file().sync_all().map_err(err)?;
        tmp.persist(path).map_err(|e| err(e.error))?;
        Ok(())
    }
}

fn auths_from(m: &Map<String, Value>) -> Vec<(String, AuthEntry)> {
    m.iter()
        .filter_map(|(k, v)| Some((k.clone(), AuthEntry::from_value(v)?)))
        .collect()
}

/// A Go `map[string]…`: sorted keys, the last of duplicates wins.
fn auths_value(entries: impl Iterator<Item = (String, Value)>) -> Value {
    let sorted: std::collections::BTreeMap<String, Value> = entries.collect();
    Value::Object(sorted.into_iter().collect())
}

/// The `auths` key docker uses: `https://index.docker.io/v1/` for Hub, else
/// `host[:port][/path]`; a server we cannot parse is kept as written.
pub fn docker_key(server: &str) -> String {
    if server.is_empty() {
        return DOCKER_HUB_KEY.to_string();
    }
    ServerKey::parse(server).map_or_else(|_| server.to_string(), |k| k.to_string())
}

/// The `auths` key podman/skopeo write: `docker.io[/path]` for Hub, else as docker.
pub fn containers_key(server: &str) -> String {
    let Ok(key) = ServerKey::parse(if server.is_empty() {
        "docker.io"
    } else {
        server
    }) else {
        return server.to_string();
    };
    if key.is_docker_hub() && key.path().is_none() {
        "docker.io".to_string()
    } else {
        key.to_string()
    }
}

/// A fresh docker `config.json`: `{"auths":{KEY:{"auth","email"?}}}`, tab
/// indented like docker's `json.MarshalIndent(…, "", "\t")` (no trailing
/// newline). Identity tokens go in `identitytoken`.
pub fn docker_config_json(entries: &[RegistrySecret]) -> String {
    let auths = auths_value(entries.iter().map(|s| {
        (
            docker_key(&s.server),
            AuthEntry::from_secret(s, true).to_value(),
        )
    }));
    write_auths_file(auths)
}

/// A fresh containers `auth.json` as podman writes it: `{"auths":{KEY:{"auth"}}}`
/// (no email: c/image has no such field), tab indented, no trailing newline.
pub fn auth_json(entries: &[RegistrySecret]) -> String {
    let auths = auths_value(entries.iter().map(|s| {
        (
            containers_key(&s.server),
            AuthEntry::from_secret(s, false).to_value(),
        )
    }));
    write_auths_file(auths)
}

fn write_auths_file(auths: Value) -> String {
    let mut top = Map::new();
    top.insert("auths".into(), auths);
    marshal_indent(&Value::Object(top), "\t")
}

/// Where containers tools look for credentials, in order (c/image
/// `getAuthFilePaths`): `REGISTRY_AUTH_FILE` alone when set; else the runtime
/// file, the config-home file, docker's `config.json`, and `~/.dockercfg`.
pub fn auth_json_paths() -> Vec<PathBuf> {
    auth_json_paths_from(&|k| std::env::var_os(k), home_dir(), current_uid())
}

/// Docker's config file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn docker_config_path() -> PathBuf {
    docker_config_path_from(&|k| std::env::var_os(k), home_dir())
}

type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<std::ffi::OsString>;

fn env_nonempty(env: EnvLookup, key: &str) -> Option<PathBuf> {
    env(key).filter(|v| !v.is_empty()).map(PathBuf::from)
}

fn docker_config_path_from(env: EnvLookup, home: Option<PathBuf>) -> PathBuf {
    match env_nonempty(env, "DOCKER_CONFIG") {
        Some(dir) => dir.join("config.json"),
        None => home.unwrap_or_default().join(".docker").join("config.json"),
    }
}

fn auth_json_paths_from(env: EnvLookup, home: Option<PathBuf>, uid: Option<u32>) -> Vec<PathBuf> {
    if let Some(p) = env_nonempty(env, "REGISTRY_AUTH_FILE") {
        return vec![p];
    }
    let mut out = Vec::new();
    if cfg!(target_os = "linux") {
        match (env_nonempty(env, "XDG_RUNTIME_DIR"), uid) {
            (Some(dir), _) => out.push(dir.join("containers").join("auth.json")),
            (None, Some(uid)) => {
                out.push(PathBuf::from(format!("/run/containers/{uid}/auth.json")))
            }
            (None, None) => {}
        }
    } else if let Some(h) = &home {
        out.push(h.join(".config").join("containers").join("auth.json"));
    }
    let config_home =
        env_nonempty(env, "XDG_CONFIG_HOME").or_else(|| home.as_ref().map(|h| h.join(".config")));
    if let Some(c) = config_home {
        out.push(c.join("containers").join("auth.json"));
    }
    if env_nonempty(env, "DOCKER_CONFIG").is_some() || home.is_some() {
        out.push(docker_config_path_from(env, home.clone()));
    }
    if let Some(h) = &home {
        out.push(h.join(".dockercfg"));
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(p.clone()));
    out
}

fn home_dir() -> Option<PathBuf> {
    let var = if cfg!(windows) { "USERPROFILE" } else { "HOME" };
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The process's uid without libc: `/proc/self` belongs to it.
fn current_uid() -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").ok().map(|m| m.uid())
    }
    #[cfg(not(unix))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{
	"auths": {
		"https://index.docker.io/v1/": {"auth": "aHViOmh1Yi1wYXNz"},
		"quay.io": {"username": "q", "password": "q-pass", "email": "q@example.com"},
		"quay.io/org": {"auth": "b3JnOm9yZy1wYXNz"},
		"https://ghcr.io": {"auth": "dTo=", "identitytoken": "canary-token"},
		"empty.example.com": {},
		"notanobject.example.com": 5
	},
	"credHelpers": {"gcr.io": "gcloud", "quay.io/org/repo": "nope"},
	"credsStore": "desktop",
	"psFormat": "table {{.ID}}",
	"plugins": {"x": {"y": "z"}}
}"#;

    fn cfg() -> DockerConfig {
        DockerConfig::parse(CONFIG, "/cfg/config.json").unwrap()
    }

    fn creds(c: &DockerConfig, key: &str) -> Option<(String, String, String)> {
        match c.lookup(&ServerKey::parse(key).unwrap()) {
            Some(AuthLookup::Credentials(s)) => Some((
                s.server.clone(),
                s.username.clone(),
                s.password.expose_secret().to_string(),
            )),
            _ => None,
        }
    }

    #[test]
    fn lookup_normalizes_keys_and_prefers_specific_ones() {
        let c = cfg();
        let hub = creds(&c, "docker.io/library/alpine").unwrap();
        assert_eq!(hub.0, "https://index.docker.io/v1/");
        assert_eq!((hub.1.as_str(), hub.2.as_str()), ("hub", "hub-pass"));
        let org = creds(&c, "quay.io/org/app").unwrap();
        assert_eq!((org.1.as_str(), org.2.as_str()), ("org", "org-pass"));
        let other = creds(&c, "quay.io/other/app").unwrap();
        assert_eq!((other.1.as_str(), other.2.as_str()), ("q", "q-pass"));
        let gh = creds(&c, "ghcr.io").unwrap();
        assert_eq!(gh.0, "https://ghcr.io");
        assert_eq!((gh.1.as_str(), gh.2.as_str()), ("<token>", "canary-token"));
        assert!(creds(&c, "empty.example.com").is_none());
        assert!(c.lookup(&ServerKey::parse("unknown.io").unwrap()).is_none());
    }

    #[test]
    fn cred_helpers_come_first_and_are_registry_level() {
        let c = cfg();
        match c.lookup(&ServerKey::parse("gcr.io/project/img").unwrap()) {
            Some(AuthLookup::Helper(h)) => assert_eq!(h, "gcloud"),
            other => panic!("{other:?}"),
        }
        // The namespaced helper key is not honoured; the auths entry answers.
        assert!(creds(&c, "quay.io/org/repo").is_some());
        assert_eq!(c.creds_store(), Some("desktop"));
    }

    #[test]
    fn entries_skip_empty_ones_and_keep_file_order() {
        let servers: Vec<String> = cfg()
            .entries()
            .unwrap()
            .into_iter()
            .map(|s| s.server)
            .collect();
        assert_eq!(
            servers,
            [
                "https://index.docker.io/v1/",
                "quay.io",
                "quay.io/org",
                "https://ghcr.io"
            ]
        );
        let q = &cfg().entries().unwrap()[1];
        assert_eq!(q.email.as_deref(), Some("q@example.com"));
    }

    #[test]
    fn bad_auth_names_file_and_server_only() {
        // base64("canary") has no colon.
        let c = DockerConfig::parse(r#"{"auths":{"r.io":{"auth":"Y2FuYXJ5"}}}"#, "/x/auth.json")
            .unwrap();
        let err = c.entries().unwrap_err();
        assert!(matches!(err, ConfigFileError::BadAuth { ref server, .. } if server == "r.io"));
        let msg = err.to_string();
        assert!(msg.contains("/x/auth.json") && !msg.contains("canary") && !msg.contains("Y2Fu"));
        // lookup passes over it rather than failing the whole file.
        assert!(c.lookup(&ServerKey::parse("r.io").unwrap()).is_none());
    }

    #[test]
    fn load_handles_missing_malformed_and_legacy_files() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path().join("none.json")).unwrap().is_none());
        let bad = dir.path().join("config.json");
        std::fs::write(&bad, "{\"auths\": {\"r.io\": {\"auth\": \"canary").unwrap();
        let err = load(&bad).unwrap_err();
        assert!(matches!(err, ConfigFileError::Malformed { .. }));
        assert!(err.to_string().contains("config.json") && !err.to_string().contains("canary"));
        std::fs::write(&bad, "[1]").unwrap();
        assert!(matches!(
            load(&bad),
            Err(ConfigFileError::NotAnObject { .. })
        ));
        std::fs::write(&bad, "\n").unwrap();
        assert!(load(&bad).unwrap().unwrap().auths().is_empty());
        let legacy = dir.path().join(".dockercfg");
        std::fs::write(
            &legacy,
            r#"{"https://index.docker.io/v1/":{"auth":"aHViOmh1Yi1wYXNz","email":"h@example.com"}}"#,
        )
        .unwrap();
        let c = load(&legacy).unwrap().unwrap();
        assert!(c.is_legacy());
        assert_eq!(creds(&c, "docker.io").unwrap().1, "hub");
    }

    #[test]
    fn rewriting_keeps_unknown_keys_in_place() {
        let mut c = cfg();
        c.set(
            "docker.io",
            &RegistrySecret::new("docker.io", "new", SecretString::from("new-pass")),
        );
        assert_eq!(c.remove(&ServerKey::parse("quay.io").unwrap()), 1);
        let text = c.to_json();
        let again = DockerConfig::parse(&text, "x").unwrap();
        let keys: Vec<&String> = again.top.keys().collect();
        assert_eq!(
            keys,
            ["auths", "credHelpers", "credsStore", "psFormat", "plugins"]
        );
        let auth_keys: Vec<&str> = again.auths().iter().map(|(k, _)| k.as_str()).collect();
        // The Hub URL entry was replaced by the `docker.io` one; Go sorts keys.
        assert_eq!(
            auth_keys,
            [
                "docker.io",
                "empty.example.com",
                "https://ghcr.io",
                "quay.io/org"
            ]
        );
        assert_eq!(creds(&again, "docker.io").unwrap().1, "new");
        assert!(text.contains("\t\"psFormat\": \"table {{.ID}}\""));
        assert_eq!(creds(&again, "ghcr.io").unwrap().2, "canary-token");
    }

    #[test]
    fn rewriting_keeps_a_username_or_password_given_alone() {
        // Found by the docker_config fuzz target: `to_json` dropped these entries.
        let c = DockerConfig::parse(
            r#"{"auths":{"a.io":{"username":"u"},"b.io":{"password":"p"}}}"#,
            "x",
        )
        .unwrap();
        let again = DockerConfig::parse(&c.to_json(), "x").unwrap();
        assert_eq!(
            creds(&again, "a.io").unwrap(),
            ("a.io".into(), "u".into(), "".into())
        );
        assert_eq!(
            creds(&again, "b.io").unwrap(),
            ("b.io".into(), "".into(), "p".into())
        );
    }

    #[test]
    fn save_is_atomic_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("config.json");
        cfg().save(&path).unwrap();
        let back = load(&path).unwrap().unwrap();
        assert_eq!(back.entries().unwrap().len(), 4);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn writers_match_docker_and_podman_formats() {
        let mut a = RegistrySecret::new(
            "registry.example.com",
            "alice",
            SecretString::from("s3cr3t"),
        );
        a.email = Some("alice@example.com".into());
        let hub = RegistrySecret::new(
            "https://index.docker.io/v1/",
            "bob",
            SecretString::from("p<w"),
        );
        let tok = RegistrySecret::new("ghcr.io", "<token>", SecretString::from("tok"));
        let entries = [a, hub, tok];
        assert_eq!(
            docker_config_json(&entries),
            "{\n\t\"auths\": {\n\
             \t\t\"ghcr.io\": {\n\t\t\t\"identitytoken\": \"tok\"\n\t\t},\n\
             \t\t\"https://index.docker.io/v1/\": {\n\t\t\t\"auth\": \"Ym9iOnA8dw==\"\n\t\t},\n\
             \t\t\"registry.example.com\": {\n\t\t\t\"auth\": \"YWxpY2U6czNjcjN0\",\n\t\t\t\"email\": \"alice@example.com\"\n\t\t}\n\
             \t}\n}"
        );
        assert_eq!(
            auth_json(&entries),
            "{\n\t\"auths\": {\n\
             \t\t\"docker.io\": {\n\t\t\t\"auth\": \"Ym9iOnA8dw==\"\n\t\t},\n\
             \t\t\"ghcr.io\": {\n\t\t\t\"identitytoken\": \"tok\"\n\t\t},\n\
             \t\t\"registry.example.com\": {\n\t\t\t\"auth\": \"YWxpY2U6czNjcjN0\"\n\t\t}\n\
             \t}\n}"
        );
        assert_eq!(auth_json(&[]), "{\n\t\"auths\": {}\n}");
        // What we write reads back to the same credentials.
        let back = DockerConfig::parse(&docker_config_json(&entries), "x").unwrap();
        assert_eq!(back.entries().unwrap().len(), 3);
        assert_eq!(creds(&back, "docker.io").unwrap().2, "p<w");
    }

    #[test]
    fn keys_for_each_tool() {
        assert_eq!(docker_key("docker.io"), DOCKER_HUB_KEY);
        assert_eq!(docker_key(""), DOCKER_HUB_KEY);
        assert_eq!(docker_key("https://host:5000/v2/"), "host:5000");
        assert_eq!(containers_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(containers_key("docker.io/library"), "docker.io/library");
        assert_eq!(containers_key("quay.io/org"), "quay.io/org");
    }

    #[test]
    fn auth_file_lookup_order() {
        let home = Some(PathBuf::from("/home/u"));
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let only = env(&[
            ("REGISTRY_AUTH_FILE", "/a.json"),
            ("XDG_RUNTIME_DIR", "/run/user/1"),
        ]);
        assert_eq!(
            auth_json_paths_from(&only, home.clone(), Some(1)),
            [PathBuf::from("/a.json")]
        );
        let set = env(&[
            ("XDG_RUNTIME_DIR", "/run/user/1"),
            ("XDG_CONFIG_HOME", "/cfg"),
            ("DOCKER_CONFIG", "/dc"),
        ]);
        let got = auth_json_paths_from(&set, home.clone(), Some(1));
        let want: Vec<PathBuf> = if cfg!(target_os = "linux") {
            vec!["/run/user/1/containers/auth.json".into()]
        } else {
            vec!["/home/u/.config/containers/auth.json".into()]
        }
        .into_iter()
        .chain([
            "/cfg/containers/auth.json".into(),
            "/dc/config.json".into(),
            "/home/u/.dockercfg".into(),
        ])
        .collect();
        assert_eq!(got, want);
        let none = env(&[]);
        let got = auth_json_paths_from(&none, home.clone(), Some(1000));
        if cfg!(target_os = "linux") {
            assert_eq!(
                got,
                [
                    PathBuf::from("/run/containers/1000/auth.json"),
                    "/home/u/.config/containers/auth.json".into(),
                    "/home/u/.docker/config.json".into(),
                    "/home/u/.dockercfg".into(),
                ]
            );
        }
        assert_eq!(
            docker_config_path_from(&none, home),
            PathBuf::from("/home/u/.docker/config.json")
        );
        assert_eq!(
            docker_config_path_from(&set, None),
            PathBuf::from("/dc/config.json")
        );
    }

    #[test]
    fn debug_never_shows_credentials() {
        let d = format!("{:?}", cfg());
        for secret in ["hub-pass", "aHViOmh1Yi1wYXNz", "q-pass", "canary-token"] {
            assert!(!d.contains(secret), "{secret} in {d}");
        }
        assert!(d.contains("quay.io") && d.contains("psFormat"));
    }
}
