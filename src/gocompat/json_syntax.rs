//! Go's `encoding/json` syntax-error messages (`invalid character 'x' looking for …`), so a
//! malformed `store` payload fails with the same text docker-credential-helpers prints.

/// Describes the first syntax error in the first JSON value of `text`, as Go's Decoder would.
pub fn describe(text: &str) -> Option<String> {
    let mut p = Parser {
        b: text.as_bytes(),
        i: 0,
    };
    p.ws();
    match p.value(0) {
        Err(Stop::Invalid(c, ctx)) => Some(format!("invalid character {} {ctx}", quote_char(c))),
        Err(Stop::Eof) => Some("unexpected EOF".into()),
        Err(Stop::Depth) => Some("exceeded max depth".into()),
        Ok(()) => None,
    }
}

enum Stop {
    Invalid(u8, String),
    Eof,
    Depth,
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Result<u8, Stop> {
        self.b.get(self.i).copied().ok_or(Stop::Eof)
    }

    fn ws(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<(), Stop> {
        if depth > 10000 {
            return Err(Stop::Depth);
        }
        match self.peek()? {
            b'{' => self.object(depth),
            b'[' => self.array(depth),
            b'"' => self.string(),
            b'-' | b'0'..=b'9' => self.number(),
            b't' => self.literal(b"true", "in literal true (expecting '"),
            b'f' => self.literal(b"false", "in literal false (expecting '"),
            b'n' => self.literal(b"null", "in literal null (expecting '"),
            c => Err(Stop::Invalid(c, "looking for beginning of value".into())),
        }
    }

    fn object(&mut self, depth: usize) -> Result<(), Stop> {
        self.i += 1;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Ok(());
        }
        loop {
            match self.peek()? {
                b'"' => self.string()?,
                c => {
                    return Err(Stop::Invalid(
                        c,
                        "looking for beginning of object key string".into(),
                    ))
                }
            }
            self.ws();
            match self.peek()? {
                b':' => self.i += 1,
                c => return Err(Stop::Invalid(c, "after object key".into())),
            }
            self.ws();
            self.value(depth + 1)?;
            if self.after_item(b'}', "after object key:value pair")? {
                return Ok(());
            }
        }
    }

    /// After an element of an object or array: `,` (another follows) or `close` (`true`: done).
    fn after_item(&mut self, close: u8, what: &str) -> Result<bool, Stop> {
        self.ws();
        match self.peek()? {
            b',' => {
                self.i += 1;
                self.ws();
                Ok(false)
            }
            c if c == close => {
                self.i += 1;
                Ok(true)
            }
            c => Err(Stop::Invalid(c, what.into())),
        }
    }

    fn array(&mut self, depth: usize) -> Result<(), Stop> {
        self.i += 1;
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.value(depth + 1)?;
            if self.after_item(b']', "after array element")? {
                return Ok(());
            }
        }
    }

    fn string(&mut self) -> Result<(), Stop> {
        self.i += 1;
        loop {
            let c = self.peek()?;
            self.i += 1;
            match c {
                b'"' => return Ok(()),
                b'\\' => {
                    let e = self.peek()?;
                    self.i += 1;
                    match e {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            for _ in 0..4 {
                                let h = self.peek()?;
                                if !h.is_ascii_hexdigit() {
                                    return Err(Stop::Invalid(
                                        h,
                                        "in \\u hexadecimal character escape".into(),
                                    ));
                                }
                                self.i += 1;
                            }
                        }
                        e => return Err(Stop::Invalid(e, "in string escape code".into())),
                    }
                }
                c if c < 0x20 => return Err(Stop::Invalid(c, "in string literal".into())),
                _ => {}
            }
        }
    }

    fn number(&mut self) -> Result<(), Stop> {
        if self.peek()? == b'-' {
            self.i += 1;
            match self.peek()? {
                b'0'..=b'9' => {}
                c => return Err(Stop::Invalid(c, "in numeric literal".into())),
            }
        }
        if self.peek()? == b'0' {
            self.i += 1;
        } else {
            self.digits();
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            match self.peek()? {
                b'0'..=b'9' => self.digits(),
                c => {
                    return Err(Stop::Invalid(
                        c,
                        "after decimal point in numeric literal".into(),
                    ))
                }
            }
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek()?, b'+' | b'-') {
                self.i += 1;
            }
            match self.peek()? {
                b'0'..=b'9' => self.digits(),
                c => return Err(Stop::Invalid(c, "in exponent of numeric literal".into())),
            }
        }
        Ok(())
    }

    fn digits(&mut self) {
        while matches!(self.b.get(self.i), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }

    fn literal(&mut self, word: &[u8], ctx: &'static str) -> Result<(), Stop> {
        for want in word {
            let c = self.peek()?;
            if c != *want {
                // Go's context names the expected letter: "in literal true (expecting 'r')".
                return Err(Stop::Invalid(c, format!("{ctx}{}')", *want as char)));
            }
            self.i += 1;
        }
        Ok(())
    }
}

/// Go's `quoteChar`.
fn quote_char(c: u8) -> String {
    match c {
        b'\'' => "'\\''".into(),
        b'"' => "'\"'".into(),
        b'\n' => "'\\n'".into(),
        b'\r' => "'\\r'".into(),
        b'\t' => "'\\t'".into(),
        0x07 => "'\\a'".into(),
        0x08 => "'\\b'".into(),
        0x0c => "'\\f'".into(),
        0x0b => "'\\v'".into(),
        c if c < 0x20 || c == 0x7f => format!("'\\x{c:02x}'"),
        c => format!("'{}'", char::from(c)),
    }
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn messages_match_go() {
        assert_eq!(
            describe("{x}").as_deref(),
            Some("invalid character 'x' looking for beginning of object key string")
        );
        assert_eq!(
            describe("{\"a\" 1}").as_deref(),
            Some("invalid character '1' after object key")
        );
        assert_eq!(
            describe("{\"a\":1 \"b\"}").as_deref(),
            Some("invalid character '\"' after object key:value pair")
        );
        assert_eq!(
            describe("not json").as_deref(),
            Some("invalid character 'o' in literal null (expecting 'u')")
        );
        assert_eq!(
            describe("hello").as_deref(),
            Some("invalid character 'h' looking for beginning of value")
        );
        assert_eq!(describe("{\"a\":").as_deref(), Some("unexpected EOF"));
        assert_eq!(describe("{\"a\":1} trailing"), None);
    }
}
