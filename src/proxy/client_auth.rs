//! Client authentication to the proxy (optional): client credentials stored as hashed generic
//! secrets, a token endpoint speaking docker's GET and containerd's OAuth2 POST, and HMAC tokens
//! that carry the client's namespace.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use secrecy::ExposeSecret;
use sha2::{Digest as _, Sha256};

use crate::secret::SecretValue;
use crate::store::{SecretData, SecretStore};

/// Namespace that holds client credentials (`pullsecret proxy client add`).
pub const CLIENTS_NAMESPACE: &str = "proxy-clients";
/// Unauthenticated clients, when client auth is on.
pub const ANONYMOUS: &str = "anonymous";
const HASH_ROUNDS: u32 = 20_000;

/// Issues and checks tokens with a key that lives only in this process, or (in a fleet) one
/// every replica derives from the shared master key, so a token from one replica is good on all.
pub struct TokenAuthority {
    key: [u8; 32],
    shared_key: std::sync::OnceLock<zeroize::Zeroizing<[u8; 32]>>,
    pub ttl: Duration,
}

/// What a valid token says: whose it is, and which version of the client record it was
/// issued for (so removing or moving the client ends it at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub namespace: String,
    /// Empty for anonymous tokens.
    pub user: String,
    /// `ClientRecord::fingerprint` when issued.
    pub fingerprint: String,
}

impl TokenAuthority {
    pub fn new(ttl: Duration) -> Self {
        let mut key = [0u8; 32];
        // Without an OS RNG the proxy should not start issuing tokens at all.
        getrandom::fill(&mut key).expect("OS random source");
        Self {
            key,
            shared_key: std::sync::OnceLock::new(),
            ttl,
        }
    }

    /// Fleet mode: signs and checks with `key` from now on (set once, at start).
    pub fn share_key(&self, key: zeroize::Zeroizing<[u8; 32]>) {
        let _ = self.shared_key.set(key);
    }

    fn key(&self) -> &[u8; 32] {
        self.shared_key.get().map_or(&self.key, |k| k)
    }

    /// `kind.namespace.expiry.user.fingerprint.mac`, base64url parts; `kind` is `a` (access)
    /// or `r` (refresh).
    pub fn issue(&self, kind: &str, claims: &Claims, lifetime: Duration) -> String {
        let exp = now() + lifetime.as_secs();
        let body = format!(
            "{kind}.{}.{exp}.{}.{}",
            B64.encode(&claims.namespace),
            B64.encode(&claims.user),
            B64.encode(&claims.fingerprint)
        );
        format!("{body}.{}", B64.encode(hmac(self.key(), body.as_bytes())))
    }

    /// The claims of a valid, unexpired token of `kind` (the caller checks them against the
    /// current client record).
    pub fn verify(&self, kind: &str, token: &str) -> Option<Claims> {
        let (body, mac) = token.rsplit_once('.')?;
        let expected = B64.encode(hmac(self.key(), body.as_bytes()));
        if !constant_time_eq(expected.as_bytes(), mac.as_bytes()) {
            return None;
        }
        let mut parts = body.split('.');
        let (k, ns, exp, user, fp) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        if k != kind || exp.parse::<u64>().ok()? < now() || parts.next().is_some() {
            return None;
        }
        let text = |p: &str| String::from_utf8(B64.decode(p).ok()?).ok();
        Some(Claims {
            namespace: text(ns)?,
            user: text(user)?,
            fingerprint: text(fp)?,
        })
    }
}

/// A proxy client as stored: its namespace, password hash and the fingerprint of both.
#[derive(Clone)]
pub struct ClientRecord {
    pub namespace: String,
    hash: String,
    /// Changes whenever the client is removed, re-added, moved or given a new password.
    pub fingerprint: String,
}

impl ClientRecord {
    pub fn claims(&self, user: &str) -> Claims {
        Claims {
            namespace: self.namespace.clone(),
            user: user.to_string(),
            fingerprint: self.fingerprint.clone(),
        }
    }
}

