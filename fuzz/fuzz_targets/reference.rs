//! `Reference::parse` and `RepositoryName::parse` on arbitrary text: never panic,
//! and whatever parses prints to text that parses back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullsecret::registry::digest::Digest;
use pullsecret::registry::reference::{Reference, RepositoryName, NAME_MAX_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    check_reference(input);
    check_repository_name(input);
});

fn check_reference(input: &str) {
    let Ok(r) = Reference::parse(input) else {
        return;
    };
    let shown = r.to_string();
    let again = Reference::parse(&shown)
        .unwrap_or_else(|e| panic!("{input:?} parsed, but its Display {shown:?} does not: {e}"));
    // Display adds `:latest` when the input named neither tag nor digest, so the
    // re-parse may carry that tag explicitly; everything else must be equal.
    let expected = if r.tag().is_none() && r.digest().is_none() {
        Some("latest")
    } else {
        r.tag()
    };
    assert_eq!(again.registry(), r.registry(), "{input:?}");
    assert_eq!(again.repository_name(), r.repository_name(), "{input:?}");
    assert_eq!(again.tag(), expected, "{input:?}");
    assert_eq!(again.digest(), r.digest(), "{input:?}");
    assert_eq!(again.reference_str(), r.reference_str(), "{input:?}");
    assert_eq!(again.to_string(), shown, "{input:?}");
    if r.tag().is_some() || r.digest().is_some() {
        assert_eq!(again, r, "{input:?}");
    }

    // The parts hold only valid values.
    assert!(r.registry().len() + 1 + r.repository().len() <= NAME_MAX_LEN);
    let repo = RepositoryName::parse(r.repository())
        .unwrap_or_else(|e| panic!("{input:?}: repository {:?} invalid: {e}", r.repository()));
    assert_eq!(&repo, r.repository_name());
    if let Some(d) = r.digest() {
        assert_eq!(Digest::parse(d.as_str()).as_ref(), Ok(d));
    }
    if r.is_docker_hub() {
        assert!(
            r.repository().contains('/'),
            "{input:?}: hub name without namespace"
        );
    }
    // Docker's short form is ambiguous for some Hub names (`docker.io/localhost/x`
    // prints as `localhost/x`), as in docker itself: only require it not to panic.
    let _ = Reference::parse(&r.familiar());
}

fn check_repository_name(input: &str) {
    let Ok(name) = RepositoryName::parse(input) else {
        return;
    };
    assert_eq!(name.as_str(), input);
    assert_eq!(name.to_string(), input);
    assert_eq!(RepositoryName::parse(&name.to_string()).as_ref(), Ok(&name));
    assert!(input.len() <= NAME_MAX_LEN);
    // Safe to join onto URL and file paths.
    for seg in name.segments() {
        assert!(!seg.is_empty() && seg != "." && seg != "..", "{input:?}");
        assert!(
            seg.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)),
            "{input:?}"
        );
    }
}
