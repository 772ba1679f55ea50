//! Kubernetes Secret JSON/YAML: parse (one, or a List) and write exactly as kubectl does.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::gocompat::json::quote_into;
use crate::gocompat::yaml;
use crate::secret::{decode_base64, decode_basic_auth, RegistrySecret, DOCKER_HUB_KEY};

pub const TYPE_OPAQUE: &str = "Opaque";
pub const TYPE_DOCKERCONFIGJSON: &str = "kubernetes.io/dockerconfigjson";
pub const TYPE_DOCKERCFG: &str = "kubernetes.io/dockercfg";
pub const TYPE_TLS: &str = "kubernetes.io/tls";
pub const TYPE_BASIC_AUTH: &str = "kubernetes.io/basic-auth";

/// The Secret types we accept; anything else is more likely a mistake than a
/// Secret we could do something useful with.
const KNOWN_TYPES: [&str; 5] = [
    TYPE_DOCKERCONFIGJSON,
    TYPE_DOCKERCFG,
    TYPE_OPAQUE,
    TYPE_TLS,
    TYPE_BASIC_AUTH,
];

/// One Kubernetes Secret with its `data` decoded (and `stringData` merged in).
/// `Debug` lists the data keys, never their values.
#[derive(Clone, PartialEq, Eq)]
pub struct KubeSecret {
    pub name: String,
    pub namespace: Option<String>,
    /// The Secret's `type` field; `Opaque` when absent.
    pub kind: String,
    pub data: BTreeMap<String, Vec<u8>>,
}

impl fmt::Debug for KubeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeSecret")
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("kind", &self.kind)
            .field("data_keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Errors name the document, Secret and key involved, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeError {
    #[error("malformed {format}: {reason}")]
    Syntax {
        format: &'static str,
        reason: String,
    },
    #[error("no Secret found in the input")]
    Empty,
    #[error("{what}: expected {expected}")]
    Shape {
        what: String,
        expected: &'static str,
    },
    #[error("{what}: missing kind")]
    MissingKind { what: String },
    #[error("{what}: kind {kind:?} is not a Secret or a List of Secrets")]
    NotASecret { what: String, kind: String },
    #[error("{what}: missing metadata.name")]
    MissingName { what: String },
    #[error("secret {name:?}: unknown Secret type {kind:?}")]
    UnknownType { name: String, kind: String },
    #[error("secret {name:?}: data key {key:?} is not valid base64")]
    BadBase64 { name: String, key: String },
    #[error("secret {name:?}: type {kind:?} holds no registry credentials")]
    NotRegistrySecret { name: String, kind: String },
    #[error("secret {name:?}: missing data key {key:?}")]
    MissingKey { name: String, key: String },
    #[error("secret {name:?}: data key {key:?} is not a valid docker config: {reason}")]
    BadPayload {
        name: String,
        key: String,
        reason: String,
    },
    #[error("secret {name:?}: auth for server {server:?} {reason}")]
    BadAuth {
        name: String,
        server: String,
        reason: &'static str,
    },
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// Parses Secrets from JSON or YAML: one `kind: Secret`, a `kind: List` (or
/// `SecretList`) of them, or several YAML documents.
pub fn parse_secrets(text: &str) -> Result<Vec<KubeSecret>, KubeError> {
    let docs = parse_documents(text)?;
    let mut out = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        let what = if i == 0 {
            "document".to_string()
        } else {
            format!("document {}", i + 1)
        };
        collect_secrets(&doc, &what, &mut out)?;
    }
    if out.is_empty() {
        return Err(KubeError::Empty);
    }
    Ok(out)
}

fn parse_documents(text: &str) -> Result<Vec<Value>, KubeError> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        // serde_json's syntax messages name the position, never the input.
        let v: Value = serde_json::from_str(trimmed).map_err(|e| KubeError::Syntax {
            format: "JSON",
            reason: e.to_string(),
        })?;
        return Ok(vec![v]);
    }
    let mut docs = Vec::new();
    for de in serde_yaml::Deserializer::from_str(text) {
        let y = serde_yaml::Value::deserialize(de).map_err(|e| KubeError::Syntax {
            format: "YAML",
            reason: yaml_error_reason(&e),
        })?;
        if !y.is_null() {
            docs.push(yaml_to_json(y)?);
        }
    }
    Ok(docs)
}

