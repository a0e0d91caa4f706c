//! The agent's config schema: every key of the board file, its table and
//! its type, in one place (the `schema!` macro call below). From it come the
//! `Raw*` structs and the reader that fills them (unknown keys and tables
//! are errors), [`KEYS`] for the writer ([`super::writer`]), and the tests
//! that hold the `--check-config` dump and board-configs/README.md to it.
//!
//! A table of keys rather than a serde `Deserializer` over the TOML subset:
//! the agent links serde only through postcard's wire structs, and a
//! derive per table plus a `Deserializer`/`MapAccess`/`SeqAccess` set is
//! more code in the device binary than a reader per key (measure with
//! `cross/build.sh`).

use std::path::Path;

use super::toml_subset::{Document, Entry, Value};
use super::{ConfigError, ConfigFault};

/// How a key's value is written in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    Str,
    /// A non-negative integer.
    Int,
    /// `true` or `false`.
    Bool,
    /// An array of strings (an argv).
    Strs,
    /// A non-negative integer or a hex string (`device_id`).
    IntOrHex,
}

/// One key of the board file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    /// `""` at the top level, else the table's name (`"ab"`).
    pub table: &'static str,
    /// The key within its table.
    pub name: &'static str,
    /// Its value's form.
    pub kind: Kind,
}

impl Key {
    /// `key` or `table.key`, as errors and `--check-config` name it.
    pub fn path(&self) -> String {
        if self.table.is_empty() {
            self.name.to_string()
        } else {
            format!("{}.{}", self.table, self.name)
        }
    }
}

/// The key named `path` (`"board"`, `"ab.slot_a"`), if the schema has it.
pub fn lookup(path: &str) -> Option<&'static Key> {
    let (table, name) = path.split_once('.').unwrap_or(("", path));
    key_index(table, name).and_then(|i| KEYS.get(i))
}

/// One `key = value` of the file on its way into a `Raw*` field; its errors
/// name the file, the line and the key (`table.key` inside a table).
struct Field<'a> {
    file: &'a Path,
    /// `""` at the top level.
    table: &'a str,
    entry: &'a Entry,
}

impl Field<'_> {
    #[cold]
    #[inline(never)]
    fn err(&self, message: impl Into<String>) -> ConfigError {
        let key = if self.table.is_empty() {
            self.entry.key.clone()
        } else {
            format!("{}.{}", self.table, self.entry.key)
        };
        ConfigFault {
            file: self.file.to_path_buf(),
            key: Some(key),
            line: Some(self.entry.line),
            message: message.into(),
        }
        .into()
    }

    fn expected(&self, what: &str) -> ConfigError {
        self.err(format!(
            "expected {what}, found {}",
            self.entry.value.kind()
        ))
    }

    /// Unknown keys are errors: a typo must not fall back to a default.
    fn unknown(&self) -> ConfigError {
        let within = if self.table.is_empty() {
            String::new()
        } else {
            format!(" in [{}]", self.table)
        };
        let mut e = self.err(format!(
            "unknown key{within} (see board-configs/README.md for the schema)"
        ));
        e.key = Some(self.entry.key.clone());
        e
    }

    // The readers below store into the `Raw*` field themselves, out of
    // line: the reader's match arm per key is then a call and a test, where
    // an assignment of the returned `Option` inlined a drop and a move per key.

    #[inline(never)]
    fn string(&self, slot: &mut Option<String>) -> Result<(), ConfigError> {
        match &self.entry.value {
            Value::String(s) => {
                *slot = Some(s.clone());
                Ok(())
            }
            _ => Err(self.expected("a string")),
        }
    }

    fn uint(&self, max: u64) -> Result<u64, ConfigError> {
        match self.entry.value {
            Value::Integer(n) => match u64::try_from(n) {
                Ok(n) if n <= max => Ok(n),
                _ => Err(self.err(format!("{n} is out of range (0 to {max})"))),
            },
            _ => Err(self.expected("an integer")),
        }
    }

    #[inline(never)]
    fn u64(&self, slot: &mut Option<u64>) -> Result<(), ConfigError> {
        *slot = Some(self.uint(u64::MAX)?);
        Ok(())
    }

    #[inline(never)]
    fn u32(&self, slot: &mut Option<u32>) -> Result<(), ConfigError> {
        let n = self.uint(u32::MAX.into())?;
        *slot = u32::try_from(n).ok();
        Ok(())
    }

    #[inline(never)]
    fn bool(&self, slot: &mut Option<bool>) -> Result<(), ConfigError> {
        match self.entry.value {
            Value::Boolean(b) => {
                *slot = Some(b);
                Ok(())
            }
            _ => Err(self.expected("true or false")),
        }
    }

    #[inline(never)]
    fn strings(&self, slot: &mut Option<Vec<String>>) -> Result<(), ConfigError> {
        let Value::Array(items) = &self.entry.value else {
            return Err(self.expected("an array of strings"));
        };
        let mut out = Vec::with_capacity(items.len());
        for v in items {
            match v {
                Value::String(s) => out.push(s.clone()),
                v => {
                    return Err(self.err(format!(
                        "expected an array of strings, found {} in it",
                        v.kind()
                    )))
                }
            }
        }
        *slot = Some(out);
        Ok(())
    }

    /// `device_id`: an integer, or a hex string (`"0x1a2b"` or `"1a2b"`).
    #[inline(never)]
    fn device_id(&self, slot: &mut Option<u64>) -> Result<(), ConfigError> {
        let id = match &self.entry.value {
            Value::Integer(n) => u64::try_from(*n).map_err(|_| self.err("must not be negative")),
            Value::String(s) => parse_hex_u64(s).map_err(|why| self.err(why)),
            _ => Err(self.expected("a non-negative integer or a hex string")),
        }?;
        *slot = Some(id);
        Ok(())
    }
}

