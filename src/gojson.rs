//! JSON string encoding exactly as Go's `encoding/json` does it (HTML-safe escapes),
//! so our output is byte-identical to docker's and kubectl's.

/// `s` as a quoted JSON string, escaped the way Go before 1.22 escapes it (`\b`, `\f` as
/// `\u0008`, `\u000c`), as the docker-credential-helpers builds we compare against do.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    quote_into(s, &mut out, false);
    out
}

/// Appends `s` quoted; `short_bf` writes `\b` and `\f` as Go 1.22 and later do (kubectl).
pub fn quote_into(s: &str, out: &mut String, short_bf: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '\u{8}' if short_bf => out.push_str("\\b"),
            '\u{c}' if short_bf => out.push_str("\\f"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn escapes_like_go() {
        assert_eq!(quote("<token>"), r#""\u003ctoken\u003e""#);
        assert_eq!(quote("a&b\"c\\"), r#""a\u0026b\"c\\""#);
        assert_eq!(quote("tab\there\u{1}"), r#""tab\there\u0001""#);
        assert_eq!(quote("pässwörd"), "\"pässwörd\"");
        assert_eq!(quote("\u{2028}"), r#""\u2028""#);
    }
}
