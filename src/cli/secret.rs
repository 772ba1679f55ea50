//! `pullsecret secret …`: create, import, list, inspect, export and delete stored secrets.

// Warnings about what an import skipped.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use secrecy::{ExposeSecret, SecretString};

use super::output::{ago, out, outln, table};
use super::Ctx;
use crate::secret::{
    validate_name, RefResolver, RegistrySecret, SecretValue, ServerKey, DOCKER_HUB_KEY,
};
use crate::store::docker_config;
use crate::store::kube::{self};
use crate::store::{
    now_unix, validate_namespace, Origin, Scope, SecretData, StoreRefs, StoredSecret,
};

#[derive(Subcommand, Debug)]
pub enum SecretCmd {
    /// Create a secret (docker-registry, generic or tls), like `kubectl create secret`.
    #[command(subcommand)]
    Create(CreateCmd),
    /// Import Kubernetes Secret JSON/YAML, a docker config.json or a containers auth.json.
    Import(ImportArgs),
    /// List secrets.
    List(ListArgs),
    /// Show one secret; passwords hidden unless --show-secret.
    Inspect(InspectArgs),
    /// Delete secrets by name.
    Delete(DeleteArgs),
    /// Print a secret as a Kubernetes Secret, dockerconfigjson, auth.json or docker config.
    Export(ExportArgs),
}

#[derive(Subcommand, Debug)]
pub enum CreateCmd {
    /// Registry credentials (server, username, password, email).
    DockerRegistry(DockerRegistryArgs),
    /// Arbitrary key/value pairs.
    Generic(GenericArgs),
    /// A TLS certificate and key.
    Tls(TlsArgs),
}

#[derive(Args, Debug)]
pub struct Common {
    /// Namespace (default from PULLSECRET_NAMESPACE or config, else `default`).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Who may use the secret.
    #[arg(long, default_value = "namespace", value_parser = ["namespace", "global", "global-private"])]
    scope: String,
    /// Only print the Secret that would be stored (`client`), store nothing.
    #[arg(long, num_args = 0..=1, default_missing_value = "client", require_equals = true, value_parser = ["none", "client"])]
    dry_run: Option<String>,
    /// Output format for --dry-run.
    #[arg(short = 'o', long, value_parser = ["json", "yaml"])]
    output: Option<String>,
    /// Replace an existing secret of the same name.
    #[arg(long)]
    overwrite: bool,
}

#[derive(Args, Debug)]
pub struct DockerRegistryArgs {
    /// Name of the secret.
    name: String,
    /// Registry server, optionally with a repository prefix (`quay.io/org`).
    #[arg(long, default_value = DOCKER_HUB_KEY)]
    docker_server: String,
    /// User name for the registry.
    #[arg(long)]
    docker_username: Option<String>,
    /// The password (visible in `ps`; prefer --docker-password-stdin or --docker-password-ref).
    #[arg(long, conflicts_with_all = ["docker_password_stdin", "docker_password_ref"])]
    docker_password: Option<String>,
    /// Read the password from stdin.
    #[arg(long, conflicts_with = "docker_password_ref")]
    docker_password_stdin: bool,
    /// A reference resolved at use time: env://, file://, cmd://, op://, vault://, secret://.
    #[arg(long)]
    docker_password_ref: Option<String>,
    /// Email stored with the credentials (kept for Kubernetes compatibility).
    #[arg(long)]
    docker_email: Option<String>,
    /// `.dockerconfigjson=PATH`: take the credentials from a docker config file.
    #[arg(long, conflicts_with_all = ["docker_username", "docker_password", "docker_password_stdin", "docker_password_ref"])]
    from_file: Vec<String>,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug)]
pub struct GenericArgs {
    /// Name of the secret.
    name: String,
    /// KEY=VALUE
    #[arg(long)]
    from_literal: Vec<String>,
    /// [KEY=]PATH
    #[arg(long)]
    from_file: Vec<String>,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug)]