/// `device_id` as a string: 1 to 16 hex digits, optionally `0x`-prefixed.
fn parse_hex_u64(s: &str) -> Result<u64, &'static str> {
    let t = s.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    if t.is_empty() || t.len() > 16 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("must be an integer or 1 to 16 hex digits (optionally 0x-prefixed)");
    }
    u64::from_str_radix(t, 16).map_err(|_| "not a hex number")
}

/// Reads one key's value into its field of the `Raw` struct.
type Reader<R> = fn(&Field, &mut R) -> Result<(), ConfigError>;

/// The position of `table.name` in [`KEYS`].
fn key_index(table: &str, name: &str) -> Option<usize> {
    KEYS.iter().position(|k| k.table == table && k.name == name)
}

/// [`read_raw`]'s loop, over the schema's tables of readers: one key lookup
/// and an indirect call per entry, where a `match` per key name compiled to
/// a string comparison and a call per key of the schema.
fn read_with<R: Default>(
    file: &Path,
    doc: &Document,
    readers: &[Reader<R>],
    begin_table: &[fn(&mut R)],
) -> Result<R, ConfigError> {
    let mut raw = R::default();
    for entry in &doc.root {
        let f = Field {
            file,
            table: "",
            entry,
        };
        match key_index("", &entry.key).and_then(|i| readers.get(i)) {
            Some(read) => read(&f, &mut raw)?,
            None if TABLES.contains(&entry.key.as_str()) => {
                return Err(f.expected(&format!("a [{}] table", entry.key)))
            }
            None => return Err(f.unknown()),
        }
    }
    for table in &doc.tables {
        let begin = TABLES
            .iter()
            .position(|t| *t == table.name)
            .and_then(|i| begin_table.get(i));
        let Some(begin) = begin else {
            return Err(unknown_table(file, &table.name, table.line));
        };
        begin(&mut raw);
        for entry in &table.entries {
            let f = Field {
                file,
                table: &table.name,
                entry,
            };
            match key_index(&table.name, &entry.key).and_then(|i| readers.get(i)) {
                Some(read) => read(&f, &mut raw)?,
                None => return Err(f.unknown()),
            }
        }
    }
    Ok(raw)
}

// The Rust type each reader of `Field` yields, and the file form it reads.
macro_rules! kind_type {
    (string) => { String };
    (u64) => { u64 };
    (u32) => { u32 };
    (bool) => { bool };
    (strings) => { Vec<String> };
    (device_id) => { u64 };
}
macro_rules! kind_of {
    (string) => {
        Kind::Str
    };
    (u64) => {
        Kind::Int
    };
    (u32) => {
        Kind::Int
    };
    (bool) => {
        Kind::Bool
    };
    (strings) => {
        Kind::Strs
    };
    (device_id) => {
        Kind::IntOrHex
    };
}

