//! `WWW-Authenticate` challenges (RFC 7235) as registries send them, and the
//! token-scope strings (`repository:NAME:pull`) a Bearer token request asks for.

use std::collections::BTreeMap;
use std::fmt;

/// The authentication scheme of a challenge, compared case-insensitively.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scheme {
    Basic,
    Bearer,
    /// Any other scheme, lowercased.
    Other(String),
}

impl Scheme {
    fn from_token(token: &str) -> Self {
        if token.eq_ignore_ascii_case("basic") {
            Scheme::Basic
        } else if token.eq_ignore_ascii_case("bearer") {
            Scheme::Bearer
        } else {
            Scheme::Other(token.to_ascii_lowercase())
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scheme::Basic => f.write_str("Basic"),
            Scheme::Bearer => f.write_str("Bearer"),
            Scheme::Other(s) => f.write_str(s),
        }
    }
}

/// One challenge: a scheme with its parameters (names lowercased, values
/// unquoted and unescaped), or with a token68 for schemes that use one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    scheme: Scheme,
    params: BTreeMap<String, String>,
    token68: Option<String>,
}

/// Where and why a header could not be parsed; `at` is a byte offset into it.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    #[error("empty WWW-Authenticate header")]
    Empty,
    #[error("WWW-Authenticate: expected an auth scheme at byte {at}")]
    ExpectedScheme { at: usize },
    #[error("WWW-Authenticate: unexpected character at byte {at}")]
    UnexpectedChar { at: usize },
    #[error("WWW-Authenticate: missing parameter value at byte {at}")]
    MissingValue { at: usize },
    #[error("WWW-Authenticate: unterminated quoted string starting at byte {at}")]
    UnterminatedQuote { at: usize },
    #[error("WWW-Authenticate: parameter repeated in one challenge at byte {at}")]
    DuplicateParam { at: usize },
}

impl Challenge {
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// All parameters, keyed by lowercased name.
    pub fn params(&self) -> &BTreeMap<String, String> {
        &self.params
    }

    /// A parameter by name, matched case-insensitively.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The token68 form (`Negotiate abc==`); registries do not use it.
    pub fn token68(&self) -> Option<&str> {
        self.token68.as_deref()
    }

    /// Where to ask for a token (Bearer) or the protection space (Basic).
    pub fn realm(&self) -> Option<&str> {
        self.param("realm")
    }

    pub fn service(&self) -> Option<&str> {
        self.param("service")
    }

    pub fn scope(&self) -> Option<&str> {
        self.param("scope")
    }
}

/// The challenge to answer among a response's `WWW-Authenticate` headers: Bearer when offered
/// (what registries mean when they offer both), else Basic.
pub fn preferred(headers: &http::HeaderMap) -> Option<Challenge> {
    let header = headers
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ");
    let challenges = parse_challenges(&header).unwrap_or_default();
    let pick = |s: Scheme| challenges.iter().find(|c| *c.scheme() == s).cloned();
    pick(Scheme::Bearer).or_else(|| pick(Scheme::Basic))
}

/// Parses one `WWW-Authenticate` header value, which may hold several
/// challenges (`Bearer realm="a",service="b", Basic realm="c"`).
///
/// Tolerant where servers are sloppy (extra whitespace, empty list elements,
/// unquoted values with `/` or `:`), strict where a misread would change
/// meaning (unterminated quotes, repeated parameters). When a later challenge
/// is malformed, the complete ones before it are returned, so one odd scheme
/// does not hide a usable Bearer challenge; an error means nothing usable was
/// found. Never panics.
pub fn parse_challenges(header: &str) -> Result<Vec<Challenge>, ChallengeError> {
    let mut p = Parser { s: header, pos: 0 };
    p.skip_separators();
    if p.at_end() {
        return Err(ChallengeError::Empty);
    }
    let mut out = Vec::new();
    while !p.at_end() {
        match p.challenge() {
            Ok(c) => out.push(c),
            Err(e) if out.is_empty() => return Err(e),
            Err(_) => break,
        }
        p.skip_separators();
    }
    Ok(out)
}