pub struct TlsArgs {
    /// Name of the secret.
    name: String,
    /// PEM certificate (chain) file.
    #[arg(long)]
    cert: PathBuf,
    /// PEM private key file.
    #[arg(long)]
    key: PathBuf,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Kubernetes Secret JSON/YAML file (one Secret or a List); `-` for stdin.
    #[arg(short = 'f', long, conflicts_with_all = ["from_docker_config", "from_auth_json"])]
    file: Option<String>,
    /// Import `auths` from a docker config.json (default $DOCKER_CONFIG/config.json).
    #[arg(long, num_args = 0..=1, default_missing_value = "", require_equals = true, conflicts_with = "from_auth_json")]
    from_docker_config: Option<String>,
    /// Import from a containers auth.json (default: the first in podman's lookup order).
    #[arg(long, num_args = 0..=1, default_missing_value = "", require_equals = true)]
    from_auth_json: Option<String>,
    /// Import what docker-credential-secretservice stored in the Secret Service.
    #[arg(long, conflicts_with_all = ["file", "from_docker_config", "from_auth_json"])]
    from_docker_keychain: bool,
    /// Namespace (default from PULLSECRET_NAMESPACE or config, else `default`).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Who may use the imported secrets.
    #[arg(long, default_value = "namespace", value_parser = ["namespace", "global", "global-private"])]
    scope: String,
    /// Replace existing secrets of the same name.
    #[arg(long)]
    overwrite: bool,
    /// Import each Kubernetes Secret into its own `metadata.namespace` (Secrets without one go
    /// to -n or the default namespace). Without it, a Secret whose namespace differs is an error.
    #[arg(long)]
    use_file_namespace: bool,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Namespace (default from PULLSECRET_NAMESPACE or config, else `default`).
    #[arg(short = 'n', long, conflicts_with = "all_namespaces")]
    namespace: Option<String>,
    /// List secrets in every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Output format: a table, `wide` (adds email and origin), `name` (`secret/NAME` lines),
    /// `json` or `yaml` (times in RFC 3339).
    #[arg(short = 'o', long, default_value = "table", value_parser = ["table", "wide", "name", "json", "yaml"])]
    output: String,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Name of the secret.
    name: String,
    /// Namespace (default from PULLSECRET_NAMESPACE or config, else `default`).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, default_value = "json", value_parser = ["json", "yaml"])]
    output: String,
    /// Print secret values instead of ********.
    #[arg(long)]
    show_secret: bool,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Names of the secrets to delete (all or none are deleted).
    #[arg(required = true)]
    names: Vec<String>,
    /// Namespace (default from PULLSECRET_NAMESPACE or config, else `default`).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Name of the secret.
    name: String,
    /// Namespace (default from PULLSECRET_NAMESPACE or config, else `default`).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// What to print: a Kubernetes Secret, the .dockerconfigjson payload, a containers
    /// auth.json or a docker config.json.
    #[arg(long, default_value = "k8s", value_parser = ["k8s", "dockerconfigjson", "auth.json", "docker-config"])]
    format: String,
    /// Kubernetes output as yaml instead of json.
    #[arg(short = 'o', long, default_value = "json", value_parser = ["json", "yaml"])]
    output: String,
}

pub fn run(ctx: &Ctx, cmd: &SecretCmd) -> Result<()> {
    match cmd {
        SecretCmd::Create(CreateCmd::DockerRegistry(a)) => create_docker_registry(ctx, a),
        SecretCmd::Create(CreateCmd::Generic(a)) => create_generic(ctx, a),
        SecretCmd::Create(CreateCmd::Tls(a)) => create_tls(ctx, a),
        SecretCmd::Import(a) => import(ctx, a),
        SecretCmd::List(a) => list(ctx, a),
        SecretCmd::Inspect(a) => inspect(ctx, a),
        SecretCmd::Delete(a) => {
            let ns = ctx.namespace(a.namespace.as_deref());
            validate_namespace(&ns)?;
            ctx.store.delete(&ns, &a.names)?;
            for n in &a.names {
                outln!("secret \"{n}\" deleted");
            }
            Ok(())
        }
        SecretCmd::Export(a) => export(ctx, a),
    }
}

