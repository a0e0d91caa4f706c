//! `--check-config --lint`: the config checked on the build host, where
//! the device's own files (version, keys, id file) do not exist: they are
//! not read, a placeholder stands in for each ([`HostFacts::lint`]).

use std::path::Path;

use super::load::{parse_with, read_config};
use super::{Config, ConfigError};
use crate::device_id::HostFacts;

/// `--check-config --lint`: read and check the config at `path` on the
/// build host: the device's own files are not read (see [`HostFacts::lint`]).
pub fn load_lint(path: &Path) -> Result<Config, ConfigError> {
    let text = read_config(path)?;
    let host = HostFacts {
        lint: true,
        ..HostFacts::hostname_only("lint")
    };
    parse_with(path, &text, &host)
}

/// What `--lint` reads in place of a key file: a well-formed key.
pub(super) const LINT_KEY: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// A file of the device (version, key, id file); under `--lint` (the build
/// host) not read: `placeholder` stands in for its content.
pub(super) fn device_file(
    host: &HostFacts,
    p: &Path,
    placeholder: &str,
) -> std::io::Result<String> {
    if host.lint {
        return Ok(placeholder.to_string());
    }
    std::fs::read_to_string(p)
}
