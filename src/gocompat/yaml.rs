//! The go-yaml v2 emitter as kubectl's `-o yaml` drives it: which scalars it quotes and
//! how, and the order it sorts map keys in.

/// One `key: value` line of a block mapping. go-yaml writes keys longer than
/// 128 bytes as explicit `? key` / `: value` pairs.
pub fn mapping_entry(indent: &str, key: &str, value: &str, out: &mut String) {
    out.push_str(indent);
    if key.len() > 128 {
        out.push_str("? ");
        out.push_str(&yaml_scalar(key, false));
        out.push('\n');
        out.push_str(indent);
        out.push_str(": ");
    } else {
        out.push_str(&yaml_scalar(key, true));
        out.push_str(": ");
    }
    out.push_str(&yaml_scalar(value, false));
    out.push('\n');
}

#[derive(PartialEq, Clone, Copy)]
enum Style {
    Plain,
    Single,
    Double,
}

/// A string scalar as go-yaml v2 emits it: plain when it would read back as the
/// same string, double-quoted when it would read back as another type
/// (`"123"`, `"true"`, `"2024-01-02"`), single-quoted when plain syntax cannot
/// hold it (`'-'`). Line folding is not reproduced: go-yaml folds only at
/// spaces past column 80 and breaks on newlines, neither of which occur in the
/// names, keys and base64 values we write.
fn yaml_scalar(s: &str, simple_key: bool) -> String {
    let a = analyze_scalar(s);
    let mut style = if resolves_to_str(s) && !is_base60_float(s) && !s.contains('\n') {
        Style::Plain
    } else {
        Style::Double
    };
    if style == Style::Plain && (!a.block_plain_allowed || (s.is_empty() && simple_key)) {
        style = Style::Single;
    }
    if style == Style::Single && !a.single_quoted_allowed {
        style = Style::Double;
    }
    match style {
        Style::Plain => s.to_string(),
        Style::Single => format!("'{}'", s.replace('\'', "''")),
        Style::Double => yaml_double_quoted(s),
    }
}

struct ScalarAnalysis {
    block_plain_allowed: bool,
    single_quoted_allowed: bool,
}

