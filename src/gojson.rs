//! JSON string encoding exactly as Go's `encoding/json` does it (HTML-safe escapes),
//! so our output is byte-identical to docker's and kubectl's.

/// `s` as a quoted JSON string, escaped the way Go escapes it.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
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
    out
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
