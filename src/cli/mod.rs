//! The `pullsecret` command line: global flags, logging, and dispatch to one file per subcommand.

mod admin;
mod doctor;
mod kubelet;
mod login;
mod output;
mod proxy;
mod proxy_ops;
mod pull;
mod secret;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::config::Config;
use crate::store::{SecretStore, StorePaths};

#[derive(Parser, Debug)]
#[command(
    name = "pullsecret",
    version,
    about = "Registry pull secrets for container tools"
)]
pub struct Cli {
    /// Directory holding the encrypted secret store (default $XDG_DATA_HOME/pullsecret).
    #[arg(long, global = true, env = "PULLSECRET_STORE_DIR")]
    store_dir: Option<PathBuf>,
    /// Fleet mode: shared state in PostgreSQL (`postgres://user@host/db`) instead of the
    /// local store, for the CLI, the proxy and the admin API alike.
    #[arg(long, global = true, env = "PULLSECRET_STATE", hide_env_values = true)]
    pub(crate) state: Option<String>,
    /// Config file: config.toml (default $XDG_CONFIG_HOME/pullsecret/config.toml); for
    /// `proxy`, the proxy's proxy.toml (default $XDG_CONFIG_HOME/pullsecret/proxy.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_parser = ["text", "json"], default_value = "text", env = "PULLSECRET_LOG_FORMAT")]
    log_format: String,
    /// Log level on stderr: error, warn, info, debug, trace, or a RUST_LOG-style filter
    /// (RUST_LOG wins). Default: info for `proxy`, warn for everything else.
    #[arg(long, global = true, env = "PULLSECRET_LOG_LEVEL")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create, import, list, inspect, export and delete secrets.
    #[command(subcommand)]
    Secret(secret::SecretCmd),
    /// Store credentials for a registry, like `docker login`.
    Login(login::LoginArgs),
    /// Remove stored credentials for a registry, like `docker logout`.
    Logout(login::LogoutArgs),
    /// Act as a kubelet image credential provider (request on stdin, response on stdout).
    KubeletCredentialProvider,
    /// Show which store is in use and which source answers for a registry.
    Doctor(doctor::DoctorArgs),
    /// Run the pull-through registry mirror (or `proxy print-config RUNTIME`).
    Proxy(proxy::ProxyArgs),
    /// Pull an image into an OCI image layout directory.
    Pull(pull::PullArgs),
    /// Print a shell completion script (e.g. `pullsecret completion bash > /etc/bash_completion.d/pullsecret`).
    Completion {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout (`pullsecret man | man -l -`).
    Man,
    /// Admin API tokens (`admin token create NAME [-n NS]`, `list`, `revoke NAME`).
    #[command(subcommand)]
    Admin(admin::AdminCmd),
}

/// Everything subcommands share: config, the store, the working namespace.
pub(crate) struct Ctx {
    pub config: Config,
    pub store: Box<dyn SecretStore>,
    /// Why `store` is the backend in use (for `pullsecret doctor`).
    pub store_why: String,
    pub paths: StorePaths,
}

impl Ctx {
    fn new(cli: &Cli) -> anyhow::Result<Self> {
        let mut config = Config::load(cli.config.as_deref())?;
        if let Some(s) = &cli.state {
            config.state_override = Some(s.clone());
        }
        let paths = StorePaths::from_env(cli.store_dir.as_deref());
        let opened = crate::store::open_store(&config, &paths)?;
        Ok(Self {
            config,
            store: opened.store,
            store_why: opened.why,
            paths,
        })
    }

    pub fn namespace(&self, flag: Option<&str>) -> String {
        flag.map(str::to_string)
            .unwrap_or_else(|| self.config.namespace())
    }
}

// Prints the one `error:` line of a failed command.
#[allow(clippy::print_stderr)]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The proxy's serving mode reports its start-up and upstream trouble at info by default.
    let serving = matches!(&cli.command, Command::Proxy(a) if a.serves());
    let level = cli
        .log_level
        .clone()
        .unwrap_or_else(|| if serving { "info" } else { "warn" }.to_string());
    init_logging(&cli.log_format, &level);
    let result = match &cli.command {
        Command::KubeletCredentialProvider => kubelet::run(&cli),
        Command::Proxy(a) => proxy::run(&cli, a),
        Command::Completion { shell } => completion(*shell),
        Command::Man => man(),
        _ => Ctx::new(&cli).and_then(|ctx| match &cli.command {
            Command::Secret(cmd) => secret::run(&ctx, cmd),
            Command::Admin(cmd) => admin::run(&ctx, cmd),
            Command::Login(a) => login::login(&ctx, a),
            Command::Logout(a) => login::logout(&ctx, a),
            Command::Doctor(a) => doctor::run(&ctx, a),
            Command::Pull(a) => pull::run(&ctx, a),
            Command::KubeletCredentialProvider
            | Command::Proxy(_)
            | Command::Completion { .. }
            | Command::Man => {
                unreachable!("dispatched above")
            }
        }),
    };
    // A reader that went away (`pullsecret secret list | head -1`) is not an error.
    let result = result.and_then(|()| Ok(std::io::Write::flush(&mut std::io::stdout())?));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if output::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let line = error_line(&e);
            if cli.log_format == "json" {
                // `--log-format json` means every stderr line is JSON, errors too.
                eprintln!(
                    "{}",
                    serde_json::json!({"level": "ERROR", "fields": {"message": line}})
                );
            } else {
                eprintln!("error: {line}");
            }
            ExitCode::FAILURE
        }
    }
}

fn completion(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "pullsecret", &mut buf);
    std::io::Write::write_all(&mut std::io::stdout().lock(), &buf)?;
    Ok(())
}

fn man() -> anyhow::Result<()> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut buf)?;
    std::io::Write::write_all(&mut std::io::stdout().lock(), &buf)?;
    Ok(())
}

/// One line: the error and its causes joined, so scripts see a single clear message.
fn error_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

pub(crate) fn init_logging(format: &str, level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("warn"));
    use std::io::IsTerminal;
    // Colour codes only for people: logs to files and pipes stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if format == "json" {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every flag and argument of every subcommand says what it is for.
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{path} {} (about)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        let mut cmd = Cli::command();
        cmd.build();
        walk(&cmd, "pullsecret", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
        cmd.debug_assert();
    }
}
