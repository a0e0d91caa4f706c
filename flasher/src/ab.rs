//! The A/B slot policy over the U-Boot environment: which slot runs, which
//! one an update may overwrite, and what activation and confirmation write.
//! Pure decisions over a [`UbootEnv`]; the caller saves (and spawns nothing).
//!
//! ```text
//!  running slot   slot_var (missing = A, a factory board; unknown = error)
//!  update target  the other slot, unless upgrade_available=1: the running
//!                 slot is then unconfirmed and the other one its fallback
//!  activation     ONE save: slot_var=<new> upgrade_available=1 bootcount=0
//!                           activated_var=<new> (+ the caller's extras)
//!  boot state     activated_var set and != slot_var → rolled back (U-Boot's
//!                 altbootcmd went back); upgrade_available=1 → pending
//!  disarm         ONE save: upgrade_available=0 bootcount=0, activated_var removed
//! ```
//!
//! Every write is one [`UbootEnv::save`] of a redundant environment, which
//! goes to the inactive copy: a power cut leaves the old variables or the
//! new ones, never a mix. So after a cut in an activation the board boots
//! the old slot, or the new one with U-Boot's bootcount armed to fall back
//! (`bootlimit`, `altbootcmd`); the tests cut the power at every flash
//! operation of each save and boot a model of U-Boot on what is left.

use std::fmt;

use crate::uboot_env::{EnvError, UbootEnv};
use crate::Flash;

/// One of the two A/B slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// Slot A.
    A,
    /// Slot B.
    B,
}

impl Slot {
    /// The other slot.
    #[must_use]
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// `A` or `B`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }

    /// This slot's entry of a per-slot pair `[a, b]`.
    #[must_use]
    pub fn pick<T>(self, pair: [T; 2]) -> T {
        let [a, b] = pair;
        match self {
            Slot::A => a,
            Slot::B => b,
        }
    }
}

/// The U-Boot variables a board's A/B scripts use, and the slot variable's
/// value for each slot (borrowed from the caller's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy<'a> {
    /// Names the slot U-Boot boots.
    pub slot_var: &'a str,
    /// `slot_var`'s value for slot A and for slot B.
    pub slot_values: [&'a str; 2],
    /// Set to 1 by an activation, cleared by a confirmation.
    pub upgrade_available_var: &'a str,
    /// U-Boot's boot counter: reset on activation and confirmation.
    pub bootcount_var: &'a str,
    /// The slot value the agent activated (rollback detection).
    pub activated_var: &'a str,
}

/// Why an A/B decision cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbError {
    /// The slot variable names neither slot.
    UnknownSlot {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
        /// Slot A's value.
        a: String,
        /// Slot B's value.
        b: String,
    },
    /// An update waits for its confirmation (`upgrade_available=1`): the
    /// other slot is the running one's fallback and must not be overwritten.
    Unconfirmed {
        /// The variable that says so.
        var: String,
        /// The running, unconfirmed slot.
        running: Slot,
    },
    /// The environment names another slot than the one the update started
    /// from: someone else switched while it was written.
    Switched {
        /// The slot the environment names now.
        now: Slot,
    },
    /// Reading or writing the environment failed (names device and offset,
    /// or the variable).
    Env(EnvError),
}

impl fmt::Display for AbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbError::UnknownSlot { var, value, a, b } => write!(
                f,
                "U-Boot variable {var}={value:?} names neither slot A ({a:?}) nor slot B ({b:?})"
            ),
            AbError::Unconfirmed { var, running } => write!(
                f,
                "{var}=1: the running slot {} is not confirmed yet and slot {} is its fallback",
                running.name(),
                running.other().name()
            ),
            AbError::Switched { now } => write!(
                f,
                "the environment switched to slot {} while updating; not flipping",
                now.name()
            ),
            AbError::Env(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for AbError {}

impl From<EnvError> for AbError {
    fn from(e: EnvError) -> Self {
        AbError::Env(e)
    }
}

/// What the environment says about the last activation, at boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootState {
    /// No update waits for confirmation.
    NothingPending,
    /// An update waits for confirmation; `running` is the slot value booted.
    Pending {
        /// The running slot's value.
        running: String,
    },
    /// The bootloader runs another slot than the one activated.
    RolledBack {
        /// The slot value activated.
        activated: String,
        /// The slot value running now.
        running: String,
    },
}

