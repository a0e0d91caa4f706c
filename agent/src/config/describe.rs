//! The `--check-config` dump: the resolved settings, one `key = value` per
//! line, every key of the schema (a schema test holds it to [`super::schema`]).

use std::fmt;
use std::path::Path;

use super::schema::key;
use super::{Config, TestOptions};

/// One `key = value` line of [`Config::describe`]: one non-generic writer
/// for every line, no `String` per value.
fn kv(s: &mut String, key: &str, value: fmt::Arguments<'_>) {
    use std::fmt::Write;
    // Writing into a String cannot fail.
    let _ = writeln!(s, "{key:<22} = {value}");
}

/// `Some(path)` as ` (from PATH)`, `None` as nothing.
struct FromFile<'a>(Option<&'a Path>);

impl fmt::Display for FromFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(p) => write!(f, " (from {})", p.display()),
            None => Ok(()),
        }
    }
}

impl Config {
    /// The resolved settings, one `key = value` per line (for `--check-config`).
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let s = &mut out;
        kv(s, "config", format_args!("{}", self.path.display()));
        kv(s, key::board, format_args!("{:?}", self.board));
        kv(
            s,
            key::current_version,
            format_args!(
                "{:?}{}",
                self.current_version,
                FromFile(self.current_version_file.as_deref())
            ),
        );
        kv(s, key::group, format_args!("{}", self.group));
        kv(s, key::repair_group, format_args!("{}", self.repair_group));
        for (key, a) in [
            (key::source, self.source),
            (key::repair_source, self.repair_source),
        ] {
            match a {
                Some(a) => kv(s, key, format_args!("{a}")),
                None => kv(s, key, format_args!("(any)")),
            }
        }
        kv(s, key::interface, format_args!("{}", self.interface_spec));
        kv(
            s,
            key::repair_server,
            format_args!("{}", self.repair_server_spec),
        );
        let hex: String = self.public_key.iter().map(|b| format!("{b:02x}")).collect();
        kv(
            s,
            key::public_key,
            format_args!("{hex}{}", FromFile(self.public_key_file.as_deref())),
        );
        match &self.device_key {
            Some((p, _)) => kv(
                s,
                key::device_key,
                format_args!("{} (Status reports signed)", p.display()),
            ),
            None => kv(
                s,
                key::device_key,
                format_args!("none (Status reports unsigned)"),
            ),
        }
        kv(s, key::target, format_args!("{}", self.target));
        match self.target_size {
            Some(n) => kv(s, key::target_size, format_args!("{n}")),
            None => kv(s, key::target_size, format_args!("(not set)")),
        }
        kv(
            s,
            key::boot_window_secs,
            format_args!("{}", self.boot_window.as_secs()),
        );
        kv(
            s,
            key::window_blocks,
            format_args!("{}", self.window_blocks),
        );
        kv(
            s,
            key::max_buffer_bytes,
            format_args!("{}", self.max_buffer_bytes),
        );
        kv(
            s,
            key::max_block_size,
            format_args!("{}", self.max_block_size),
        );
        kv(
            s,
            key::device_id,
            format_args!("{:016x} ({})", self.device_id, self.device_id_source),
        );
        kv(
            s,
            key::activation,
            format_args!("{}", self.activation.as_str()),
        );
        kv(
            s,
            key::stall_timeout_secs,
            format_args!("{}", self.stall_timeout.as_secs()),
        );
        kv(
            s,
            key::run_deadline_secs,
            format_args!("{}", self.run_deadline.as_secs()),
        );
        kv(s, key::rcvbuf_bytes, format_args!("{}", self.rcvbuf_bytes));
        kv(
            s,
            key::nack_backoff_ms,
            format_args!("{}", crate::logger::millis(self.nack_backoff)),
        );
        kv(
            s,
            key::nack_backoff_shape,
            format_args!("{}", self.nack_backoff_shape),
        );
        kv(
            s,
            key::exit_when_current,
            format_args!("{}", self.exit_when_current),
        );
        if let Some(p) = &self.floor_file {
            kv(s, key::floor_file, format_args!("{}", p.display()));
        }
        kv(
            s,
            key::final_read_back,
            format_args!("{}", self.final_read_back.as_str()),
        );
        if let Some(ab) = &self.ab {
            kv(s, key::ab::slot_a, format_args!("{}", ab.slot_a));
            kv(s, key::ab::slot_b, format_args!("{}", ab.slot_b));
            kv(s, key::ab::slot_var, format_args!("{}", ab.slot_var));
            kv(
                s,
                key::ab::slot_a_value,
                format_args!("{:?}", ab.slot_a_value),
            );
            kv(
                s,
                key::ab::slot_b_value,
                format_args!("{:?}", ab.slot_b_value),
            );
            kv(
                s,
                key::ab::upgrade_available_var,
                format_args!("{}", ab.upgrade_available_var),
            );
            kv(
                s,
                key::ab::bootcount_var,
                format_args!("{}", ab.bootcount_var),
            );
            kv(
                s,
                key::ab::activated_var,
                format_args!("{}", ab.activated_var),
            );
            kv(
                s,
                key::ab::env_config,
                format_args!("{}", ab.env_config.display()),
            );
            kv(
                s,
                key::ab::env_endian,
                format_args!("{}", ab.env_endian.as_str()),
            );
            kv(
                s,
                key::ab::allow_single_copy_env,
                format_args!("{}", ab.allow_single_copy_env),
            );
        }
        if let Some(c) = &self.command {
            kv(s, key::command::run, format_args!("{:?}", c.argv));
            kv(
                s,
                key::command::timeout_secs,
                format_args!("{}", c.timeout.as_secs()),
            );
        }
        kv(
            s,
            key::confirm::at_startup,
            format_args!("{}", self.confirm.at_startup),
        );
        kv(
            s,
            key::confirm::health_check,
            format_args!("{:?}", self.confirm.health_check),
        );
        kv(
            s,
            key::confirm::timeout_secs,
            format_args!("{}", self.confirm.health_timeout.as_secs()),
        );
        kv(
            s,
            key::reboot_command,
            format_args!("{:?}", self.reboot_command),
        );
        kv(
            s,
            key::hooks::pre_install,
            format_args!("{:?}", self.hooks.pre_install),
        );
        kv(
            s,
            key::hooks::post_install,
            format_args!("{:?}", self.hooks.post_install),
        );
        kv(
            s,
            key::hooks::on_failure,
            format_args!("{:?}", self.hooks.on_failure),
        );
        kv(
            s,
            key::hooks::timeout_secs,
            format_args!("{}", self.hooks.timeout.as_secs()),
        );
        match &self.state_file {
            Some(p) => kv(s, key::state_file, format_args!("{}", p.display())),
            None => kv(s, key::state_file, format_args!("(none)")),
        }
        match crate::privdrop::plan_for(self) {
            crate::privdrop::Plan::Drop(_) => kv(
                s,
                key::user,
                format_args!(
                    "{:?} (root dropped once sockets and target are open)",
                    self.user
                ),
            ),
            crate::privdrop::Plan::KeepRoot(why) => kv(
                s,
                key::user,
                format_args!("{:?} (stays root: {why})", self.user),
            ),
        }
        if self.test != TestOptions::default() {
            kv(
                s,
                key::test::rx_loss_permille,
                format_args!("{}", self.test.rx_loss_permille),
            );
            kv(
                s,
                key::test::rx_loss_seed,
                format_args!("{}", self.test.rx_loss_seed),
            );
            kv(
                s,
                key::test::block_delay_ms,
                format_args!("{}", crate::logger::millis(self.test.block_delay)),
            );
        }
        out
    }
}
