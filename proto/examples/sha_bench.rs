//! SHA-256 throughput relative to a memcpy of the same block in the same
//! run: over a whole block (a format 1 manifest's digest, the resume scan)
//! and chunk by chunk (a format 2 manifest, the default: the receiver hashes
//! every chunk on arrival, R-AUTH-3), the latter also as milliseconds of CPU
//! per MB received, the floor under the agent's CPU per MB that a receiver
//! which authenticates nothing does not pay. Used to choose sha2's opt-level
//! for the device build (cross/README.md, "Where the bytes go"):
//!
//! ```text
//! cargo run --release -p firmcast-proto --example sha_bench
//! FIRMCAST_CROSS_SHA_BENCH=1 cross/build.sh --test mipsel-unknown-linux-musl
//! ```
//!
//! Under qemu-user the absolute MB/s say little about a router; the ratio
//! between two builds of the same target, run side by side, is the figure.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The product's default block size (`firmcast manifest --block-size`).
const BLOCK: usize = 64 * 1024;

/// The product's default chunk size (`firmcast manifest --chunk-size`).
const CHUNK: usize = 1408;

/// Median seconds per call of `f` over `runs` timed runs of `reps` calls.
fn median_secs(runs: usize, reps: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..reps {
                f();
            }
            start.elapsed() / reps as u32
        })
        .collect();
    t.sort();
    t[runs / 2].as_secs_f64()
}

fn main() {
    let data: Vec<u8> = (0..BLOCK).map(|i| (i * 31 + 7) as u8).collect();
    let mut copy = vec![0u8; BLOCK];
    let hash = median_secs(9, 8, || {
        black_box(Sha256::digest(black_box(&data)));
    });
    let memcpy = median_secs(9, 64, || {
        copy.copy_from_slice(black_box(&data));
        black_box(&copy);
    });
    let per_chunk = median_secs(9, 8, || {
        for chunk in black_box(&data).chunks(CHUNK) {
            black_box(proto::manifest::chunk_hash(chunk));
        }
    });
    let mb = BLOCK as f64 / 1e6;
    println!(
        "sha_bench: SHA-256 of a {} KiB block: {:.1} MB/s, memcpy {:.0} MB/s, hash/memcpy time {:.1}",
        BLOCK / 1024,
        mb / hash,
        mb / memcpy,
        hash / memcpy
    );
    println!(
        "sha_bench: SHA-256 of each {CHUNK}-byte chunk of it (R-AUTH-3): {:.1} MB/s, {:.2} ms of CPU per MB",
        mb / per_chunk,
        per_chunk / mb * 1e3
    );
}
