//! The PostgreSQL connection for fleet mode: a pool on its own runtime thread (so synchronous
//! callers such as the CLI and the credential helper can use it), and the schema migrations
//! kept in the repository's `migrations/`, applied at start under an advisory lock.

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use super::StoreError;

/// Every migration, in order; a replica applies the ones the database lacks.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "state", include_str!("../../migrations/0001_state.sql")),
    (2, "fleet", include_str!("../../migrations/0002_fleet.sql")),
    (3, "links", include_str!("../../migrations/0003_links.sql")),
    (
        4,
        "manifests",
        include_str!("../../migrations/0004_manifests.sql"),
    ),
];

/// Serializes migrations between replicas starting together.
const MIGRATION_LOCK: i64 = 0x7075_6c6c_7365_6372;

/// A pool of connections and the runtime that drives them.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    config: tokio_postgres::Config,
    handle: tokio::runtime::Handle,
    /// The URL without its password, for messages.
    shown: String,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("url", &self.shown)
            .finish()
    }
}

impl Database {
    /// Connects to `url` (`postgres://user[:password]@host[:port]/db`) and applies migrations.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let shown = redact(url);
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            StoreError::Invalid(format!("state URL {shown} is not a PostgreSQL URL: {e}"))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(3));
        }
        config.application_name("pullsecret");
        let handle = runtime_thread()?;
        let mgr = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(8)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| StoreError::Invalid(format!("PostgreSQL pool: {e}")))?;
        let db = Self {
            pool,
            config,
            handle,
            shown,
        };
        let pool = db.pool.clone();
        db.run(async move { migrate(&pool).await })
            .map_err(|e| db.unavailable(e))?;
        Ok(db)
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The connection settings (for the LISTEN connection, which is not pooled).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// Runs `fut` on the database runtime and waits for it: safe from any thread, including
    /// a blocking task inside another runtime.
    pub fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        match rx.recv() {
            Ok(v) => v,
            // The runtime thread lives as long as the process; this is unreachable in practice.
            Err(_) => panic!("the database runtime stopped"),
        }
    }

    /// The error a caller reports when the database did not answer.
    pub fn unavailable(&self, reason: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable {
            backend: "postgres",
            reason: format!("{}: {reason}", self.shown),
            fix: "check that PostgreSQL is running and reachable, then retry (a write that did not reach the database changed nothing)".into(),
        }
    }
}

/// A database error as text without anything a server could echo from a query's parameters.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            // "error connecting to server" says little without its cause.
            let mut out = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                out.push_str(&format!(": {s}"));
                source = s.source();
            }
            out
        }
    }
}

/// The error text of a pool checkout.
pub fn describe_pool(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => describe(e),
        other => other.to_string(),
    }
}

async fn migrate(pool: &Pool) -> Result<(), String> {
    let mut client = pool.get().await.map_err(|e| describe_pool(&e))?;
    let tx = client.transaction().await.map_err(|e| describe(&e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| describe(&e))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS pullsecret_migrations (
             version int PRIMARY KEY, name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(|e| describe(&e))?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM pullsecret_migrations", &[])
        .await
        .map_err(|e| describe(&e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql)
            .await
            .map_err(|e| format!("migration {version} ({name}): {}", describe(&e)))?;
        tx.execute(
            "INSERT INTO pullsecret_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await
        .map_err(|e| describe(&e))?;
        tracing::info!(version, name, "applied database migration");
    }
    tx.commit().await.map_err(|e| describe(&e))
}

/// One runtime for every database in the process, on its own thread.
fn runtime_thread() -> Result<tokio::runtime::Handle, StoreError> {
    use std::sync::OnceLock;
    static HANDLE: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("pullsecret-db")
        .enable_all()
        .build()
        .map_err(|e| StoreError::Invalid(format!("database runtime: {e}")))?;
    let handle = rt.handle().clone();
    // The runtime must outlive every caller; it ends with the process.
    std::mem::forget(rt);
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(a PostgreSQL URL)".into();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    // Query parameters may carry a password too.
    let host = host.split('?').next().unwrap_or(host);
    match auth {
        Some(a) => {
            let user = a.split(':').next().unwrap_or("");
            if a.contains(':') {
                format!("{scheme}://{user}:***@{host}")
            } else {
                format!("{scheme}://{user}@{host}")
            }
        }
        None => format!("{scheme}://{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_passwords_in_userinfo_and_query() {
        assert_eq!(
            redact("postgres://u:hunter2@db:5432/x?password=hunter2"),
            "postgres://u:***@db:5432/x"
        );
        assert_eq!(redact("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(redact("host=db password=hunter2"), "(a PostgreSQL URL)");
    }
}
