//! Hostile datagram sequences into the Sender, the RepairServer and the
//! Receiver at once: the fuzzer's input is the script of the hostile-LAN
//! driver that `proto/tests/hostile_sequences.rs` runs under proptest in CI
//! (its invariants: no panic, nothing written that the signed manifest does
//! not sign, only the signed manifest accepted, repair output bounded per
//! NACK, both servers within their pacing; see `proto/tests/hostile/mod.rs`).
//! Here libFuzzer's coverage feedback steers the script, with no bound on
//! its length or the run time.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "../../proto/tests/hostile/mod.rs"]
mod hostile;

use hostile::{Fixture, Script, World};

fn fixture() -> &'static Fixture {
    static FX: OnceLock<Fixture> = OnceLock::new();
    FX.get_or_init(Fixture::new)
}

fuzz_target!(|data: &[u8]| {
    let mut script = Script::new(data);
    let mut world = World::new(fixture(), &mut script);
    world.run(&mut script, u64::MAX);
});
