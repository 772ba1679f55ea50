//! `SecretRef`: a reference to a secret value held elsewhere (`env://`, `file://`,
//! `cmd://`, `op://`, `vault://`, `secret://`), resolved at use time.

use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// A secret value as stored: either the value itself or where to fetch it.
#[derive(Clone)]
pub enum SecretValue {
    Literal(SecretString),
    Ref(SecretRef),
}

impl SecretValue {
    /// A value that parses as a reference (`env://…`) becomes one; anything else is literal.
    pub fn from_user(s: &str) -> Self {
        match SecretRef::parse(s) {
            Ok(Some(r)) => SecretValue::Ref(r),
            _ => SecretValue::Literal(SecretString::from(s.to_string())),
        }
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretValue::Literal(_) => f.write_str("Literal(********)"),
            SecretValue::Ref(r) => write!(f, "Ref({r})"),
        }
    }
}

/// Where a referenced value lives.
#[derive(Clone, PartialEq, Eq)]
enum Source {
    Env(String),
    File(PathBuf),
    Cmd {
        argv: Vec<String>,
        shell: bool,
    },
    Op(String),
    Vault {
        path: String,
        key: String,
    },
    Stored {
        namespace: String,
        name: String,
        key: Option<String>,
    },
}

/// A parsed reference plus its optional cache identity (`?cacheKey=K`).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretRef {
    source: Source,
    cache_key: Option<String>,
    raw: String,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RefError {
    #[error("invalid secret reference {0:?}: {1}")]
    Invalid(String, &'static str),
    #[error("environment variable {0} (from env://{0}) is not set")]
    EnvMissing(String),
    #[error("cannot read {path} (from file://): {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot run {cmd:?}: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("command {cmd:?} failed with {status}; its output is not shown because it may hold a secret")]
    CmdFailed { cmd: String, status: String },
    #[error("command {cmd:?} did not finish within {} and was killed", seconds_or_millis(*millis))]
    CmdTimeout { cmd: String, millis: u64 },
    #[error("command {cmd:?} printed nothing on stdout")]
    CmdEmpty { cmd: String },
    #[error("vault: {0}")]
    Vault(String),
    #[error("secret://{namespace}/{name} does not exist")]
    StoredMissing { namespace: String, name: String },
    #[error("secret://{namespace}/{name}: {reason}")]
    Stored {
        namespace: String,
        name: String,
        reason: StoredValueError,
    },
}

/// Why a stored secret gave no value for a `secret://` reference.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoredValueError {
    #[error("no secret store is available here")]
    NoStore,
    /// The secret exists but holds no value under this key (`(default)` for none).
    #[error("has no value {0:?}")]
    NoValue(String),
    /// The store failed; its error type lives above this module, so it comes boxed.
    #[error("{0}")]
    Store(Box<dyn std::error::Error + Send + Sync>),
    /// The stored value is itself a reference, and resolving it failed.
    #[error("{0}")]
    Ref(Box<RefError>),
}

/// Looks up stored secrets for `secret://NAMESPACE/NAME[/KEY]` references.
pub trait StoreLookup {
    fn lookup_value(
        &self,
        namespace: &str,
        name: &str,
        key: Option<&str>,
    ) -> Result<Option<SecretString>, StoredValueError>;
}

