//! Exit codes: what the init script (or the integration test) learns from
//! the agent's exit status. Documented in `--help` and `board-configs/README.md`.

/// The agent's exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Nothing to do: no announce in the boot window, the image is not
    /// newer, or an earlier update still waits for its confirmation.
    Ok,
    /// Updated: the new image is on flash, read back and activated; it runs
    /// after a reboot (`reboot_command`, if set, has been run). `--dry-run`:
    /// an update would have been installed.
    Updated,
    /// Bad command line or configuration.
    Usage,
    /// An image was refused for security reasons (bad signature, manifest
    /// mismatch) and no good one followed before the boot window ended.
    Refused,
    /// Flash or read-back verification failure; progress so far stays on flash.
    Flash,
    /// Receiving, but no progress for `stall_timeout_secs`; the next run resumes.
    Stalled,
    /// The image is on flash but activation failed (env write, activation
    /// command), or `confirm`'s health check failed (rollback stays armed).
    Activation,
    /// Stopped by SIGTERM or SIGINT (flash is consistent after every block write).
    Signal,
}

impl ExitCode {
    /// The numeric process exit status.
    pub fn code(self) -> i32 {
        match self {
            ExitCode::Ok => 0,
            ExitCode::Updated => 10,
            ExitCode::Usage => 2,
            ExitCode::Refused => 3,
            ExitCode::Flash => 4,
            ExitCode::Stalled => 5,
            ExitCode::Activation => 6,
            ExitCode::Signal => 130,
        }
    }

    /// One word for hooks (`FIRMCAST_REASON`) and the state file.
    pub fn reason(self) -> &'static str {
        match self {
            ExitCode::Ok => "nothing-to-do",
            ExitCode::Updated => "updated",
            ExitCode::Usage => "config-error",
            ExitCode::Refused => "refused",
            ExitCode::Flash => "flash-error",
            ExitCode::Stalled => "stalled",
            ExitCode::Activation => "activation-failed",
            ExitCode::Signal => "stopped",
        }
    }

    /// This run failed (the `on_failure` hook runs): not nothing-to-do,
    /// updated or stopped by a signal.
    pub fn is_failure(self) -> bool {
        !matches!(self, ExitCode::Ok | ExitCode::Updated | ExitCode::Signal)
    }
}

/// The exit code table as printed by `--help`.
pub const EXIT_CODES_HELP: &str = "\
EXIT CODES:
    0    nothing to do (no announce within the boot window, image not newer, or an
         update still waits for `confirm`)
    10   updated: the new image is written, read back and activated; reboot to run it
         (reboot_command, if set, has been run; with --dry-run: would have updated)
    2    command line or configuration error
    3    an image was refused for security reasons (bad signature, manifest mismatch)
         and no acceptable image followed before the boot window ended
    4    flash write, bad-block or read-back verify failure (progress stays on flash)
    5    stalled: receiving but no progress for stall_timeout_secs (next run resumes)
    6    activation failed (U-Boot env write, activation command, or the pre_install hook
         refused; the old image still boots), or confirm: the health check failed (the
         bootloader's rollback stays armed)
    130  stopped by SIGTERM/SIGINT (flash is consistent after every block write)
    128+N killed by signal N (SIGTRAP or SIGILL): an internal error aborted the agent (the
         cross/build.sh device build prints no message); the state file keeps \"exit\": null
         and the dead pid, and the next run resumes from what is on flash";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_documented() {
        let all = [
            ExitCode::Ok,
            ExitCode::Updated,
            ExitCode::Usage,
            ExitCode::Refused,
            ExitCode::Flash,
            ExitCode::Stalled,
            ExitCode::Activation,
            ExitCode::Signal,
        ];
        let codes: Vec<i32> = all.iter().map(|c| c.code()).collect();
        assert_eq!(codes, [0, 10, 2, 3, 4, 5, 6, 130]);
        let failures: Vec<i32> = all
            .iter()
            .filter(|c| c.is_failure())
            .map(|c| c.code())
            .collect();
        assert_eq!(failures, [2, 3, 4, 5, 6]);
        for c in codes {
            assert!(
                EXIT_CODES_HELP.contains(&format!("    {c} ")),
                "{c} missing from help"
            );
        }
    }
}