/// serde_yaml's own syntax messages are fixed strings, but its data-level ones
/// (duplicate keys, type mismatches) quote the offending text, which may be a
/// secret: those are reduced to their location.
fn yaml_error_reason(e: &serde_yaml::Error) -> String {
    let msg = e.to_string();
    if !msg.contains(['"', '`']) {
        return msg;
    }
    match e.location() {
        Some(l) => format!(
            "invalid document structure at line {} column {}",
            l.line(),
            l.column()
        ),
        None => "invalid document structure".to_string(),
    }
}

/// YAML values become the JSON values the API server would see (sigs.k8s.io/yaml
/// turns scalar keys into strings the same way).
fn yaml_to_json(y: serde_yaml::Value) -> Result<Value, KubeError> {
    use serde_yaml::Value as Y;
    Ok(match y {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Null, Value::Number)
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(seq) => Value::Array(
            seq.into_iter()
                .map(yaml_to_json)
                .collect::<Result<_, _>>()?,
        ),
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s,
                    Y::Bool(b) => b.to_string(),
                    Y::Number(n) => n.to_string(),
                    Y::Null => "null".to_string(),
                    _ => {
                        return Err(KubeError::Syntax {
                            format: "YAML",
                            reason: "mapping key is not a scalar".to_string(),
                        })
                    }
                };
                out.insert(key, yaml_to_json(v)?);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => yaml_to_json(t.value)?,
    })
}

fn collect_secrets(doc: &Value, what: &str, out: &mut Vec<KubeSecret>) -> Result<(), KubeError> {
    let obj = doc.as_object().ok_or_else(|| KubeError::Shape {
        what: what.to_string(),
        expected: "an object",
    })?;
    match obj.get("kind").and_then(Value::as_str) {
        Some("Secret") => out.push(secret_from(obj, what)?),
        Some(k) if k.ends_with("List") => {
            let items = match obj.get("items") {
                None | Some(Value::Null) => return Ok(()),
                Some(Value::Array(items)) => items,
                Some(_) => {
                    return Err(KubeError::Shape {
                        what: format!("{what}: items"),
                        expected: "a list",
                    })
                }
            };
            for (i, item) in items.iter().enumerate() {
                let what = format!("{what}: items[{i}]");
                let item_obj = item.as_object().ok_or_else(|| KubeError::Shape {
                    what: what.clone(),
                    expected: "an object",
                })?;
                // The API server's SecretList leaves `kind` off its items.
                match item_obj.get("kind").and_then(Value::as_str) {
                    None | Some("Secret") => out.push(secret_from(item_obj, &what)?),
                    Some(kind) => {
                        return Err(KubeError::NotASecret {
                            what,
                            kind: kind.to_string(),
                        })
                    }
                }
            }
        }
        Some(kind) => {
            return Err(KubeError::NotASecret {
                what: what.to_string(),
                kind: kind.to_string(),
            })
        }
        None => {
            return Err(KubeError::MissingKind {
                what: what.to_string(),
            })
        }
    }
    Ok(())
}

fn secret_from(obj: &Map<String, Value>, what: &str) -> Result<KubeSecret, KubeError> {
    let meta = obj.get("metadata").and_then(Value::as_object);
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| KubeError::MissingName {
            what: what.to_string(),
        })?
        .to_string();
    let namespace = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    // The API server defaults an empty or absent type to Opaque.
    let kind = match obj.get("type") {
        None | Some(Value::Null) => TYPE_OPAQUE.to_string(),
        Some(Value::String(t)) if t.is_empty() => TYPE_OPAQUE.to_string(),
        Some(Value::String(t)) => t.clone(),
        Some(_) => {
            return Err(KubeError::Shape {
                what: format!("secret {name:?}: type"),
                expected: "a string",
            })
        }
    };
    if !KNOWN_TYPES.contains(&kind.as_str()) {
        return Err(KubeError::UnknownType { name, kind });
    }

    let mut data = BTreeMap::new();
    for (key, v) in string_map(obj.get("data"), &name, "data")? {
        let bytes = match v {
            None => Vec::new(),
            Some(s) => decode_base64(s).ok_or_else(|| KubeError::BadBase64 {
                name: name.clone(),
                key: key.clone(),
            })?,
        };
        data.insert(key.clone(), bytes);
    }
    // Like the API server: stringData entries win over data entries of the same key.
    for (key, v) in string_map(obj.get("stringData"), &name, "stringData")? {
        data.insert(key.clone(), v.unwrap_or_default().as_bytes().to_vec());
    }
    Ok(KubeSecret {
        name,
        namespace,
        kind,
        data,
    })
}