impl SecretRef {
    /// Parses `s` as a reference; `Ok(None)` when it is not one (a plain value).
    pub fn parse(s: &str) -> Result<Option<Self>, RefError> {
        let Some((scheme, rest)) = s.split_once("://") else {
            return Ok(None);
        };
        let invalid = |why| RefError::Invalid(s.to_string(), why);
        let (body, query) = split_query(rest);
        let mut cache_key = None;
        let mut shell = false;
        for (k, v) in query {
            match k {
                "cacheKey" if !v.is_empty() => cache_key = Some(v.to_string()),
                "shell" => shell = matches!(v, "1" | "true"),
                _ => return Err(invalid("unknown query parameter (known: cacheKey, shell)")),
            }
        }
        let source = match scheme {
            "env" => {
                if body.is_empty() || !body.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
                {
                    return Err(invalid("env:// needs a variable name"));
                }
                Source::Env(body.to_string())
            }
            "file" => {
                if body.is_empty() {
                    return Err(invalid("file:// needs a path"));
                }
                Source::File(PathBuf::from(body))
            }
            "cmd" => {
                let line = match body.strip_prefix('"') {
                    Some(inner) => inner
                        .strip_suffix('"')
                        .ok_or_else(|| invalid("unterminated quote"))?,
                    None => body,
                };
                let argv =
                    split_words(line).ok_or_else(|| invalid("unbalanced quotes in command"))?;
                if argv.is_empty() {
                    return Err(invalid("cmd:// needs a command"));
                }
                Source::Cmd { argv, shell }
            }
            "op" => {
                if body.split('/').filter(|p| !p.is_empty()).count() < 3 {
                    return Err(invalid("op:// needs VAULT/ITEM/FIELD"));
                }
                Source::Op(format!("op://{body}"))
            }
            "vault" => {
                let (path, key) = body
                    .rsplit_once('.')
                    .ok_or_else(|| invalid("vault:// needs PATH.KEY"))?;
                if path.trim_matches('/').is_empty()
                    || key.is_empty()
                    || path.split('/').any(|p| p == "..")
                {
                    return Err(invalid("vault:// needs MOUNT/PATH.KEY"));
                }
                Source::Vault {
                    path: path.trim_matches('/').to_string(),
                    key: key.to_string(),
                }
            }
            "secret" => {
                let parts: Vec<&str> = body.split('/').collect();
                match parts.as_slice() {
                    [ns, name] if !ns.is_empty() && !name.is_empty() => Source::Stored {
                        namespace: ns.to_string(),
                        name: name.to_string(),
                        key: None,
                    },
                    [ns, name, key] if !ns.is_empty() && !name.is_empty() && !key.is_empty() => {
                        Source::Stored {
                            namespace: ns.to_string(),
                            name: name.to_string(),
                            key: Some(key.to_string()),
                        }
                    }
                    _ => return Err(invalid("secret:// needs NAMESPACE/NAME[/KEY]")),
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(Self {
            source,
            cache_key,
            raw: s.to_string(),
        }))
    }

    /// This reference with a relative `file://` path made absolute against `cwd` (`.`
    /// components dropped), so a stored reference does not depend on where it is resolved.
    /// Other references are returned unchanged.
    pub fn with_absolute_path(self, cwd: &std::path::Path) -> Result<Self, RefError> {
        let Source::File(path) = &self.source else {
            return Ok(self);
        };
        if path.is_absolute() {
            return Ok(self);
        }
        let written = path.to_str().unwrap_or_default();
        let query = self
            .raw
            .strip_prefix("file://")
            .and_then(|r| r.strip_prefix(written))
            .unwrap_or_default();
        let abs: PathBuf = cwd
            .join(path)
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect();
        let Some(abs_str) = abs.to_str() else {
            return Err(RefError::Invalid(
                self.raw.clone(),
                "the current directory is not UTF-8; give an absolute file:// path",
            ));
        };
        let raw = format!("file://{abs_str}{query}");
        Ok(Self {
            source: Source::File(abs),
            cache_key: self.cache_key,
            raw,
        })
    }

    /// The reference as written (it names where the value is, never the value).
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The identity caches use for the resolved value: the `cacheKey` when given,
    /// else a salted hash of the value, so a rotated value gets a fresh entry.
    pub fn cache_identity(&self, value: &SecretString) -> String {
        match &self.cache_key {
            Some(k) => format!("key:{k}"),
            None => value_identity(value),
        }
    }
}

/// A salted (per process) hash of a secret value, usable as a cache key.
pub fn value_identity(value: &SecretString) -> String {
    static SALT: OnceLock<[u8; 16]> = OnceLock::new();
    let salt = SALT.get_or_init(|| {
        let mut s = [0u8; 16];
        // A failing OS RNG leaves a zero salt: identities stay correct, only less opaque.
        let _ = getrandom::fill(&mut s);
        s
    });
    let mut h = Sha256::new();
    h.update(salt);
    h.update(value.expose_secret().as_bytes());
    format!("sha256:{}", hex::encode(&h.finalize()[..16]))
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretRef({})", self.raw)
    }
}

/// Resolves references; holds what resolution needs (timeouts, the store for `secret://`).
pub struct RefResolver<'a> {
    pub cmd_timeout: Duration,
    pub store: Option<&'a dyn StoreLookup>,
}

impl Default for RefResolver<'_> {
    fn default() -> Self {
        Self {
            cmd_timeout: Duration::from_secs(10),
            store: None,
        }
    }
}

impl<'a> RefResolver<'a> {
    pub fn with_store(store: &'a dyn StoreLookup) -> Self {
        Self {
            store: Some(store),
            ..Self::default()
        }
    }

    pub fn resolve_value(&self, v: &SecretValue) -> Result<SecretString, RefError> {
        match v {
            SecretValue::Literal(s) => Ok(s.clone()),
            SecretValue::Ref(r) => self.resolve(r),
        }
    }