impl<'a> Policy<'a> {
    /// The slot variable's value for `slot`.
    #[must_use]
    pub fn value(&self, slot: Slot) -> &'a str {
        slot.pick(self.slot_values)
    }

    /// The slot a value names, if any.
    #[must_use]
    pub fn slot_of(&self, value: &str) -> Option<Slot> {
        [Slot::A, Slot::B]
            .into_iter()
            .find(|&s| self.value(s) == value)
    }

    /// The running slot. A missing slot variable means slot A (a board fresh
    /// from the factory, before its first update).
    pub fn running<F: Flash>(&self, env: &UbootEnv<F>) -> Result<Slot, AbError> {
        match env.get(self.slot_var) {
            None => Ok(Slot::A),
            Some(v) => self.slot_of(v).ok_or_else(|| AbError::UnknownSlot {
                var: self.slot_var.to_string(),
                value: v.to_string(),
                a: self.slot_values[0].to_string(),
                b: self.slot_values[1].to_string(),
            }),
        }
    }

    /// Whether a previous update still waits for its confirmation.
    #[must_use]
    pub fn pending_confirmation<F: Flash>(&self, env: &UbootEnv<F>) -> bool {
        env.get(self.upgrade_available_var) == Some("1")
    }

    /// The running slot, if an update may overwrite the other one now.
    pub fn update_from<F: Flash>(&self, env: &UbootEnv<F>) -> Result<Slot, AbError> {
        let running = self.running(env)?;
        if self.pending_confirmation(env) {
            return Err(AbError::Unconfirmed {
                var: self.upgrade_available_var.to_string(),
                running,
            });
        }
        Ok(running)
    }

    /// The variables an activation of `new` sets, in the order they are logged.
    #[must_use]
    pub fn activation_vars(&self, new: Slot) -> [(&'a str, &'a str); 4] {
        [
            (self.slot_var, self.value(new)),
            (self.upgrade_available_var, "1"),
            (self.bootcount_var, "0"),
            (self.activated_var, self.value(new)),
        ]
    }

    /// Sets (in memory) the activation of `new`, which must replace
    /// `running` (re-read from `env`: [`AbError::Switched`] if someone else
    /// switched), and the `extra` variables to go in the same save.
    pub fn stage_activation<F: Flash>(
        &self,
        env: &mut UbootEnv<F>,
        running: Slot,
        new: Slot,
        extra: &[(&str, &str)],
    ) -> Result<(), AbError> {
        let now = self.running(env)?;
        if now != running {
            return Err(AbError::Switched { now });
        }
        for (k, v) in self.activation_vars(new).iter().chain(extra) {
            env.set(k, v)?;
        }
        Ok(())
    }

    /// What the environment says about the last activation.
    #[must_use]
    pub fn boot_state<F: Flash>(&self, env: &UbootEnv<F>) -> BootState {
        let running = env
            .get(self.slot_var)
            .unwrap_or(self.slot_values[0])
            .to_string();
        match env.get(self.activated_var) {
            Some(a) if a != running => BootState::RolledBack {
                activated: a.to_string(),
                running,
            },
            _ if self.pending_confirmation(env) => BootState::Pending { running },
            _ => BootState::NothingPending,
        }
    }

    /// Sets (in memory) the end of a pending update, confirmed or rolled
    /// back: `upgrade_available=0 bootcount=0`, the activated slot forgotten.
    pub fn stage_disarm<F: Flash>(&self, env: &mut UbootEnv<F>) -> Result<(), AbError> {
        env.set(self.upgrade_available_var, "0")?;
        env.set(self.bootcount_var, "0")?;
        env.unset(self.activated_var);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
