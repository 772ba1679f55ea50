//! `docker-credential-pullsecret` entry: open the store, speak the helper protocol, exit.

use pullsecret::config::Config;
use pullsecret::helper::{run, Helper};
use pullsecret::store::{FileStore, StorePaths};

fn main() {
    let mut argv = std::env::args();
    let argv0 = argv
        .next()
        .unwrap_or_else(|| "docker-credential-pullsecret".into());
    let args: Vec<String> = argv.collect();
    let mut stdout = std::io::stdout().lock();
    let config = match Config::load(None) {
        Ok(c) => c,
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(stdout, "{e}");
            std::process::exit(1);
        }
    };
    let store = FileStore::new(StorePaths::from_env(None), config.limits);
    let helper = Helper {
        store: &store,
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
