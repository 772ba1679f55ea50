//! JSON written exactly as Go's `encoding/json` writes it (HTML-safe string escapes,
//! `MarshalIndent`), so our output is byte-identical to docker's and kubectl's.

use serde_json::Value;

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

/// Go's `json.MarshalIndent(v, "", indent)` for an already ordered value
/// (objects keep their insertion order). No trailing newline, like Go.
pub fn marshal_indent(v: &Value, indent: &str) -> String {
    let mut out = String::new();
    write_indented(v, indent, 0, &mut out);
    out
}

fn write_indented(v: &Value, indent: &str, depth: usize, out: &mut String) {
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        for _ in 0..depth {
            out.push_str(indent);
        }
    };
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => quote_into(s, out, true),
        Value::Array(a) if a.is_empty() => out.push_str("[]"),
        Value::Array(a) => {
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, depth + 1);
                write_indented(item, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push(']');
        }
        Value::Object(o) if o.is_empty() => out.push_str("{}"),
        Value::Object(o) => {
            out.push('{');
            for (i, (k, item)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, depth + 1);
                quote_into(k, out, true);
                out.push_str(": ");
                write_indented(item, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn escapes_like_go() {
        assert_eq!(quote("<token>"), r#""\u003ctoken\u003e""#);
        assert_eq!(quote("a&b\"c\\"), r#""a\u0026b\"c\\""#);
        assert_eq!(quote("tab\there\u{1}"), r#""tab\there\u0001""#);
        assert_eq!(quote("pässwörd"), "\"pässwörd\"");
        assert_eq!(quote("\u{2028}"), r#""\u2028""#);
    }

    #[test]
    fn go_marshal_indent_matches_go() {
        let v: Value =
            serde_json::from_str(r#"{"auths":{"a":{"auth":"x<"}},"empty":{},"list":[1,"s"]}"#)
                .unwrap();
        assert_eq!(
            marshal_indent(&v, "\t"),
            "{\n\t\"auths\": {\n\t\t\"a\": {\n\t\t\t\"auth\": \"x\\u003c\"\n\t\t}\n\t},\n\t\"empty\": {},\n\t\"list\": [\n\t\t1,\n\t\t\"s\"\n\t]\n}"
        );
    }
}
