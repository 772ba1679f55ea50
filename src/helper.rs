//! The docker credential-helper protocol (`store|get|erase|list|version`), byte-compatible
//! with docker-credential-helpers. Synchronous: `get` must start and answer in milliseconds.

use std::io::{BufRead, Read, Write};

use secrecy::{ExposeSecret, SecretString};

use crate::gocompat::json::quote;
use crate::secret::{RegistrySecret, ServerKey, ServerKeyError};
use crate::store::chain::{Chain, ChainError};
use crate::store::cred_helper::NOT_FOUND;
use crate::store::{login, SecretStore, StoreError};

/// docker-credential-helpers reads stdin with a bufio.Scanner: 64 KiB per line at most.
const MAX_LINE: usize = 64 * 1024;

/// Why a helper invocation failed; its `Display` is the line printed on stdout (exit 1).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HelperError {
    /// `get` found nothing: the one place that prints docker's not-found text.
    #[error("{}", NOT_FOUND)]
    NotFound,
    /// Not exactly one argument; holds the program name for the usage line.
    #[error("Usage: {0} <store|get|erase|list|version>")]
    Usage(String),
    /// A malformed request, worded as docker-credential-helpers words it.
    #[error("{0}")]
    Protocol(String),
    #[error(transparent)]
    ServerKey(#[from] ServerKeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Lookup(#[from] ChainError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Everything the helper needs: the store and how to search beyond it.
pub struct Helper<'a> {
    pub store: &'a dyn SecretStore,
    pub namespace: String,
    pub kube_dirs: Vec<std::path::PathBuf>,
}

/// Runs one helper invocation; returns the exit code. Every error goes to `out`.
/// `args` are the arguments after the program name, which `argv0` gives (for the usage line).
pub fn run(
    helper: &Helper,
    argv0: &str,
    args: &[String],
    input: &mut dyn Read,
    out: &mut dyn Write,
) -> i32 {
    let result = match args {
        [verb] => helper.verb(verb, input, out),
        _ => Err(HelperError::Usage(argv0.to_string())),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(out, "{e}");
            1
        }
    }
}

impl Helper<'_> {
    /// Runs one verb; `version` needs no input, the others read stdin first.
    fn verb(
        &self,
        verb: &str,
        input: &mut dyn Read,
        out: &mut dyn Write,
    ) -> Result<(), HelperError> {
        match verb {
            "version" | "--version" | "-v" => {
                let _ = writeln!(
                    out,
                    "docker-credential-pullsecret (pullsecret) {}",
                    env!("CARGO_PKG_VERSION")
                );
                Ok(())
            }
            "store" | "get" | "erase" | "list" => {
                let text = read_input(input)?;
                match verb {
                    "store" => self.store_cmd(&text),
                    "get" => self.get_cmd(&text, out),
                    "erase" => self.erase_cmd(&text),
                    _ => self.list_cmd(out),
                }
            }
            other => Err(HelperError::Protocol(format!(
                "Unknown credential action `{other}`"
            ))),
        }
    }
}

/// Reads stdin the way Go's `bufio.Scanner` does: lines joined without their newlines.
fn read_input(input: &mut dyn Read) -> Result<zeroize::Zeroizing<String>, HelperError> {
    let mut joined = zeroize::Zeroizing::new(String::new());
    let mut reader = std::io::BufReader::new(input.take(16 * MAX_LINE as u64 + 1));
    let mut line = zeroize::Zeroizing::new(Vec::new());
    let mut total = 0usize;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        total += n;
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if body.len() >= MAX_LINE || total > 16 * MAX_LINE {
            return Err(HelperError::Protocol(
                "bufio.Scanner: token too long".into(),
            ));
        }
        joined.push_str(&String::from_utf8_lossy(body));
    }
    Ok(joined)
}

