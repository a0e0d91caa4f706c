//! The Cargo features this agent was built with, and the config check that
//! turns a key needing a left-out feature into one clear error (exit 2)
//! instead of a silent default. `firmcast-agent --version` lists them.
//!
//! | feature | what it links | config that needs it |
//! |---|---|---|
//! | `ab-uboot` | the U-Boot environment, `confirm` | `activation = "ab-uboot"`, `[ab]`, `[confirm]` |
//! | `command` | the activation command | `activation = "command"`, `[command]` |
//! | `parity` | the erasure decoder (R-PAR-*) | none: without it parity repairs are ignored |
//! | `device-key` | Ed25519 signing of Status (R-STAT-4) | `device_key` |
//! | `test-hooks` | the `[test]` table, `simnor:`/`simnand:` targets | `[test]`, `sim*:` targets |

use std::path::Path;

use crate::config::{ConfigError, ConfigFault};

/// One optional part of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// `ab-uboot`.
    AbUboot,
    /// `command`.
    Command,
    /// `parity`.
    Parity,
    /// `device-key`.
    DeviceKey,
    /// `test-hooks`.
    TestHooks,
}

impl Feature {
    /// Every feature, in `--version` order.
    pub const ALL: [Feature; 5] = [
        Feature::AbUboot,
        Feature::Command,
        Feature::Parity,
        Feature::DeviceKey,
        Feature::TestHooks,
    ];

    /// The Cargo spelling.
    pub fn name(self) -> &'static str {
        match self {
            Feature::AbUboot => "ab-uboot",
            Feature::Command => "command",
            Feature::Parity => "parity",
            Feature::DeviceKey => "device-key",
            Feature::TestHooks => "test-hooks",
        }
    }

    /// Whether this build has it (a constant: code behind a `false` is not
    /// linked). The crate's own unit tests have every feature the agent can
    /// switch at run time, whatever the build (parity is proto's).
    pub const fn enabled(self) -> bool {
        match self {
            Feature::AbUboot => cfg!(any(test, feature = "ab-uboot")),
            Feature::Command => cfg!(any(test, feature = "command")),
            Feature::Parity => cfg!(feature = "parity"),
            Feature::DeviceKey => cfg!(any(test, feature = "device-key")),
            Feature::TestHooks => cfg!(any(test, feature = "test-hooks")),
        }
    }
}

/// The features of this build, space-separated (for `--version`).
pub fn list() -> String {
    let on: Vec<&str> = Feature::ALL
        .iter()
        .filter(|f| f.enabled())
        .map(|f| f.name())
        .collect();
    if on.is_empty() {
        "none".to_string()
    } else {
        on.join(" ")
    }
}

/// `Ok` if this build has `feature`; else an error naming the config key.
pub fn require(file: &Path, key: &str, feature: Feature) -> Result<(), ConfigError> {
    if feature.enabled() {
        Ok(())
    } else {
        Err(missing(file, key, feature))
    }
}

fn missing(file: &Path, key: &str, feature: Feature) -> ConfigError {
    ConfigFault {
        file: file.to_path_buf(),
        key: Some(key.to_string()),
        line: None,
        message: format!(
            "this firmcast-agent was built without the `{}` feature (built with: {}); rebuild with --features {}",
            feature.name(),
            list(),
            feature.name()
        ),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_feature_names_key_and_feature() {
        // Under `cfg(test)` the run-time switchable features are always on.
        assert!(require(Path::new("/a.toml"), "test", Feature::TestHooks).is_ok());
        assert!(require(Path::new("/a.toml"), "device_key", Feature::DeviceKey).is_ok());
        for f in Feature::ALL {
            let r = require(Path::new("/a.toml"), "k", f);
            assert_eq!(r.is_ok(), f.enabled(), "{}", f.name());
            let line = missing(Path::new("/a.toml"), "k", f).to_string();
            assert!(
                line.starts_with("config /a.toml: key `k`: this firmcast-agent was built without")
                    && line.contains(&format!("--features {}", f.name())),
                "{line}"
            );
        }
        println!("features of this test build: {}", list());
    }
}
