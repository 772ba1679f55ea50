//! `Digest`: a content digest (`sha256:<hex>`, `sha512:<hex>`) that can only hold
//! valid values, and the streaming `Verifier` that computes one.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A hash algorithm a `Digest` may name.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    /// Parsed and validated so references that carry one are accepted, but
    /// nothing here computes it: the proxy serves and stores sha256 only.
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the hex encoding of this algorithm's output.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `algorithm:hex` with a known algorithm and exactly its length of lowercase
/// hex. Safe to use as a file name component (`blobs/sha256/<hex>`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest {
    algorithm: Algorithm,
    /// The whole `algorithm:hex` text, kept so `as_str` needs no allocation.
    text: String,
}

#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("empty digest")]
    Empty,
    #[error("invalid digest format: expected ALGORITHM:HEX")]
    InvalidFormat,
    #[error("unsupported digest algorithm (expected sha256 or sha512)")]
    UnsupportedAlgorithm,
    #[error(
        "invalid digest length for {algorithm}: expected {expected} hex characters, got {found}"
    )]
    InvalidLength {
        algorithm: Algorithm,
        expected: usize,
        found: usize,
    },
    #[error("invalid digest: the encoded part must be lowercase hex")]
    InvalidHex,
}

impl Digest {
    /// Accepts only `sha256:<64 lowercase hex>` and `sha512:<128 lowercase hex>`.
    /// Anything else, including `..`, `/` or percent-encoding, is rejected, so a
    /// parsed digest can be joined onto a path.
    pub fn parse(input: &str) -> Result<Self, DigestError> {
        if input.is_empty() {
            return Err(DigestError::Empty);
        }
        let Some((name, encoded)) = input.split_once(':') else {
            return Err(DigestError::InvalidFormat);
        };
        if name.is_empty() || encoded.is_empty() {
            return Err(DigestError::InvalidFormat);
        }
        let Some(algorithm) = Algorithm::from_name(name) else {
            // A well-formed but unknown name is "unsupported"; garbage is a
            // format error, as go-digest reports it.
            return Err(if is_algorithm_grammar(name) {
                DigestError::UnsupportedAlgorithm
            } else {
                DigestError::InvalidFormat
            });
        };
        // Counted in chars so a multi-byte character cannot pass as two.
        let found = encoded.chars().count();
        if found != algorithm.hex_len() {
            return Err(DigestError::InvalidLength {
                algorithm,
                expected: algorithm.hex_len(),
                found,
            });
        }
        if !encoded
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(DigestError::InvalidHex);
        }
        Ok(Self {
            algorithm,
            text: input.to_string(),
        })
    }

    /// The sha256 digest of `bytes`.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        let mut verifier = Verifier::new();
        verifier.update(bytes);
        verifier.finish()
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex part, without `algorithm:`.
    pub fn hex(&self) -> &str {
        // The algorithm name is ASCII and followed by ':', so this index is a
        // char boundary inside `text`.
        &self.text[self.algorithm.as_str().len() + 1..]
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// `[a-z0-9]+([+._-][a-z0-9]+)*`, the algorithm grammar of the OCI image spec.
fn is_algorithm_grammar(name: &str) -> bool {
    name.split(['+', '.', '_', '-']).all(|part| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.text)
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> Self {
        d.text
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

/// Computes a sha256 `Digest` over bytes fed in pieces, so content can be
/// verified while it streams to disk and to clients.
#[derive(Clone, Default)]
pub struct Verifier {
    hasher: Sha256,
}

impl Verifier {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
    }

    pub fn finish(self) -> Digest {
        let hex = hex::encode(self.hasher.finalize());
        Digest {
            algorithm: Algorithm::Sha256,
            text: format!("sha256:{hex}"),
        }
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Verifier(sha256)")
    }
}

/// Lets a verifier sit behind `io::copy` or a tee writer.
impl std::io::Write for Verifier {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_sha256_and_exposes_parts() {
        let d = Digest::parse(EMPTY_SHA256).expect("valid digest");
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(
            d.hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d.to_string(), EMPTY_SHA256);
        assert_eq!(d.as_str(), EMPTY_SHA256);
    }

    #[test]
    fn parses_sha512() {
        let s = format!("sha512:{}", "f".repeat(128));
        let d = Digest::parse(&s).expect("valid sha512");
        assert_eq!(d.algorithm(), Algorithm::Sha512);
        assert_eq!(d.hex().len(), 128);
        assert_eq!(d.to_string(), s);
    }

    #[test]
    fn of_bytes_matches_known_vectors() {
        assert_eq!(Digest::of_bytes(b"").as_str(), EMPTY_SHA256);
        assert_eq!(
            Digest::of_bytes(b"abc").as_str(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn verifier_streams_to_the_same_digest() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut v = Verifier::new();
        for chunk in data.chunks(7) {
            v.update(chunk);
        }
        assert_eq!(v.finish(), Digest::of_bytes(&data));
    }

    #[test]
    fn verifier_works_as_io_write() {
        let mut v = Verifier::new();
        std::io::copy(&mut &b"abc"[..], &mut v).expect("copy into verifier");
        assert_eq!(v.finish(), Digest::of_bytes(b"abc"));
    }

    #[test]
    fn rejects_bad_input_with_exact_errors() {
        let hex64 = "a".repeat(64);
        let cases: Vec<(String, DigestError)> = vec![
            (String::new(), DigestError::Empty),
            (hex64.clone(), DigestError::InvalidFormat),
            ("sha256:".into(), DigestError::InvalidFormat),
            (format!(":{hex64}"), DigestError::InvalidFormat),
            (format!("md5:{hex64}"), DigestError::UnsupportedAlgorithm),
            (
                format!("sha384:{}", "a".repeat(96)),
                DigestError::UnsupportedAlgorithm,
            ),
            (format!("SHA256:{hex64}"), DigestError::InvalidFormat),
            (format!("../sha256:{hex64}"), DigestError::InvalidFormat),
            (
                "sha256:abc".into(),
                DigestError::InvalidLength {
                    algorithm: Algorithm::Sha256,
                    expected: 64,
                    found: 3,
                },
            ),
            (
                format!("sha256:{hex64}a"),
                DigestError::InvalidLength {
                    algorithm: Algorithm::Sha256,
                    expected: 64,
                    found: 65,
                },
            ),
            (
                format!("sha512:{hex64}"),
                DigestError::InvalidLength {
                    algorithm: Algorithm::Sha512,
                    expected: 128,
                    found: 64,
                },
            ),
            (
                format!("sha256:{}", "A".repeat(64)),
                DigestError::InvalidHex,
            ),
            (
                format!("sha256:{}g", "a".repeat(63)),
                DigestError::InvalidHex,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(Digest::parse(&input), Err(want), "input {input:?}");
        }
    }

    #[test]
    fn rejects_path_traversal_shapes() {
        let traversal = [
            format!("sha256:..{}", "a".repeat(62)),
            format!("sha256:/{}", "a".repeat(63)),
            format!("sha256:{}/..", "a".repeat(61)),
            format!("sha256:%2e%2e{}", "a".repeat(58)),
            format!("sha256:%2E%2E{}", "a".repeat(58)),
            format!("sha256:{}\0", "a".repeat(63)),
            format!("sha256:{} ", "a".repeat(63)),
            format!("sha256:{}é", "a".repeat(63)),
            "sha256:../../../../etc/passwd".to_string(),
        ];
        for input in traversal {
            assert!(Digest::parse(&input).is_err(), "accepted {input:?}");
        }
    }

    #[test]
    fn serde_round_trips_and_validates() {
        let d = Digest::parse(EMPTY_SHA256).expect("valid digest");
        let json = serde_json::to_string(&d).expect("serialize");
        assert_eq!(json, format!("\"{EMPTY_SHA256}\""));
        let back: Digest = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, d);
        assert!(serde_json::from_str::<Digest>("\"sha256:nope\"").is_err());
    }

    #[test]
    fn never_panics_on_arbitrary_input() {
        for input in crate::registry::fuzz_inputs() {
            let _ = Digest::parse(&input);
        }
    }
}
