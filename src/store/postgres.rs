//! The PostgreSQL store (fleet mode): one row per namespace, sealed exactly as the file store
//! seals its files, so a dump of the database reveals nothing without the master key (which
//! is never stored there). Every process keeps all namespaces in memory and hears of changes
//! through `LISTEN/NOTIFY`: reads never wait for the database, and they keep answering from
//! the last state while it is unreachable; writes go to the database or fail.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};
use zeroize::Zeroizing;

use super::database::{describe, describe_pool, Database};
use super::master_key::MasterKey;
use super::model::StoredSecret;
use super::sealed::{new_data_key, open_namespace, seal_namespace, Sealed};
use super::{SecretStore, StoreError};
use crate::secret::Limits;

/// The channel every write notifies, with the namespace as payload.
const CHANNEL: &str = "pullsecret_state";
/// How often every namespace is read again regardless of notifications.
const FULL_RELOAD: Duration = Duration::from_secs(60);

pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    key: MasterKey,
    limits: Limits,
    snapshot: RwLock<BTreeMap<String, Vec<StoredSecret>>>,
    generation: AtomicU64,
    listening: AtomicBool,
}

impl PgStore {
    /// Connects, applies migrations, loads every namespace and starts listening for changes.
    pub fn open(db: Database, key: MasterKey, limits: Limits) -> Result<Self, StoreError> {
        let inner = Arc::new(Inner {
            db,
            key,
            limits,
            snapshot: RwLock::default(),
            generation: AtomicU64::new(1),
            listening: AtomicBool::new(false),
        });
        let all = {
            let pool = inner.db.pool().clone();
            inner
                .db
                .run(async move { load(&pool, None).await })
                .map_err(|e| inner.db.unavailable(e))?
        };
        inner.replace_all(all)?;
        let listener = inner.clone();
        inner
            .db
            .handle()
            .spawn(async move { listener.listen().await });
        Ok(Self { inner })
    }

    /// The database this store uses (for the fleet's leases and accounting).
    pub fn database(&self) -> Database {
        self.inner.db.clone()
    }

    /// A key derived from the master key, for replicas of one fleet to authenticate each other
    /// (never the master key itself).
    pub fn peer_key(&self) -> Zeroizing<[u8; 32]> {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(b"pullsecret-fleet-peer-key/v1");
        h.update(self.inner.key.bytes());
        Zeroizing::new(h.finalize().into())
    }

    /// Whether this process currently hears of other replicas' changes.
    pub fn listening(&self) -> bool {
        self.inner.listening.load(Ordering::Relaxed)
    }
}

type Rows = Vec<(String, String, Sealed)>;

async fn load(pool: &deadpool_postgres::Pool, only: Option<String>) -> Result<Rows, String> {
    let client = pool.get().await.map_err(|e| describe_pool(&e))?;
    let rows = match &only {
        Some(ns) => {
            client
                .query(
                    "SELECT name, key_id, wrapped_key, data FROM namespaces WHERE name = $1",
                    &[ns],
                )
                .await
        }
        None => {
            client
                .query(
                    "SELECT name, key_id, wrapped_key, data FROM namespaces",
                    &[],
                )
                .await
        }
    }
    .map_err(|e| describe(&e))?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                Sealed {
                    wrapped_key: r.get(2),
                    data: r.get(3),
                },
            )
        })
        .collect())
}

impl Inner {
    fn open_row(
        &self,
        name: &str,
        key_id: &str,
        sealed: &Sealed,
    ) -> Result<(Vec<StoredSecret>, Zeroizing<Vec<u8>>), StoreError> {
        let err = |reason: String| StoreError::Decrypt {
            namespace: name.to_string(),
            path: "postgres:namespaces".into(),
            reason,
        };
        if key_id != self.key.id() {
            return Err(err(format!(
                "it was sealed with master key {key_id} but this process holds key {} (give every replica the same master key)",
                self.key.id()
            )));
        }
        open_namespace(name, &self.key, sealed).map_err(err)
    }