/// The schema: the top-level keys, then one block per `[table]` (their
/// names in the order the unknown-table error lists them).
macro_rules! schema {
    (
        $raw:ident { $( $key:ident : $kind:ident ),* $(,)? }
        $( [$table:ident] $ty:ident { $( $tkey:ident : $tkind:ident ),* $(,)? } )*
    ) => {
        $(
            /// The `[` $table `]` table as written (absent keys `None`).
            #[derive(Debug, Default)]
            pub(super) struct $ty {
                $( pub(super) $tkey: Option<kind_type!($tkind)>, )*
            }
        )*

        /// The file as written: every key known, every value of its type.
        #[derive(Debug, Default)]
        pub(super) struct $raw {
            $( pub(super) $key: Option<kind_type!($kind)>, )*
            $( pub(super) $table: Option<$ty>, )*
        }

        /// Every key's name, as errors, `--check-config` and the rest of the
        /// agent spell it: `key::board`, `key::ab::slot_a` (`table.key`), and
        /// a table's own name `key::ab`.
        #[allow(non_upper_case_globals)]
        pub mod key {
            $(
                #[doc = concat!("`", stringify!($key), "`")]
                pub const $key: &str = stringify!($key);
            )*
            $(
                #[doc = concat!("`[", stringify!($table), "]`")]
                pub const $table: &str = stringify!($table);
                #[doc = concat!("The keys of `[", stringify!($table), "]`.")]
                pub mod $table {
                    $(
                        #[doc = concat!("`", stringify!($table), ".", stringify!($tkey), "`")]
                        pub const $tkey: &str = concat!(stringify!($table), ".", stringify!($tkey));
                    )*
                    /// The same keys by their name inside the table (a
                    /// hook's name is its key's: `pre_install`).
                    pub mod name {
                        $(
                            #[doc = concat!("`", stringify!($tkey), "`")]
                            pub const $tkey: &str = stringify!($tkey);
                        )*
                    }
                }
            )*
        }

        /// Every key of the board file.
        pub const KEYS: &[Key] = &[
            $( Key { table: "", name: stringify!($key), kind: kind_of!($kind) }, )*
            $( $( Key { table: stringify!($table), name: stringify!($tkey), kind: kind_of!($tkind) }, )* )*
        ];

        /// The tables of the board file.
        pub const TABLES: &[&str] = &[ $( stringify!($table) ),* ];

        /// How each key of [`KEYS`] (same order) is read into [`Raw`]; a
        /// table's key only once its table has been begun ([`BEGIN_TABLE`]).
        const READERS: &[Reader<$raw>] = &[
            $( |f, raw| f.$kind(&mut raw.$key), )*
            $( $( |f, raw| match raw.$table.as_mut() {
                Some(t) => f.$tkind(&mut t.$tkey),
                None => Ok(()),
            }, )* )*
        ];

        /// A `[table]` header of [`TABLES`] (same order) begins that table.
        const BEGIN_TABLE: &[fn(&mut $raw)] = &[
            $( |raw| raw.$table = Some($ty::default()), )*
        ];

        /// The parsed file into [`Raw`].
        pub(super) fn read_raw(file: &Path, doc: &Document) -> Result<$raw, ConfigError> {
            read_with(file, doc, READERS, BEGIN_TABLE)
        }
    };
}