fn create_docker_registry(ctx: &Ctx, a: &DockerRegistryArgs) -> Result<()> {
    let (server, username, password, email) = if let Some(spec) = a.from_file.first() {
        let path = spec.strip_prefix(".dockerconfigjson=").ok_or_else(|| {
            anyhow!("--from-file must be .dockerconfigjson=PATH for docker-registry secrets")
        })?;
        let entry = single_entry_from_config(Path::new(path))?;
        let email = entry.email.clone();
        (
            entry.server,
            entry.username,
            SecretValue::Literal(entry.password),
            email,
        )
    } else {
        let username = a
            .docker_username
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| anyhow!("required flag --docker-username not set"))?;
        let password = if let Some(p) = &a.docker_password {
            SecretValue::Literal(SecretString::from(p.clone()))
        } else if a.docker_password_stdin {
            SecretValue::Literal(read_password_stdin()?)
        } else if let Some(r) = &a.docker_password_ref {
            match crate::secret::SecretRef::parse(r)? {
                // A relative file:// is relative to here, not to wherever it is resolved later.
                Some(r) => SecretValue::Ref(r.with_absolute_path(
                    &std::env::current_dir().context("the current directory")?,
                )?),
                None => bail!("--docker-password-ref {r:?} is not a reference (env://, file://, cmd://, op://, vault://, secret://)"),
            }
        } else {
            bail!("one of --docker-password, --docker-password-stdin or --docker-password-ref is required");
        };
        ServerKey::parse(&a.docker_server)
            .with_context(|| format!("--docker-server {:?}", a.docker_server))?;
        (
            a.docker_server.clone(),
            username,
            password,
            a.docker_email.clone().filter(|e| !e.is_empty()),
        )
    };
    let data = SecretData::DockerRegistry {
        server,
        username,
        password,
        email,
        also: Vec::new(),
    };
    finish_create(ctx, &a.name, &a.common, data)
}

fn create_generic(ctx: &Ctx, a: &GenericArgs) -> Result<()> {
    let mut map = BTreeMap::new();
    for lit in &a.from_literal {
        let (k, v) = lit
            .split_once('=')
            .ok_or_else(|| anyhow!("--from-literal must be KEY=VALUE"))?;
        check_key(k)?;
        if map
            .insert(
                k.to_string(),
                SecretValue::Literal(SecretString::from(v.to_string())),
            )
            .is_some()
        {
            bail!("key {k:?} given twice");
        }
    }
    for spec in &a.from_file {
        let (k, path) = match spec.split_once('=') {
            Some((k, p)) => (k.to_string(), PathBuf::from(p)),
            None => {
                let p = PathBuf::from(spec);
                let k = p
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                (k, p)
            }
        };
        check_key(&k)?;
        let text = read_utf8(&path)?;
        if map
            .insert(k.clone(), SecretValue::Literal(SecretString::from(text)))
            .is_some()
        {
            bail!("key {k:?} given twice");
        }
    }
    if map.is_empty() {
        bail!("give at least one --from-literal or --from-file");
    }
    finish_create(ctx, &a.name, &a.common, SecretData::Generic(map))
}

fn create_tls(ctx: &Ctx, a: &TlsArgs) -> Result<()> {
    let cert = read_utf8(&a.cert)?;
    let key = read_utf8(&a.key)?;
    if !cert.contains("-----BEGIN CERTIFICATE-----") {
        bail!("{}: no PEM certificate found", a.cert.display());
    }
    if !key.contains("PRIVATE KEY-----") {
        bail!("{}: no PEM private key found", a.key.display());
    }
    let data = SecretData::Tls {
        cert,
        key: SecretValue::Literal(SecretString::from(key)),
    };
    finish_create(ctx, &a.name, &a.common, data)
}

