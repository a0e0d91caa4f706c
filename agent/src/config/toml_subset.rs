//! A small parser for the subset of TOML that board configurations use.
//!
//! Why not the `toml` crate: the agent is a static binary for routers and
//! set-top boxes with a few MiB of flash, and `toml` (with `toml_parser`,
//! `winnow`, serde's visitors and core's float parsing) was the largest piece
//! of it, about 100 KiB, to read a file of twenty lines. This parser is a few
//! KiB.
//!
//! Accepted (TOML syntax; every accepted file means what it means in TOML):
//!
//! - `key = value` lines; keys bare (`A-Za-z0-9_-`) or quoted (`"k"`, `'k'`);
//! - `[table]` headers (one level: no `[a.b]`, no `[[array]]`);
//! - `#` comments, blank lines, LF or CRLF line ends, a leading UTF-8 BOM;
//! - basic strings `"..."` with the escapes `\b \t \n \f \r \" \\ \uXXXX
//!   \UXXXXXXXX` (and TOML 1.1's `\e \xHH`, which the `toml` crate the agent
//!   used before accepted), literal strings `'...'`;
//! - integers: decimal with an optional sign and `_` between digits, `0x`,
//!   `0o`, `0b` (64-bit signed, as in TOML);
//! - booleans `true`, `false`;
//! - arrays of those values, also across lines, with comments and a trailing
//!   comma.
//!
//! Rejected with an error naming the line: everything else TOML has (floats,
//! dates, multi-line strings, inline tables, dotted keys, nested tables and
//! arrays of tables; no board key takes any of them), duplicate keys, a table
//! defined twice, and anything that is not TOML. Which keys and tables exist
//! is the caller's business ([`super`]).

use std::fmt;

/// A value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `"..."` or `'...'`.
    String(String),
    /// `42`, `-1`, `1_000`, `0xff`.
    Integer(i64),
    /// `true`, `false`.
    Boolean(bool),
    /// `[v, ...]`.
    Array(Vec<Value>),
}

impl Value {
    /// "a string", "an integer", ... for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Boolean(_) => "a boolean",
            Value::Array(_) => "an array",
        }
    }
}

/// One `key = value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key, unquoted.
    pub key: String,
    /// 1-based line of the key.
    pub line: usize,
    /// The value.
    pub value: Value,
}

/// A `[table]` and its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The name, unquoted.
    pub name: String,
    /// 1-based line of the header.
    pub line: usize,
    /// Its entries, in file order.
    pub entries: Vec<Entry>,
}

/// A parsed file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Document {
    /// Entries before the first table header, in file order.
    pub root: Vec<Entry>,
    /// The tables, in file order.
    pub tables: Vec<Table>,
}

impl Document {
    /// The 1-based line of `key` (`table.key` inside a table, `table` for a
    /// header).
    pub fn line_of(&self, key: &str) -> Option<usize> {
        let find = |entries: &[Entry], k: &str| entries.iter().find(|e| e.key == k).map(|e| e.line);
        match key.split_once('.') {
            None => find(&self.root, key).or_else(|| self.table(key).map(|t| t.line)),
            Some((t, k)) => self.table(t).and_then(|t| find(&t.entries, k)),
        }
    }

    fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }
}

