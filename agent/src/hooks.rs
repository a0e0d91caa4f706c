//! `[hooks]`: board commands run around an update. Each is an argv array
//! (no shell), killed after `timeout_secs`, run with the agent's own
//! privileges (as `user` once root is dropped, R-LOCAL-3) and this
//! environment:
//!
//! | variable | value |
//! |---|---|
//! | `FIRMCAST_HOOK` | `pre_install`, `post_install` or `on_failure` |
//! | `FIRMCAST_VERSION` | the offered image's version (empty if no manifest was accepted) |
//! | `FIRMCAST_CURRENT_VERSION` | the running version |
//! | `FIRMCAST_BOARD` | `board` |
//! | `FIRMCAST_TARGET` | `target` |
//! | `FIRMCAST_EXIT` | the agent's exit code (`post_install`, `on_failure`) |
//! | `FIRMCAST_REASON` | its word: `updated`, `stalled`, `flash-error`, ... |
//!
//! `pre_install` runs once a newer image's manifest is accepted, before
//! anything is written; if it fails (non-zero, killed, timed out) the image
//! is not installed this run and the agent exits 6. `post_install` runs
//! after a successful update (exit 10), before `reboot_command`;
//! `on_failure` after a failed run (exit 2 to 6). Their own failure is
//! logged and changes nothing.
//!
//! Like the state file, the hooks are process-wide ([`install`] once at
//! start), so the receive loop calls them in one line each.

use std::sync::OnceLock;
use std::time::Duration;

use crate::config::schema::key;
use crate::config::Config;
use crate::exit::ExitCode;
use crate::spawn::run_command;

/// Default `[hooks] timeout_secs`.
pub const DEFAULT_HOOK_TIMEOUT_SECS: u64 = 60;

/// The `[hooks]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HooksConfig {
    /// Before the first block is written; failing refuses the update.
    pub pre_install: Vec<String>,
    /// After a successful update, before `reboot_command`.
    pub post_install: Vec<String>,
    /// After a failed run.
    pub on_failure: Vec<String>,
    /// Each hook is killed after this long.
    pub timeout: Duration,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            pre_install: Vec::new(),
            post_install: Vec::new(),
            on_failure: Vec::new(),
            timeout: Duration::from_secs(DEFAULT_HOOK_TIMEOUT_SECS),
        }
    }
}

struct Installed {
    hooks: HooksConfig,
    current_version: String,
    board: String,
    target: String,
    dry_run: bool,
}

static HOOKS: OnceLock<Installed> = OnceLock::new();

/// Make `cfg`'s hooks the process's.
pub fn install(cfg: &Config, dry_run: bool) {
    let _ = HOOKS.set(Installed {
        hooks: cfg.hooks.clone(),
        current_version: cfg.current_version.clone(),
        board: cfg.board.clone(),
        target: cfg.target.clone(),
        dry_run,
    });
}

/// Run hook `name` (`argv` empty: none) with `exit` in its environment if
/// given; true if it succeeded or there was none.
fn run(name: &str, argv: &[String], version: &str, exit: Option<ExitCode>) -> bool {
    let Some(h) = HOOKS.get() else {
        return true;
    };
    if argv.is_empty() {
        return true;
    }
    if h.dry_run {
        log::info!("dry run: would run the {name} hook {argv:?}");
        return true;
    }
    let mut env = vec![
        ("FIRMCAST_HOOK", name.to_string()),
        ("FIRMCAST_VERSION", version.to_string()),
        ("FIRMCAST_CURRENT_VERSION", h.current_version.clone()),
        ("FIRMCAST_BOARD", h.board.clone()),
        ("FIRMCAST_TARGET", h.target.clone()),
    ];
    if let Some(code) = exit {
        env.push(("FIRMCAST_EXIT", code.code().to_string()));
        env.push(("FIRMCAST_REASON", code.reason().to_string()));
    }
    log::info!("running the {name} hook {argv:?}");
    let r = run_command(argv, &env, h.hooks.timeout);
    if !r.success() {
        log::error!("{name} hook {argv:?}: {r}");
    }
    r.success()
}

/// Before writing `version`: `Err` (exit 6) if `pre_install` refused it.
pub fn pre_install(version: &str) -> Result<(), ExitCode> {
    let argv = HOOKS.get().map_or(&[][..], |h| &h.hooks.pre_install[..]);
    if run(key::hooks::name::pre_install, argv, version, None) {
        Ok(())
    } else {
        log::error!(
            "the {} hook refused version {version}; not installing it this run",
            key::hooks::name::pre_install
        );
        Err(ExitCode::Activation)
    }
}

/// The run is over with `code`: the state file's last word, then
/// `post_install` after an update or `on_failure` after a failure. Returns
/// `code`.
pub fn finish(code: ExitCode) -> ExitCode {
    crate::state_file::finish(code);
    let Some(h) = HOOKS.get() else {
        return code;
    };
    let version = crate::state_file::offered_version().unwrap_or_default();
    if code == ExitCode::Updated {
        run(
            key::hooks::name::post_install,
            &h.hooks.post_install,
            &version,
            Some(code),
        );
    } else if code.is_failure() {
        run(
            key::hooks::name::on_failure,
            &h.hooks.on_failure,
            &version,
            Some(code),
        );
    }
    code
}