fn finish_create(ctx: &Ctx, name: &str, c: &Common, data: SecretData) -> Result<()> {
    validate_name(name)?;
    let ns = ctx.namespace(c.namespace.as_deref());
    validate_namespace(&ns)?;
    check_not_reserved(&ns)?;
    let scope = Scope::parse(&c.scope).ok_or_else(|| anyhow!("unknown scope {}", c.scope))?;
    let secret = StoredSecret {
        name: name.to_string(),
        namespace: ns.clone(),
        scope,
        created: now_unix(),
        origin: Origin::Created,
        data,
    };
    match c.dry_run.as_deref() {
        Some("client") => {
            // Like kubectl, the namespace appears only when given explicitly.
            let doc = kube_document(
                ctx,
                &secret,
                c.namespace.as_deref(),
                c.output.as_deref().unwrap_or("json"),
            )?;
            out!("{doc}");
            Ok(())
        }
        _ => {
            if c.output.is_some() {
                bail!("-o is only valid with --dry-run=client");
            }
            ctx.store.put(secret, c.overwrite)?;
            outln!("secret/{name} created");
            Ok(())
        }
    }
}

/// The secret as kubectl would print it, with references resolved.
fn kube_document(
    ctx: &Ctx,
    s: &StoredSecret,
    namespace: Option<&str>,
    output: &str,
) -> Result<String> {
    let refs = StoreRefs(ctx.store.as_ref());
    let resolver = RefResolver::with_store(&refs);
    let yaml = output == "yaml";
    Ok(match &s.data {
        SecretData::DockerRegistry { .. } => {
            let entries = resolved_registries(s, &resolver)?;
            if yaml {
                kube::docker_registry_yaml(&s.name, namespace, &entries)
            } else {
                kube::docker_registry_json(&s.name, namespace, &entries)
            }
        }
        SecretData::Generic(map) => {
            let mut data = BTreeMap::new();
            for (k, v) in map {
                data.insert(
                    k.clone(),
                    resolver
                        .resolve_value(v)?
                        .expose_secret()
                        .as_bytes()
                        .to_vec(),
                );
            }
            if yaml {
                kube::generic_yaml(&s.name, namespace, &data)
            } else {
                kube::generic_json(&s.name, namespace, &data)
            }
        }
        SecretData::Tls { cert, key } => {
            let key = resolver.resolve_value(key)?;
            if yaml {
                kube::tls_yaml(
                    &s.name,
                    namespace,
                    cert.as_bytes(),
                    key.expose_secret().as_bytes(),
                )
            } else {
                kube::tls_json(
                    &s.name,
                    namespace,
                    cert.as_bytes(),
                    key.expose_secret().as_bytes(),
                )
            }
        }
    })
}

