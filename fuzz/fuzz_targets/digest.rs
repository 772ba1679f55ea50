//! `Digest::parse` on arbitrary text: never panics, and accepts exactly
//! `sha256:<64 lowercase hex>` and `sha512:<128 lowercase hex>`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullsecret::registry::digest::{Algorithm, Digest};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = Digest::parse(input);
    assert_eq!(parsed.is_ok(), oracle(input), "{input:?} -> {parsed:?}");
    let Ok(d) = parsed else {
        return;
    };
    assert_eq!(d.as_str(), input);
    assert_eq!(d.to_string(), input);
    let expected_len = match d.algorithm() {
        Algorithm::Sha256 => 64,
        Algorithm::Sha512 => 128,
        other => panic!("unexpected algorithm {other:?}"),
    };
    assert_eq!(d.hex().len(), expected_len);
    assert_eq!(format!("{}:{}", d.algorithm(), d.hex()), input);
    assert_eq!(Digest::parse(&d.to_string()).as_ref(), Ok(&d));
    // serde goes through the same parser.
    let json = serde_json::to_string(&d).expect("a digest serializes");
    let back: Digest = serde_json::from_str(&json).expect("a digest deserializes");
    assert_eq!(back, d);
});

/// The accepted language, written independently of the parser.
fn oracle(s: &str) -> bool {
    let hex = |h: &str, n: usize| {
        h.len() == n && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    match s.split_once(':') {
        Some(("sha256", h)) => hex(h, 64),
        Some(("sha512", h)) => hex(h, 128),
        _ => false,
    }
}