/// The token scope for `actions` on a repository, as the token spec writes
/// it: `scope_for("library/alpine", &["pull"])` is
/// `repository:library/alpine:pull`.
pub fn scope_for(repository: &str, actions: &[&str]) -> String {
    format!("repository:{repository}:{}", actions.join(","))
}

struct Parser<'a> {
    s: &'a str,
    /// Byte offset; only ever advanced past ASCII bytes or whole chars, so it
    /// stays on a char boundary.
    pos: usize,
}

impl<'a> Parser<'a> {
    fn challenge(&mut self) -> Result<Challenge, ChallengeError> {
        let at = self.pos;
        let scheme = self
            .token()
            .map(Scheme::from_token)
            .ok_or(ChallengeError::ExpectedScheme { at })?;
        let mut challenge = Challenge {
            scheme,
            params: BTreeMap::new(),
            token68: None,
        };
        let spaced = self.skip_ws();
        if self.at_end() || self.peek() == Some(b',') {
            return Ok(challenge);
        }
        // RFC 7235: the scheme and what follows are separated by whitespace.
        if !spaced {
            return Err(ChallengeError::UnexpectedChar { at: self.pos });
        }
        if let Some(token68) = self.token68() {
            challenge.token68 = Some(token68.to_string());
            return Ok(challenge);
        }
        loop {
            let name_at = self.pos;
            let name = self
                .token()
                .ok_or(ChallengeError::UnexpectedChar { at: self.pos })?;
            self.skip_ws();
            if self.peek() != Some(b'=') {
                return Err(ChallengeError::UnexpectedChar { at: self.pos });
            }
            self.pos += 1;
            self.skip_ws();
            let value = self.value()?;
            if challenge
                .params
                .insert(name.to_ascii_lowercase(), value)
                .is_some()
            {
                return Err(ChallengeError::DuplicateParam { at: name_at });
            }
            self.skip_ws();
            if self.at_end() {
                return Ok(challenge);
            }
            if self.peek() != Some(b',') {
                return Err(ChallengeError::UnexpectedChar { at: self.pos });
            }
            self.skip_separators();
            // After a comma comes either this challenge's next parameter or
            // the next challenge's scheme; only a parameter has `=` after
            // its first token.
            if self.at_end() || !self.param_follows() {
                return Ok(challenge);
            }
        }
    }

    /// A quoted string (unescaped) or an unquoted value.
    fn value(&mut self) -> Result<String, ChallengeError> {
        let at = self.pos;
        if self.peek() == Some(b'"') {
            self.pos += 1;
            let mut out = String::new();
            let mut chars = self.rest().char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        self.pos += i + 1;
                        return Ok(out);
                    }
                    // quoted-pair: the next character stands for itself.
                    '\\' => match chars.next() {
                        Some((_, escaped)) if !is_ctl(escaped) => out.push(escaped),
                        Some((j, _)) => {
                            return Err(ChallengeError::UnexpectedChar { at: self.pos + j })
                        }
                        None => break,
                    },
                    c if is_ctl(c) => {
                        return Err(ChallengeError::UnexpectedChar { at: self.pos + i })
                    }
                    c => out.push(c),
                }
            }
            return Err(ChallengeError::UnterminatedQuote { at });
        }
        // Unquoted: RFC 7235 allows only a token, but registries have been
        // seen sending `realm=https://…` bare, so any visible ASCII up to a
        // delimiter is taken.
        let len = self
            .rest()
            .bytes()
            .take_while(|b| b.is_ascii_graphic() && !matches!(b, b',' | b'"' | b'\\'))
            .count();
        if len == 0 {
            return Err(ChallengeError::MissingValue { at });
        }
        self.pos += len;
        Ok(self.s[at..self.pos].to_string())
    }

    /// `1*(ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/") *"="`, taken only
    /// when it is the whole of the challenge's data (followed by the end of
    /// the header or a comma); otherwise nothing is consumed.
    fn token68(&mut self) -> Option<&'a str> {
        let start = self.pos;
        let rest = self.rest().as_bytes();
        let body = rest
            .iter()
            .take_while(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
            })
            .count();
        if body == 0 {
            return None;
        }
        let pad = rest[body..].iter().take_while(|b| **b == b'=').count();
        self.pos += body + pad;
        let end = self.pos;
        self.skip_ws();
        if self.at_end() || self.peek() == Some(b',') {
            Some(&self.s[start..end])
        } else {
            self.pos = start;
            None
        }
    }

    /// Whether the next list element is `name=…` rather than a new scheme.
    fn param_follows(&mut self) -> bool {
        let start = self.pos;
        let is_param = self.token().is_some() && {
            self.skip_ws();
            self.peek() == Some(b'=')
        };
        self.pos = start;
        is_param
    }

    fn token(&mut self) -> Option<&'a str> {
        let len = self.rest().bytes().take_while(|b| is_tchar(*b)).count();
        if len == 0 {
            return None;
        }
        let start = self.pos;
        self.pos += len;
        Some(&self.s[start..self.pos])
    }

    /// Skips spaces and tabs; reports whether there were any.
    fn skip_ws(&mut self) -> bool {
        let len = self
            .rest()
            .bytes()
            .take_while(|b| matches!(b, b' ' | b'\t'))
            .count();
        self.pos += len;
        len > 0
    }

    /// Skips whitespace and commas: the list syntax allows empty elements.
    fn skip_separators(&mut self) {
        let len = self
            .rest()
            .bytes()
            .take_while(|b| matches!(b, b' ' | b'\t' | b','))
            .count();
        self.pos += len;
    }

    fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<u8> {
        self.rest().bytes().next()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }
}

