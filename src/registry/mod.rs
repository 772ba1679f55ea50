//! The registry side: content digests, image references, `WWW-Authenticate` challenges,
//! upstream auth and the upstream client shared by `pull` and the proxy.

pub mod auth;
pub mod breaker;
pub mod challenge;
pub mod client;
pub mod digest;
mod error;
pub mod http;
pub mod manifest;
pub mod rate_cap;
pub mod reference;

pub use error::RegistryError;

/// Inputs for the "never panics" tests of every parser here: hand-picked edge
/// cases, every prefix of a few valid seeds (truncation is where index
/// arithmetic breaks), and pseudo-random strings over an alphabet heavy in
/// the characters the grammars care about, including multi-byte UTF-8 so a
/// byte index that is not a char boundary would panic.
#[cfg(test)]
pub(crate) fn fuzz_inputs() -> Vec<String> {
    const SEEDS: &[&str] = &[
        "docker.io/library/alpine:3.19@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "[2001:db8::1]:5000/ns/repo:tag",
        "localhost:5000/a/b",
        r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        r#"Basic realm="a\"b", Bearer realm=x , Negotiate abc=="#,
        "sha512:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    ];
    const EDGES: &[&str] = &[
        "",
        " ",
        ":",
        "@",
        "/",
        "//",
        "[",
        "]",
        "[]",
        "[:]",
        "\"",
        "\\",
        ",",
        "=",
        "==",
        ",,,",
        "a:",
        "a@",
        "@a",
        ":a",
        "a/",
        "/a",
        "a//b",
        "..",
        "../..",
        "%2e%2e",
        "é",
        "🐳",
        "a\u{0}b",
        "\t",
        "\r\n",
        "Bearer",
        "Bearer ",
        "Bearer realm",
        "Bearer realm=",
        "Bearer realm=\"",
        "Bearer realm=\"\\",
        "Bearer ,",
        "bearer=x",
        "sha256:",
        "sha256::",
        "a:b:c",
        "a@b@c",
        "[::1",
        "::1]",
        "a:65536/b",
    ];
    const ALPHABET: &[char] = &[
        'a', 'b', 'z', 'A', 'Z', '0', '9', '.', '_', '-', '/', ':', '@', '[', ']', '"', '\\', ',',
        '=', ' ', '\t', '%', 'é', '🐳', '\u{0}', 'f', 's', 'h',
    ];

    let mut out: Vec<String> = EDGES.iter().map(|s| s.to_string()).collect();
    for seed in SEEDS {
        out.extend(seed.char_indices().map(|(i, _)| seed[..i].to_string()));
        out.push(seed.to_string());
    }
    // xorshift64: deterministic, so a failure reproduces.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..400 {
        let len = (next() % 40) as usize;
        let s: String = (0..len)
            .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
            .collect();
        out.push(s);
    }
    // Random single-character corruptions of the seeds.
    for _ in 0..200 {
        let seed = SEEDS[(next() % SEEDS.len() as u64) as usize];
        let mut chars: Vec<char> = seed.chars().collect();
        let at = (next() % chars.len() as u64) as usize;
        chars[at] = ALPHABET[(next() % ALPHABET.len() as u64) as usize];
        out.push(chars.into_iter().collect());
    }
    out.push("a/".repeat(10_000));
    out.push("\"".repeat(10_000));
    out.push(format!("Bearer {}", "k=v,".repeat(5_000)));
    out
}