    fn replace_all(&self, rows: Rows) -> Result<(), StoreError> {
        let mut fresh = BTreeMap::new();
        let mut first_err = None;
        for (name, key_id, sealed) in &rows {
            match self.open_row(name, key_id, sealed) {
                Ok((s, _)) => {
                    fresh.insert(name.clone(), s);
                }
                Err(e) => {
                    tracing::warn!("skipping namespace {name:?}: {e}");
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            if fresh.is_empty() {
                return Err(e);
            }
        }
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn replace_one(&self, namespace: &str, secrets: Option<Vec<StoredSecret>>) {
        let mut snap = self.snapshot.write().unwrap_or_else(|e| e.into_inner());
        match secrets {
            Some(s) => {
                snap.insert(namespace.to_string(), s);
            }
            None => {
                snap.remove(namespace);
            }
        }
        drop(snap);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Keeps one LISTEN connection; after every (re)connect, reloads everything, since
    /// notifications sent while it was away are lost.
    async fn listen(self: Arc<Self>) {
        let mut wait = Duration::from_millis(200);
        loop {
            match self.db.config().connect(NoTls).await {
                Ok((client, mut conn)) => {
                    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                    let driver = tokio::spawn(async move {
                        let mut messages =
                            futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
                        while let Some(m) = messages.next().await {
                            match m {
                                Ok(AsyncMessage::Notification(n)) => {
                                    let _ = tx.send(n.payload().to_string());
                                }
                                Ok(_) => {}
                                Err(_) => break,
                            }
                        }
                    });
                    let ready = client
                        .batch_execute(&format!("LISTEN {CHANNEL}"))
                        .await
                        .is_ok()
                        && self.reload(None).await;
                    if ready {
                        if !self.listening.swap(true, Ordering::SeqCst) {
                            tracing::info!("state: listening for changes in PostgreSQL");
                        }
                        wait = Duration::from_millis(200);
                        // A full reload now and then as well: a notification lost on a link
                        // that stays up (a middlebox dropping it) must not leave state stale.
                        let mut every = tokio::time::interval(FULL_RELOAD);
                        every.tick().await;
                        loop {
                            tokio::select! {
                                ns = rx.recv() => match ns {
                                    Some(ns) => {
                                        self.reload(Some(ns)).await;
                                    }
                                    None => break,
                                },
                                _ = every.tick() => {
                                    if !self.reload(None).await {
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    driver.abort();
                    if self.listening.swap(false, Ordering::SeqCst) {
                        tracing::warn!("state: lost the PostgreSQL connection; serving the last state and reconnecting");
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %describe(&e), "state: PostgreSQL not reachable yet");
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }

    /// Reloads one namespace (or all); whether the database answered.
    async fn reload(&self, only: Option<String>) -> bool {
        match load(self.db.pool(), only.clone()).await {
            Ok(rows) => {
                match &only {
                    None => {
                        if let Err(e) = self.replace_all(rows) {
                            tracing::warn!("state: {e}");
                        }
                    }
                    Some(ns) => match rows.first() {
                        Some((name, key_id, sealed)) => match self.open_row(name, key_id, sealed) {
                            Ok((s, _)) => self.replace_one(ns, Some(s)),
                            Err(e) => tracing::warn!("state: {e}"),
                        },
                        None => self.replace_one(ns, None),
                    },
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "state: reload from PostgreSQL failed");
                false
            }
        }
    }
}

/// What a write found in the database, under the namespace's lock (and the key of another
/// master key's namespace, if any exists: a new namespace must not be sealed apart).
struct Locked {
    client: Option<deadpool_postgres::Object>,
    current: Option<(String, Sealed)>,
    foreign_key: Option<String>,
}

impl Locked {
    fn take(&mut self) -> deadpool_postgres::Object {
        match self.client.take() {
            Some(c) => c,
            // `finish` and `abort` each take it once; nothing else does.
            None => unreachable!("a locked write's connection was used twice"),
        }
    }
}

impl Drop for Locked {
    /// A write abandoned mid-transaction (a panic in `edit`) must not return its connection,
    /// still in the transaction and holding the namespace's lock, to the pool: it is closed.
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            drop(deadpool_postgres::Object::take(c));
        }
    }
}

impl PgStore {
    fn begin(&self, namespace: &str) -> Result<Locked, StoreError> {
        let pool = self.inner.db.pool().clone();
        let ns = namespace.to_string();
        let key_id = self.inner.key.id();
        self.inner
            .db
            .run(async move {
                let client = pool.get().await.map_err(|e| describe_pool(&e))?;
                client
                    .batch_execute("BEGIN")
                    .await
                    .map_err(|e| describe(&e))?;
                let locked = async {
                    client
                        .execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&ns])
                        .await?;
                    let row = client
                        .query_opt(
                            "SELECT key_id, wrapped_key, data FROM namespaces WHERE name = $1",
                            &[&ns],
                        )
                        .await?;
                    let foreign = client
                        .query_opt(
                            "SELECT key_id FROM namespaces WHERE key_id <> $1 LIMIT 1",
                            &[&key_id],
                        )
                        .await?;
                    Ok::<_, tokio_postgres::Error>((row, foreign))
                }
                .await;
                match locked {
                    Ok((row, foreign)) => Ok(Locked {
                        current: row.map(|r| {
                            (
                                r.get(0),
                                Sealed {
                                    wrapped_key: r.get(1),
                                    data: r.get(2),
                                },
                            )
                        }),
                        foreign_key: foreign.map(|r| r.get(0)),
                        client: Some(client),
                    }),
                    Err(e) => {
                        rollback(client).await;
                        Err(describe(&e))
                    }
                }
            })
            .map_err(|e| self.inner.db.unavailable(e))
    }

    fn finish(
        &self,
        mut locked: Locked,
        namespace: &str,
        write: Option<Sealed>,
    ) -> Result<(), StoreError> {
        let ns = namespace.to_string();
        let key_id = self.inner.key.id();
        self.inner
            .db
            .run({
                let client = locked.take();
                async move {
                    let done = async {
                        match &write {
                            Some(s) => {
                                client
                                    .execute(
                                        "INSERT INTO namespaces (name, key_id, wrapped_key, data)
                                     VALUES ($1, $2, $3, $4)
                                     ON CONFLICT (name) DO UPDATE SET key_id = EXCLUDED.key_id,
                                       wrapped_key = EXCLUDED.wrapped_key, data = EXCLUDED.data,
                                       version = namespaces.version + 1, updated_at = now()",
                                        &[&ns, &key_id, &s.wrapped_key, &s.data],
                                    )
                                    .await?;
                            }
                            None => {
                                client
                                    .execute("DELETE FROM namespaces WHERE name = $1", &[&ns])
                                    .await?;
                            }
                        }
                        client
                            .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &ns])
                            .await?;
                        client.batch_execute("COMMIT").await
                    }
                    .await;
                    match done {
                        Ok(()) => Ok(()),
                        Err(e) => {
                            rollback(client).await;
                            Err(describe(&e))
                        }
                    }
                }
            })
            .map_err(|e| self.inner.db.unavailable(e))
    }

    fn abort(&self, mut locked: Locked) {
        self.inner.db.run(rollback(locked.take()));
    }
}

/// Ends a transaction that failed; a connection that cannot roll back is not reused.
async fn rollback(client: deadpool_postgres::Object) {
    if client.batch_execute("ROLLBACK").await.is_err() {
        let _ = deadpool_postgres::Object::take(client);
    }
}

impl SecretStore for PgStore {
    fn backend_name(&self) -> &'static str {
        "postgres"
    }

    fn list(&self, namespace: Option<&str>) -> Result<Vec<StoredSecret>, StoreError> {
        if let Some(ns) = namespace {
            super::validate_namespace(ns)?;
        }
        let snap = self
            .inner
            .snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner());
        Ok(match namespace {
            Some(ns) => snap.get(ns).cloned().unwrap_or_default(),
            None => snap.values().flatten().cloned().collect(),
        })
    }

    fn namespaces(&self) -> Result<Vec<String>, StoreError> {
        let snap = self
            .inner
            .snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner());
        Ok(snap.keys().cloned().collect())
    }

    fn generation(&self) -> Option<u128> {
        Some(u128::from(self.inner.generation.load(Ordering::SeqCst)))
    }

    fn update(
        &self,
        namespace: &str,
        edit: &mut dyn FnMut(&mut Vec<StoredSecret>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        super::validate_namespace(namespace)?;
        let locked = self.begin(namespace)?;
        let opened = match &locked.current {
            Some((key_id, sealed)) => self.inner.open_row(namespace, key_id, sealed),
            // A new namespace sealed with another key than the rest would split the store.
            None => match &locked.foreign_key {
                Some(other) => Err(StoreError::Decrypt {
                    namespace: namespace.to_string(),
                    path: "postgres:namespaces".into(),
                    reason: format!(
                        "the database holds namespaces sealed with master key {other} but this process holds key {} (give every replica the same master key)",
                        self.inner.key.id()
                    ),
                }),
                None => new_data_key().map(|dk| (Vec::new(), dk)),
            },
        };
        let result = opened.and_then(|(mut secrets, data_key): (_, Zeroizing<Vec<u8>>)| {
            let before = secrets.len();
            edit(&mut secrets)?;
            super::check_limits(&self.inner.limits, namespace, before, &secrets)?;
            let sealed = seal_namespace(namespace, &self.inner.key, &data_key, &secrets)?;
            Ok((secrets, sealed))
        });
        match result {
            Ok((secrets, sealed)) => {
                self.finish(locked, namespace, Some(sealed))?;
                // Read-your-writes in this process, before the notification comes back.
                self.inner.replace_one(namespace, Some(secrets));
                Ok(())
            }
            Err(e) => {
                self.abort(locked);
                Err(e)
            }
        }
    }

    fn delete_namespace(&self, namespace: &str) -> Result<(), StoreError> {
        super::validate_namespace(namespace)?;
        let locked = self.begin(namespace)?;
        self.finish(locked, namespace, None)?;
        self.inner.replace_one(namespace, None);
        Ok(())
    }
}