    pub fn resolve(&self, r: &SecretRef) -> Result<SecretString, RefError> {
        match &r.source {
            Source::Env(var) => match std::env::var(var) {
                Ok(v) => Ok(SecretString::from(v)),
                Err(_) => Err(RefError::EnvMissing(var.clone())),
            },
            Source::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| RefError::File {
                    path: path.display().to_string(),
                    source,
                })?;
                let trimmed = text.strip_suffix('\n').unwrap_or(&text);
                let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
                Ok(SecretString::from(trimmed.to_string()))
            }
            Source::Cmd { argv, shell } => {
                let mut cmd = if *shell {
                    let mut c = Command::new("sh");
                    c.arg("-c").arg(argv.join(" "));
                    c
                } else {
                    let mut c = Command::new(&argv[0]);
                    c.args(&argv[1..]);
                    c
                };
                run_capture(&mut cmd, &argv[0], self.cmd_timeout)
            }
            Source::Op(uri) => {
                let op = std::env::var("PULLSECRET_OP_BIN").unwrap_or_else(|_| "op".to_string());
                let mut cmd = Command::new(&op);
                cmd.args(["read", "--no-newline", uri]);
                run_capture(&mut cmd, "op read", self.cmd_timeout)
            }
            Source::Vault { path, key } => crate::secret::secret_ref::vault::read(path, key),
            Source::Stored {
                namespace,
                name,
                key,
            } => {
                let store = self.store.ok_or_else(|| RefError::Stored {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    reason: StoredValueError::NoStore,
                })?;
                match store.lookup_value(namespace, name, key.as_deref()) {
                    Ok(Some(v)) => Ok(v),
                    Ok(None) => Err(RefError::StoredMissing {
                        namespace: namespace.clone(),
                        name: name.clone(),
                    }),
                    Err(reason) => Err(RefError::Stored {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        reason,
                    }),
                }
            }
        }
    }
}

/// `10 s`, or `300 ms` for a timeout that is not whole seconds.
fn seconds_or_millis(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        format!("{} s", millis / 1000)
    } else {
        format!("{millis} ms")
    }
}

/// Runs `cmd` with no stdin, captures stdout (trimmed) and drops stderr, which may echo secrets.
fn run_capture(
    cmd: &mut Command,
    label: &str,
    timeout: Duration,
) -> Result<SecretString, RefError> {
    let (status, out) = run_with_timeout(cmd, label, None, timeout)?;
    if !status.success() {
        return Err(RefError::CmdFailed {
            cmd: label.to_string(),
            status: status.to_string(),
        });
    }
    let text = String::from_utf8_lossy(&out);
    let value = text.trim();
    if value.is_empty() {
        return Err(RefError::CmdEmpty {
            cmd: label.to_string(),
        });
    }
    Ok(SecretString::from(value.to_string()))
}

/// Runs `cmd` with `input` (or nothing) on stdin, stderr dropped (it may echo secrets), and
/// kills it when it has not finished within `timeout`. Returns its status and its stdout,
/// which is wiped when dropped. Errors name `label`, never the output.
pub(crate) fn run_with_timeout(
    cmd: &mut Command,
    label: &str,
    input: Option<&[u8]>,
    timeout: Duration,
) -> Result<(std::process::ExitStatus, zeroize::Zeroizing<Vec<u8>>), RefError> {
    use std::io::Write;
    use wait_timeout::ChildExt;
    let stdin = if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let mut child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| RefError::Spawn {
            cmd: label.to_string(),
            source,
        })?;
    let mut stdout = child.stdout.take().ok_or_else(|| RefError::Spawn {
        cmd: label.to_string(),
        source: std::io::Error::other("no stdout pipe"),
    })?;
    if let (Some(input), Some(mut pipe)) = (input, child.stdin.take()) {
        // Small input fits the pipe buffer; a command that exits without reading it is fine.
        let _ = pipe.write_all(input);
    }
    // Read on a thread so a chatty command cannot block on a full pipe while we wait.
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let status = match child.wait_timeout(timeout) {
        Ok(Some(status)) => status,
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(RefError::CmdTimeout {
                cmd: label.to_string(),
                millis: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            });
        }
        Err(source) => {
            return Err(RefError::Spawn {
                cmd: label.to_string(),
                source,
            })
        }
    };
    let out = zeroize::Zeroizing::new(reader.join().unwrap_or_default());
    Ok((status, out))
}

