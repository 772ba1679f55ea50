//! A fleet of replicas on one database: one lease row per blob being filled (kept alive by a
//! heartbeat, taken over when it stops), the authenticated endpoint through which a replica
//! streams a blob another replica is filling, and the shared bucket's accounting (size, last
//! use, pins) with eviction of the least recently used across replicas.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use deadpool_postgres::Pool;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::shared_blobs::SharedBlobs;
use crate::registry::digest::Digest;
use crate::store::database::{describe, describe_pool};

/// Where replicas stream each other's fills (on the registry port, never routed to upstreams).
pub const PEER_PATH: &str = "/internal/fleet/v1/blobs/";
/// The scheme of the peer endpoint's `Authorization` header.
pub const PEER_SCHEME: &str = "PullsecretFleet";
/// A lease whose heartbeat is older than this is free to take.
const LEASE_EXPIRY_SECS: f64 = 5.0;
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Serializes eviction between replicas.
const EVICT_LOCK: i64 = 0x7073_6576_6963_7421;

pub struct Fleet {
    pub shared: Option<SharedBlobs>,
    db: Option<Pool>,
    /// This replica's name in lease rows.
    pub id: String,
    /// The URL other replicas use to reach this one.
    pub advertise: String,
    peer_key: Option<Zeroizing<[u8; 32]>>,
    used: Mutex<HashSet<String>>,
    max_shared: Option<u64>,
    http: reqwest::Client,
    timing: Timing,
    /// Numbers this replica's leases.
    leases: std::sync::atomic::AtomicU64,
    /// Fills (and their uploads) under way, for a short-lived process to wait on.
    work: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// One fill's share of [`Fleet::busy`], released on drop.
pub struct Work(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Work {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The bookkeeping round's period, and how recent a use keeps a blob from eviction (it may
/// be being read).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub interval: Duration,
    pub evict_grace: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            evict_grace: Duration::from_secs(30),
        }
    }
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("id", &self.id)
            .field("advertise", &self.advertise)
            .field("database", &self.db.is_some())
            .finish()
    }
}

/// A blob this replica fills for the whole fleet; `release` when it is in the bucket.
pub struct Lease {
    pool: Pool,
    digest: String,
    holder: String,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Gives the lease up (after the blob reached the bucket, or the fill failed).
    pub async fn release(self) {
        self.heartbeat.abort();
        if let Ok(c) = self.pool.get().await {
            let _ = c
                .execute(
                    "DELETE FROM fill_leases WHERE digest = $1 AND holder = $2",
                    &[&self.digest, &self.holder],
                )
                .await;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Without `release`, the row simply expires.
        self.heartbeat.abort();
    }
}

pub enum LeaseOutcome {
    Mine(Lease),
    /// Another replica fills it; its advertised URL.
    Held {
        address: String,
    },
}

impl Fleet {
    pub fn new(
        shared: Option<SharedBlobs>,
        db: Option<Pool>,
        advertise: String,
        peer_key: Option<Zeroizing<[u8; 32]>>,
        max_shared: Option<u64>,
        timing: Timing,
    ) -> Self {
        let mut rand = [0u8; 4];
        let _ = getrandom::fill(&mut rand);
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "replica".into());
        Self {
            shared,
            db,
            id: format!("{host}-{}-{}", std::process::id(), hex::encode(rand)),
            advertise: advertise.trim_end_matches('/').to_string(),
            peer_key,
            used: Mutex::default(),
            max_shared,
            // Replicas talk directly (never through HTTP(S)_PROXY, which would see the peer
            // credential), and a peer silent for 30 s counts as gone: the follower resumes.
            http: reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(Duration::from_secs(3))
                .read_timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            timing,
            leases: std::sync::atomic::AtomicU64::new(0),
            work: Default::default(),
        }
    }

    /// Marks a fill (through its upload) as under way until the guard drops.
    pub fn work(&self) -> Work {
        self.work.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Work(self.work.clone())
    }

