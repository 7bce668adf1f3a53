//! A strict-enough TOML subset: comments, `[table]` / `[[array]]` headers,
//! bare/quoted/dotted keys, basic and literal strings (single and multi-line),
//! booleans, integers; floats, dates, arrays and inline tables are parsed for
//! syntax and returned as [`toml::Value::Other`].

/// Arrays and inline tables nest at most this deep (stack safety).
const MAX_DEPTH: usize = 32;

/// A value, reduced to what runtime options need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Value {
    Str(String),
    Bool(bool),
    Int(i64),
    /// Float, date-time, array or inline table: syntax-checked, not kept.
    Other,
}

impl Value {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Other => "a float, date, array or table",
        }
    }
}

/// A `key = value` line; `key` is the last component of a dotted key.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) key: String,
    pub(super) value: Value,
    pub(super) line: usize,
}

#[derive(Debug)]
pub(super) struct Error {
    pub(super) line: usize,
    pub(super) message: String,
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    line: usize,
}

pub(super) fn parse(text: &str) -> Result<Vec<Entry>, Error> {
    let mut p = Parser {
        chars: text.chars().collect(),
        pos: 0,
        line: 1,
    };
    let mut out = Vec::new();
    loop {
        p.skip_ws();
        match p.peek() {
            None => return Ok(out),
            Some('\n') | Some('\r') => p.newline()?,
            Some('#') => p.skip_comment(),
            Some('[') => {
                p.table_header()?;
                p.line_end()?;
            }
            Some(_) => {
                let line = p.line;
                let (key, value) = p.keyval(0)?;
                out.push(Entry { key, value, line });
                p.line_end()?;
            }
        }
    }
}