/// A syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// 1-based line.
    pub line: usize,
    /// The key being parsed (`table.key` inside a table), once it is known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}", self.line)?;
        if let Some(k) = &self.key {
            write!(f, ": key `{k}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for Error {}

/// Parse `text`.
pub fn parse(text: &str) -> Result<Document, Error> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut p = Parser {
        s: text,
        pos: 0,
        line: 1,
        key: None,
    };
    let mut doc = Document::default();
    loop {
        p.key = None;
        p.skip_blank();
        match p.peek() {
            None => return Ok(doc),
            Some(b'#' | b'\r' | b'\n') => p.end_of_line()?,
            Some(b'[') => {
                let line = p.line;
                p.pos += 1;
                if p.peek() == Some(b'[') {
                    return Err(p.err("arrays of tables ([[...]]) are not supported"));
                }
                p.skip_blank();
                let name = p.key()?;
                p.key = Some(name.clone());
                p.skip_blank();
                match p.peek() {
                    Some(b']') => p.pos += 1,
                    Some(b'.') => return Err(p.err("nested tables ([a.b]) are not supported")),
                    _ => return Err(p.err("expected `]` after the table name")),
                }
                if doc.tables.iter().any(|t| t.name == name) {
                    return Err(p.err(format!("table [{name}] is defined twice")));
                }
                doc.tables.push(Table {
                    name,
                    line,
                    entries: Vec::new(),
                });
                p.end_of_line()?;
            }
            Some(_) => {
                let line = p.line;
                let key = p.key()?;
                let table = doc.tables.last_mut();
                p.key = Some(match &table {
                    Some(t) => format!("{}.{key}", t.name),
                    None => key.clone(),
                });
                p.skip_blank();
                match p.peek() {
                    Some(b'=') => p.pos += 1,
                    Some(b'.') => {
                        return Err(p.err("dotted keys are not supported (use a [table] header)"))
                    }
                    _ => return Err(p.err("expected `=` after the key")),
                }
                p.skip_blank();
                let value = p.value()?;
                let entries = match table {
                    Some(t) => &mut t.entries,
                    None => &mut doc.root,
                };
                if entries.iter().any(|e| e.key == key) {
                    return Err(Error {
                        line,
                        ..p.err("duplicate key")
                    });
                }
                entries.push(Entry { key, line, value });
                p.end_of_line()?;
            }
        }
    }
}

struct Parser<'a> {
    s: &'a str,
    /// Byte offset; always on a char boundary.
    pos: usize,
    line: usize,
    /// For errors: the key whose value is being parsed.
    key: Option<String>,
}

