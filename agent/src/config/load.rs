//! Config files in: read the file, parse its syntax ([`super::toml_subset`]),
//! read its keys ([`super::schema`]), check and resolve them
//! ([`super::build`]); an error on a key gets the line the file sets it on.

use std::path::Path;

use super::build::build;
use super::schema::read_raw;
use super::{toml_subset, Config, ConfigError, ConfigFault};
use crate::device_id::HostFacts;

/// Read and resolve the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    parse_with(path, &read_config(path)?, &HostFacts::read())
}

pub(super) fn read_config(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigFault {
            file: path.to_path_buf(),
            key: None,
            line: None,
            message: format!("cannot read: {e}"),
        }
        .into()
    })
}

/// [`parse_with`] on a host that offers only its `hostname` for the
/// default device id.
pub fn parse(path: &Path, text: &str, hostname: &str) -> Result<Config, ConfigError> {
    parse_with(path, text, &HostFacts::hostname_only(hostname))
}

/// Resolve `text` (the content of `path`); relative paths in it are relative
/// to the file's directory. `host` feeds the default device id.
pub fn parse_with(path: &Path, text: &str, host: &HostFacts) -> Result<Config, ConfigError> {
    let doc = toml_subset::parse(text).map_err(|e| {
        ConfigError::from(ConfigFault {
            file: path.to_path_buf(),
            key: e.key,
            line: Some(e.line),
            message: e.kind.to_string(),
        })
    })?;
    let raw = read_raw(path, &doc)?;
    build(path, raw, host).map_err(|mut e| {
        // The checks know the key at fault; the document knows its line.
        if e.line.is_none() {
            e.line = e.key.as_deref().and_then(|k| doc.line_of(k));
        }
        e
    })
}