fn is_yaml_break(c: char) -> bool {
    matches!(c, '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

fn is_yaml_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn is_yaml_printable(c: char) -> bool {
    let v = c as u32;
    v == 0x0A
        || (0x20..=0x7E).contains(&v)
        || (0xA0..=0xD7FF).contains(&v)
        || ((0xE000..=0xFFFD).contains(&v) && v != 0xFEFF)
}

/// Port of `yaml_emitter_analyze_scalar`, for the block context we write in.
fn analyze_scalar(s: &str) -> ScalarAnalysis {
    if s.is_empty() {
        return ScalarAnalysis {
            block_plain_allowed: true,
            single_quoted_allowed: true,
        };
    }
    let chars: Vec<char> = s.chars().collect();
    let mut block_indicators = s.starts_with("---") || s.starts_with("...");
    let mut special = false;
    let (mut leading_space, mut leading_break) = (false, false);
    let (mut trailing_space, mut trailing_break) = (false, false);
    let (mut break_space, mut space_break) = (false, false);
    let (mut previous_space, mut previous_break) = (false, false);
    let mut line_breaks = false;
    let mut preceded_by_whitespace = true;
    for (i, &c) in chars.iter().enumerate() {
        let next = chars.get(i + 1).copied();
        let followed_by_whitespace = next.is_none_or(is_yaml_blank);
        if i == 0 {
            match c {
                '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\'' | '"'
                | '%' | '@' | '`' => block_indicators = true,
                '?' | ':' | '-' if followed_by_whitespace => block_indicators = true,
                _ => {}
            }
        } else {
            match c {
                ':' if followed_by_whitespace => block_indicators = true,
                '#' if preceded_by_whitespace => block_indicators = true,
                _ => {}
            }
        }
        if !is_yaml_printable(c) {
            special = true;
        }
        let last = i + 1 == chars.len();
        if c == ' ' {
            leading_space |= i == 0;
            trailing_space |= last;
            break_space |= previous_break;
            previous_space = true;
            previous_break = false;
        } else if is_yaml_break(c) {
            line_breaks = true;
            leading_break |= i == 0;
            trailing_break |= last;
            space_break |= previous_space;
            previous_space = false;
            previous_break = true;
        } else {
            previous_space = false;
            previous_break = false;
        }
        preceded_by_whitespace = is_yaml_blank(c) || is_yaml_break(c) || c == '\0';
    }
    let mut plain = !(leading_space || leading_break || trailing_space || trailing_break);
    let mut single = true;
    if break_space {
        plain = false;
        single = false;
    }
    if space_break || special {
        plain = false;
        single = false;
    }
    if line_breaks || block_indicators {
        plain = false;
    }
    ScalarAnalysis {
        block_plain_allowed: plain,
        single_quoted_allowed: single,
    }
}

/// Port of `yaml_emitter_write_double_quoted` without line folding.
fn yaml_double_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        let v = c as u32;
        if !is_yaml_printable(c) || c == '\u{feff}' || is_yaml_break(c) || c == '"' || c == '\\' {
            out.push('\\');
            match v {
                0x00 => out.push('0'),
                0x07 => out.push('a'),
                0x08 => out.push('b'),
                0x09 => out.push('t'),
                0x0A => out.push('n'),
                0x0B => out.push('v'),
                0x0C => out.push('f'),
                0x0D => out.push('r'),
                0x1B => out.push('e'),
                0x22 => out.push('"'),
                0x5C => out.push('\\'),
                0x85 => out.push('N'),
                0xA0 => out.push('_'),
                0x2028 => out.push('L'),
                0x2029 => out.push('P'),
                v if v <= 0xFF => out.push_str(&format!("x{v:02X}")),
                v if v <= 0xFFFF => out.push_str(&format!("u{v:04X}")),
                v => out.push_str(&format!("U{v:08X}")),
            }
        } else {
            out.push(c);
        }
    }
    out.push('"');
    out
}

/// Port of go-yaml v2 `resolve("", s)`: true when `s` written plain reads back
/// as a string rather than a bool, null, number or timestamp.
fn resolves_to_str(s: &str) -> bool {
    // The keys of go-yaml v2's resolve map (`<<` is unreachable there: `<`
    // carries no hint).
    const SPECIAL: &[&str] = &[
        "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON", "n", "N", "no",
        "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF", "~", "null", "Null", "NULL",
        ".nan", ".NaN", ".NAN", ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf",
        "-.Inf", "-.INF",
    ];
    let Some(first) = s.bytes().next() else {
        return false; // "" is null
    };
    // go-yaml only looks further when the first byte hints at a non-string.
    let hint = match first {
        b'+' | b'-' => 'S',
        b'0'..=b'9' => 'D',
        b'y' | b'Y' | b'n' | b'N' | b't' | b'T' | b'f' | b'F' | b'o' | b'O' | b'~' => 'M',
        b'.' => '.',
        _ => return true,
    };
    if SPECIAL.contains(&s) {
        return false;
    }
    match hint {
        '.' => go_parse_float(s).is_none(),
        'D' | 'S' => {
            if is_go_yaml_timestamp(s) {
                return false;
            }
            let plain: String = s.chars().filter(|c| *c != '_').collect();
            if go_parse_int(&plain, true).is_some() || go_parse_int(&plain, false).is_some() {
                return false;
            }
            if is_yaml_style_float(&plain) && go_parse_float(&plain).is_some() {
                return false;
            }
            let bin = plain
                .strip_prefix("0b")
                .or_else(|| plain.strip_prefix("-0b"));
            if let Some(digits) = bin {
                if go_parse_radix(digits, 2, true).is_some() {
                    return false;
                }
            }
            true
        }
        _ => true,
    }
}

