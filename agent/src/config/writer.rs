//! The one writer of agent config files, for everything that is not a
//! device: `firmcast demo`, `firmcast agent-config` (bench/fleet), the
//! integration tests. Every key is checked against [`super::schema`], so a
//! renamed or misspelt key fails where the file is written, not in the agent.

use std::fmt;

use super::schema::{self, Kind};
use crate::quote::quoted;

/// A value for [`AgentToml::set`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TomlValue {
    /// A string.
    Str(String),
    /// A non-negative integer.
    Int(u64),
    /// `true` or `false`.
    Bool(bool),
    /// An array of strings.
    Strs(Vec<String>),
}

impl From<&str> for TomlValue {
    fn from(s: &str) -> Self {
        TomlValue::Str(s.to_string())
    }
}
impl From<String> for TomlValue {
    fn from(s: String) -> Self {
        TomlValue::Str(s)
    }
}
impl From<u64> for TomlValue {
    fn from(n: u64) -> Self {
        TomlValue::Int(n)
    }
}
impl From<u32> for TomlValue {
    fn from(n: u32) -> Self {
        TomlValue::Int(n.into())
    }
}
impl From<bool> for TomlValue {
    fn from(b: bool) -> Self {
        TomlValue::Bool(b)
    }
}
impl From<Vec<String>> for TomlValue {
    fn from(v: Vec<String>) -> Self {
        TomlValue::Strs(v)
    }
}

/// A key the schema does not have, or a value of the wrong form for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteError {
    /// `key` or `table.key`, as given.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "agent config key {}: {}", self.key, self.message)
    }
}

impl std::error::Error for WriteError {}

/// An agent config being written: keys in the order set (a key set twice
/// keeps its first place and its last value), tables after the top level.
#[derive(Clone, Debug, Default)]
pub struct AgentToml {
    entries: Vec<(&'static schema::Key, TomlValue)>,
}

impl AgentToml {
    /// An empty config.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set `key` (`"board"`, `"test.rx_loss_permille"`) to `value`.
    pub fn set(&mut self, key: &str, value: impl Into<TomlValue>) -> Result<&mut Self, WriteError> {
        let value = value.into();
        let err = |message: &str| WriteError {
            key: key.to_string(),
            message: message.to_string(),
        };
        let k = schema::lookup(key)
            .ok_or_else(|| err("unknown key (see board-configs/README.md for the schema)"))?;
        let fits = matches!(
            (k.kind, &value),
            (Kind::Str | Kind::IntOrHex, TomlValue::Str(_))
                | (Kind::Int | Kind::IntOrHex, TomlValue::Int(_))
                | (Kind::Bool, TomlValue::Bool(_))
                | (Kind::Strs, TomlValue::Strs(_))
        );
        if !fits {
            return Err(err(kind_name(k.kind)));
        }
        match self.entries.iter_mut().find(|(e, _)| *e == k) {
            Some((_, v)) => *v = value,
            None => self.entries.push((k, value)),
        }
        Ok(self)
    }

    /// Set `key` from command-line text `value`, read per the key's form:
    /// integers in decimal, `true`/`false`, arrays split at commas.
    pub fn set_text(&mut self, key: &str, value: &str) -> Result<&mut Self, WriteError> {
        let kind = schema::lookup(key).map_or(Kind::Str, |k| k.kind);
        let bad = || WriteError {
            key: key.to_string(),
            message: format!("{value:?}: {}", kind_name(kind)),
        };
        let v = match kind {
            Kind::Str => TomlValue::Str(value.to_string()),
            Kind::Int => TomlValue::Int(value.parse().map_err(|_| bad())?),
            Kind::IntOrHex => value
                .parse()
                .map_or_else(|_| TomlValue::Str(value.to_string()), TomlValue::Int),
            Kind::Bool => TomlValue::Bool(value.parse().map_err(|_| bad())?),
            Kind::Strs if value.is_empty() => TomlValue::Strs(Vec::new()),
            Kind::Strs => TomlValue::Strs(value.split(',').map(str::to_string).collect()),
        };
        self.set(key, v)
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Str => "expected a string",
        Kind::Int => "expected a non-negative integer",
        Kind::Bool => "expected true or false",
        Kind::Strs => "expected an array of strings",
        Kind::IntOrHex => "expected a non-negative integer or a hex string",
    }
}

impl fmt::Display for TomlValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TomlValue::Str(s) => f.write_str(&quoted(s)),
            TomlValue::Int(n) => write!(f, "{n}"),
            TomlValue::Bool(b) => write!(f, "{b}"),
            TomlValue::Strs(v) => {
                let items: Vec<String> = v.iter().map(|s| quoted(s)).collect();
                write!(f, "[{}]", items.join(", "))
            }
        }
    }
}

/// The file's text: the top-level keys, then each table that has a key, in
/// schema order.
impl fmt::Display for AgentToml {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, v) in self.entries.iter().filter(|(k, _)| k.table.is_empty()) {
            writeln!(f, "{} = {v}", k.name)?;
        }
        for table in schema::TABLES {
            let mut in_table = self
                .entries
                .iter()
                .filter(|(k, _)| k.table == *table)
                .peekable();
            if in_table.peek().is_some() {
                writeln!(f, "\n[{table}]")?;
            }
            for (k, v) in in_table {
                writeln!(f, "{} = {v}", k.name)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use std::path::Path;

    /// What the writer writes, the agent reads back as written.
    #[test]
    fn written_config_parses_to_the_values_set() {
        let mut t = AgentToml::new();
        t.set("board", "acme,rt1").expect("valid");
        t.set("current_version", "1.0.0").expect("valid");
        t.set("repair_server", "127.0.0.1:7855").expect("valid");
        t.set("public_key", "ab".repeat(32)).expect("valid");
        t.set("target", "file:/tmp/x \"quoted\"\\").expect("valid");
        t.set_text("device_id", "0x2a").expect("valid");
        t.set("test.rx_loss_permille", 20u32).expect("valid");
        t.set_text("reboot_command", "/sbin/reboot,-f")
            .expect("valid");
        t.set_text("window_blocks", "8").expect("valid");
        let text = t.to_string();
        let c = parse(Path::new("/x/agent.toml"), &text, "host")
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(c.target, "file:/tmp/x \"quoted\"\\");
        assert_eq!(c.device_id, 0x2a);
        assert_eq!(c.window_blocks, 8);
        assert_eq!(c.test.rx_loss_permille, 20);
        assert_eq!(c.reboot_command, ["/sbin/reboot", "-f"]);
        assert!(
            text.ends_with("\n[test]\nrx_loss_permille = 20\n"),
            "{text}"
        );
    }

    #[test]
    fn unknown_keys_and_wrong_forms_are_refused() {
        let mut t = AgentToml::new();
        let e = t.set("bord", "x").expect_err("refused");
        assert!(e.to_string().contains("bord: unknown key"), "{e}");
        assert!(t.set("test.nope", 1u32).is_err());
        let e = t.set_text("window_blocks", "eight").expect_err("refused");
        assert!(e.to_string().contains("non-negative integer"), "{e}");
        assert!(t.set("exit_when_current", "yes").is_err());
        assert_eq!(t.to_string(), "");
    }
}