impl Parser<'_> {
    fn err(&self, message: impl Into<String>) -> Error {
        Error {
            line: self.line,
            key: self.key.clone(),
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn peek_char(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    /// Spaces and tabs (TOML's whitespace).
    fn skip_blank(&mut self) {
        while let Some(b' ' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    /// A newline (LF or CRLF), if one is next.
    fn newline(&mut self) -> Result<bool, Error> {
        match self.peek() {
            Some(b'\n') => self.pos += 1,
            Some(b'\r') if self.s.as_bytes().get(self.pos + 1) == Some(&b'\n') => self.pos += 2,
            Some(b'\r') => return Err(self.err("carriage return without a line feed")),
            _ => return Ok(false),
        }
        self.line += 1;
        Ok(true)
    }

    /// Blanks, then an optional comment, then the end of the line or file.
    fn end_of_line(&mut self) -> Result<(), Error> {
        self.skip_blank();
        self.skip_comment();
        if self.peek().is_none() || self.newline()? {
            Ok(())
        } else {
            let c = self.peek_char().unwrap_or(' ');
            Err(self.err(format!(
                "unexpected `{c}` (one `key = value` per line, `#` starts a comment)"
            )))
        }
    }

    fn skip_comment(&mut self) {
        if self.peek() == Some(b'#') {
            let rest = &self.s.as_bytes()[self.pos..];
            self.pos += rest
                .iter()
                .position(|&b| b == b'\n' || b == b'\r')
                .unwrap_or(rest.len());
        }
    }

    /// Inside an array: blanks, comments and newlines.
    fn skip_blank_lines(&mut self) -> Result<(), Error> {
        loop {
            self.skip_blank();
            self.skip_comment();
            if !self.newline()? {
                return Ok(());
            }
        }
    }

    fn key(&mut self) -> Result<String, Error> {
        match self.peek() {
            Some(q @ (b'"' | b'\'')) => self.string(q),
            _ => {
                let start = self.pos;
                while let Some(b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-') = self.peek()
                {
                    self.pos += 1;
                }
                if self.pos == start {
                    return Err(self.err("expected a key (letters, digits, `_`, `-`)"));
                }
                Ok(self.s[start..self.pos].to_string())
            }
        }
    }

    fn value(&mut self) -> Result<Value, Error> {
        match self.peek() {
            Some(q @ (b'"' | b'\'')) => self.string(q).map(Value::String),
            Some(b'[') => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_blank_lines()?;
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                        return Ok(Value::Array(items));
                    }
                    items.push(self.value()?);
                    self.skip_blank_lines()?;
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {}
                        _ => return Err(self.err("expected `,` or `]` in the array")),
                    }
                }
            }
            Some(b'{') => Err(self.err("inline tables ({...}) are not supported")),
            None | Some(b'\r' | b'\n' | b'#') => Err(self.err("missing value after `=`")),
            Some(_) => {
                // A bare word: up to the next delimiter.
                let rest = &self.s[self.pos..];
                let word = rest
                    .find([' ', '\t', '\r', '\n', '#', ',', ']'])
                    .map_or(rest, |n| &rest[..n]);
                let v = match word {
                    "true" => Value::Boolean(true),
                    "false" => Value::Boolean(false),
                    _ => Value::Integer(integer(word).map_err(|m| self.err(m))?),
                };
                self.pos += word.len();
                Ok(v)
            }
        }
    }

    /// A basic (`q` = `"`) or literal (`'`) one-line string, at its opening quote.
    fn string(&mut self, q: u8) -> Result<String, Error> {
        let rest = &self.s.as_bytes()[self.pos..];
        if rest.starts_with(&[q, q, q]) {
            return Err(self.err("multi-line strings are not supported"));
        }
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek_char() else {
                return Err(self.err("unterminated string"));
            };
            self.pos += c.len_utf8();
            match c {
                _ if c as u32 == u32::from(q) => return Ok(out),
                '\\' if q == b'"' => out.push(self.escape()?),
                '\n' | '\r' => {
                    return Err(self.err("unterminated string (strings end on their line)"))
                }
                '\t' => out.push(c),
                '\0'..='\x1f' | '\x7f' => {
                    return Err(self.err("control character in a string (write it as an escape)"))
                }
                _ => out.push(c),
            }
        }
    }

    /// After a backslash in a basic string.
    fn escape(&mut self) -> Result<char, Error> {
        let c = self.peek().ok_or_else(|| self.err("unterminated string"))?;
        self.pos += 1;
        Ok(match c {
            b'b' => '\u{8}',
            b't' => '\t',
            b'n' => '\n',
            b'f' => '\u{c}',
            b'r' => '\r',
            b'"' => '"',
            b'\\' => '\\',
            b'e' => '\u{1b}',
            b'x' | b'u' | b'U' => {
                let n = match c {
                    b'x' => 2,
                    b'u' => 4,
                    _ => 8,
                };
                let hex = self.s.get(self.pos..self.pos + n).unwrap_or("");
                let code = if hex.len() == n && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    u32::from_str_radix(hex, 16).ok()
                } else {
                    None
                };
                let ch = code.and_then(char::from_u32).ok_or_else(|| {
                    self.err(format!(
                        "invalid escape \\{}: expected {n} hex digits of a Unicode scalar value",
                        c as char
                    ))
                })?;
                self.pos += n;
                ch
            }
            _ => {
                let c = self.s[self.pos - 1..].chars().next().unwrap_or('?');
                return Err(self.err(format!(
                    "invalid escape \\{c} (valid: \\b \\t \\n \\f \\r \\e \\\" \\\\ \\xHH \\uXXXX \\UXXXXXXXX)"
                )));
            }
        })
    }
}

