//! Phase markers for the power-cut campaign of the real-U-Boot tier
//! (`tests/tests/uboot_boot.rs`): with the `test-hooks` feature and
//! `FIRMCAST_TEST_PHASES=1` in the environment, the agent prints
//! `FCPHASE: <what>` on stderr (the emulated device's serial console) at the
//! steps a power cut can interrupt: each block's program and read-back, the
//! final read-back, the environment save of the activation. The test cuts the
//! power a chosen time after a chosen marker and names the phase it hit from
//! the last marker on the console. Without the feature [`mark`] is empty and
//! nothing of it is linked into a device build.

use std::fmt::Arguments;

/// Prints `FCPHASE: <what>` when the campaign asked for markers.
#[cfg(feature = "test-hooks")]
pub fn mark(what: Arguments<'_>) {
    use std::io::Write;
    use std::sync::OnceLock;
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("FIRMCAST_TEST_PHASES").is_some_and(|v| v == "1")) {
        // Unbuffered and flushed: the line must be on the console before the
        // step it announces starts, or a cut right after it is misnamed.
        let mut e = std::io::stderr().lock();
        let _ = writeln!(e, "FCPHASE: {what}");
        let _ = e.flush();
    }
}

/// Without `test-hooks`: nothing.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn mark(_what: Arguments<'_>) {}