schema! {
    Raw {
        board: string,
        current_version: string,
        current_version_file: string,
        group: string,
        repair_group: string,
        source: string,
        repair_source: string,
        interface: string,
        repair_server: string,
        public_key: string,
        device_key: string,
        target: string,
        target_size: u64,
        boot_window_secs: u64,
        window_blocks: u32,
        max_buffer_bytes: u64,
        max_block_size: u32,
        device_id: device_id,
        device_id_file: string,
        activation: string,
        stall_timeout_secs: u64,
        run_deadline_secs: u64,
        rcvbuf_bytes: u64,
        nack_backoff_ms: u64,
        nack_backoff_shape: u32,
        exit_when_current: bool,
        floor_file: string,
        final_read_back: string,
        reboot_command: strings,
        user: string,
        state_file: string,
    }
    [ab] RawAb {
        slot_a: string,
        slot_b: string,
        slot_var: string,
        slot_a_value: string,
        slot_b_value: string,
        upgrade_available_var: string,
        bootcount_var: string,
        activated_var: string,
        env_config: string,
        env_endian: string,
        allow_single_copy_env: bool,
    }
    [command] RawCommand {
        run: strings,
        timeout_secs: u64,
    }
    [confirm] RawConfirm {
        at_startup: bool,
        health_check: strings,
        timeout_secs: u64,
    }
    [hooks] RawHooks {
        pre_install: strings,
        post_install: strings,
        on_failure: strings,
        timeout_secs: u64,
    }
    [test] RawTest {
        rx_loss_permille: u32,
        rx_loss_seed: u64,
        block_delay_ms: u64,
    }
}

