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

/// Issues and checks tokens with a key that lives only in this process.
pub struct TokenAuthority {
    key: [u8; 32],
    pub ttl: Duration,
}

impl TokenAuthority {
    pub fn new(ttl: Duration) -> Self {
        let mut key = [0u8; 32];
        // Without an OS RNG the proxy should not start issuing tokens at all.
        getrandom::fill(&mut key).expect("OS random source");
        Self { key, ttl }
    }

    /// `kind.namespace.expiry.mac`, base64url parts; `kind` is `a` (access) or `r` (refresh).
    pub fn issue(&self, kind: &str, namespace: &str, lifetime: Duration) -> String {
        let exp = now() + lifetime.as_secs();
        let body = format!("{kind}.{}.{exp}", B64.encode(namespace));
        format!("{body}.{}", B64.encode(hmac(&self.key, body.as_bytes())))
    }

    /// The namespace a valid, unexpired token of `kind` names.
    pub fn verify(&self, kind: &str, token: &str) -> Option<String> {
        let (body, mac) = token.rsplit_once('.')?;
        let expected = B64.encode(hmac(&self.key, body.as_bytes()));
        if !constant_time_eq(expected.as_bytes(), mac.as_bytes()) {
            return None;
        }
        let mut parts = body.split('.');
        let (k, ns, exp) = (parts.next()?, parts.next()?, parts.next()?);
        if k != kind || exp.parse::<u64>().ok()? < now() {
            return None;
        }
        String::from_utf8(B64.decode(ns).ok()?).ok()
    }
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

/// The namespace of client `user` if `password` is right (blocking: reads the store).
pub fn check_client(store: &dyn SecretStore, user: &str, password: &str) -> Option<String> {
    let s = store.get(CLIENTS_NAMESPACE, user).ok()??;
    let SecretData::Generic(map) = &s.data else {
        return None;
    };
    let literal = |k: &str| match map.get(k) {
        Some(SecretValue::Literal(v)) => Some(v.expose_secret().to_string()),
        _ => None,
    };
    let hash = literal("password-hash")?;
    let ns = literal("namespace")?;
    verify_password(password, &hash).then_some(ns)
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

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
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
        let t = a.issue("a", "team-a", Duration::from_secs(60));
        assert_eq!(a.verify("a", &t).as_deref(), Some("team-a"));
        assert_eq!(
            a.verify("r", &t),
            None,
            "an access token is not a refresh token"
        );
        let forged = t.replacen(&B64.encode("team-a"), &B64.encode("team-b"), 1);
        assert_eq!(a.verify("a", &forged), None);
        let expired = a.issue("a", "team-a", Duration::ZERO);
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