/// A TOML integer: `[+-]` decimal without leading zeros, or `0x`/`0o`/`0b`
/// digits; `_` only between two digits.
fn integer(word: &str) -> Result<i64, String> {
    let not_int = || {
        format!(
            "`{word}` is not a value (expected a \"string\", an integer, true, false or [array])"
        )
    };
    let (sign, body) = match word.as_bytes().first() {
        Some(b'-') => ("-", &word[1..]),
        Some(b'+') => ("", &word[1..]),
        _ => ("", word),
    };
    let (radix, digits) = match body.get(..2) {
        Some("0x") if sign.is_empty() && word == body => (16, &body[2..]),
        Some("0o") if sign.is_empty() && word == body => (8, &body[2..]),
        Some("0b") if sign.is_empty() && word == body => (2, &body[2..]),
        _ => (10, body),
    };
    let is_digit = |b: u8| (b as char).is_digit(radix);
    let bytes = digits.as_bytes();
    let underscores_ok = bytes.iter().enumerate().all(|(i, &b)| {
        b != b'_'
            || (i > 0 && i + 1 < bytes.len() && is_digit(bytes[i - 1]) && is_digit(bytes[i + 1]))
    });
    if bytes.is_empty() || !bytes.iter().all(|&b| b == b'_' || is_digit(b)) || !underscores_ok {
        let float_or_date = matches!(body, "inf" | "nan")
            || (radix == 10
                && body.starts_with(|c: char| c.is_ascii_digit())
                && body.contains(['.', 'e', 'E', ':', '-']));
        if float_or_date {
            return Err(format!("`{word}`: floats and dates are not supported here"));
        }
        return Err(not_int());
    }
    if radix == 10 && bytes.len() > 1 && bytes[0] == b'0' {
        return Err(format!("`{word}`: leading zeros are not allowed"));
    }
    let clean: String = sign
        .chars()
        .chain(digits.chars().filter(|&c| c != '_'))
        .collect();
    i64::from_str_radix(&clean, radix)
        .map_err(|_| format!("`{word}` does not fit in a 64-bit signed integer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Value {
        let d = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(d.root.len(), 1, "{d:?}");
        d.root[0].value.clone()
    }

    fn s(v: &str) -> Value {
        Value::String(v.to_string())
    }

    fn int(n: i64) -> Value {
        Value::Integer(n)
    }

    fn entry(key: &str, line: usize, value: Value) -> Entry {
        Entry {
            key: key.to_string(),
            line,
            value,
        }
    }

    /// Documents the subset accepts (each also compared with the `toml`
    /// crate in `same_as_toml`).
    const ACCEPTED: &[&str] = &[
        "k = \"a b\"\n",
        "k = 'C:\\no\\escapes'\n",
        "k = \"\"\nl = ''\n",
        "k = \"héllo ✓\"\n",
        "a = 42\nb = 0\nc = -17\nd = +5\ne = 1_048_576\nf = -0\n",
        "a = 0xdead_BEEF\nb = 0o755\nc = 0b1010\nd = 0x0\n",
        "a = 9223372036854775807\nb = -9223372036854775808\n",
        "a = true\nb = false\n",
        "a = []\nb = [ ]\nc = [\"x\", 'y', \"\"]\nd = [1,2 , 3,]\ne = [[1], [\"x\"]]\nf = [1, \"mixed\"]\n",
        "a = \"q\\\" b\\\\ n\\n t\\t r\\r b\\b f\\f\"\nb = \"\\u00e9\\u2713\\U0001F600\"\n",
        "a = \"\\x41\\xe9 \\e[0m\"\n",
        "a = \"tab\there\"\nb = '\\n\\u'\n",
        "# head\n\n  a = 1 # one\n\tb='x'\t\n# [not_a_table]\n[t] # tab\n  c = \"# not a comment\"  \n",
        "",
        "# only\n\n",
        "k=1",
        "[ t ]\nk = 1\n",
        "\u{feff}k = 1\n",
        "\"quoted key\" = 1\n'lit' = 2\n\"\" = 3\n[\"quoted table\"]\n\"a-b\" = 4\n",
        "a = 1\r\n# c\r\n\r\n[t]\r\nb = \"x\" # c\r\nc = [\r\n  1, # one\r\n  2,\r\n]\r\n",
        "run = [\n  \"/bin/sh\",  # the shell\n\n  \"-c\",\n  'true'\n]\nnext = 1\n",
        "a = [ # open\n]\n",
        "[empty]\n[t]\nx = 1\n",
        "trailing = 1   \t\n[t]   \nk = 'v'\t \n",
        "A-Z_09 = 1\n1234 = 2\n",
    ];

    /// (text, line, key, part of the message, valid TOML that the subset
    /// leaves out).
    #[allow(clippy::type_complexity)]
    const REJECTED: &[(&str, usize, Option<&str>, &str, bool)] = &[
        ("a = 1\nb = \n", 2, Some("b"), "missing value", false),
        ("a = 1\nb = # c\n", 2, Some("b"), "missing value", false),
        ("b =", 1, Some("b"), "missing value", false),
        ("a = 1\nb\n", 2, Some("b"), "expected `=`", false),
        ("a = 1\n= 2\n", 2, None, "expected a key", false),
        (
            "a = 1\n\n[t]\nx = 1\nx = 2\n",
            5,
            Some("t.x"),
            "duplicate key",
            false,
        ),
        ("a = 1\na = 1\n", 2, Some("a"), "duplicate key", false),
        ("a = 1\n'a' = 1\n", 2, Some("a"), "duplicate key", false),
        ("[t]\n[u]\n[t]\n", 3, Some("t"), "defined twice", false),
        ("[t\n", 1, Some("t"), "expected `]`", false),
        ("[]\n", 1, None, "expected a key", false),
        ("[a.b]\n", 1, Some("a"), "nested tables", true),
        ("[[a]]\n", 1, None, "arrays of tables", true),
        ("a.b = 1\n", 1, Some("a"), "dotted keys", true),
        ("a = 1 2\n", 1, Some("a"), "unexpected `2`", false),
        ("a = \"x\" y\n", 1, Some("a"), "unexpected `y`", false),
        ("a = [1] ]\n", 1, Some("a"), "unexpected `]`", false),
        ("[t] x = 1\n", 1, Some("t"), "unexpected `x`", false),
        ("a = \"open\nb = 1\n", 1, Some("a"), "unterminated", false),
        ("a = 'open\n", 1, Some("a"), "unterminated", false),
        ("a = \"open", 1, Some("a"), "unterminated", false),
        ("a = \"x\r\n\"\n", 1, Some("a"), "unterminated", false),
        ("a = 1\rb = 2\n", 1, Some("a"), "carriage return", false),
        ("a = \"\"\"multi\"\"\"\n", 1, Some("a"), "multi-line", true),
        ("a = '''multi'''\n", 1, Some("a"), "multi-line", true),
        ("a = {x = 1}\n", 1, Some("a"), "inline tables", true),
        ("a = 1.5\n", 1, Some("a"), "floats and dates", true),
        ("a = 1.0\n", 1, Some("a"), "floats and dates", true),
        ("a = 1e3\n", 1, Some("a"), "floats and dates", true),
        ("a = inf\n", 1, Some("a"), "floats and dates", true),
        ("a = -nan\n", 1, Some("a"), "floats and dates", true),
        ("a = 1979-05-27\n", 1, Some("a"), "floats and dates", true),
        ("a = 07:32:00\n", 1, Some("a"), "floats and dates", true),
        ("a = yes\n", 1, Some("a"), "not a value", false),
        ("a = True\n", 1, Some("a"), "not a value", false),
        ("a = 012\n", 1, Some("a"), "leading zeros", false),
        ("a = 1__0\n", 1, Some("a"), "not a value", false),
        ("a = _1\n", 1, Some("a"), "not a value", false),
        ("a = 1_\n", 1, Some("a"), "not a value", false),
        ("a = 0x\n", 1, Some("a"), "not a value", false),
        ("a = 0xg\n", 1, Some("a"), "not a value", false),
        ("a = 0x_1\n", 1, Some("a"), "not a value", false),
        ("a = -0x10\n", 1, Some("a"), "not a value", false),
        ("a = 0b102\n", 1, Some("a"), "not a value", false),
        ("a = 9223372036854775808\n", 1, Some("a"), "64-bit", false),
        (
            "a = \"nul \u{0}\"\n",
            1,
            Some("a"),
            "control character",
            false,
        ),
        (
            "a = 'bell \u{7}'\n",
            1,
            Some("a"),
            "control character",
            false,
        ),
        ("a = [1,,2]\n", 1, Some("a"), "not a value", false),
        ("a = [\n1,\n2\n3]\n", 4, Some("a"), "`,` or `]`", false),
        ("a = [1, 2\n", 2, Some("a"), "`,` or `]`", false),
        ("k = \"\\x4\"\n", 1, Some("k"), "2 hex digits", false),
        ("k = \"\\a\"\n", 1, Some("k"), "invalid escape \\a", false),
        ("k = \"\\u12\"\n", 1, Some("k"), "4 hex digits", false),
        ("k = \"\\uD800\"\n", 1, Some("k"), "4 hex digits", false),
        ("k = \"\\U00110000\"\n", 1, Some("k"), "8 hex digits", false),
        ("k = \"\\\"\n", 1, Some("k"), "unterminated", false),
        ("k = \"\\", 1, Some("k"), "unterminated", false),
    ];

    #[test]
    fn value_types() {
        assert_eq!(one("k = \"a b\""), s("a b"));
        assert_eq!(one("k = 'C:\\no\\escapes'"), s("C:\\no\\escapes"));
        assert_eq!(one("k = \"\""), s(""));
        assert_eq!(one("k = ''"), s(""));
        assert_eq!(one("k = \"héllo ✓\""), s("héllo ✓"));
        assert_eq!(one("k = 42"), int(42));
        assert_eq!(one("k = 0"), int(0));
        assert_eq!(one("k = -17"), int(-17));
        assert_eq!(one("k = +5"), int(5));
        assert_eq!(one("k = 1_048_576"), int(1 << 20));
        assert_eq!(one("k = 0xdead_BEEF"), int(0xdead_beef));
        assert_eq!(one("k = 0o755"), int(0o755));
        assert_eq!(one("k = 0b1010"), int(10));
        assert_eq!(one("k = 9223372036854775807"), int(i64::MAX));
        assert_eq!(one("k = -9223372036854775808"), int(i64::MIN));
        assert_eq!(one("k = true"), Value::Boolean(true));
        assert_eq!(one("k = false"), Value::Boolean(false));
        assert_eq!(one("k = []"), Value::Array(vec![]));
        assert_eq!(
            one("k = [\"/sbin/sysupgrade\", '-n', \"{image}\"]"),
            Value::Array(vec![s("/sbin/sysupgrade"), s("-n"), s("{image}")])
        );
        assert_eq!(
            one("k = [1,2 , 3,]"),
            Value::Array(vec![int(1), int(2), int(3)])
        );
        assert_eq!(
            one("k = [[1], [\"x\"]]"),
            Value::Array(vec![Value::Array(vec![int(1)]), Value::Array(vec![s("x")])])
        );
    }

    #[test]
    fn escapes() {
        assert_eq!(
            one(r#"k = "q\" b\\ n\n t\t r\r b\b f\f""#),
            s("q\" b\\ n\n t\t r\r b\u{8} f\u{c}")
        );
        assert_eq!(one(r#"k = "\u00e9\u2713\U0001F600""#), s("é✓😀"));
        assert_eq!(one(r#"k = "\x41\xe9 \e[0m""#), s("Aé \u{1b}[0m"));
        assert_eq!(one("k = \"tab\there\""), s("tab\there"));
        // Literal strings take backslashes as they are.
        assert_eq!(one(r"k = '\n\u'"), s("\\n\\u"));
        assert_eq!(one(r#"k = 'say "hi"'"#), s("say \"hi\""));
    }

    #[test]
    fn comments_blank_lines_and_whitespace() {
        let d = parse(
            "# head\n\n  a = 1 # one\n\tb='x'\t\n# [not_a_table]\n[t] # tab\n  c = \"# not a comment\"  \n",
        )
        .expect("parses");
        assert_eq!(d.root, vec![entry("a", 3, int(1)), entry("b", 4, s("x"))]);
        assert_eq!(d.tables.len(), 1);
        assert_eq!((d.tables[0].name.as_str(), d.tables[0].line), ("t", 6));
        assert_eq!(
            d.tables[0].entries,
            vec![entry("c", 7, s("# not a comment"))]
        );
        assert_eq!(parse("").expect("empty"), Document::default());
        assert_eq!(parse("# only\n\n").expect("comments"), Document::default());
        assert_eq!(
            parse("k=1").expect("no newline at EOF").root,
            vec![entry("k", 1, int(1))]
        );
        assert_eq!(parse("[ t ]\n").expect("spaced header").tables[0].name, "t");
        assert_eq!(parse("\u{feff}k = 1\n").expect("BOM").root[0].key, "k");
        let d = parse("\"quoted key\" = 1\n'lit' = 2\n[\"q t\"]\n").expect("quoted");
        assert_eq!(d.root[0].key, "quoted key");
        assert_eq!(d.root[1].key, "lit");
        assert_eq!(d.tables[0].name, "q t");
    }

    #[test]
    fn trailing_whitespace() {
        let d = parse("a = 1 \t\n[t]  \t\nb = \"x\"\t  \nc = [1, 2]   \r\n").expect("parses");
        assert_eq!(d.root, vec![entry("a", 1, int(1))]);
        assert_eq!(
            d.tables[0].entries,
            vec![
                entry("b", 3, s("x")),
                entry("c", 4, Value::Array(vec![int(1), int(2)]))
            ]
        );
    }

    #[test]
    fn crlf_line_ends() {
        let lf = "a = 1\n# c\n\n[t]\nb = \"x\" # c\nc = [\n  1, # one\n  2,\n]\n";
        let crlf = lf.replace('\n', "\r\n");
        let d = parse(&crlf).expect("crlf");
        assert_eq!(d, parse(lf).expect("lf"));
        assert_eq!(d.root, vec![entry("a", 1, int(1))]);
        assert_eq!(d.tables[0].line, 4);
        assert_eq!(
            d.tables[0].entries,
            vec![
                entry("b", 5, s("x")),
                entry("c", 6, Value::Array(vec![int(1), int(2)]))
            ]
        );
        let e = parse("a = 1\r\nb = 2\r\nc = \r\n").expect_err("missing value");
        assert_eq!((e.line, e.key.as_deref()), (3, Some("c")), "{e}");
    }

    #[test]
    fn multi_line_arrays() {
        let d = parse("run = [\n  \"/bin/sh\",  # the shell\n\n  \"-c\",\n  'true'\n]\nnext = 1\n")
            .expect("parses");
        assert_eq!(
            d.root,
            vec![
                entry(
                    "run",
                    1,
                    Value::Array(vec![s("/bin/sh"), s("-c"), s("true")])
                ),
                entry("next", 7, int(1))
            ]
        );
    }

    #[test]
    fn errors_name_line_and_key() {
        for &(text, line, key, what, _) in REJECTED {
            let e = parse(text).expect_err(text);
            assert_eq!((e.line, e.key.as_deref()), (line, key), "{text:?}: {e}");
            assert!(e.message.contains(what), "{text:?}: {e}");
            assert!(!e.to_string().contains('\n'), "{text:?}: {e}");
        }
    }

    #[test]
    fn line_of_finds_keys_and_tables() {
        let d = parse("a = 1\n[t]\nb = 2\n[u]\na = 3\n").expect("parses");
        assert_eq!(d.line_of("a"), Some(1));
        assert_eq!(d.line_of("t"), Some(2));
        assert_eq!(d.line_of("t.b"), Some(3));
        assert_eq!(d.line_of("u.a"), Some(5));
        assert_eq!(d.line_of("b"), None);
        assert_eq!(d.line_of("t.a"), None);
        assert_eq!(d.line_of("v.a"), None);
    }

    /// The `toml` crate (the agent's parser before this one) as the oracle:
    /// whatever the subset accepts, it reads the same; whatever it rejects
    /// is invalid TOML unless it is one of the features left out.
    mod same_as_toml {
        use super::*;
        use std::path::Path;

        fn to_toml(v: &Value) -> toml::Value {
            match v {
                Value::String(s) => toml::Value::String(s.clone()),
                Value::Integer(n) => toml::Value::Integer(*n),
                Value::Boolean(b) => toml::Value::Boolean(*b),
                Value::Array(a) => toml::Value::Array(a.iter().map(to_toml).collect()),
            }
        }

        fn entries(entries: &[Entry]) -> toml::Table {
            entries
                .iter()
                .map(|e| (e.key.clone(), to_toml(&e.value)))
                .collect()
        }

        fn check(text: &str, what: &str) {
            let ours = parse(text).unwrap_or_else(|e| panic!("{what}: {e}"));
            let mut as_toml = entries(&ours.root);
            for t in &ours.tables {
                as_toml.insert(t.name.clone(), toml::Value::Table(entries(&t.entries)));
            }
            let theirs: toml::Table =
                toml::from_str(text).unwrap_or_else(|e| panic!("{what}: toml: {e}"));
            assert_eq!(as_toml, theirs, "{what}");
        }

        #[test]
        fn board_configs_read_the_same() {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../board-configs");
            let mut n = 0;
            for entry in std::fs::read_dir(&dir).expect("board-configs/") {
                let path = entry.expect("entry").path();
                if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("read");
                check(&text, &path.display().to_string());
                check(
                    &text.replace('\n', "\r\n"),
                    &format!("{} (CRLF)", path.display()),
                );
                n += 1;
            }
            assert!(n >= 6, "expected the six board files, found {n}");
        }

        #[test]
        fn accepted_documents_read_the_same() {
            for text in ACCEPTED {
                check(text, &format!("{text:?}"));
            }
        }

        #[test]
        fn rejected_documents_are_invalid_or_left_out() {
            for &(text, _, _, _, valid) in REJECTED {
                let theirs = toml::from_str::<toml::Table>(text);
                assert_eq!(theirs.is_ok(), valid, "{text:?}: {theirs:?}");
            }
        }
    }
}