/// Splits a trailing `?k=v&k=v` off `rest` when every pair names a known parameter.
fn split_query(rest: &str) -> (&str, Vec<(&str, &str)>) {
    if let Some((body, q)) = rest.rsplit_once('?') {
        let pairs: Vec<(&str, &str)> = q
            .split('&')
            .map(|p| p.split_once('=').unwrap_or((p, "")))
            .collect();
        if pairs
            .iter()
            .all(|(k, _)| matches!(*k, "cacheKey" | "shell"))
        {
            return (body, pairs);
        }
    }
    (rest, Vec::new())
}

/// Shell-like word splitting with single quotes, double quotes and backslashes; no expansion.
fn split_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => cur.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => cur.push(chars.next()?),
                        c => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.push(chars.next()?);
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Some(words)
}

mod vault;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> SecretRef {
        SecretRef::parse(s).unwrap().unwrap()
    }

    #[test]
    fn plain_values_are_not_references() {
        assert!(SecretRef::parse("hunter2").unwrap().is_none());
        assert!(SecretRef::parse("https://example.com").unwrap().is_none());
    }

    #[test]
    fn parses_each_scheme() {
        assert!(matches!(parse("env://TOKEN").source, Source::Env(ref v) if v == "TOKEN"));
        assert!(
            matches!(parse("file:///run/pw").source, Source::File(ref p) if p == &PathBuf::from("/run/pw"))
        );
        match parse(r#"cmd://"gh auth token --host 'a b'""#).source {
            Source::Cmd { argv, shell } => {
                assert_eq!(argv, ["gh", "auth", "token", "--host", "a b"]);
                assert!(!shell);
            }
            _ => panic!("not cmd"),
        }
        assert!(
            matches!(parse("op://vault/item/field").source, Source::Op(ref u) if u == "op://vault/item/field")
        );
        match parse("vault://secret/ci/registry.password").source {
            Source::Vault { path, key } => {
                assert_eq!(path, "secret/ci/registry");
                assert_eq!(key, "password");
            }
            _ => panic!("not vault"),
        }
        assert!(matches!(
            parse("secret://team-a/regcred").source,
            Source::Stored { key: None, .. }
        ));
    }

    #[test]
    fn relative_file_paths_become_absolute() {
        let cwd = std::path::Path::new("/work/dir");
        for (given, want) in [
            ("file://pw.txt", "file:///work/dir/pw.txt"),
            ("file://./sub/pw", "file:///work/dir/sub/pw"),
            ("file://pw?cacheKey=k", "file:///work/dir/pw?cacheKey=k"),
            ("file:///etc/pw", "file:///etc/pw"),
            ("env://PW", "env://PW"),
        ] {
            let r = parse(given).with_absolute_path(cwd).unwrap();
            assert_eq!(r.as_str(), want, "{given}");
            // What is stored parses back to the same reference.
            assert!(parse(r.as_str()) == r, "{given}");
        }
    }

    #[test]
    fn cache_key_query_names_the_identity() {
        let r = parse(r#"cmd://"gh auth token"?cacheKey=gh"#);
        assert_eq!(r.cache_identity(&SecretString::from("one")), "key:gh");
        assert_eq!(r.cache_identity(&SecretString::from("two")), "key:gh");
        let h = parse("env://X");
        assert_ne!(
            h.cache_identity(&SecretString::from("one")),
            h.cache_identity(&SecretString::from("two"))
        );
    }

    #[test]
    fn malformed_references_are_errors() {
        for s in [
            "env://",
            "env://A-B",
            "cmd://",
            "op://vault/item",
            "vault://nokey",
            "secret://onlyns",
            r#"cmd://"x"#,
        ] {
            assert!(SecretRef::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn file_reference_trims_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        let r = parse(&format!("file://{}", p.display()));
        assert_eq!(
            RefResolver::default().resolve(&r).unwrap().expose_secret(),
            "s3cret"
        );
    }

    #[test]
    fn cmd_failure_names_the_command_but_not_its_output() {
        let r = parse(r#"cmd://"sh -c 'echo leaked-canary; exit 3'""#);
        let err = RefResolver::default().resolve(&r).unwrap_err().to_string();
        assert!(err.contains("\"sh\""), "{err}");
        assert!(!err.contains("leaked-canary"), "{err}");
        let ok = parse(r#"cmd://"echo  tok-123 ""#);
        assert_eq!(
            RefResolver::default().resolve(&ok).unwrap().expose_secret(),
            "tok-123"
        );
    }

    #[test]
    fn cmd_times_out() {
        let r = parse(r#"cmd://"sleep 5""#);
        let res = RefResolver {
            cmd_timeout: Duration::from_millis(200),
            store: None,
        }
        .resolve(&r);
        assert!(matches!(res, Err(RefError::CmdTimeout { .. })));
    }
}
