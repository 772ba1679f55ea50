//! `docker-credential-pullsecret` entry: open the store, speak the helper protocol, exit.

use std::io::Write;

use pullsecret::config::Config;
use pullsecret::helper::{run, Helper};
use pullsecret::store::{open_store, FileStore, SecretStore, StorePaths};

fn main() {
    let mut argv = std::env::args();
    let argv0 = argv
        .next()
        .unwrap_or_else(|| "docker-credential-pullsecret".into());
    let args: Vec<String> = argv.collect();
    // Warnings (a damaged namespace file skipped) go to stderr, one line each; the protocol's
    // answers and errors stay on stdout. No env filter: nothing here may slow `get` down.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .without_time()
        .with_target(false)
        .with_ansi(false)
        .try_init();
    let mut stdout = std::io::stdout().lock();
    let fail = |stdout: &mut dyn Write, e: &dyn std::fmt::Display| -> ! {
        // The protocol puts every error on stdout with exit code 1.
        let _ = writeln!(stdout, "{e}");
        std::process::exit(1);
    };
    let config = match Config::load(None) {
        Ok(c) => c,
        Err(e) => fail(&mut stdout, &e),
    };
    let paths = StorePaths::from_env(None);
    // Only the verbs that read or write credentials open the configured store, so
    // `version` and the usage text never wait on a keyring. Opening a FileStore does no I/O.
    let needs_store = matches!(args.as_slice(), [verb] if matches!(verb.as_str(), "store" | "get" | "erase" | "list"));
    let store: Box<dyn SecretStore> = if needs_store {
        match open_store(&config, &paths) {
            Ok(opened) => opened.store,
            Err(e) => fail(&mut stdout, &e),
        }
    } else {
        Box::new(FileStore::new(paths, config.limits))
    };
    let helper = Helper {
        store: store.as_ref(),
        namespace: config.namespace(),
        kube_dirs: config.kube_secret_dirs.clone(),
    };
    let code = run(
        &helper,
        &argv0,
        &args,
        &mut std::io::stdin().lock(),
        &mut stdout,
    );
    std::process::exit(code);
}
