//! `parse_challenges` on arbitrary header values: never panics, a success holds at
//! least one challenge, and challenges written back out parse to the same values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullsecret::registry::challenge::{parse_challenges, Challenge, Scheme};

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(challenges) = parse_challenges(header) else {
        return;
    };
    assert!(!challenges.is_empty(), "{header:?}: Ok with no challenge");
    for c in &challenges {
        assert!(c.token68().is_none() || c.params().is_empty());
        for (name, value) in c.params() {
            assert_eq!(name, &name.to_ascii_lowercase());
            assert_eq!(c.param(name), Some(value.as_str()));
            assert!(!value.chars().any(|ch| ch != '\t' && ch.is_ascii_control()));
        }
        if let Scheme::Other(s) = c.scheme() {
            assert_eq!(s, &s.to_ascii_lowercase());
            assert!(!s.eq_ignore_ascii_case("basic") && !s.eq_ignore_ascii_case("bearer"));
        }
        let _ = (c.realm(), c.service(), c.scope());
    }
    let written = write(&challenges);
    let again = parse_challenges(&written)
        .unwrap_or_else(|e| panic!("{header:?} parsed, but {written:?} does not: {e}"));
    assert_eq!(again, challenges, "{header:?} -> {written:?}");
});

/// The canonical form: `Scheme name="value", name="value", Scheme token68`.
fn write(challenges: &[Challenge]) -> String {
    let mut out = Vec::new();
    for c in challenges {
        let mut s = c.scheme().to_string();
        if let Some(t) = c.token68() {
            s.push(' ');
            s.push_str(t);
        }
        let params: Vec<String> = c
            .params()
            .iter()
            .map(|(k, v)| {
                let escaped = v.replace('\\', "\\\\").replace('"', "\\\"");
                format!("{k}=\"{escaped}\"")
            })
            .collect();
        if !params.is_empty() {
            s.push(' ');
            s.push_str(&params.join(", "));
        }
        out.push(s);
    }
    out.join(", ")
}