/// A map of string (or null) values; the error names the field and key, not the value.
fn string_map<'a>(
    v: Option<&'a Value>,
    name: &str,
    field: &str,
) -> Result<Vec<(&'a String, Option<&'a str>)>, KubeError> {
    let obj = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(o)) => o,
        Some(_) => {
            return Err(KubeError::Shape {
                what: format!("secret {name:?}: {field}"),
                expected: "a map",
            })
        }
    };
    obj.iter()
        .map(|(k, v)| match v {
            Value::Null => Ok((k, None)),
            Value::String(s) => Ok((k, Some(s.as_str()))),
            _ => Err(KubeError::Shape {
                what: format!("secret {name:?}: {field} key {k:?}"),
                expected: "a string",
            }),
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Registry entries
// ---------------------------------------------------------------------------

/// The registry credentials a `dockerconfigjson` or legacy `dockercfg` Secret
/// holds, in file order, with each server string kept as written. Entries with
/// no credentials at all are skipped.
pub fn registry_entries(s: &KubeSecret) -> Result<Vec<RegistrySecret>, KubeError> {
    let key = match s.kind.as_str() {
        TYPE_DOCKERCONFIGJSON => ".dockerconfigjson",
        TYPE_DOCKERCFG => ".dockercfg",
        _ => {
            return Err(KubeError::NotRegistrySecret {
                name: s.name.clone(),
                kind: s.kind.clone(),
            })
        }
    };
    let bad = |reason: String| KubeError::BadPayload {
        name: s.name.clone(),
        key: key.to_string(),
        reason,
    };
    let raw = s.data.get(key).ok_or_else(|| KubeError::MissingKey {
        name: s.name.clone(),
        key: key.to_string(),
    })?;
    // Only the position goes into the error: the payload is full of secrets.
    let payload: Value = serde_json::from_slice(raw).map_err(|e| {
        bad(format!(
            "not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let top = payload
        .as_object()
        .ok_or_else(|| bad("not a JSON object".to_string()))?;
    let servers = if s.kind == TYPE_DOCKERCONFIGJSON {
        match top.get("auths") {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Object(a)) => a,
            Some(_) => return Err(bad("\"auths\" is not an object".to_string())),
        }
    } else {
        top
    };

    let mut out = Vec::new();
    for (server, entry) in servers {
        let entry = entry
            .as_object()
            .ok_or_else(|| bad(format!("entry for {server:?} is not an object")))?;
        let field = |f: &str| -> Result<Option<&str>, KubeError> {
            match entry.get(f) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(v)) => Ok(Some(v.as_str()).filter(|v| !v.is_empty())),
                Some(_) => Err(bad(format!(
                    "field {f:?} of entry {server:?} is not a string"
                ))),
            }
        };
        let mut username = field("username")?.unwrap_or_default().to_string();
        let mut password = SecretString::from(field("password")?.unwrap_or_default());
        let email = field("email")?.map(str::to_string);
        if let Some(auth) = field("auth")? {
            let (u, p) = decode_basic_auth(auth).map_err(|reason| KubeError::BadAuth {
                name: s.name.clone(),
                server: server.clone(),
                reason,
            })?;
            username = u;
            password = p;
        }
        if let Some(token) = field("identitytoken")? {
            username = "<token>".to_string();
            password = SecretString::from(token);
        }
        if username.is_empty() && password.expose_secret().is_empty() {
            continue;
        }
        out.push(RegistrySecret {
            server: server.clone(),
            username,
            password,
            email,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Writers (byte-identical to kubectl 1.37 `create secret … --dry-run=client`)
// ---------------------------------------------------------------------------

/// The compact `.dockerconfigjson` payload kubectl writes:
/// `{"auths":{SERVER:{"username","password","email","auth"}}}`. Servers are
/// sorted like Go map keys; of two entries for the same server the last wins;
/// an empty server means Docker Hub (kubectl's default).
pub fn dockerconfigjson_payload(entries: &[RegistrySecret]) -> String {
    let mut by_server: BTreeMap<&str, &RegistrySecret> = BTreeMap::new();
    for e in entries {
        by_server.insert(server_or_hub(&e.server), e);
    }
    let mut out = String::from("{\"auths\":{");
    for (i, (server, e)) in by_server.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        quote_into(server, &mut out, true);
        out.push_str(":{");
        // kubectl's DockerConfigEntry: every field is `omitempty`, auth is always set.
        let password = e.password.expose_secret();
        let email = e.email.as_deref().unwrap_or_default();
        let auth = e.basic_auth();
        let fields = [
            ("username", e.username.as_str()),
            ("password", password),
            ("email", email),
            ("auth", auth.as_str()),
        ];
        let mut first = true;
        for (k, v) in fields.into_iter().filter(|(_, v)| !v.is_empty()) {
            if !first {
                out.push(',');
            }
            first = false;
            quote_into(k, &mut out, true);
            out.push(':');
            quote_into(v, &mut out, true);
        }
        out.push('}');
    }
    out.push_str("}}");
    out
}

fn server_or_hub(server: &str) -> &str {
    if server.is_empty() {
        DOCKER_HUB_KEY
    } else {
        server
    }
}

/// `kubectl create secret docker-registry NAME … -o json`.
pub fn docker_registry_json(
    name: &str,
    namespace: Option<&str>,
    entries: &[RegistrySecret],
) -> String {
    docker_registry_doc(name, namespace, entries).to_json()
}

/// `kubectl create secret docker-registry NAME … -o yaml`.
pub fn docker_registry_yaml(
    name: &str,
    namespace: Option<&str>,
    entries: &[RegistrySecret],
) -> String {
    docker_registry_doc(name, namespace, entries).to_yaml()
}

fn docker_registry_doc<'a>(
    name: &'a str,
    namespace: Option<&'a str>,
    entries: &[RegistrySecret],
) -> SecretDoc<'a> {
    let payload = Zeroizing::new(dockerconfigjson_payload(entries));
    let mut data = BTreeMap::new();
    data.insert(
        ".dockerconfigjson".to_string(),
        Zeroizing::new(b64(payload.as_bytes())),
    );
    SecretDoc {
        name,
        namespace,
        data,
        kind: Some(TYPE_DOCKERCONFIGJSON),
    }
}

/// `kubectl create secret generic NAME --from-literal=K=V … -o json`. kubectl
/// prints no `type` for generic Secrets (the server defaults it to Opaque) and
/// leaves `data` out when there is none.
pub fn generic_json(
    name: &str,
    namespace: Option<&str>,
    data: &BTreeMap<String, Vec<u8>>,
) -> String {
    generic_doc(name, namespace, data).to_json()
}

/// `kubectl create secret generic NAME … -o yaml`.
pub fn generic_yaml(
    name: &str,
    namespace: Option<&str>,
    data: &BTreeMap<String, Vec<u8>>,
) -> String {
    generic_doc(name, namespace, data).to_yaml()
}

fn generic_doc<'a>(
    name: &'a str,
    namespace: Option<&'a str>,
    data: &BTreeMap<String, Vec<u8>>,
) -> SecretDoc<'a> {
    SecretDoc {
        name,
        namespace,
        data: data
            .iter()
            .map(|(k, v)| (k.clone(), Zeroizing::new(b64(v))))
            .collect(),
        kind: None,
    }
}

/// `kubectl create secret tls NAME --cert=F --key=F -o json`; the files' bytes
/// go in unchanged.
pub fn tls_json(name: &str, namespace: Option<&str>, cert_pem: &[u8], key_pem: &[u8]) -> String {
    tls_doc(name, namespace, cert_pem, key_pem).to_json()
}

/// `kubectl create secret tls NAME --cert=F --key=F -o yaml`.
pub fn tls_yaml(name: &str, namespace: Option<&str>, cert_pem: &[u8], key_pem: &[u8]) -> String {
    tls_doc(name, namespace, cert_pem, key_pem).to_yaml()
}

fn tls_doc<'a>(
    name: &'a str,
    namespace: Option<&'a str>,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> SecretDoc<'a> {
    let mut data = BTreeMap::new();
    data.insert("tls.crt".to_string(), Zeroizing::new(b64(cert_pem)));
    data.insert("tls.key".to_string(), Zeroizing::new(b64(key_pem)));
    SecretDoc {
        name,
        namespace,
        data,
        kind: Some(TYPE_TLS),
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The shape kubectl prints for a new Secret; `data` values already base64.
struct SecretDoc<'a> {
    name: &'a str,
    namespace: Option<&'a str>,
    data: BTreeMap<String, Zeroizing<String>>,
    kind: Option<&'a str>,
}

impl SecretDoc<'_> {
    fn namespace(&self) -> Option<&str> {
        // ObjectMeta.namespace is `omitempty`.
        self.namespace.filter(|n| !n.is_empty())
    }

    /// kubectl's JSON printer: `json.MarshalIndent(obj, "", "    ")` + `\n`, with
    /// the fields in Go struct order (kind, apiVersion, metadata, data, type) and
    /// map keys sorted bytewise (BTreeMap order).
    fn to_json(&self) -> String {
        let mut out = String::from("{\n    \"kind\": \"Secret\",\n    \"apiVersion\": \"v1\",\n");
        out.push_str("    \"metadata\": {\n        \"name\": ");
        quote_into(self.name, &mut out, true);
        if let Some(ns) = self.namespace() {
            out.push_str(",\n        \"namespace\": ");
            quote_into(ns, &mut out, true);
        }
        out.push_str("\n    }");
        if !self.data.is_empty() {
            out.push_str(",\n    \"data\": {");
            for (i, (k, v)) in self.data.iter().enumerate() {
                out.push_str(if i == 0 { "\n        " } else { ",\n        " });
                quote_into(k, &mut out, true);
                out.push_str(": ");
                quote_into(v, &mut out, true);
            }
            out.push_str("\n    }");
        }
        if let Some(t) = self.kind {
            out.push_str(",\n    \"type\": ");
            quote_into(t, &mut out, true);
        }
        out.push_str("\n}\n");
        out
    }

    /// kubectl's YAML printer (JSON → sigs.k8s.io/yaml → go-yaml v2): keys sorted
    /// with go-yaml's natural order, two-space indent, scalars quoted only when
    /// go-yaml would.
    fn to_yaml(&self) -> String {
        let mut out = String::from("apiVersion: v1\n");
        if !self.data.is_empty() {
            out.push_str("data:\n");
            let mut keys: Vec<&String> = self.data.keys().collect();
            yaml::sort_keys(&mut keys);
            for k in keys {
                let v = self.data.get(k).map_or("", |v| v.as_str());
                yaml::mapping_entry("  ", k, v, &mut out);
            }
        }
        out.push_str("kind: Secret\nmetadata:\n");
        yaml::mapping_entry("  ", "name", self.name, &mut out);
        if let Some(ns) = self.namespace() {
            yaml::mapping_entry("  ", "namespace", ns, &mut out);
        }
        if let Some(t) = self.kind {
            yaml::mapping_entry("", "type", t, &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> String {
        b64(s.as_bytes())
    }

    fn dockerconfigjson_secret(payload: &str) -> String {
        format!(
            r#"{{"kind":"Secret","apiVersion":"v1","metadata":{{"name":"regcred"}},
               "type":"kubernetes.io/dockerconfigjson","data":{{".dockerconfigjson":"{}"}}}}"#,
            b(payload)
        )
    }

    fn one(text: &str) -> KubeSecret {
        let mut v = parse_secrets(text).unwrap();
        assert_eq!(v.len(), 1);
        v.remove(0)
    }

    #[test]
    fn parses_the_reference_example() {
        let s = one(&dockerconfigjson_secret(
            r#"{"auths":{"registry.example.com":{"username":"alice","password":"s3cr3t","email":"alice@example.com","auth":"YWxpY2U6czNjcjN0"}}}"#,
        ));
        assert_eq!(s.name, "regcred");
        assert_eq!(s.namespace, None);
        assert_eq!(s.kind, TYPE_DOCKERCONFIGJSON);
        let e = registry_entries(&s).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].server, "registry.example.com");
        assert_eq!(e[0].username, "alice");
        assert_eq!(e[0].password.expose_secret(), "s3cr3t");
        assert_eq!(e[0].email.as_deref(), Some("alice@example.com"));
    }

    #[test]
    fn parses_a_yaml_list_with_string_data_over_data() {
        let text = format!(
            "apiVersion: v1\nkind: List\nitems:\n\
             - apiVersion: v1\n  kind: Secret\n  metadata:\n    name: a\n    namespace: team\n  \
               data:\n    user: {}\n    pass: {}\n  stringData:\n    pass: override\n\
             - kind: Secret\n  metadata:\n    name: b\n  type: kubernetes.io/basic-auth\n",
            b("alice"),
            b("old")
        );
        let v = parse_secrets(&text).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].name, "a");
        assert_eq!(v[0].namespace.as_deref(), Some("team"));
        assert_eq!(v[0].kind, TYPE_OPAQUE);
        assert_eq!(v[0].data["user"], b"alice");
        assert_eq!(v[0].data["pass"], b"override");
        assert_eq!(v[1].kind, TYPE_BASIC_AUTH);
        assert!(v[1].data.is_empty());
    }

    #[test]
    fn parses_a_json_secret_list_whose_items_have_no_kind() {
        let text =
            r#"{"kind":"SecretList","items":[{"metadata":{"name":"x"},"data":{"k":"dg=="}}]}"#;
        let v = parse_secrets(text).unwrap();
        assert_eq!(v[0].data["k"], b"v");
    }

    #[test]
    fn parses_several_yaml_documents() {
        let text = "kind: Secret\nmetadata: {name: a}\n---\nkind: Secret\nmetadata: {name: b}\n";
        let names: Vec<String> = parse_secrets(text)
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn legacy_dockercfg_has_no_auths_wrapper() {
        let text = format!(
            r#"{{"kind":"Secret","metadata":{{"name":"old"}},"type":"kubernetes.io/dockercfg",
                "data":{{".dockercfg":"{}"}}}}"#,
            b(
                r#"{"https://index.docker.io/v1/":{"auth":"Ym9iOmh1bnRlcjI=","email":"bob@example.com"},"quay.io":{"username":"q","password":"w"}}"#
            )
        );
        let e = registry_entries(&one(&text)).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].server, "https://index.docker.io/v1/");
        assert_eq!(e[0].username, "bob");
        assert_eq!(e[0].password.expose_secret(), "hunter2");
        assert_eq!(e[1].server, "quay.io");
        assert_eq!(e[1].username, "q");
    }

    #[test]
    fn auth_overrides_username_and_password() {
        let s = one(&dockerconfigjson_secret(
            r#"{"auths":{"r.io":{"username":"wrong","password":"wrong","auth":"cmlnaHQ6cGE6c3M="}}}"#,
        ));
        let e = registry_entries(&s).unwrap();
        assert_eq!(e[0].username, "right");
        // Only the first colon separates; the password may contain more.
        assert_eq!(e[0].password.expose_secret(), "pa:ss");
    }

    #[test]
    fn identity_token_becomes_the_token_username() {
        let s = one(&dockerconfigjson_secret(
            r#"{"auths":{"r.io":{"auth":"dTo=","identitytoken":"tok-canary"}}}"#,
        ));
        let e = registry_entries(&s).unwrap();
        assert_eq!(e[0].username, "<token>");
        assert_eq!(e[0].password.expose_secret(), "tok-canary");
        assert!(e[0].is_identity_token());
    }

    #[test]
    fn entries_without_credentials_are_skipped_and_server_is_kept_verbatim() {
        let s = one(&dockerconfigjson_secret(
            r#"{"auths":{"https://Quay.io/v2/":{"username":"u","password":"p"},"empty.io":{}}}"#,
        ));
        let e = registry_entries(&s).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].server, "https://Quay.io/v2/");
    }

    #[test]
    fn bad_base64_names_secret_and_key_not_value() {
        let text = r#"{"kind":"Secret","metadata":{"name":"s"},"data":{"pw":"canary!!notb64"}}"#;
        let err = parse_secrets(text).unwrap_err();
        assert_eq!(
            err,
            KubeError::BadBase64 {
                name: "s".into(),
                key: "pw".into()
            }
        );
        assert!(!err.to_string().contains("canary"));
    }

    #[test]
    fn bad_auth_is_an_error_without_the_value() {
        // base64("canary-without-colon")
        let s = one(&dockerconfigjson_secret(
            r#"{"auths":{"r.io":{"auth":"Y2FuYXJ5LXdpdGhvdXQtY29sb24="}}}"#,
        ));
        let err = registry_entries(&s).unwrap_err();
        assert!(matches!(err, KubeError::BadAuth { ref server, .. } if server == "r.io"));
        assert!(!err.to_string().contains("canary"));
        let s = one(&dockerconfigjson_secret(
            r#"{"auths":{"r.io":{"auth":"%%%"}}}"#,
        ));
        assert!(matches!(
            registry_entries(&s),
            Err(KubeError::BadAuth { .. })
        ));
    }

    #[test]
    fn bad_payload_json_does_not_echo_the_payload() {
        let s = one(&dockerconfigjson_secret(
            r#"{"auths":{"r.io":{"password":"canary"#,
        ));
        let err = registry_entries(&s).unwrap_err();
        assert!(matches!(err, KubeError::BadPayload { .. }));
        assert!(!err.to_string().contains("canary"));
    }

    #[test]
    fn unknown_type_is_rejected() {
        let text = "kind: Secret\nmetadata:\n  name: s\ntype: example.com/mine\n";
        let err = parse_secrets(text).unwrap_err();
        assert!(err.to_string().contains("unknown Secret type"), "{err}");
    }

    #[test]
    fn missing_name_and_wrong_kind_are_rejected() {
        assert!(matches!(
            parse_secrets("kind: Secret\nmetadata: {}\n"),
            Err(KubeError::MissingName { .. })
        ));
        assert!(matches!(
            parse_secrets("kind: ConfigMap\nmetadata: {name: c}\n"),
            Err(KubeError::NotASecret { .. })
        ));
        assert!(matches!(
            parse_secrets(r#"{"kind":"List","items":[{"kind":"ConfigMap"}]}"#),
            Err(KubeError::NotASecret { .. })
        ));
        assert!(matches!(parse_secrets("  \n"), Err(KubeError::Empty)));
        assert!(matches!(
            parse_secrets("{\"kind\": "),
            Err(KubeError::Syntax { .. })
        ));
    }

    #[test]
    fn non_string_values_are_rejected_without_echoing_them() {
        let err = parse_secrets("kind: Secret\nmetadata: {name: s}\nstringData:\n  pin: 918273\n")
            .unwrap_err();
        assert!(matches!(err, KubeError::Shape { .. }));
        assert!(!err.to_string().contains("918273"));
    }

    #[test]
    fn syntax_errors_do_not_echo_the_input() {
        for text in [
            "kind: Secret\nmetadata: {name: s}\nstringData:\n  canary-key: canary\n  canary-key: canary2\n",
            "kind: Secret\nmetadata: {name: s}\nstringData:\n  pw: canary\n   bad: [\n",
            "kind: Secret\nstringData: {pw: \"canary\n",
            "{\"kind\":\"Secret\",\"stringData\":{\"pw\":\"canary\"",
            "? [canary]\n: x\n",
        ] {
            let err = parse_secrets(text).unwrap_err();
            assert!(matches!(err, KubeError::Syntax { .. }), "{err:?}");
            assert!(!err.to_string().contains("canary"), "{err}");
        }
    }

    #[test]
    fn opaque_secret_is_not_a_registry_secret() {
        let s = one("kind: Secret\nmetadata: {name: s}\n");
        assert!(matches!(
            registry_entries(&s),
            Err(KubeError::NotRegistrySecret { .. })
        ));
    }

    #[test]
    fn debug_shows_keys_not_values() {
        let s = one(&format!(
            "kind: Secret\nmetadata: {{name: s}}\ndata:\n  pw: {}\n",
            b("canary-value")
        ));
        let d = format!("{s:?}");
        assert!(d.contains("pw"));
        assert!(!d.contains("canary") && !d.contains(&b("canary-value")));
    }

    #[test]
    fn payload_matches_the_reference_and_escapes_like_go() {
        let mut e = RegistrySecret::new(
            "registry.example.com",
            "alice",
            SecretString::from("s3cr3t"),
        );
        e.email = Some("alice@example.com".into());
        assert_eq!(
            dockerconfigjson_payload(&[e]),
            r#"{"auths":{"registry.example.com":{"username":"alice","password":"s3cr3t","email":"alice@example.com","auth":"YWxpY2U6czNjcjN0"}}}"#
        );
        let e = RegistrySecret::new("", "<token>", SecretString::from("a&b\u{2028}\u{1}é"));
        let p = dockerconfigjson_payload(&[e]);
        assert!(p.starts_with(r#"{"auths":{"https://index.docker.io/v1/":{"username":"\u003ctoken\u003e","password":"a\u0026b\u2028\u0001é","#));
    }

    #[test]
    fn reference_json_document() {
        let mut e = RegistrySecret::new(
            "registry.example.com",
            "alice",
            SecretString::from("s3cr3t"),
        );
        e.email = Some("alice@example.com".into());
        let expected = "{\n    \"kind\": \"Secret\",\n    \"apiVersion\": \"v1\",\n    \"metadata\": {\n        \"name\": \"NAME\"\n    },\n    \"data\": {\n        \".dockerconfigjson\": \"eyJhdXRocyI6eyJyZWdpc3RyeS5leGFtcGxlLmNvbSI6eyJ1c2VybmFtZSI6ImFsaWNlIiwicGFzc3dvcmQiOiJzM2NyM3QiLCJlbWFpbCI6ImFsaWNlQGV4YW1wbGUuY29tIiwiYXV0aCI6IllXeHBZMlU2Y3pOamNqTjAifX19\"\n    },\n    \"type\": \"kubernetes.io/dockerconfigjson\"\n}\n";
        assert_eq!(docker_registry_json("NAME", None, &[e]), expected);
    }

    #[test]
    fn generic_omits_type_and_empty_data() {
        let json = generic_json("g", None, &BTreeMap::new());
        assert_eq!(
            json,
            "{\n    \"kind\": \"Secret\",\n    \"apiVersion\": \"v1\",\n    \"metadata\": {\n        \"name\": \"g\"\n    }\n}\n"
        );
        assert_eq!(
            generic_yaml("g", Some("ns"), &BTreeMap::new()),
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: g\n  namespace: ns\n"
        );
    }

    #[test]
    fn writers_round_trip_through_the_parser() {
        let mut data = BTreeMap::new();
        data.insert("a".to_string(), b"1".to_vec());
        data.insert("empty".to_string(), Vec::new());
        for text in [
            generic_json("g", Some("ns"), &data),
            generic_yaml("g", Some("ns"), &data),
        ] {
            let s = one(&text);
            assert_eq!(s.data, data);
            assert_eq!(s.namespace.as_deref(), Some("ns"));
            assert_eq!(s.kind, TYPE_OPAQUE);
        }
        let t = one(&tls_yaml("t", None, b"CERT", b"KEY"));
        assert_eq!(t.kind, TYPE_TLS);
        assert_eq!(t.data["tls.crt"], b"CERT");
    }
}