fn is_bare(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

impl Parser {
    fn err<T>(&self, message: impl Into<String>) -> Result<T, Error> {
        Err(Error {
            line: self.line,
            message: message.into(),
        })
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.chars.get(self.pos + n).copied()
    }

    fn starts_with(&self, s: &str) -> bool {
        s.chars()
            .enumerate()
            .all(|(i, c)| self.peek_at(i) == Some(c))
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn expect(&mut self, want: char) -> Result<(), Error> {
        match self.peek() {
            Some(c) if c == want => {
                self.bump();
                Ok(())
            }
            Some(c) => self.err(format!("expected '{want}', found '{}'", c.escape_debug())),
            None => self.err(format!("expected '{want}', found end of file")),
        }
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ') | Some('\t')) {
            self.bump();
        }
    }

    fn skip_comment(&mut self) {
        while !matches!(self.peek(), None | Some('\n')) {
            self.bump();
        }
    }

    /// Consumes one `\n` or `\r\n`.
    fn newline(&mut self) -> Result<(), Error> {
        if self.peek() == Some('\r') {
            self.bump();
            if self.peek() != Some('\n') {
                return self.err("carriage return not followed by newline");
            }
        }
        self.bump();
        Ok(())
    }

    /// After a header or key/value: optional comment, then newline or EOF.
    fn line_end(&mut self) -> Result<(), Error> {
        self.skip_ws();
        match self.peek() {
            None => Ok(()),
            Some('#') => {
                self.skip_comment();
                Ok(())
            }
            Some('\n') | Some('\r') => self.newline(),
            Some(c) => self.err(format!(
                "expected end of line, found '{}'",
                c.escape_debug()
            )),
        }
    }

    /// Skips whitespace, newlines and comments (inside arrays).
    fn skip_ws_nl(&mut self) -> Result<(), Error> {
        loop {
            self.skip_ws();
            match self.peek() {
                Some('#') => self.skip_comment(),
                Some('\n') | Some('\r') => self.newline()?,
                _ => return Ok(()),
            }
        }
    }

    fn table_header(&mut self) -> Result<(), Error> {
        self.expect('[')?;
        let array = self.peek() == Some('[');
        if array {
            self.bump();
        }
        self.skip_ws();
        self.key()?;
        self.skip_ws();
        self.expect(']')?;
        if array {
            self.expect(']')?;
        }
        Ok(())
    }

    /// A possibly dotted key; returns its last component.
    fn key(&mut self) -> Result<String, Error> {
        let mut last = self.simple_key()?;
        loop {
            self.skip_ws();
            if self.peek() != Some('.') {
                return Ok(last);
            }
            self.bump();
            self.skip_ws();
            last = self.simple_key()?;
        }
    }

    fn simple_key(&mut self) -> Result<String, Error> {
        match self.peek() {
            Some('"') => {
                self.bump();
                self.basic_string()
            }
            Some('\'') => {
                self.bump();
                self.literal_string()
            }
            _ => {
                let start = self.pos;
                while self.peek().is_some_and(is_bare) {
                    self.bump();
                }
                if self.pos == start {
                    return match self.peek() {
                        Some(c) => {
                            self.err(format!("expected a key, found '{}'", c.escape_debug()))
                        }
                        None => self.err("expected a key, found end of file"),
                    };
                }
                Ok(self.chars[start..self.pos].iter().collect())
            }
        }
    }

    fn keyval(&mut self, depth: usize) -> Result<(String, Value), Error> {
        let key = self.key()?;
        self.skip_ws();
        self.expect('=')?;
        self.skip_ws();
        let value = self.value(depth)?;
        Ok((key, value))
    }

    fn value(&mut self, depth: usize) -> Result<Value, Error> {
        if depth > MAX_DEPTH {
            return self.err("arrays or inline tables nested too deeply");
        }
        match self.peek() {
            Some('"') if self.starts_with("\"\"\"") => {
                self.pos += 3;
                self.ml_string(true).map(Value::Str)
            }
            Some('"') => {
                self.bump();
                self.basic_string().map(Value::Str)
            }
            Some('\'') if self.starts_with("'''") => {
                self.pos += 3;
                self.ml_string(false).map(Value::Str)
            }
            Some('\'') => {
                self.bump();
                self.literal_string().map(Value::Str)
            }
            Some('[') => self.array(depth),
            Some('{') => self.inline_table(depth),
            Some(_) => self.scalar(),
            None => self.err("expected a value, found end of file"),
        }
    }

    /// Bare scalar: boolean, integer, float or date-time.
    fn scalar(&mut self) -> Result<Value, Error> {
        let token_char = |c: char| c.is_ascii_alphanumeric() || "+-_.:".contains(c);
        let start = self.pos;
        while self.peek().is_some_and(token_char) {
            self.bump();
        }
        // A date and a time may be separated by one space (RFC 3339 as TOML allows).
        if self.pos - start == 10
            && self.peek() == Some(' ')
            && self.peek_at(1).is_some_and(|c| c.is_ascii_digit())
            && self.chars.get(start + 4) == Some(&'-')
        {
            self.bump();
            while self.peek().is_some_and(token_char) {
                self.bump();
            }
        }
        let token: String = self.chars[start..self.pos].iter().collect();
        if token.is_empty() {
            return match self.peek() {
                Some(c) => self.err(format!("expected a value, found '{}'", c.escape_debug())),
                None => self.err("expected a value, found end of file"),
            };
        }
        match token.as_str() {
            "true" => return Ok(Value::Bool(true)),
            "false" => return Ok(Value::Bool(false)),
            _ => {}
        }
        if let Some(i) = parse_integer(&token) {
            return i.map(Value::Int).or_else(|m| self.err(m.to_string()));
        }
        if is_float(&token) || is_datetime(&token) {
            return Ok(Value::Other);
        }
        self.err(format!("invalid value '{token}'"))
    }

    fn escape(&mut self) -> Result<char, Error> {
        let c = match self.bump() {
            Some(c) => c,
            None => return self.err("unterminated string"),
        };
        let hex_len = match c {
            'b' => return Ok('\u{8}'),
            't' => return Ok('\t'),
            'n' => return Ok('\n'),
            'f' => return Ok('\u{c}'),
            'r' => return Ok('\r'),
            '"' => return Ok('"'),
            '\\' => return Ok('\\'),
            'u' => 4,
            'U' => 8,
            other => return self.err(format!("invalid escape '\\{}'", other.escape_debug())),
        };
        let mut code: u32 = 0;
        for _ in 0..hex_len {
            let d = self.peek().and_then(|c| c.to_digit(16));
            match d {
                Some(d) => {
                    self.bump();
                    code = code * 16 + d;
                }
                None => return self.err(format!("\\{c} needs {hex_len} hex digits")),
            }
        }
        match char::from_u32(code) {
            Some(ch) => Ok(ch),
            None => self.err(format!("\\{c}{code:X} is not a Unicode scalar value")),
        }
    }

    /// After the opening `"`.
    fn basic_string(&mut self) -> Result<String, Error> {
        let mut s = String::new();
        loop {
            match self.peek() {
                None | Some('\n') | Some('\r') => return self.err("unterminated string"),
                Some('"') => {
                    self.bump();
                    return Ok(s);
                }
                Some('\\') => {
                    self.bump();
                    s.push(self.escape()?);
                }
                Some(c) if c.is_control() && c != '\t' => {
                    return self.err(format!(
                        "control character '{}' in string",
                        c.escape_debug()
                    ))
                }
                Some(c) => {
                    self.bump();
                    s.push(c);
                }
            }
        }
    }

    /// After the opening `'`.
    fn literal_string(&mut self) -> Result<String, Error> {
        let mut s = String::new();
        loop {
            match self.peek() {
                None | Some('\n') | Some('\r') => return self.err("unterminated string"),
                Some('\'') => {
                    self.bump();
                    return Ok(s);
                }
                Some(c) if c.is_control() && c != '\t' => {
                    return self.err(format!(
                        "control character '{}' in string",
                        c.escape_debug()
                    ))
                }
                Some(c) => {
                    self.bump();
                    s.push(c);
                }
            }
        }
    }

    /// After the opening `"""` (basic) or `'''` (literal).
    fn ml_string(&mut self, basic: bool) -> Result<String, Error> {
        let quote = if basic { '"' } else { '\'' };
        let close = quote.to_string().repeat(3);
        let start_line = self.line;
        // A newline right after the opening delimiter is not part of the string.
        if self.peek() == Some('\n') || self.starts_with("\r\n") {
            self.newline()?;
        }
        let mut s = String::new();
        loop {
            if self.starts_with(&close) {
                self.pos += 3;
                // Up to two quotes right before the delimiter belong to the string.
                for _ in 0..2 {
                    if self.peek() == Some(quote) {
                        self.bump();
                        s.push(quote);
                    }
                }
                return Ok(s);
            }
            match self.peek() {
                None => {
                    return Err(Error {
                        line: start_line,
                        message: "unterminated multi-line string".to_string(),
                    })
                }
                Some('\\') if basic => {
                    self.bump();
                    // "Line ending backslash": trims the newline and the
                    // whitespace that follows it.
                    let mut look = self.pos;
                    while matches!(self.chars.get(look), Some(' ') | Some('\t')) {
                        look += 1;
                    }
                    if matches!(self.chars.get(look), Some('\n') | Some('\r')) {
                        self.skip_ws();
                        self.skip_ws_nl_only()?;
                    } else {
                        s.push(self.escape()?);
                    }
                }
                Some('\r') => {
                    self.newline()?;
                    s.push('\n');
                }
                Some(c) if c.is_control() && c != '\t' && c != '\n' => {
                    return self.err(format!(
                        "control character '{}' in string",
                        c.escape_debug()
                    ))
                }
                Some(c) => {
                    self.bump();
                    s.push(c);
                }
            }
        }
    }

    /// Skips whitespace and newlines, but not comments (inside strings).
    fn skip_ws_nl_only(&mut self) -> Result<(), Error> {
        loop {
            self.skip_ws();
            match self.peek() {
                Some('\n') | Some('\r') => self.newline()?,
                _ => return Ok(()),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, Error> {
        self.expect('[')?;
        loop {
            self.skip_ws_nl()?;
            if self.peek() == Some(']') {
                self.bump();
                return Ok(Value::Other);
            }
            self.value(depth + 1)?;
            self.skip_ws_nl()?;
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some(']') => {
                    self.bump();
                    return Ok(Value::Other);
                }
                Some(c) => {
                    return self.err(format!(
                        "expected ',' or ']' in array, found '{}'",
                        c.escape_debug()
                    ))
                }
                None => return self.err("unterminated array"),
            }
        }
    }

    fn inline_table(&mut self, depth: usize) -> Result<Value, Error> {
        self.expect('{')?;
        self.skip_ws();
        if self.peek() == Some('}') {
            self.bump();
            return Ok(Value::Other);
        }
        loop {
            self.skip_ws();
            self.keyval(depth + 1)?;
            self.skip_ws();
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some('}') => {
                    self.bump();
                    return Ok(Value::Other);
                }
                Some(c) => {
                    return self.err(format!(
                        "expected ',' or '}}' in inline table, found '{}'",
                        c.escape_debug()
                    ))
                }
                None => return self.err("unterminated inline table"),
            }
        }
    }
}

/// Why a token shaped like an integer is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum IntegerError {
    /// Misplaced `_`, a leading zero, a sign on a hex/octal/binary number.
    #[error("invalid integer '{0}'")]
    Malformed(String),
    /// Outside `i64`.
    #[error("integer '{0}' is out of range")]
    OutOfRange(String),
}

/// `None` if `token` is not shaped like an integer; `Some(Err)` if it is
/// but is malformed or out of range.
fn parse_integer(token: &str) -> Option<Result<i64, IntegerError>> {
    let (neg, body) = match token.as_bytes().first() {
        Some(b'+') => (false, &token[1..]),
        Some(b'-') => (true, &token[1..]),
        _ => (false, token),
    };
    let (radix, digits) = if let Some(d) = body.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = body.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = body.strip_prefix("0b") {
        (2, d)
    } else {
        (10, body)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix) || c == '_') {
        return None;
    }
    let bad = || Some(Err(IntegerError::Malformed(token.to_string())));
    if digits.starts_with('_') || digits.ends_with('_') || digits.contains("__") {
        return bad();
    }
    if radix == 10 && digits.len() > 1 && digits.starts_with('0') {
        return bad();
    }
    if radix != 10 && token.starts_with(['+', '-']) {
        return bad();
    }
    let clean: String = digits.chars().filter(|&c| c != '_').collect();
    let magnitude = match i128::from_str_radix(&clean, radix) {
        Ok(m) => m,
        Err(_) => return Some(Err(IntegerError::OutOfRange(token.to_string()))),
    };
    let v = if neg { -magnitude } else { magnitude };
    Some(i64::try_from(v).map_err(|_| IntegerError::OutOfRange(token.to_string())))
}

fn is_float(token: &str) -> bool {
    let body = token.trim_start_matches(['+', '-']);
    if matches!(body, "inf" | "nan") {
        return true;
    }
    let clean: String = token.chars().filter(|&c| c != '_').collect();
    body.starts_with(|c: char| c.is_ascii_digit())
        && body.contains(['.', 'e', 'E'])
        && clean.parse::<f64>().is_ok()
}

fn is_datetime(token: &str) -> bool {
    let b = token.as_bytes();
    let date = b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit);
    let time = b.len() >= 8
        && b[..2].iter().all(u8::is_ascii_digit)
        && b[2] == b':'
        && b[3..5].iter().all(u8::is_ascii_digit)
        && b[5] == b':';
    (date || time)
        && token
            .chars()
            .all(|c| c.is_ascii_digit() || "-:.TtZz+ ".contains(c))
}
