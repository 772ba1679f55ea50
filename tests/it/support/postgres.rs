//! A throwaway PostgreSQL cluster on loopback: `initdb` into a temp dir, then `postgres` on a
//! free 127.0.0.1 port with its socket in that dir and fsync off; killed and removed on drop.
//!
//! PostgreSQL refuses to run as root, and tests run as root in CI: then `initdb` and `postgres`
//! run as `nobody` (through `setpriv`, which execs, so the child we hold is the postmaster
//! itself), and the temp dir is handed to that user.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::proxy::free_port;
use super::{e2e, stderr, stdout, try_eventually};

/// initdb plus the first start on a loaded 2-core machine can take several seconds.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// A fast shutdown writes one checkpoint; with fsync off that is quick.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const INSTALL: &str = "apt-get install postgresql";
/// The unprivileged account the server runs as when the tests run as root.
const RUN_AS: &str = "nobody";

/// The server binaries and clients this module runs.
struct Bins {
    initdb: PathBuf,
    postgres: PathBuf,
    pg_ctl: PathBuf,
    psql: PathBuf,
    pg_isready: PathBuf,
}

/// A `postgres` postmaster on 127.0.0.1 with its cluster in a temp dir; killed on drop.
pub struct Postgres {
    child: Option<Child>,
    bins: Bins,
    /// `(uid, gid)` to run the server as; `None` when the tests do not run as root.
    run_as: Option<(u32, u32)>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Postgres {
    /// Creates a cluster (`initdb -A trust -U postgres`) and starts it, or returns `None` (after
    /// a SKIPPED notice) when PostgreSQL is not installed outside E2E mode.
    pub fn start() -> Option<Self> {
        let bins = Bins::find()?;
        let run_as = running_as_root().then(unprivileged_ids);
        let dir = tempfile::Builder::new()
            .prefix("pullsecret-pg-")
            .tempdir()
            .expect("postgres tempdir");
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown pg dir");
        }
        let mut pg = Self {
            child: None,
            bins,
            run_as,
            port: 0,
            dir,
        };
        let out = pg
            .as_server_user(&pg.bins.initdb)
            .arg("-D")
            .arg(pg.data_dir())
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "--no-locale"])
            .args(["-E", "UTF8"])
            .stdin(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed ({}):\n{}{}",
            out.status,
            stdout(&out),
            stderr(&out)
        );
        // The free port is found by binding :0 and releasing it, so another process may grab it
        // before the postmaster binds; a fresh port on retry makes that race harmless.
        for _ in 0..3 {
            pg.port = free_port();
            if pg.spawn_and_wait() {
                return Some(pg);
            }
        }
        panic!("postgres did not start; its log:\n{}", pg.log());
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.db_url("postgres")
    }

    /// The port the postmaster listens on (on 127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `CREATE DATABASE name`; its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.psql(&format!(
            "CREATE DATABASE \"{}\"",
            name.replace('"', "\"\"")
        ));
        self.db_url(name)
    }

    /// Runs `sql` in the `postgres` database with `psql -At` (unaligned, tuples only) and returns
    /// its stdout; panics with psql's stderr when it fails.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in(&self.url(), sql)
    }

    /// Like [`Postgres::psql`] against the database at `url` (e.g. from `create_database`).
    pub fn psql_in(&self, url: &str, sql: &str) -> String {
        let out = self
            .psql_cmd(url, sql)
            .output()
            .unwrap_or_else(|e| panic!("run psql: {e}"));
        assert!(
            out.status.success(),
            "psql {sql:?} failed ({}): {}",
            out.status,
            stderr(&out)
        );
        stdout(&out)
    }

    /// Fast shutdown (`pg_ctl stop -m fast`: running transactions abort, a checkpoint is
    /// written) and waits for the postmaster to exit; the cluster stays for `start_again`.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if child.try_wait().ok().flatten().is_none() {
            let out = self
                .as_server_user(&self.bins.pg_ctl)
                .arg("stop")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "fast", "-w", "-t"])
                .arg(STOP_TIMEOUT.as_secs().to_string())
                .stdin(Stdio::null())
                .output()
                .expect("run pg_ctl stop");
            if !out.status.success() {
                // pg_ctl could not do it (e.g. no postmaster.pid yet): SIGINT is fast shutdown too.
                eprintln!("pg_ctl stop: {}{}", stdout(&out), stderr(&out));
                signal(&child, "INT");
            }
        }
        super::await_exit(child, STOP_TIMEOUT, "postgres", || self.log());
    }

    /// Starts the postmaster again on the same cluster and port after [`Postgres::stop`].
    pub fn start_again(&mut self) {
        self.stop();
        assert!(
            self.spawn_and_wait(),
            "postgres did not start again on port {}; log:\n{}",
            self.port,
            self.log()
        );
    }

    /// The server's log (its stderr) so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    fn db_url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `bin` run as the server's user (directly when the tests do not run as root), in the temp
    /// dir (the server user may not be able to enter the test's working directory).
    fn as_server_user(&self, bin: &Path) -> Command {
        let mut c = match self.run_as {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(bin);
                c
            }
            None => Command::new(bin),
        };
        c.current_dir(self.dir.path())
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .env_remove("PGPORT")
            .env_remove("PGHOST");
        c
    }

    fn psql_cmd(&self, url: &str, sql: &str) -> Command {
        let mut c = Command::new(&self.bins.psql);
        c.arg(url)
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGCONNECT_TIMEOUT", "5")
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .stdin(Stdio::null());
        c
    }

    /// Spawns the postmaster on `self.port` and waits until it accepts connections.
    fn spawn_and_wait(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("postgres.log"))
            .expect("open postgres log");
        let mut child = self
            .as_server_user(&self.bins.postgres)
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .args(["-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            // Several clusters may run at once; keep each one small.
            .args(["-c", "shared_buffers=16MB"])
            // Containers often have a tiny /dev/shm.
            .args(["-c", "dynamic_shared_memory_type=mmap"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn postgres");
        let started = super::until_ready(&mut child, START_TIMEOUT, || {
            let out = Command::new(&self.bins.pg_isready)
                .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
                .arg("-p")
                .arg(self.port.to_string())
                .args(["-t", "2"])
                .output()
                .map_err(|e| format!("run pg_isready: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!("pg_isready: {}", stdout(&out).trim()))
            }
        });
        self.child = Some(child);
        match started {
            Ok(None) => true,
            Ok(Some(status)) => {
                eprintln!("postgres on port {} exited early: {status}", self.port);
                self.child = None;
                false
            }
            Err((waited, last)) => {
                eprintln!(
                    "postgres on port {} not ready after {waited:?}: {last}",
                    self.port
                );
                self.kill();
                false
            }
        }
    }

    /// Immediate shutdown (SIGQUIT: the postmaster takes its backends down and exits without a
    /// checkpoint), SIGKILL when that is not quick.
    fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if child.try_wait().ok().flatten().is_none() {
            signal(&child, "QUIT");
            let quit = try_eventually(Duration::from_secs(5), || {
                child.try_wait().ok().flatten().is_some()
            });
            if quit.is_err() {
                let _ = child.kill();
            }
        }
        let _ = child.wait();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Bins {
    /// Every binary, or `None` (after a notice) when one is missing outside E2E mode.
    fn find() -> Option<Self> {
        let find = |name: &str| {
            let found = find_pg_bin(name);
            match found {
                Some(p) => Some(p),
                None if e2e() => {
                    panic!("{name} not found on PATH or under /usr/lib/postgresql/*/bin: {INSTALL}")
                }
                None => {
                    eprintln!(
                        "SKIPPED: {name} not found ({INSTALL}); set PULLSECRET_E2E=1 to make this a failure"
                    );
                    None
                }
            }
        };
        Some(Self {
            initdb: find("initdb")?,
            postgres: find("postgres")?,
            pg_ctl: find("pg_ctl")?,
            psql: find("psql")?,
            pg_isready: find("pg_isready")?,
        })
    }
}

/// `name` on PATH, else in the newest `/usr/lib/postgresql/VERSION/bin` (Debian keeps the server
/// binaries off PATH).
fn find_pg_bin(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .filter_map(|e| {
                let version = e.file_name().to_str()?.parse::<u32>().ok()?;
                Some((version, e.path().join("bin").join(name)))
            })
            .filter(|(_, p)| p.is_file())
            .collect();
        versions.sort();
        versions.pop().map(|(_, p)| p)
    })
}

/// The effective uid is the owner of /proc/self.
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The uid and gid of [`RUN_AS`].
fn unprivileged_ids() -> (u32, u32) {
    let id = |flag: &str| {
        let out = Command::new("id")
            .args([flag, RUN_AS])
            .output()
            .expect("run id");
        assert!(out.status.success(), "id {flag} {RUN_AS}: {}", stderr(&out));
        stdout(&out)
            .trim()
            .parse::<u32>()
            .unwrap_or_else(|e| panic!("id {flag} {RUN_AS}: {e}"))
    };
    (id("-u"), id("-g"))
}

/// `kill -SIG PID` (the server may run as another user; root may signal it).
fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status();
}
