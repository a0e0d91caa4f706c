//! Hostile sequences, bounded, in CI (issue 14): proptest drives the
//! hostile-LAN world of `hostile/mod.rs` (a genuine sender, repair server
//! and receiver, with forged, mutated, dropped, reordered and duplicated
//! datagrams and virtual time) and checks its invariants: no panic, nothing
//! written that the signed manifest does not sign (R-BLK-1), only the signed
//! manifest accepted (R-MAN-1), repair output bounded per NACK (R-REP-2),
//! both servers within their pacing (R-CAR-4, R-REP-6); and, with a counting
//! allocator, that the machines' heap does not grow with the number of
//! datagrams once the manifest is accepted.
//!
//! `FIRMCAST_FUZZ_CASES=N` runs N cases instead of the CI default (longer
//! local runs); cargo-fuzz runs the same driver without a bound (`fuzz/`).

mod hostile;

use hostile::{Fixture, Script, Tally, World};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use proto::rng::Rng;

/// Counts the heap the state machines hold, per thread (tests run in
/// parallel), only while [`hostile::in_machine`]: the driver's own queues
/// are not the machines' memory.
mod heap {
    #![allow(unsafe_code)] // A global allocator is an unsafe trait; it only forwards to System.

    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static IN_USE: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
    }

    /// The system allocator, counting.
    pub struct Counting;

    fn add(n: isize) {
        if !crate::hostile::in_machine() {
            return;
        }
        let _ = IN_USE.try_with(|c| {
            let v = c.get() + n;
            c.set(v);
            let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
        });
    }

    // SAFETY: every method forwards to `System` with the caller's arguments
    // unchanged, so `System`'s guarantees are ours; the counting touches
    // only const-initialised thread-locals, which never allocate.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                add(layout.size() as isize);
            }
            p
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: as for `alloc`.
            let p = unsafe { System.alloc_zeroed(layout) };
            if !p.is_null() {
                add(layout.size() as isize);
            }
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: `ptr` came from this allocator (that is, System) with `layout`.
            unsafe { System.dealloc(ptr, layout) };
            add(-(layout.size() as isize));
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                add(new_size as isize - layout.size() as isize);
            }
            p
        }
    }

    /// Bytes the machines hold on this thread now.
    pub fn in_use() -> isize {
        IN_USE.try_with(Cell::get).unwrap_or(0)
    }

    /// The most they held since [`reset_peak`].
    pub fn peak() -> isize {
        PEAK.try_with(Cell::get).unwrap_or(0)
    }

    /// Start a new peak from what is held now.
    pub fn reset_peak() {
        let now = in_use();
        let _ = PEAK.try_with(|p| p.set(now));
    }
}

#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;

/// Cases the CI run takes; each is a script of up to [`SCRIPT_LEN`] bytes.
const DEFAULT_CASES: u32 = 4096;
const SCRIPT_LEN: usize = 30_000;

fn cases() -> u32 {
    std::env::var("FIRMCAST_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// R-BLK-1, R-MAN-1, R-REP-2, R-CAR-4, R-REP-6 under hostile sequences.
#[test]
fn hostile_sequences_keep_the_invariants() {
    let fx = Fixture::new();
    let config = Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    };
    // Deterministic in CI: a failure reproduces; more cases explore further.
    let rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let total = std::cell::RefCell::new(Tally::default());
    let started = std::time::Instant::now();
    runner
        .run(&vec(any::<u8>(), 1000..SCRIPT_LEN), |bytes| {
            let mut script = Script::new(&bytes);
            let mut world = World::new(&fx, &mut script);
            world.run(&mut script, u64::MAX);
            total.borrow_mut().add(&world.tally);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let t = total.into_inner();
    println!(
        "hostile sequences: {} cases, {} datagrams ({} forged) in {:.1} s: {} blocks written, \
         each matching the manifest; {} runs done; {} digest failures caught; \
         {} forged chunks dropped on arrival or purged, {} forged chunk lists forgotten; \
         genuine image refused in {} runs, failed in {}",
        cases(),
        t.datagrams,
        t.forged,
        started.elapsed().as_secs_f64(),
        t.blocks_written,
        t.done,
        t.digest_failures,
        t.chunks_forged,
        t.lists_forged,
        t.genuine_refused,
        t.failed
    );
    println!(
        "repair: {} NACKs in ({} forged bytes) -> {} datagrams out, {} bytes unicast to forged \
         sources; receiver: {} Status bytes to forged sources; sender: {} datagrams, within pacing",
        t.nacks_in,
        t.forged_nack_bytes,
        t.repair_out,
        t.unicast_to_forged,
        t.status_to_forged,
        t.sender_out
    );
    assert!(
        t.blocks_written > 0,
        "no case got as far as writing a block"
    );
}

/// A pseudo-random script, for runs longer than proptest's inputs.
fn script_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// The machines' heap is fixed once the manifest is accepted: the peak over
/// 10,000 hostile datagrams is the peak over the first 1,000, within a small
/// slack for the servers' bounded tables (fleet, repair queue) filling up.
#[test]
fn heap_does_not_grow_with_the_number_of_datagrams() {
    const SLACK: isize = 8 * 1024;
    let fx = Fixture::new();
    let bytes = script_bytes(0x4EA9, 2_000_000);
    let mut script = Script::new(&bytes);
    // Knobs 0: retransmit repair, no header hold, nothing on flash yet.
    let head = [0u8; 3];
    let mut world = World::new(&fx, &mut Script::new(&head));
    // The last block never arrives: the transfer stays open throughout.
    world.withhold = Some(fx.manifest.block_count() - 1);
    let mut steps = 0;
    while world.receiver().manifest().is_none() {
        world.step(&mut script);
        steps += 1;
        assert!(steps < 20_000, "the manifest was never accepted");
    }
    let accepted_at = world.tally.datagrams;
    let base = heap::in_use();
    heap::reset_peak();
    let mut peaks = Vec::new();
    for target in [1_000u64, 10_000] {
        while world.tally.datagrams < accepted_at + target {
            assert!(!script.is_empty(), "script too short");
            world.step(&mut script);
        }
        peaks.push(heap::peak());
    }
    let st = world.receiver().stats();
    println!(
        "heap of the machines after the manifest was accepted ({} datagrams in): {} bytes; \
         peak over the next 1,000 datagrams {} bytes, over 10,000 {} bytes \
         (receiver {:?}, {} blocks done, {} digest failures, {} NACKs)",
        accepted_at,
        base,
        peaks[0],
        peaks[1],
        world.receiver().state(),
        world.receiver().blocks_done(),
        st.digest_failures,
        st.nacks_sent
    );
    assert!(
        peaks[1] - peaks[0] <= SLACK,
        "heap grew by {} bytes between 1,000 and 10,000 datagrams",
        peaks[1] - peaks[0]
    );
}