/// Client `user`'s record (blocking: reads the store).
pub fn client_record(store: &dyn SecretStore, user: &str) -> Option<ClientRecord> {
    let s = store.get(CLIENTS_NAMESPACE, user).ok()??;
    let SecretData::Generic(map) = &s.data else {
        return None;
    };
    let literal = |k: &str| match map.get(k) {
        Some(SecretValue::Literal(v)) => Some(v.expose_secret().to_string()),
        _ => None,
    };
    let hash = literal("password-hash")?;
    let namespace = literal("namespace")?;
    let fingerprint = hex::encode(
        &Sha256::new()
            .chain_update(hash.as_bytes())
            .chain_update([0u8])
            .chain_update(namespace.as_bytes())
            .finalize()[..12],
    );
    Some(ClientRecord {
        namespace,
        hash,
        fingerprint,
    })
}

/// The stored record of proxy client `user` of `namespace`: only a salted hash of `password` is
/// kept, since the proxy only verifies it. The CLI and the admin API both add clients with it.
pub fn client_secret(user: &str, namespace: &str, password: &str) -> crate::store::StoredSecret {
    use crate::store::{now_unix, Origin, Scope, StoredSecret};
    let mut data = std::collections::BTreeMap::new();
    data.insert(
        "namespace".to_string(),
        SecretValue::Literal(secrecy::SecretString::from(namespace.to_string())),
    );
    data.insert(
        "password-hash".to_string(),
        SecretValue::Literal(secrecy::SecretString::from(hash_password(password))),
    );
    StoredSecret {
        name: user.to_string(),
        namespace: CLIENTS_NAMESPACE.to_string(),
        scope: Scope::Namespace,
        created: now_unix(),
        origin: Origin::Created,
        data: SecretData::Generic(data),
    }
}

/// Whether `password` is right for `record`; with no record, the same work against a dummy
/// hash, so the answer's timing does not tell which users exist.
pub fn verify_client(record: Option<&ClientRecord>, password: &str) -> bool {
    match record {
        Some(r) => verify_password(password, &r.hash),
        None => {
            let _ = verify_password(password, dummy_hash());
            false
        }
    }
}

fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("no such client"))
}

/// `sha256i$ROUNDS$SALT$HASH`: a salted, iterated hash; the proxy only needs to verify.
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("OS random source");
    let salt = B64.encode(salt);
    format!(
        "sha256i${HASH_ROUNDS}${salt}${}",
        B64.encode(stretch(password, &salt, HASH_ROUNDS))
    )
}

pub fn verify_password(password: &str, stored: &str) -> bool {
    let mut parts = stored.split('$');
    let (Some("sha256i"), Some(rounds), Some(salt), Some(hash)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(rounds) = rounds.parse::<u32>() else {
        return false;
    };
    constant_time_eq(
        B64.encode(stretch(password, salt, rounds.min(1_000_000)))
            .as_bytes(),
        hash.as_bytes(),
    )
}

fn stretch(password: &str, salt: &str, rounds: u32) -> [u8; 32] {
    let mut h: [u8; 32] = Sha256::new()
        .chain_update(salt.as_bytes())
        .chain_update(password.as_bytes())
        .finalize()
        .into();
    for _ in 0..rounds {
        h = Sha256::new()
            .chain_update(h)
            .chain_update(salt.as_bytes())
            .finalize()
            .into();
    }
    h
}

fn hmac(key: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for i in 0..32 {
        ipad[i] ^= key[i];
        opad[i] ^= key[i];
    }
    let inner: [u8; 32] = Sha256::new()
        .chain_update(ipad)
        .chain_update(msg)
        .finalize()
        .into();
    Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// Compares secrets (MACs, hashes, CSRF tokens) in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_resist_tampering() {
        let a = TokenAuthority::new(Duration::from_secs(60));
        let claims = Claims {
            namespace: "team-a".into(),
            user: "alice".into(),
            fingerprint: "f1".into(),
        };
        let t = a.issue("a", &claims, Duration::from_secs(60));
        assert_eq!(a.verify("a", &t), Some(claims.clone()));
        assert_eq!(
            a.verify("r", &t),
            None,
            "an access token is not a refresh token"
        );
        let forged = t.replacen(&B64.encode("team-a"), &B64.encode("team-b"), 1);
        assert_eq!(a.verify("a", &forged), None);
        let expired = a.issue("a", &claims, Duration::ZERO);
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(a.verify("a", &expired), None);
        assert_eq!(
            TokenAuthority::new(Duration::from_secs(60)).verify("a", &t),
            None,
            "another key"
        );
    }

    #[test]
    fn password_hashes_verify() {
        let h = hash_password("s3cret");
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("s3cret!", &h));
        assert!(!h.contains("s3cret"));
        assert!(!verify_password("x", "garbage"));
    }
}