fn import(ctx: &Ctx, a: &ImportArgs) -> Result<()> {
    let scope = Scope::parse(&a.scope).ok_or_else(|| anyhow!("unknown scope {}", a.scope))?;
    let now = now_unix();
    // Parse and validate everything before storing anything.
    let mut by_ns: BTreeMap<String, Vec<StoredSecret>> = BTreeMap::new();
    if let Some(file) = &a.file {
        let text = if file == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading stdin")?;
            s
        } else {
            read_utf8(Path::new(file))?
        };
        let target = ctx.namespace(a.namespace.as_deref());
        for ks in kube::parse_secrets(&text).with_context(|| file.clone())? {
            let ns = match &ks.namespace {
                Some(file_ns) if *file_ns != target => {
                    if !a.use_file_namespace {
                        bail!(
                            "Secret {:?} has metadata.namespace {file_ns:?} but the import goes to {target:?}; \
                             pass -n {file_ns}, or --use-file-namespace to import each Secret into its own namespace; nothing was imported",
                            ks.name
                        );
                    }
                    file_ns.clone()
                }
                _ => target.clone(),
            };
            for s in crate::store::import::from_kube(&ks, &ns, scope, now)? {
                by_ns.entry(ns.clone()).or_default().push(s);
            }
        }
    } else if a.from_docker_keychain {
        let ns = ctx.namespace(a.namespace.as_deref());
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for e in docker_keychain_entries()? {
            let name = ServerKey::parse(&e.server)?.secret_name();
            // docker-credential-secretservice keys on the exact string, so `https://h` and
            // `h` can both exist; they are one registry here, and the first one wins.
            if let Some(first) = seen.get(&name) {
                eprintln!(
                    "skipping docker's entry for {:?}: same registry as {first:?}",
                    e.server
                );
                continue;
            }
            seen.insert(name.clone(), e.server.clone());
            by_ns
                .entry(ns.clone())
                .or_default()
                .push(crate::store::import::registry_stored(
                    &name, &ns, scope, now, e,
                ));
        }
    } else {
        let (path, what) = if let Some(p) = &a.from_docker_config {
            (
                if p.is_empty() {
                    docker_config::docker_config_path()
                } else {
                    PathBuf::from(p)
                },
                "docker config",
            )
        } else if let Some(p) = &a.from_auth_json {
            let path = if p.is_empty() {
                docker_config::auth_json_paths()
                    .into_iter()
                    .find(|p| p.exists())
                    .ok_or_else(|| anyhow!("no containers auth.json found in the lookup order"))?
            } else {
                PathBuf::from(p)
            };
            (path, "auth.json")
        } else {
            bail!("give -f FILE, --from-docker-config, --from-auth-json or --from-docker-keychain");
        };
        let cfg = docker_config::load(&path)?
            .ok_or_else(|| anyhow!("{what} {} does not exist", path.display()))?;
        let ns = ctx.namespace(a.namespace.as_deref());
        for e in cfg.entries()? {
            let name = ServerKey::parse(&e.server)?.secret_name();
            by_ns
                .entry(ns.clone())
                .or_default()
                .push(crate::store::import::registry_stored(
                    &name, &ns, scope, now, e,
                ));
        }
    }
    if by_ns.is_empty() {
        bail!("nothing to import");
    }
    for (ns, secrets) in &by_ns {
        validate_namespace(ns)?;
        check_not_reserved(ns)?;
        for s in secrets {
            validate_name(&s.name)?;
        }
    }
    for (ns, secrets) in by_ns {
        let names: Vec<String> = secrets.iter().map(|s| s.name.clone()).collect();
        let mut pending = Some(secrets);
        ctx.store.update(&ns, &mut |existing| {
            for new in pending.take().unwrap_or_default() {
                match existing.iter().position(|s| s.name == new.name) {
                    Some(_) if !a.overwrite => {
                        return Err(crate::store::StoreError::AlreadyExists {
                            namespace: ns.clone(),
                            name: new.name.clone(),
                        })
                    }
                    Some(i) => existing[i] = new,
                    None => existing.push(new),
                }
            }
            Ok(())
        })?;
        for n in names {
            outln!("secret/{n} imported into {ns}");
        }
    }
    Ok(())
}

/// The credentials docker-credential-secretservice stored (schema `io.docker.Credentials`).
#[cfg(target_os = "linux")]
fn docker_keychain_entries() -> Result<Vec<RegistrySecret>> {
    let ss = crate::store::keyring::secret_service::SecretService::connect()?;
    Ok(ss.docker_credentials()?)
}

#[cfg(not(target_os = "linux"))]
fn docker_keychain_entries() -> Result<Vec<RegistrySecret>> {
    bail!("--from-docker-keychain reads the Secret Service, which exists only on Linux")
}