/// `strconv.ParseInt(s, 0, 64)` (signed) / `ParseUint(s, 0, 64)` succeeding,
/// underscores already removed.
fn go_parse_int(s: &str, signed: bool) -> Option<()> {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'+') if signed => (false, &s[1..]),
        Some(b'-') if signed => (true, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    let n = go_parse_radix_u128(digits, radix)?;
    let fits = if !signed {
        n <= u128::from(u64::MAX)
    } else if neg {
        n <= 1u128 << 63
    } else {
        n < 1u128 << 63
    };
    fits.then_some(())
}

fn go_parse_radix(digits: &str, radix: u32, signed: bool) -> Option<()> {
    let n = go_parse_radix_u128(digits, radix)?;
    (!signed || n < 1u128 << 63).then_some(())
}

fn go_parse_radix_u128(digits: &str, radix: u32) -> Option<u128> {
    if digits.is_empty() {
        return None;
    }
    let mut n: u128 = 0;
    for c in digits.chars() {
        let d = c.to_digit(radix)?;
        n = n
            .checked_mul(u128::from(radix))?
            .checked_add(u128::from(d))?;
        if n > u128::from(u64::MAX) {
            return None;
        }
    }
    Some(n)
}

/// `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`
fn is_yaml_style_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Whether Go's `strconv.ParseFloat(s, 64)` accepts `s` (range errors count
/// as failures, as go-yaml sees them).
fn go_parse_float(s: &str) -> Option<()> {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let lower = body.to_ascii_lowercase();
    if lower == "inf" || lower == "infinity" || lower == "nan" {
        return Some(());
    }
    if lower.starts_with("0x") {
        // Hex floats need a `p` exponent; none of our strings get here with one.
        return None;
    }
    // Go accepts underscores only after a base prefix, so a decimal float with
    // one fails; Rust's parser agrees on the rest of the decimal syntax.
    if !lower
        .bytes()
        .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'+' | b'-'))
    {
        return None;
    }
    let f: f64 = lower.parse().ok()?;
    f.is_finite().then_some(())
}

/// go-yaml v2 `parseTimestamp` for the shapes that can occur without spaces
/// or colons: exactly four digits, `-`, then Go's `2006-1-2` layout.
fn is_go_yaml_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let lead = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if lead != 4 || b.get(4) != Some(&b'-') {
        return false;
    }
    if s.contains(':') {
        // Only the date-time layouts (all with `15:4:5`) can match; names and
        // keys never hold colons, so we quote rather than port Go's time.Parse.
        return true;
    }
    let Some(year) = s[..4].parse::<u32>().ok() else {
        return false;
    };
    let rest = &s[5..];
    let Some((month, day)) = rest.split_once('-') else {
        return false;
    };
    let num = |p: &str| -> Option<u32> {
        (matches!(p.len(), 1 | 2) && p.bytes().all(|c| c.is_ascii_digit()))
            .then(|| p.parse().ok())
            .flatten()
    };
    let (Some(m), Some(d)) = (num(month), num(day)) else {
        return false;
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// YAML 1.1 base-60 floats (`1:20`) that go-yaml quotes for older parsers:
/// `^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$`.
fn is_base60_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    if !b.get(i).is_some_and(u8::is_ascii_digit) {
        return false;
    }
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
        i += 1;
    }
    let mut groups = 0;
    while b.get(i) == Some(&b':') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() && i - start < 2 {
            i += 1;
        }
        let n = i - start;
        let ok = match n {
            1 => true,
            2 => b[start] <= b'5',
            _ => false,
        };
        if !ok {
            return false;
        }
        groups += 1;
    }
    if groups == 0 {
        return false;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
            i += 1;
        }
    }
    i == b.len()
}

