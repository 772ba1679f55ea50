//! `pullsecret pull`: resolve credentials, pull an image into an OCI layout, report progress.

// pull's progress lines and summary.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use secrecy::SecretString;

use super::output::outln;
use super::Ctx;
use crate::pull::{self, Fetched, Format, PlatformChoice, Progress, PullOptions, Silent};
use crate::registry::auth::{Credentials, TokenCache};
use crate::registry::client::{Client, UpstreamOptions};
use crate::registry::digest::Digest;
use crate::registry::manifest::Platform;
use crate::registry::reference::Reference;
use crate::registry::RegistryError;
use crate::secret::{RefResolver, RegistrySecret, ServerKey};
use crate::store::chain::{best_match, Chain, Source};
use crate::store::StoreRefs;

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Image reference: `[registry/]repository[:tag][@digest]`.
    image: String,
    /// Platform to take from a multi-platform index, `os/arch[/variant]` (default: this host's).
    #[arg(long, conflicts_with = "all_platforms")]
    platform: Option<String>,
    /// Keep the whole index with every platform's manifest and blobs.
    #[arg(long)]
    all_platforms: bool,
    /// The OCI image layout directory to write (created when missing).
    #[arg(short, long)]
    output: PathBuf,
    /// `USER:PASSWORD` for the registry (visible in `ps`; prefer --secret or the environment).
    #[arg(long, env = "PULLSECRET_PULL_CREDS", hide_env_values = true)]
    creds: Option<String>,
    /// A stored docker-registry secret to authenticate with.
    #[arg(long, conflicts_with = "creds")]
    secret: Option<String>,
    /// Namespace of --secret and of the lookup (default from config).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Talk plain HTTP to the registry.
    #[arg(long)]
    insecure: bool,
    /// Print nothing but errors (and the digest on stdout).
    #[arg(short, long)]
    quiet: bool,
    /// Blobs downloaded at the same time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    concurrency: u16,
    /// Re-hash blobs already in the layout instead of trusting their size.
    #[arg(long)]
    verify_existing: bool,
    /// `oci`: Docker manifests are rewritten with OCI media types (new digests, same blobs),
    /// so every OCI layout reader finds them by tag; `preserve`: the registry's bytes as they are.
    #[arg(long, value_enum, default_value_t = FormatArg::Oci)]
    format: FormatArg,
    /// Also copy the image's referrers (signatures, SBOMs, attestations) into the layout;
    /// index.json lists them by digest, with their artifactType.
    #[arg(long)]
    referrers: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum FormatArg {
    Oci,
    Preserve,
}

