//! Client checks on the request path: client records cached per store generation (so a removed
//! or moved client loses access at once), verified passwords remembered briefly (the hash cost
//! is paid once a minute, not on every Basic request), and failure limits with backoff.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use super::client_auth::{client_record, verify_client, Claims, ClientRecord, ANONYMOUS};
use super::failure_limit::FailureLimit;
use crate::store::SecretStore;

/// How long a verified password is taken without hashing it again.
const VERIFIED_TTL: Duration = Duration::from_secs(60);
/// How long a record read is trusted when the store has no generation to compare.
const RECORD_TTL_UNVERSIONED: Duration = Duration::from_secs(2);
/// Failures (per address, per user) allowed before backoff starts, and the window they count in.
const FREE_FAILURES: u32 = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(300);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
const MAX_ENTRIES: usize = 10_000;

/// The outcome of a client login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accepted(Claims),
    Refused,
    /// Too many failures from this address or for this user: try again after this long.
    Throttled(Duration),
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum FailKey {
    Addr(IpAddr),
    User(String),
}

struct CachedRecord {
    record: Option<ClientRecord>,
    at: Instant,
    generation: Option<u128>,
}

pub struct ClientGate {
    store: Arc<dyn SecretStore + Send + Sync>,
    records: Mutex<HashMap<String, CachedRecord>>,
    /// sha256(user, password) → claims it was verified for, and when.
    verified: Mutex<HashMap<[u8; 32], (Claims, Instant)>>,
    failures: FailureLimit<FailKey>,
}

impl ClientGate {
    pub fn new(store: Arc<dyn SecretStore + Send + Sync>) -> Self {
        Self {
            store,
            records: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
            failures: FailureLimit::new(FREE_FAILURES, FAILURE_WINDOW, MAX_BACKOFF),
        }
    }

    /// Checks `user`'s password, from `addr`.
    pub async fn login(&self, addr: IpAddr, user: &str, password: &str) -> Verdict {
        let keys = [FailKey::Addr(addr), FailKey::User(user.to_string())];
        if let Some(wait) = keys.iter().filter_map(|k| self.backoff(k)).max() {
            return Verdict::Throttled(wait);
        }
        let proof: [u8; 32] = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0u8])
            .chain_update(password.as_bytes())
            .finalize()
            .into();
        let remembered = lock(&self.verified)
            .get(&proof)
            .filter(|(_, at)| at.elapsed() < VERIFIED_TTL)
            .map(|(c, _)| c.clone());
        let record = self.record(user).await;
        if let (Some(claims), Some(r)) = (&remembered, &record) {
            if claims.fingerprint == r.fingerprint && claims.namespace == r.namespace {
                return Verdict::Accepted(claims.clone());
            }
        }
        let pw = zeroize::Zeroizing::new(password.to_string());
        let r2 = record.clone();
        let ok = tokio::task::spawn_blocking(move || verify_client(r2.as_ref(), &pw))
            .await
            .unwrap_or(false);
        match record {
            Some(r) if ok => {
                let claims = r.claims(user);
                let mut verified = lock(&self.verified);
                if verified.len() >= MAX_ENTRIES {
                    verified.clear();
                }
                verified.insert(proof, (claims.clone(), Instant::now()));
                drop(verified);
                for k in &keys {
                    self.failures.clear(k);
                }
                Verdict::Accepted(claims)
            }
            _ => {
                for k in keys {
                    self.failures.fail(k);
                }
                Verdict::Refused
            }
        }
    }

    /// Whether a token's claims still match the client's current record.
    pub async fn current(&self, claims: &Claims) -> bool {
        if claims.user.is_empty() {
            return claims.namespace == ANONYMOUS;
        }
        self.record(&claims.user)
            .await
            .is_some_and(|r| r.fingerprint == claims.fingerprint && r.namespace == claims.namespace)
    }

    fn backoff(&self, key: &FailKey) -> Option<Duration> {
        self.failures.backoff(key)
    }

    async fn record(&self, user: &str) -> Option<ClientRecord> {
        let generation = self.store.generation();
        {
            let records = lock(&self.records);
            if let Some(c) = records.get(user) {
                let fresh = match generation {
                    Some(_) => c.generation == generation,
                    None => c.at.elapsed() < RECORD_TTL_UNVERSIONED,
                };
                if fresh {
                    return c.record.clone();
                }
            }
        }
        let store = self.store.clone();
        let u = user.to_string();
        let record = tokio::task::spawn_blocking(move || client_record(store.as_ref(), &u))
            .await
            .ok()
            .flatten();
        let mut records = lock(&self.records);
        if records.len() >= MAX_ENTRIES {
            records.clear();
        }
        records.insert(
            user.to_string(),
            CachedRecord {
                record: record.clone(),
                at: Instant::now(),
                generation,
            },
        );
        record
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