    /// Fills and uploads under way.
    pub fn busy(&self) -> usize {
        self.work.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn coordinated(&self) -> bool {
        self.db.is_some() && self.peer_key.is_some()
    }

    /// Takes the fill lease for `d`, or says which replica holds it.
    pub async fn take_lease(&self, d: &Digest) -> Result<LeaseOutcome, String> {
        let Some(pool) = &self.db else {
            return Err("no database".into());
        };
        let client = pool.get().await.map_err(|e| describe_pool(&e))?;
        let digest = d.to_string();
        // Each lease its own holder name: a later fill of the same digest on this replica must
        // not be released by an earlier one finishing its upload.
        let holder = format!(
            "{}#{}",
            self.id,
            self.leases
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        for _ in 0..3 {
            let mine = client
                .query_opt(
                    "INSERT INTO fill_leases (digest, holder, address) VALUES ($1, $2, $3)
                     ON CONFLICT (digest) DO UPDATE
                       SET holder = EXCLUDED.holder, address = EXCLUDED.address, heartbeat = now()
                       WHERE fill_leases.heartbeat < now() - make_interval(secs => $4)
                     RETURNING holder",
                    &[&digest, &holder, &self.advertise, &LEASE_EXPIRY_SECS],
                )
                .await
                .map_err(|e| describe(&e))?;
            if mine.is_some() {
                let (pool2, digest2, holder2) = (pool.clone(), digest.clone(), holder.clone());
                let heartbeat = tokio::spawn(async move {
                    let mut tick = tokio::time::interval(HEARTBEAT);
                    loop {
                        tick.tick().await;
                        if let Ok(c) = pool2.get().await {
                            let _ = c
                                .execute(
                                    "UPDATE fill_leases SET heartbeat = now() WHERE digest = $1 AND holder = $2",
                                    &[&digest2, &holder2],
                                )
                                .await;
                        }
                    }
                });
                return Ok(LeaseOutcome::Mine(Lease {
                    pool: pool.clone(),
                    digest,
                    holder,
                    heartbeat,
                }));
            }
            let held = client
                .query_opt(
                    "SELECT address FROM fill_leases WHERE digest = $1",
                    &[&digest],
                )
                .await
                .map_err(|e| describe(&e))?;
            // Released between the two statements: try again.
            if let Some(row) = held {
                return Ok(LeaseOutcome::Held {
                    address: row.get(0),
                });
            }
        }
        Err("the lease changed hands three times in a row".into())
    }

    /// A key for `purpose` that every replica of this fleet derives alike (from the master key).
    pub fn derived_key(&self, purpose: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
        let key = self.peer_key.as_ref()?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&key[..]).ok()?;
        mac.update(b"pullsecret-fleet-derive/v1/");
        mac.update(purpose);
        Some(Zeroizing::new(mac.finalize().into_bytes().into()))
    }

    /// Writes links this replica confirms (their keys, from `rx`) to the shared table.
    pub async fn share_links(&self, mut rx: tokio::sync::mpsc::UnboundedReceiver<String>) {
        let Some(pool) = &self.db else { return };
        while let Some(first) = rx.recv().await {
            let mut keys = vec![first];
            while keys.len() < 500 {
                match rx.try_recv() {
                    Ok(k) => keys.push(k),
                    Err(_) => break,
                }
            }
            let r = async {
                let c = pool.get().await.map_err(|e| describe_pool(&e))?;
                c.execute(
                    "INSERT INTO content_links (key) SELECT unnest($1::text[])
                     ON CONFLICT (key) DO UPDATE SET confirmed_at = now()",
                    &[&keys],
                )
                .await
                .map_err(|e| describe(&e))
            }
            .await;
            if let Err(e) = r {
                // Lost links cost other replicas one upstream confirmation each, nothing more.
                tracing::debug!(error = %e, "fleet: cannot share links");
            }
        }
    }

    /// When another replica confirmed the link `key` within `ttl`: the time it did. Bounded by
    /// a second, so a slow database only means asking the upstream instead.
    pub async fn shared_link(&self, key: &str, ttl: Duration) -> Option<std::time::SystemTime> {
        let pool = self.db.as_ref()?;
        let ask = async {
            let c = pool.get().await.ok()?;
            let row = c
                .query_opt(
                    "SELECT extract(epoch FROM confirmed_at)::float8 FROM content_links
                     WHERE key = $1 AND confirmed_at > now() - make_interval(secs => $2)",
                    &[&key, &ttl.as_secs_f64()],
                )
                .await
                .ok()??;
            let secs: f64 = row.get(0);
            Some(std::time::UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0)))
        };
        tokio::time::timeout(Duration::from_secs(1), ask)
            .await
            .ok()
            .flatten()
    }

    /// Runs `f` on a pooled connection within a second; `None` on any failure (the caller then
    /// asks the upstream, as without a fleet).
    async fn quick<T, F, Fut>(&self, f: F) -> Option<T>
    where
        F: FnOnce(deadpool_postgres::Object) -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let pool = self.db.as_ref()?;
        let ask = async {
            let c = pool.get().await.ok()?;
            f(c).await
        };
        tokio::time::timeout(Duration::from_secs(1), ask)
            .await
            .ok()
            .flatten()
    }

    /// The shared answer for the tag `key`: digest, media type, size and when it was checked.
    pub async fn tag_get(&self, key: &str) -> Option<(String, String, u64, u64)> {
        self.quick(|c| async move {
            let row = c
                .query_opt(
                    "SELECT digest, media_type, size, checked FROM shared_tags WHERE key = $1",
                    &[&key],
                )
                .await
                .ok()??;
            let size: i64 = row.get(2);
            let checked: i64 = row.get(3);
            Some((
                row.get(0),
                row.get(1),
                u64::try_from(size).ok()?,
                u64::try_from(checked).ok()?,
            ))
        })
        .await
    }

    /// Shares a tag answer (newer checks win).
    pub async fn tag_put(
        &self,
        key: String,
        digest: String,
        media_type: String,
        size: u64,
        checked: u64,
    ) {
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        let checked = i64::try_from(checked).unwrap_or(i64::MAX);
        let done = self
            .quick(|c| async move {
                c.execute(
                    "INSERT INTO shared_tags (key, digest, media_type, size, checked)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (key) DO UPDATE SET digest = EXCLUDED.digest,
                       media_type = EXCLUDED.media_type, size = EXCLUDED.size,
                       checked = EXCLUDED.checked
                     WHERE shared_tags.checked <= EXCLUDED.checked",
                    &[&key, &digest, &media_type, &size, &checked],
                )
                .await
                .ok()
            })
            .await;
        if done.is_none() {
            tracing::debug!("fleet: cannot share a tag answer");
        }
    }

    /// A shared manifest's media type and bytes (unverified: the caller checks the digest).
    pub async fn manifest_get(&self, d: &Digest) -> Option<(String, Vec<u8>)> {
        let digest = d.to_string();
        self.quick(|c| async move {
            let row = c
                .query_opt(
                    "SELECT media_type, bytes FROM shared_manifests WHERE digest = $1",
                    &[&digest],
                )
                .await
                .ok()??;
            Some((row.get(0), row.get(1)))
        })
        .await
    }

    pub async fn manifest_put(&self, d: &Digest, media_type: String, bytes: Vec<u8>) {
        let digest = d.to_string();
        let done = self
            .quick(|c| async move {
                c.execute(
                    "INSERT INTO shared_manifests (digest, media_type, bytes) VALUES ($1, $2, $3)
                     ON CONFLICT (digest) DO NOTHING",
                    &[&digest, &media_type, &bytes],
                )
                .await
                .ok()
            })
            .await;
        if done.is_none() {
            tracing::debug!("fleet: cannot share a manifest");
        }
    }

    /// The peer endpoint's credential for `d`: an HMAC under a key derived from the master key,
    /// which every replica of one fleet holds and nobody else does.
    pub fn peer_token(&self, d: &Digest) -> Option<String> {
        let key = self.peer_key.as_ref()?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&key[..]).ok()?;
        mac.update(b"pullsecret-fleet-peer/v1/");
        mac.update(d.to_string().as_bytes());
        Some(hex::encode(mac.finalize().into_bytes()))
    }

    /// Whether an `Authorization` header carries the peer credential for `d`.
    pub fn peer_authorized(&self, d: &Digest, header: Option<&str>) -> bool {
        let Some(key) = self.peer_key.as_ref() else {
            return false;
        };
        let Some(given) = header
            .and_then(|h| h.strip_prefix(PEER_SCHEME))
            .map(str::trim)
            .and_then(|t| hex::decode(t).ok())
        else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key[..]) else {
            return false;
        };
        mac.update(b"pullsecret-fleet-peer/v1/");
        mac.update(d.to_string().as_bytes());
        mac.verify_slice(&given).is_ok()
    }

    /// `d` from `offset` on, from the replica at `address` that is filling it.
    pub async fn peer_get(
        &self,
        address: &str,
        d: &Digest,
        offset: u64,
    ) -> Result<reqwest::Response, String> {
        let token = self.peer_token(d).ok_or("no peer key")?;
        let mut req = self
            .http
            .get(format!("{address}{PEER_PATH}{d}"))
            .header("Authorization", format!("{PEER_SCHEME} {token}"));
        if offset > 0 {
            req = req.header("Range", format!("bytes={offset}-"));
        }
        let resp = req.send().await.map_err(|e| {
            format!(
                "replica {address}: {}",
                crate::registry::http::describe_reqwest(&e)
            )
        })?;
        let want = if offset > 0 { 206 } else { 200 };
        if resp.status().as_u16() != want {
            return Err(format!("replica {address} answered {}", resp.status()));
        }
        Ok(resp)
    }

    /// Notes a use of `d` for the shared bucket's LRU (written in batches, never on the hit path).
    pub fn used(&self, d: &Digest) {
        if self.db.is_some() && self.shared.is_some() {
            self.used
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(d.to_string());
        }
    }

    /// Records that the bucket now holds `d`.
    pub async fn stored(&self, d: &Digest, size: u64) {
        let Some(pool) = &self.db else { return };
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        let r = async {
            let c = pool.get().await.map_err(|e| describe_pool(&e))?;
            c.execute(
                "INSERT INTO shared_blobs (digest, size) VALUES ($1, $2)
                 ON CONFLICT (digest) DO UPDATE SET last_used = now()",
                &[&d.to_string(), &size],
            )
            .await
            .map_err(|e| describe(&e))
        }
        .await;
        if let Err(e) = r {
            tracing::warn!(%d, error = %e, "fleet: cannot record a shared blob");
        }
    }

    /// Every few seconds: writes the uses noted since the last round (`used` gives this
    /// replica's used and pinned digests), then, on one replica at a time, evicts the bucket's
    /// least recently used blobs above `cache.max_size`.
    pub async fn maintain(&self, used: impl Fn() -> (Vec<Digest>, Vec<Digest>)) {
        let Some(pool) = &self.db else { return };
        let mut tick = tokio::time::interval(self.timing.interval);
        loop {
            tick.tick().await;
            let (local, pinned) = used();
            let mut used: Vec<String> =
                std::mem::take(&mut *self.used.lock().unwrap_or_else(|e| e.into_inner()))
                    .into_iter()
                    .collect();
            used.extend(local.iter().map(ToString::to_string));
            let pins: Vec<String> = pinned.iter().map(ToString::to_string).collect();
            if let Err(e) = self.round(pool, &used, &pins).await {
                tracing::debug!(error = %e, "fleet: bookkeeping round failed");
            }
        }
    }

    async fn round(&self, pool: &Pool, used: &[String], pins: &[String]) -> Result<(), String> {
        let c = pool.get().await.map_err(|e| describe_pool(&e))?;
        if !used.is_empty() {
            c.execute(
                "UPDATE shared_blobs SET last_used = now() WHERE digest = ANY($1)",
                &[&used],
            )
            .await
            .map_err(|e| describe(&e))?;
        }
        // This replica's pins now: refreshed, and the ones it dropped removed.
        c.execute(
            "INSERT INTO shared_pins (digest, holder) SELECT unnest($1::text[]), $2
             ON CONFLICT (digest, holder) DO UPDATE SET refreshed_at = now()",
            &[&pins, &self.id],
        )
        .await
        .map_err(|e| describe(&e))?;
        c.execute(
            "DELETE FROM shared_pins WHERE holder = $1 AND NOT (digest = ANY($2))",
            &[&self.id, &pins],
        )
        .await
        .map_err(|e| describe(&e))?;
        // Leases of replicas that died between their upload and their release.
        c.execute(
            "DELETE FROM fill_leases WHERE heartbeat < now() - make_interval(secs => $1)",
            &[&(LEASE_EXPIRY_SECS * 4.0)],
        )
        .await
        .map_err(|e| describe(&e))?;
        c.execute(
            "DELETE FROM content_links WHERE confirmed_at < now() - interval '30 days'",
            &[],
        )
        .await
        .map_err(|e| describe(&e))?;
        let (Some(max), Some(shared)) = (self.max_shared, &self.shared) else {
            return Ok(());
        };
        let locked: bool = c
            .query_one("SELECT pg_try_advisory_lock($1)", &[&EVICT_LOCK])
            .await
            .map_err(|e| describe(&e))?
            .get(0);
        if !locked {
            return Ok(());
        }
        let r = self.evict(&c, shared, max).await;
        let _ = c
            .execute("SELECT pg_advisory_unlock($1)", &[&EVICT_LOCK])
            .await;
        r
    }

    async fn evict(
        &self,
        c: &deadpool_postgres::Object,
        shared: &SharedBlobs,
        max: u64,
    ) -> Result<(), String> {
        let total: i64 = c
            .query_one(
                "SELECT COALESCE(SUM(size), 0)::bigint FROM shared_blobs",
                &[],
            )
            .await
            .map_err(|e| describe(&e))?
            .get(0);
        let mut over = u64::try_from(total).unwrap_or(0).saturating_sub(max);
        if over == 0 {
            return Ok(());
        }
        let rows = c
            .query(
                "SELECT digest, size FROM shared_blobs b
                 WHERE NOT EXISTS (SELECT 1 FROM fill_leases l WHERE l.digest = b.digest
                                     AND l.heartbeat > now() - make_interval(secs => $2))
                   AND NOT EXISTS (SELECT 1 FROM shared_pins p WHERE p.digest = b.digest
                                     AND p.refreshed_at > now() - make_interval(secs => $3))
                   AND last_used < now() - make_interval(secs => $1)
                 ORDER BY last_used LIMIT 1000",
                &[
                    &self.timing.evict_grace.as_secs_f64(),
                    &LEASE_EXPIRY_SECS,
                    &(self.timing.interval.as_secs_f64() * 3.0).max(60.0),
                ],
            )
            .await
            .map_err(|e| describe(&e))?;
        for row in rows {
            if over == 0 {
                break;
            }
            let digest: String = row.get(0);
            let size: i64 = row.get(1);
            let Ok(d) = Digest::parse(&digest) else {
                continue;
            };
            shared.delete(&d).await?;
            c.execute("DELETE FROM shared_blobs WHERE digest = $1", &[&digest])
                .await
                .map_err(|e| describe(&e))?;
            tracing::info!(%digest, size, "fleet: evicted from the shared bucket");
            over = over.saturating_sub(u64::try_from(size).unwrap_or(0));
        }
        Ok(())
    }
}