/// go-yaml v2's `keyList.Less` for string keys: non-letters before letters,
/// runs of digits compared as numbers. That order is not transitive for some
/// keys (`08` < `0b1` < `1` < `08`); kubectl then sorts Go's randomly ordered
/// map keys differently from run to run, so only key sets with a total order
/// have one right answer. An insertion sort, because Rust's sorts may panic
/// on a comparator that is not a total order.
pub fn sort_keys(keys: &mut [&String]) {
    for i in 1..keys.len() {
        let mut j = i;
        while j > 0 && go_yaml_key_less(keys[j], keys[j - 1]) {
            keys.swap(j, j - 1);
            j -= 1;
        }
    }
}

fn go_yaml_key_less(a: &str, b: &str) -> bool {
    let ar: Vec<char> = a.chars().collect();
    let br: Vec<char> = b.chars().collect();
    for i in 0..ar.len().min(br.len()) {
        if ar[i] == br[i] {
            continue;
        }
        let al = ar[i].is_alphabetic();
        let bl = br[i].is_alphabetic();
        if al && bl {
            return ar[i] < br[i];
        }
        if al || bl {
            return bl;
        }
        let (mut an, mut bn): (i64, i64) = (0, 0);
        if ar[i] == '0' || br[i] == '0' {
            for j in (0..i).rev() {
                if !ar[j].is_ascii_digit() {
                    break;
                }
                if ar[j] != '0' {
                    an = 1;
                    bn = 1;
                    break;
                }
            }
        }
        let mut ai = i;
        while ai < ar.len() && ar[ai].is_ascii_digit() {
            an = an
                .wrapping_mul(10)
                .wrapping_add(i64::from(ar[ai] as u8 - b'0'));
            ai += 1;
        }
        let mut bi = i;
        while bi < br.len() && br[bi].is_ascii_digit() {
            bn = bn
                .wrapping_mul(10)
                .wrapping_add(i64::from(br[bi] as u8 - b'0'));
            bi += 1;
        }
        if an != bn {
            return an < bn;
        }
        if ai != bi {
            return ai < bi;
        }
        return ar[i] < br[i];
    }
    ar.len() < br.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_quoting_follows_go_yaml() {
        for (s, want) in [
            ("regcred", "regcred"),
            ("123", "\"123\""),
            ("1e3", "\"1e3\""),
            ("true", "\"true\""),
            ("y", "\"y\""),
            ("yES", "yES"),
            ("0o17", "\"0o17\""),
            ("0b12", "0b12"),
            ("08", "\"08\""),
            ("1_000", "\"1_000\""),
            ("1-2", "1-2"),
            ("2024-01-02", "\"2024-01-02\""),
            ("2024-2-30", "2024-2-30"),
            ("2023-2-29", "2023-2-29"),
            ("2024-2-29", "\"2024-2-29\""),
            ("0xffffffffffffffffffff", "0xffffffffffffffffffff"),
            ("99999999999999999999", "\"99999999999999999999\""),
            ("-", "'-'"),
            ("---", "'---'"),
            ("-a", "-a"),
            (".5", "\".5\""),
            (".e1", ".e1"),
            (".inf", "\".inf\""),
            ("-.inf", "\"-.inf\""),
            ("1:20", "\"1:20\""),
            ("a:b", "a:b"),
            ("", "\"\""),
            ("a\tb", "\"a\\tb\""),
        ] {
            assert_eq!(yaml_scalar(s, false), want, "{s:?}");
        }
    }

    #[test]
    fn yaml_key_order_is_go_yaml_natural_order() {
        let keys = [
            "b", "_", "08", "a10", "a9", "-", ".5", "A", "a", "1_000", "1.", "-a", "yES",
        ];
        let owned: Vec<String> = keys.iter().map(|s| s.to_string()).collect();
        let mut refs: Vec<&String> = owned.iter().collect();
        sort_keys(&mut refs);
        let got: Vec<&str> = refs.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            got,
            ["-", "-a", ".5", "_", "1.", "1_000", "08", "A", "a", "a9", "a10", "b", "yES"]
        );
    }
}