fn list(ctx: &Ctx, a: &ListArgs) -> Result<()> {
    let ns = (!a.all_namespaces).then(|| ctx.namespace(a.namespace.as_deref()));
    if let Some(ns) = &ns {
        validate_namespace(ns)?;
    }
    let mut secrets = ctx.store.list(ns.as_deref())?;
    secrets.sort_by(|x, y| (&x.namespace, &x.name).cmp(&(&y.namespace, &y.name)));
    match a.output.as_str() {
        "json" | "yaml" => {
            let items: Vec<serde_json::Value> = secrets.iter().map(|s| summary(s, false)).collect();
            if a.output == "yaml" {
                out!("{}", serde_yaml::to_string(&items)?);
            } else {
                outln!("{}", serde_json::to_string_pretty(&items)?);
            }
            return Ok(());
        }
        "name" => {
            for s in &secrets {
                outln!("secret/{}", s.name);
            }
            return Ok(());
        }
        _ => {}
    }
    let wide = a.output == "wide";
    let now = now_unix();
    let mut header = vec!["NAME", "TYPE", "SERVER", "USERNAME", "SCOPE", "CREATED"];
    if wide {
        header.extend(["EMAIL", "ORIGIN"]);
    }
    if a.all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    let rows: Vec<Vec<String>> = secrets
        .iter()
        .map(|s| {
            let mut row = vec![
                s.name.clone(),
                s.type_name().to_string(),
                server_column(s),
                s.username().unwrap_or("").to_string(),
                s.scope.as_str().to_string(),
                ago(s.created, now),
            ];
            if wide {
                row.push(s.email().unwrap_or("").to_string());
                row.push(s.origin.as_str().to_string());
            }
            if a.all_namespaces {
                row.insert(0, s.namespace.clone());
            }
            row
        })
        .collect();
    if rows.is_empty() {
        eprintln!(
            "No secrets found in {} namespace.",
            ns.as_deref().unwrap_or("any")
        );
        return Ok(());
    }
    out!("{}", table(&header, &rows));
    Ok(())
}

/// The primary server, plus `+N` when the secret holds N further registries.
fn server_column(s: &StoredSecret) -> String {
    match s.servers().as_slice() {
        [] => String::new(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} +{}", rest.len()),
    }
}

/// Every registry of a docker-registry secret with its password resolved, the primary first.
fn resolved_registries(s: &StoredSecret, resolver: &RefResolver) -> Result<Vec<RegistrySecret>> {
    s.registries()
        .iter()
        .map(|e| {
            e.resolve(resolver)
                .with_context(|| format!("secret {}/{}, server {}", s.namespace, s.name, e.server))
        })
        .collect()
}

/// A JSON description of a secret; values masked unless `show` (references are shown as written).
fn summary(s: &StoredSecret, show: bool) -> serde_json::Value {
    let mask = |v: &SecretValue| match v {
        SecretValue::Ref(r) => serde_json::Value::String(r.as_str().to_string()),
        SecretValue::Literal(x) if show => serde_json::Value::String(x.expose_secret().to_string()),
        SecretValue::Literal(_) => serde_json::Value::String("********".into()),
    };
    let mut m = serde_json::Map::new();
    m.insert("name".into(), s.name.clone().into());
    m.insert("namespace".into(), s.namespace.clone().into());
    m.insert("type".into(), s.type_name().into());
    m.insert("scope".into(), s.scope.as_str().into());
    m.insert("created".into(), rfc3339(s.created).into());
    m.insert("origin".into(), s.origin.as_str().into());
    match &s.data {
        SecretData::DockerRegistry {
            server,
            username,
            password,
            email,
            also,
        } => {
            m.insert("server".into(), server.clone().into());
            m.insert("username".into(), username.clone().into());
            m.insert("password".into(), mask(password));
            if let Some(e) = email {
                m.insert("email".into(), e.clone().into());
            }
            if !also.is_empty() {
                let also: Vec<serde_json::Value> = also
                    .iter()
                    .map(|e| {
                        let mut r = serde_json::Map::new();
                        r.insert("server".into(), e.server.clone().into());
                        r.insert("username".into(), e.username.clone().into());
                        r.insert("password".into(), mask(&e.password));
                        if let Some(x) = &e.email {
                            r.insert("email".into(), x.clone().into());
                        }
                        serde_json::Value::Object(r)
                    })
                    .collect();
                m.insert("also".into(), also.into());
            }
        }
        SecretData::Generic(map) => {
            let data: serde_json::Map<String, serde_json::Value> =
                map.iter().map(|(k, v)| (k.clone(), mask(v))).collect();
            m.insert("data".into(), data.into());
        }
        SecretData::Tls { cert, key } => {
            m.insert("tls.crt".into(), cert.clone().into());
            m.insert("tls.key".into(), mask(key));
        }
    }
    serde_json::Value::Object(m)
}