impl Helper<'_> {
    fn store_cmd(&self, text: &str) -> Result<(), HelperError> {
        let creds = parse_credentials(text)?;
        if creds.server_url.is_empty() {
            return Err(HelperError::Protocol("no credentials server URL".into()));
        }
        if creds.username.is_empty() {
            return Err(HelperError::Protocol("no credentials username".into()));
        }
        ServerKey::parse(&creds.server_url)?;
        // Re-storing the same server replaces its login secret; named secrets stay untouched.
        let entry = RegistrySecret::new(creds.server_url, creds.username, creds.secret);
        login::store_login(self.store, &self.namespace, entry)?;
        Ok(())
    }

    fn get_cmd(&self, text: &str, out: &mut dyn Write) -> Result<(), HelperError> {
        let server = text.trim();
        if server.is_empty() {
            return Err(HelperError::Protocol("no credentials server URL".into()));
        }
        let chain = Chain {
            store: self.store,
            namespace: self.namespace.clone(),
            kube_dirs: self.kube_dirs.clone(),
        };
        match chain.lookup(server) {
            Ok(Some((secret, _))) => {
                let line = credentials_json(server, &secret);
                Ok(out.write_all(line.as_bytes())?)
            }
            Ok(None) => Err(HelperError::NotFound),
            Err(e) => Err(e.into()),
        }
    }

    fn erase_cmd(&self, text: &str) -> Result<(), HelperError> {
        let server = text.trim();
        if server.is_empty() {
            return Err(HelperError::Protocol("no credentials server URL".into()));
        }
        let Ok(key) = ServerKey::parse(server) else {
            return Ok(());
        };
        // Only what login stored: a secret created or imported by name may be referenced by a
        // proxy config and is removed only by `secret delete`. Erasing what is not there
        // succeeds silently, as docker-credential-secretservice does; skopeo and podman loop on
        // logout otherwise.
        login::erase_login(self.store, &self.namespace, &key)?;
        Ok(())
    }

    fn list_cmd(&self, out: &mut dyn Write) -> Result<(), HelperError> {
        let secrets = self.store.list(Some(&self.namespace))?;
        // Go encodes maps with sorted keys.
        let mut map = std::collections::BTreeMap::new();
        for e in secrets.iter().flat_map(|s| s.registries()) {
            map.insert(e.server, e.username);
        }
        let body: Vec<String> = map
            .iter()
            .map(|(k, v)| format!("{}:{}", quote(k), quote(v)))
            .collect();
        Ok(writeln!(out, "{{{}}}", body.join(","))?)
    }
}

/// `{"ServerURL":…,"Username":…,"Secret":…}` plus newline, as Go's encoder writes it.
pub fn credentials_json(server: &str, s: &RegistrySecret) -> String {
    format!(
        "{{\"ServerURL\":{},\"Username\":{},\"Secret\":{}}}\n",
        quote(server),
        quote(&s.username),
        quote(s.password.expose_secret())
    )
}

struct Credentials {
    server_url: String,
    username: String,
    secret: SecretString,
}

/// Decodes the `store` payload with Go's rules: field names match case-insensitively,
/// unknown fields are ignored, `null` leaves a field empty, the last duplicate wins.
fn parse_credentials(text: &str) -> Result<Credentials, HelperError> {
    let value: serde_json::Value = {
        let mut de = serde_json::Deserializer::from_str(text);
        serde::Deserialize::deserialize(&mut de)
            .map_err(|e| HelperError::Protocol(go_syntax_error(text, &e)))?
    };
    let obj = match value {
        serde_json::Value::Object(m) => m,
        other => {
            return Err(HelperError::Protocol(format!(
                "json: cannot unmarshal {} into Go value of type credentials.Credentials",
                go_kind(&other)
            )))
        }
    };
    let mut creds = Credentials {
        server_url: String::new(),
        username: String::new(),
        secret: SecretString::from(String::new()),
    };
    for (k, v) in obj {
        let field = match k.to_ascii_lowercase().as_str() {
            "serverurl" => "ServerURL",
            "username" => "Username",
            "secret" => "Secret",
            _ => continue,
        };
        let s = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Null => continue,
            other => {
                return Err(HelperError::Protocol(format!(
                "json: cannot unmarshal {} into Go struct field Credentials.{field} of type string",
                go_kind(&other)
            )))
            }
        };
        match field {
            "ServerURL" => creds.server_url = s,
            "Username" => creds.username = s,
            _ => creds.secret = SecretString::from(s),
        }
    }
    Ok(creds)
}

fn go_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Go's message for the first syntax error in `text` (its decoder reads only the first value).
fn go_syntax_error(text: &str, e: &serde_json::Error) -> String {
    if text.trim().is_empty() {
        return "EOF".into();
    }
    if e.is_eof() {
        return "unexpected EOF".into();
    }
    crate::gocompat::json_syntax::describe(text).unwrap_or_else(|| "invalid JSON".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_prints_dockers_text_and_nothing_else_does() {
        assert_eq!(
            HelperError::NotFound.to_string(),
            "credentials not found in native keychain"
        );
        let store = StoreError::NotFound {
            namespace: "default".into(),
            name: "regcred".into(),
        };
        assert_ne!(HelperError::from(store).to_string(), NOT_FOUND);
    }
}
