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
    pub kind: ErrorKind,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}", self.line)?;
        if let Some(k) = &self.key {
            write!(f, ": key `{k}`")?;
        }
        write!(f, ": {}", self.kind)
    }
}

/// What is wrong on the line of an [`Error`]; a variant with a `String`
/// holds the text at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// `[[name]]`.
    ArrayOfTables,
    /// `[a.b]`.
    NestedTable,
    /// A table header without its `]`.
    UnclosedHeader,
    /// `[name]` a second time.
    TableTwice(String),
    /// `a.b = 1`.
    DottedKey,
    /// A key not followed by `=`.
    NoEquals,
    /// A key set twice in one table.
    DuplicateKey,
    /// A CR not followed by LF.
    LoneCarriageReturn,
    /// Something after the value or header on its line.
    Unexpected(char),
    /// Not a key where one must be.
    NoKey,
    /// An array item followed by neither `,` nor `]`.
    NoArraySeparator,
    /// `{...}`.
    InlineTable,
    /// Nothing after `=`.
    MissingValue,
    /// `"""` or `'''`.
    MultiLineString,
    /// A string the file ends in.
    Unterminated,
    /// A string the line ends in.
    UnterminatedLine,
    /// A control character in a string.
    ControlCharacter,
    /// `\x`, `\u` or `\U` without its hex digits of a Unicode scalar value.
    BadHexEscape {
        /// `x`, `u` or `U`.
        escape: char,
        /// How many digits it takes.
        digits: u8,
    },
    /// A backslash before a character that has no escape.
    UnknownEscape(char),
    /// A bare word that is no value.
    NotAValue(String),
    /// A float or a date.
    FloatOrDate(String),
    /// A decimal integer with a leading zero.
    LeadingZero(String),
    /// An integer beyond 64 signed bits.
    TooBig(String),
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::ArrayOfTables => f.write_str("arrays of tables ([[...]]) are not supported"),
            ErrorKind::NestedTable => f.write_str("nested tables ([a.b]) are not supported"),
            ErrorKind::UnclosedHeader => f.write_str("expected `]` after the table name"),
            ErrorKind::TableTwice(name) => write!(f, "table [{name}] is defined twice"),
            ErrorKind::DottedKey => {
                f.write_str("dotted keys are not supported (use a [table] header)")
            }
            ErrorKind::NoEquals => f.write_str("expected `=` after the key"),
            ErrorKind::DuplicateKey => f.write_str("duplicate key"),
            ErrorKind::LoneCarriageReturn => f.write_str("carriage return without a line feed"),
            ErrorKind::Unexpected(c) => write!(
                f,
                "unexpected `{c}` (one `key = value` per line, `#` starts a comment)"
            ),
            ErrorKind::NoKey => f.write_str("expected a key (letters, digits, `_`, `-`)"),
            ErrorKind::NoArraySeparator => f.write_str("expected `,` or `]` in the array"),
            ErrorKind::InlineTable => f.write_str("inline tables ({...}) are not supported"),
            ErrorKind::MissingValue => f.write_str("missing value after `=`"),
            ErrorKind::MultiLineString => f.write_str("multi-line strings are not supported"),
            ErrorKind::Unterminated => f.write_str("unterminated string"),
            ErrorKind::UnterminatedLine => {
                f.write_str("unterminated string (strings end on their line)")
            }
            ErrorKind::ControlCharacter => {
                f.write_str("control character in a string (write it as an escape)")
            }
            ErrorKind::BadHexEscape { escape, digits } => write!(
                f,
                "invalid escape \\{escape}: expected {digits} hex digits of a Unicode scalar value"
            ),
            ErrorKind::UnknownEscape(c) => write!(
                f,
                "invalid escape \\{c} (valid: \\b \\t \\n \\f \\r \\e \\\" \\\\ \\xHH \\uXXXX \\UXXXXXXXX)"
            ),
            ErrorKind::NotAValue(w) => write!(
                f,
                "`{w}` is not a value (expected a \"string\", an integer, true, false or [array])"
            ),
            ErrorKind::FloatOrDate(w) => {
                write!(f, "`{w}`: floats and dates are not supported here")
            }
            ErrorKind::LeadingZero(w) => write!(f, "`{w}`: leading zeros are not allowed"),
            ErrorKind::TooBig(w) => write!(f, "`{w}` does not fit in a 64-bit signed integer"),
        }
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
                    return Err(p.err(ErrorKind::ArrayOfTables));
                }
                p.skip_blank();
                let name = p.key()?;
                p.key = Some(name.clone());
                p.skip_blank();
                match p.peek() {
                    Some(b']') => p.pos += 1,
                    Some(b'.') => return Err(p.err(ErrorKind::NestedTable)),
                    _ => return Err(p.err(ErrorKind::UnclosedHeader)),
                }
                if doc.tables.iter().any(|t| t.name == name) {
                    return Err(p.err(ErrorKind::TableTwice(name)));
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
                    Some(b'.') => return Err(p.err(ErrorKind::DottedKey)),
                    _ => return Err(p.err(ErrorKind::NoEquals)),
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
                        ..p.err(ErrorKind::DuplicateKey)
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
    fn err(&self, kind: ErrorKind) -> Error {
        Error {
            line: self.line,
            key: self.key.clone(),
            kind,
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
            Some(b'\r') => return Err(self.err(ErrorKind::LoneCarriageReturn)),
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
            Err(self.err(ErrorKind::Unexpected(c)))
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
                    return Err(self.err(ErrorKind::NoKey));
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
                        _ => return Err(self.err(ErrorKind::NoArraySeparator)),
                    }
                }
            }
            Some(b'{') => Err(self.err(ErrorKind::InlineTable)),
            None | Some(b'\r' | b'\n' | b'#') => Err(self.err(ErrorKind::MissingValue)),
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
            return Err(self.err(ErrorKind::MultiLineString));
        }
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek_char() else {
                return Err(self.err(ErrorKind::Unterminated));
            };
            self.pos += c.len_utf8();
            match c {
                _ if c as u32 == u32::from(q) => return Ok(out),
                '\\' if q == b'"' => out.push(self.escape()?),
                '\n' | '\r' => return Err(self.err(ErrorKind::UnterminatedLine)),
                '\t' => out.push(c),
                '\0'..='\x1f' | '\x7f' => return Err(self.err(ErrorKind::ControlCharacter)),
                _ => out.push(c),
            }
        }
    }

    /// After a backslash in a basic string.
    fn escape(&mut self) -> Result<char, Error> {
        let c = self
            .peek()
            .ok_or_else(|| self.err(ErrorKind::Unterminated))?;
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
                    self.err(ErrorKind::BadHexEscape {
                        escape: c as char,
                        digits: n as u8,
                    })
                })?;
                self.pos += n;
                ch
            }
            _ => {
                let c = self.s[self.pos - 1..].chars().next().unwrap_or('?');
                return Err(self.err(ErrorKind::UnknownEscape(c)));
            }
        })
    }
}

/// A TOML integer: `[+-]` decimal without leading zeros, or `0x`/`0o`/`0b`
/// digits; `_` only between two digits.
fn integer(word: &str) -> Result<i64, ErrorKind> {
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
            return Err(ErrorKind::FloatOrDate(word.to_string()));
        }
        return Err(ErrorKind::NotAValue(word.to_string()));
    }
    if radix == 10 && bytes.len() > 1 && bytes[0] == b'0' {
        return Err(ErrorKind::LeadingZero(word.to_string()));
    }
    let clean: String = sign
        .chars()
        .chain(digits.chars().filter(|&c| c != '_'))
        .collect();
    i64::from_str_radix(&clean, radix).map_err(|_| ErrorKind::TooBig(word.to_string()))
}

#[cfg(test)]
mod tests;