/// Seconds since the Unix epoch as RFC 3339 in UTC (`2026-01-31T12:00:00Z`).
fn rfc3339(secs: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn find(ctx: &Ctx, name: &str, namespace: Option<&str>) -> Result<StoredSecret> {
    let ns = ctx.namespace(namespace);
    validate_namespace(&ns)?;
    ctx.store
        .get(&ns, name)?
        .ok_or_else(|| anyhow!("secret {ns}/{name} not found"))
}

fn inspect(ctx: &Ctx, a: &InspectArgs) -> Result<()> {
    let s = find(ctx, &a.name, a.namespace.as_deref())?;
    let v = summary(&s, a.show_secret);
    if a.output == "yaml" {
        out!("{}", serde_yaml::to_string(&v)?);
    } else {
        outln!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(())
}

fn export(ctx: &Ctx, a: &ExportArgs) -> Result<()> {
    let s = find(ctx, &a.name, a.namespace.as_deref())?;
    if a.format == "k8s" {
        out!(
            "{}",
            kube_document(ctx, &s, a.namespace.as_deref(), &a.output)?
        );
        return Ok(());
    }
    let refs = StoreRefs(ctx.store.as_ref());
    let resolver = RefResolver::with_store(&refs);
    if !matches!(s.data, SecretData::DockerRegistry { .. }) {
        bail!(
            "--format {} needs a docker-registry secret; {} is {}",
            a.format,
            s.name,
            s.type_name()
        );
    }
    let entries = resolved_registries(&s, &resolver)?;
    let out = match a.format.as_str() {
        "dockerconfigjson" => format!("{}\n", kube::dockerconfigjson_payload(&entries)),
        "auth.json" => docker_config::auth_json(&entries),
        _ => docker_config::docker_config_json(&entries),
    };
    out!("{out}");
    if !out.ends_with('\n') {
        outln!();
    }
    Ok(())
}

fn single_entry_from_config(path: &Path) -> Result<RegistrySecret> {
    let cfg =
        docker_config::load(path)?.ok_or_else(|| anyhow!("{} does not exist", path.display()))?;
    let mut entries = cfg.entries()?;
    match entries.len() {
        1 => Ok(entries.remove(0)),
        0 => bail!("{} holds no registry credentials", path.display()),
        n => bail!("{} holds {n} registries; a docker-registry secret here holds one (use `secret import --from-docker-config`)", path.display()),
    }
}

fn read_password_stdin() -> Result<SecretString> {
    let mut s = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .take(64 * 1024)
        .read_to_string(&mut s)
        .context("reading the password from stdin")?;
    let p = s.trim_end_matches(['\n', '\r']);
    if p.is_empty() {
        bail!("empty password on stdin");
    }
    Ok(SecretString::from(p.to_string()))
}

fn read_utf8(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    String::from_utf8(bytes).map_err(|_| anyhow!("{} is not UTF-8 text", path.display()))
}

fn check_not_reserved(ns: &str) -> Result<()> {
    // Namespaces only pullsecret itself writes: `secret create` and `secret import` refuse them.
    if let Some(by) = crate::admin::api::reserved_by(ns) {
        bail!("namespace {ns:?} is reserved; only `{by}` writes there; nothing was stored");
    }
    Ok(())
}

/// Kubernetes Secret data keys: `[-._a-zA-Z0-9]+`.
fn check_key(k: &str) -> Result<()> {
    if k.is_empty()
        || k.len() > 253
        || !k
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-._".contains(&c))
    {
        bail!("invalid key {k:?}: a valid config key must consist of alphanumeric characters, '-', '_' or '.'");
    }
    Ok(())
}