/// RFC 7230 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_ctl(c: char) -> bool {
    c != '\t' && c.is_ascii_control()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(header: &str) -> Challenge {
        let mut all = parse_challenges(header).expect(header);
        assert_eq!(all.len(), 1, "{header:?} gave {all:?}");
        all.remove(0)
    }

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The example in distribution's token authentication spec.
    #[test]
    fn token_spec_example() {
        let c = one(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        );
        assert_eq!(c.scheme(), &Scheme::Bearer);
        assert_eq!(c.realm(), Some("https://auth.docker.io/token"));
        assert_eq!(c.service(), Some("registry.docker.io"));
        assert_eq!(c.scope(), Some("repository:samalba/my-app:pull,push"));
        assert_eq!(c.params().len(), 3);
        assert_eq!(c.token68(), None);
    }

    /// distribution's `TestAuthChallengeParse`: unquoted values and
    /// backslash escapes inside quotes.
    #[test]
    fn distribution_challenge_parse_case() {
        let c = one(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",other=fun,slashed="he\"\l\lo""#,
        );
        assert_eq!(
            c.params(),
            &params(&[
                ("realm", "https://auth.example.com/token"),
                ("service", "registry.example.com"),
                ("other", "fun"),
                ("slashed", "he\"llo"),
            ])
        );
    }

    #[test]
    fn several_challenges_in_one_header() {
        let all = parse_challenges(r#"Bearer realm="a",service="b", Basic realm="c""#)
            .expect("two challenges");
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].scheme(), &Scheme::Bearer);
        assert_eq!(
            all[0].params(),
            &params(&[("realm", "a"), ("service", "b")])
        );
        assert_eq!(all[1].scheme(), &Scheme::Basic);
        assert_eq!(all[1].realm(), Some("c"));
    }

    #[test]
    fn whitespace_case_and_empty_elements() {
        let all =
            parse_challenges("  bEaReR   Realm = \"a\" ,\t SERVICE=b  ,, ,basic realm=\"c\"  ,")
                .expect("sloppy but valid");
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].scheme(), &Scheme::Bearer);
        assert_eq!(all[0].realm(), Some("a"));
        assert_eq!(all[0].service(), Some("b"));
        assert_eq!(all[0].param("Service"), Some("b"));
        assert_eq!(all[1].scheme(), &Scheme::Basic);
        assert_eq!(all[1].realm(), Some("c"));
    }

    #[test]
    fn quoted_commas_and_escapes_stay_in_the_value() {
        let c =
            one(r#"Bearer scope="repository:a/b:pull,push repository:c:pull", realm="x\\y\"z,""#);
        assert_eq!(
            c.scope(),
            Some("repository:a/b:pull,push repository:c:pull")
        );
        assert_eq!(c.realm(), Some("x\\y\"z,"));
        let c = one(r#"Bearer realm="""#);
        assert_eq!(c.realm(), Some(""));
        let c = one("Bearer realm=\"h\u{e9}llo \u{1f433}\"");
        assert_eq!(c.realm(), Some("h\u{e9}llo \u{1f433}"));
    }

    #[test]
    fn unquoted_urls_and_insufficient_scope_error() {
        let c = one(
            "Bearer realm=https://ghcr.io/token,service=ghcr.io,scope=repository:user/image:pull,error=insufficient_scope",
        );
        assert_eq!(c.realm(), Some("https://ghcr.io/token"));
        assert_eq!(c.service(), Some("ghcr.io"));
        // Unquoted, the comma ends the value: only quoting can carry `pull,push`.
        assert_eq!(c.scope(), Some("repository:user/image:pull"));
        assert_eq!(c.param("error"), Some("insufficient_scope"));
    }

    #[test]
    fn bare_schemes_and_token68() {
        let all = parse_challenges("Negotiate abc+/9==, Basic, NTLM").expect("three challenges");
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].scheme(), &Scheme::Other("negotiate".into()));
        assert_eq!(all[0].token68(), Some("abc+/9=="));
        assert!(all[0].params().is_empty());
        assert_eq!(all[1].scheme(), &Scheme::Basic);
        assert!(all[1].params().is_empty());
        assert_eq!(all[2].scheme(), &Scheme::Other("ntlm".into()));
        assert_eq!(all[2].scheme().to_string(), "ntlm");
    }

    #[test]
    fn malformed_headers_are_errors() {
        let cases = [
            ("", ChallengeError::Empty),
            ("  , ,", ChallengeError::Empty),
            ("=x", ChallengeError::ExpectedScheme { at: 0 }),
            ("\"Bearer\"", ChallengeError::ExpectedScheme { at: 0 }),
            (
                r#"Bearer realm="unterminated"#,
                ChallengeError::UnterminatedQuote { at: 13 },
            ),
            (
                r#"Bearer realm="ends in \"#,
                ChallengeError::UnterminatedQuote { at: 13 },
            ),
            (
                r#"Bearer realm="a" service="b""#,
                ChallengeError::UnexpectedChar { at: 17 },
            ),
            (
                r#"Bearer realm="a", Realm="b""#,
                ChallengeError::DuplicateParam { at: 18 },
            ),
            (
                "Bearer realm=\"a\u{0}\"",
                ChallengeError::UnexpectedChar { at: 15 },
            ),
            ("Bearer\"x\"", ChallengeError::UnexpectedChar { at: 6 }),
            ("x y z", ChallengeError::UnexpectedChar { at: 4 }),
            ("Bearer a=b, c= ,", ChallengeError::MissingValue { at: 15 }),
        ];
        for (header, want) in cases {
            assert_eq!(parse_challenges(header), Err(want), "header {header:?}");
        }
    }

    #[test]
    fn a_malformed_later_challenge_keeps_the_earlier_ones() {
        let all = parse_challenges(r#"Bearer realm="a",service="b", Basic realm="oops"#)
            .expect("the Bearer challenge is complete");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].realm(), Some("a"));
        assert_eq!(all[0].service(), Some("b"));
    }

    #[test]
    fn scope_strings() {
        assert_eq!(
            scope_for("library/alpine", &["pull"]),
            "repository:library/alpine:pull"
        );
        assert_eq!(
            scope_for("samalba/my-app", &["pull", "push"]),
            "repository:samalba/my-app:pull,push"
        );
    }

    #[test]
    fn never_panics_on_arbitrary_input() {
        for input in crate::registry::fuzz_inputs() {
            if let Ok(all) = parse_challenges(&input) {
                assert!(!all.is_empty(), "Ok(empty) for {input:?}");
            }
        }
    }
}