/// `[name]` is not one of [`TABLES`].
fn unknown_table(file: &Path, name: &str, line: usize) -> ConfigError {
    let list: Vec<String> = TABLES.iter().map(|t| format!("[{t}]")).collect();
    let list = match list.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => list.join(""),
    };
    ConfigFault {
        file: file.to_path_buf(),
        key: Some(name.to_string()),
        line: Some(line),
        message: format!("unknown table (the tables are {list}; see board-configs/README.md)"),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Keys `--check-config` shows inside another key's line: the file a
    /// value came from is printed as `(from PATH)` after the value.
    const FOLDED: &[&str] = &["current_version_file", "device_id_file"];

    /// The keys `describe()` prints for a config that sets every key of its
    /// activation (ab-uboot, command), all tables included.
    fn dumped_keys() -> BTreeSet<String> {
        let key = "3b".repeat(32);
        let common = format!(
            "board = \"acme,rt1\"\ncurrent_version = \"2.0.0\"\ngroup = \"239.255.77.1:7854\"\n\
             repair_group = \"239.255.77.2:7855\"\ninterface = \"127.0.0.1\"\n\
             repair_server = \"127.0.0.1:7855\"\npublic_key = \"{key}\"\ntarget_size = 1048576\n\
             boot_window_secs = 10\nwindow_blocks = 4\nmax_buffer_bytes = 1048576\n\
             max_block_size = 65536\ndevice_id = 7\nstall_timeout_secs = 20\nrun_deadline_secs = 900\n\
             rcvbuf_bytes = 1048576\nnack_backoff_ms = 40\nnack_backoff_shape = 8\n\
             exit_when_current = false\nfloor_file = \"/data/floor\"\nfinal_read_back = \"all\"\n\
             reboot_command = [\"/sbin/reboot\"]\nuser = \"root\"\nstate_file = \"/tmp/s.json\"\n"
        );
        let tables = "\n[hooks]\npre_install = [\"/bin/true\"]\npost_install = [\"/bin/true\"]\n\
                      on_failure = [\"/bin/true\"]\ntimeout_secs = 9\n\
                      \n[test]\nrx_loss_permille = 5\nrx_loss_seed = 3\nblock_delay_ms = 1\n";
        let ab = format!(
            "{common}activation = \"ab-uboot\"\n{tables}\n[ab]\nslot_a = \"mtd:a\"\nslot_b = \"mtd:b\"\n\
             slot_var = \"bootpart\"\nslot_a_value = \"A\"\nslot_b_value = \"B\"\n\
             upgrade_available_var = \"ua\"\nbootcount_var = \"bc\"\nactivated_var = \"act\"\n\
             env_config = \"/etc/fw_env.config\"\nenv_endian = \"big\"\nallow_single_copy_env = true\n\
             \n[confirm]\nat_startup = true\nhealth_check = [\"/bin/true\"]\ntimeout_secs = 5\n"
        );
        let command = format!(
            "{common}target = \"file:/tmp/fw\"\nactivation = \"command\"\n{tables}\n\
             [command]\nrun = [\"/sbin/sysupgrade\", \"{{image}}\"]\ntimeout_secs = 60\n"
        );
        let mut keys = BTreeSet::new();
        for text in [ab, command] {
            let c = super::super::parse(Path::new("/etc/firmcast/agent.toml"), &text, "host")
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
            for line in c.describe().lines() {
                let (k, _) = line.split_once(" = ").unwrap_or_else(|| panic!("{line}"));
                keys.insert(k.trim().to_string());
            }
        }
        keys
    }

    /// `--check-config` prints every key of the schema (or shows it within
    /// the line of the key it feeds) and nothing that is not a key.
    #[test]
    fn check_config_dump_is_the_schema() {
        let dumped = dumped_keys();
        let schema: BTreeSet<String> = KEYS.iter().map(Key::path).collect();
        let extra: Vec<_> = dumped
            .iter()
            .filter(|k| *k != "config" && !schema.contains(*k))
            .collect();
        assert!(extra.is_empty(), "dumped but not in the schema: {extra:?}");
        let missing: Vec<_> = schema
            .iter()
            .filter(|k| !dumped.contains(*k) && !FOLDED.contains(&k.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "in the schema but not dumped: {missing:?}"
        );
        println!(
            "--check-config shows {} of {} keys (+{} folded)",
            dumped.len() - 1,
            KEYS.len(),
            FOLDED.len()
        );
    }

    /// The keys of board-configs/README.md's key tables (a `| key |` table;
    /// the table a key belongs to from the `### \`[name]\`` heading above).
    fn documented_keys() -> Vec<String> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../board-configs/README.md");
        let text = std::fs::read_to_string(&path).expect("board-configs/README.md");
        let mut out = Vec::new();
        let (mut table, mut in_keys) = (String::new(), false);
        for line in text.lines() {
            if let Some(h) = line.strip_prefix("## ") {
                in_keys = h.trim() == "Keys";
                table.clear();
            } else if let Some(h) = line.strip_prefix("### ") {
                table = h
                    .strip_prefix("`[")
                    .and_then(|h| h.split_once("]`"))
                    .map(|(t, _)| t.to_string())
                    .unwrap_or_default();
            } else if in_keys {
                if let Some(k) = line.strip_prefix("| `").and_then(|l| l.split_once("` |")) {
                    let k = k.0;
                    out.push(if table.is_empty() {
                        k.to_string()
                    } else {
                        format!("{table}.{k}")
                    });
                }
            }
        }
        out
    }

    /// Every key of the schema is documented in board-configs/README.md,
    /// once, and the README documents no key the agent does not read.
    #[test]
    fn readme_documents_the_schema() {
        let documented = documented_keys();
        let mut seen = BTreeSet::new();
        let twice: Vec<_> = documented
            .iter()
            .filter(|k| !seen.insert(k.as_str()))
            .collect();
        assert!(twice.is_empty(), "documented twice: {twice:?}");
        let schema: BTreeSet<String> = KEYS.iter().map(Key::path).collect();
        let undocumented: Vec<_> = schema
            .iter()
            .filter(|k| !seen.contains(k.as_str()))
            .collect();
        assert!(
            undocumented.is_empty(),
            "not in board-configs/README.md: {undocumented:?}"
        );
        let unknown: Vec<_> = seen.iter().filter(|k| !schema.contains(**k)).collect();
        assert!(
            unknown.is_empty(),
            "documented but not in the schema: {unknown:?}"
        );
        println!(
            "board-configs/README.md documents all {} keys of the schema",
            KEYS.len()
        );
    }

    /// A key typed in `read_raw` and in [`KEYS`] alike (one macro makes both).
    #[test]
    fn keys_have_their_tables() {
        assert_eq!(lookup("ab.slot_a").map(|k| k.kind), Some(Kind::Str));
        assert_eq!(lookup("device_id").map(|k| k.kind), Some(Kind::IntOrHex));
        assert_eq!(
            lookup("test.block_delay_ms").map(|k| k.kind),
            Some(Kind::Int)
        );
        assert!(lookup("slot_a").is_none() && lookup("ab.board").is_none());
        assert_eq!(
            (key::board, key::ab, key::ab::slot_a),
            ("board", "ab", "ab.slot_a")
        );
        assert_eq!(key::test::block_delay_ms, "test.block_delay_ms");
        assert_eq!(TABLES, ["ab", "command", "confirm", "hooks", "test"]);
    }
}
