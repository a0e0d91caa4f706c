//! One error type for the binary: a message that names the file, address or
//! field at fault, and the exit code it maps to.

use std::fmt;

/// Exit code: the stop condition was met.
pub const EXIT_OK: u8 = 0;
/// Exit code: a runtime failure, or the goal (`--until-done`) was not reached.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: a usage or configuration error (bad flag, bad key, bad manifest).
pub const EXIT_USAGE: u8 = 2;

/// An error the binary reports as one `error: …` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Bad arguments or input files: exit code 2.
    Config(String),
    /// Failure while running (network, verification): exit code 1.
    Runtime(String),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => EXIT_USAGE,
            Error::Runtime(_) => EXIT_FAILURE,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(m) | Error::Runtime(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

/// Shorthand for a configuration error.
pub fn config(msg: impl Into<String>) -> Error {
    Error::Config(msg.into())
}

/// Shorthand for a runtime error.
pub fn runtime(msg: impl Into<String>) -> Error {
    Error::Runtime(msg.into())
}