pub fn run(ctx: &Ctx, a: &PullArgs) -> Result<()> {
    let reference =
        Reference::parse(&a.image).with_context(|| format!("image reference {:?}", a.image))?;
    let platform = match (&a.platform, a.all_platforms) {
        (_, true) => PlatformChoice::All,
        (Some(p), false) => PlatformChoice::One(
            Platform::parse(p)
                .ok_or_else(|| anyhow!("--platform {p:?}: expected os/arch[/variant]"))?,
        ),
        (None, false) => PlatformChoice::Host,
    };
    let (creds, creds_from) = match credentials(ctx, a, &reference)? {
        Some((c, from)) => (Some(c), Some(from)),
        None => (None, None),
    };
    let client = Client::new(
        UpstreamOptions {
            host: pull::api_host(&reference).to_string(),
            insecure: a.insecure,
            ..Default::default()
        },
        Arc::new(TokenCache::default()),
    )?;
    let opts = PullOptions {
        platform,
        concurrency: usize::from(a.concurrency),
        verify_existing: a.verify_existing,
        format: match a.format {
            FormatArg::Oci => Format::Oci,
            FormatArg::Preserve => Format::Preserve,
        },
        referrers: a.referrers,
        ..Default::default()
    };
    let progress: Box<dyn Progress> = if a.quiet {
        Box::new(Silent)
    } else if std::io::stderr().is_terminal() {
        Box::new(Bars::new())
    } else {
        Box::new(Lines::default())
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = rt.block_on(pull::pull(
        &client,
        creds.as_ref(),
        &reference,
        &a.output,
        &opts,
        progress.as_ref(),
    ));
    // Bars are settled before anything else is printed, so no redraw lands on the summary.
    progress.finish();
    drop(progress);
    let pulled = result.map_err(|e| with_hint(e, a.insecure, creds_from.as_deref()))?;
    // Not quiet-able: an artifact the user asked for did not travel.
    for (digest, why) in &pulled.referrers_skipped {
        eprintln!("warning: referrer {digest} not copied: {why}");
    }
    if !a.quiet {
        if pulled.source_digest != pulled.digest {
            eprintln!(
                "converted {} to OCI {} (--format preserve keeps the registry's bytes)",
                pulled.source_digest, pulled.digest
            );
        }
        let referrers = if a.referrers {
            format!(", {} referrers", pulled.referrers.len())
        } else {
            String::new()
        };
        eprintln!(
            "{} → {}{} ({} fetched, {} already present{referrers})",
            reference,
            a.output.display(),
            pulled
                .ref_name
                .as_deref()
                .map(|n| format!(":{n}"))
                .unwrap_or_default(),
            pulled.blobs_fetched,
            pulled.blobs_reused
        );
    }
    outln!("{}", pulled.digest);
    Ok(())
}

/// Says what an opaque failure means: a TLS handshake answered with plain HTTP, or credentials
/// the registry refused (naming where they came from, so the user knows which one to fix).
fn with_hint(e: pull::PullError, insecure: bool, creds_from: Option<&str>) -> anyhow::Error {
    let plain_http = matches!(
        &e,
        pull::PullError::Registry(RegistryError::Network { reason, .. })
            if reason.contains("InvalidContentType")
    );
    if plain_http && !insecure {
        return anyhow!(e).context(
            "the registry seems to speak plain HTTP (use --insecure if that is expected)",
        );
    }
    if let (pull::PullError::Registry(RegistryError::Unauthorized { registry, .. }), Some(from)) =
        (&e, creds_from)
    {
        let msg = format!("credentials from {from} were rejected by {registry}");
        return anyhow!(e).context(msg);
    }
    anyhow!(e)
}

/// `--creds`, else `--secret`, else the lookup chain for the image's repository, each with a
/// description of where it came from (never the value); `None` is anonymous.
fn credentials(
    ctx: &Ctx,
    a: &PullArgs,
    reference: &Reference,
) -> Result<Option<(Credentials, String)>> {
    if let Some(c) = &a.creds {
        // Never echo the value: it holds the password.
        let Some((user, password)) = c.split_once(':') else {
            bail!("--creds must be USER:PASSWORD");
        };
        if user.is_empty() {
            bail!("--creds has an empty user name");
        }
        // clap fills --creds from the environment too; say which one the user has to fix.
        let on_command_line = std::env::args_os()
            .skip(1)
            .any(|arg| arg == "--creds" || arg.to_string_lossy().starts_with("--creds="));
        let from = if on_command_line {
            "--creds"
        } else {
            "PULLSECRET_PULL_CREDS"
        };
        return Ok(Some((
            Credentials::new(user.to_string(), SecretString::from(password.to_string())),
            from.to_string(),
        )));
    }
    let namespace = ctx.namespace(a.namespace.as_deref());
    if let Some(name) = &a.secret {
        let stored = ctx
            .store
            .get(&namespace, name)?
            .ok_or_else(|| anyhow!("no secret {name:?} in namespace {namespace}"))?;
        let refs = StoreRefs(ctx.store.as_ref());
        let resolver = RefResolver::with_store(&refs);
        // Of a secret holding several registries, the one matching the image, else the primary.
        let server = format!("{}/{}", reference.registry(), reference.repository());
        let registry = ServerKey::parse(&server)
            .ok()
            .and_then(|key| best_match(std::iter::once(&stored), &key))
            .map(|m| m.registry)
            .or_else(|| stored.registries().into_iter().next())
            .ok_or_else(|| {
                anyhow!(
                    "secret {namespace}/{name} is {}, not a docker-registry secret",
                    stored.type_name()
                )
            })?;
        let secret = registry
            .resolve(&resolver)
            .with_context(|| format!("secret {namespace}/{name}"))?;
        warn_if_other_registry(&secret, reference, name);
        return Ok(Some((
            to_credentials(secret),
            format!("secret {namespace}/{name}"),
        )));
    }
    let chain = Chain {
        store: ctx.store.as_ref(),
        namespace,
        kube_dirs: ctx.config.kube_secret_dirs.clone(),
    };
    // The repository path lets namespaced secrets (`quay.io/org`) win over host-wide ones.
    let server = format!("{}/{}", reference.registry(), reference.repository());
    match chain.lookup(&server) {
        Ok(found) => Ok(found.map(|(secret, source)| {
            let from = match source {
                Source::Store { namespace, name } => format!("secret {namespace}/{name}"),
                other => other.to_string(),
            };
            (to_credentials(secret), from)
        })),
        Err(e) => {
            // A broken source must not block a public pull; the registry will say if auth was needed.
            eprintln!("warning: credential lookup for {server} failed ({e}); pulling anonymously");
            Ok(None)
        }
    }
}

fn to_credentials(s: RegistrySecret) -> Credentials {
    Credentials::new(s.username, s.password)
}

/// An explicitly named secret is used as asked, but a server mismatch is worth a word: the
/// password is about to be sent to a registry it was not stored for.
fn warn_if_other_registry(secret: &RegistrySecret, reference: &Reference, name: &str) {
    let stored = ServerKey::parse(&secret.server).ok();
    let image = ServerKey::parse(reference.registry()).ok();
    if let (Some(s), Some(i)) = (stored, image) {
        if s.host() != i.host() {
            eprintln!(
                "warning: secret {name} is for {}, the image is on {}",
                s.host(),
                i.host()
            );
        }
    }
}

/// The digest as progress output names it: the first 12 hex characters, like docker.
fn short(d: &Digest) -> &str {
    let hex = d.hex();
    hex.get(..12).unwrap_or(hex)
}

/// Plain lines on stderr, for logs and pipes: a blob's progress at every tenth of it (or every
/// few seconds when it is slow), where it resumed, and when it is done.
#[derive(Default)]
struct Lines {
    blobs: Mutex<HashMap<Digest, LineState>>,
}

/// How far a blob has come and when that was last reported.
struct LineState {
    size: u64,
    have: u64,
    /// The tenth of `size` whose crossing prints the next line.
    next_tenth: u64,
    printed: Instant,
}

/// A slow blob reports at least this often, even between tenths.
const LINE_INTERVAL: Duration = Duration::from_secs(2);

impl Lines {
    fn state(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, LineState>> {
        // A panic elsewhere while holding this lock leaves a plain map; keep reporting.
        self.blobs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn tenth(have: u64, size: u64) -> u64 {
    if size == 0 {
        10
    } else {
        (u128::from(have) * 10 / u128::from(size)) as u64
    }
}

fn mib(n: u64) -> String {
    format!("{:.1}", n as f64 / (1024.0 * 1024.0))
}

impl Progress for Lines {
    fn blob_start(&self, digest: &Digest, size: u64, from: u64) {
        self.state().insert(
            digest.clone(),
            LineState {
                size,
                have: from,
                next_tenth: tenth(from, size) + 1,
                printed: Instant::now(),
            },
        );
        if from > 0 {
            eprintln!(
                "{}: resumed at {from} bytes ({})",
                short(digest),
                HumanBytes(from)
            );
        }
    }

    fn blob_bytes(&self, digest: &Digest, n: u64) {
        let mut blobs = self.state();
        let Some(st) = blobs.get_mut(digest) else {
            return;
        };
        st.have += n;
        let now = tenth(st.have, st.size);
        // The last tenth is the done line's.
        let crossed = now >= st.next_tenth && now < 10;
        if crossed || (st.have < st.size && st.printed.elapsed() >= LINE_INTERVAL) {
            st.next_tenth = now + 1;
            st.printed = Instant::now();
            eprintln!(
                "{}: {}/{} MiB ({}%)",
                short(digest),
                mib(st.have),
                mib(st.size),
                u128::from(st.have) * 100 / u128::from(st.size.max(1))
            );
        }
    }

    fn blob_restart(&self, digest: &Digest, from: u64, why: &str) {
        if let Some(st) = self.state().get_mut(digest) {
            st.have = from;
            st.next_tenth = tenth(from, st.size) + 1;
        }
        eprintln!(
            "{}: {why}; continuing at {}",
            short(digest),
            HumanBytes(from)
        );
    }

    fn blob_done(&self, digest: &Digest, size: u64, how: Fetched) {
        self.state().remove(digest);
        let verb = match how {
            Fetched::Reused => "exists",
            Fetched::Downloaded | Fetched::Resumed { .. } => "done",
        };
        eprintln!("{}: {verb} {}", short(digest), HumanBytes(size));
    }
}

/// One indicatif bar per blob on a terminal; when the pull is over they give way to one plain
/// line per blob, so what follows is printed below them, never over them.
struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
    /// Blobs in the order they finished, with how.
    done: Mutex<Vec<(Digest, u64, Fetched)>>,
    style: ProgressStyle,
}

impl Bars {
    fn new() -> Self {
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {wide_msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(HashMap::new()),
            done: Mutex::new(Vec::new()),
            style,
        }
    }

    fn bar(&self, digest: &Digest, size: u64) -> ProgressBar {
        // A panic elsewhere while holding this lock leaves a plain map; keep drawing.
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        bars.entry(digest.clone())
            .or_insert_with(|| {
                let bar = self.multi.add(ProgressBar::new(size));
                bar.set_style(self.style.clone());
                bar.set_prefix(short(digest).to_string());
                bar
            })
            .clone()
    }

    fn existing(&self, digest: &Digest) -> Option<ProgressBar> {
        let bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        bars.get(digest).cloned()
    }
}

impl Progress for Bars {
    fn blob_start(&self, digest: &Digest, size: u64, from: u64) {
        let bar = self.bar(digest, size);
        bar.set_position(from);
        if from > 0 {
            bar.set_message(format!("resumed at {}", HumanBytes(from)));
        }
    }

    fn blob_bytes(&self, digest: &Digest, n: u64) {
        if let Some(bar) = self.existing(digest) {
            bar.inc(n);
        }
    }

    fn blob_restart(&self, digest: &Digest, from: u64, why: &str) {
        if let Some(bar) = self.existing(digest) {
            bar.set_position(from);
            bar.set_message(why.to_string());
        }
    }

    fn blob_done(&self, digest: &Digest, size: u64, how: Fetched) {
        let bar = self.bar(digest, size);
        bar.set_position(size);
        bar.finish_with_message(match how {
            Fetched::Reused => "exists",
            Fetched::Downloaded | Fetched::Resumed { .. } => "done",
        });
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        done.push((digest.clone(), size, how));
    }

    fn finish(&self) {
        let bars: Vec<(Digest, ProgressBar)> = {
            let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
            bars.drain().collect()
        };
        let mut stopped = Vec::new();
        for (digest, bar) in bars {
            if !bar.is_finished() {
                stopped.push((digest, bar.position(), bar.length().unwrap_or(0)));
                bar.abandon();
            }
        }
        // Dropped bars leave lines behind that clear() wipes with the rest.
        let _ = self.multi.clear();
        let done = std::mem::take(&mut *self.done.lock().unwrap_or_else(|e| e.into_inner()));
        for (digest, size, how) in done {
            let verb = match how {
                Fetched::Reused => "exists",
                Fetched::Downloaded | Fetched::Resumed { .. } => "done",
            };
            eprintln!("{}: {verb} {}", short(&digest), HumanBytes(size));
        }
        for (digest, at, size) in stopped {
            eprintln!(
                "{}: stopped at {}/{}",
                short(&digest),
                HumanBytes(at),
                HumanBytes(size)
            );
        }
    }
}
