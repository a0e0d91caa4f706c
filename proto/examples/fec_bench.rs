//! Erasure-code candidates, measured (issue 6): decode one block with 5% of
//! its source chunks missing, relative to a memcpy of the same block in the
//! same run; heap needed (peak during decode, and the one-time tables);
//! byte-identical recovery checked.
//!
//! ```text
//! cargo run --release -p firmcast-proto --example fec_bench
//! ```
//!
//! x86-64 numbers only here; armv7 / mipsel under qemu-user wait for the
//! cross builds. Binary size added to the agent is measured separately
//! (release build of `firmcast-agent` before and after).
#![allow(missing_docs, unsafe_code, clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

use reed_solomon_simd::engine::{DefaultEngine, Engine, Naive, NoSimd};
use reed_solomon_simd::rate::{DefaultRateDecoder, DefaultRateEncoder, RateDecoder, RateEncoder};

struct Counting;
static CUR: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = CUR.fetch_add(l.size(), Relaxed) + l.size();
        PEAK.fetch_max(now, Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        CUR.fetch_sub(l.size(), Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Run `f` and return (its result, heap bytes above the level at entry at its peak).
fn heap_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CUR.load(Relaxed);
    PEAK.store(base, Relaxed);
    let t = f();
    (t, PEAK.load(Relaxed) - base)
}

const CHUNK: usize = 1024;

fn block(k: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut s = seed;
    (0..k)
        .map(|_| {
            (0..CHUNK)
                .map(|_| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (s >> 56) as u8
                })
                .collect()
        })
        .collect()
}

/// Indices of the missing source chunks: 5% of k, rounded up, spread out.
fn missing(k: usize) -> Vec<usize> {
    let m = (k * 5).div_ceil(100);
    (0..m).map(|i| (i * 7919 + 3) % k).collect()
}

fn memcpy_ns(k: usize, iters: u32) -> f64 {
    let src = vec![0x5au8; k * CHUNK];
    let mut dst = vec![0u8; k * CHUNK];
    let t = Instant::now();
    for _ in 0..iters {
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
    }
    t.elapsed().as_nanos() as f64 / f64::from(iters)
}

struct Row {
    name: String,
    k: usize,
    decode_ns: f64,
    decode_heap: usize,
    tables_heap: usize,
}

fn simd<E: Engine + Default>(name: &str, k: usize, iters: u32) -> Row {
    let data = block(k, k as u64);
    let r = k; // parity index space = k (the protocol's choice)
    let lost = missing(k);
    // One-time global tables: allocated by the first encoder/decoder of an engine.
    let (parity, tables_heap) = heap_of(|| {
        let mut enc = DefaultRateEncoder::<E>::new(k, r, CHUNK, E::default(), None).unwrap();
        for c in &data {
            enc.add_original_shard(c).unwrap();
        }
        let res = enc.encode().unwrap();
        res.recovery_iter().map(<[u8]>::to_vec).collect::<Vec<_>>()
    });
    let _ = tables_heap; // measured in a fresh process, see tables_in_child
    let run = |check: bool| {
        let mut dec = DefaultRateDecoder::<E>::new(k, r, CHUNK, E::default(), None).unwrap();
        for (i, c) in data.iter().enumerate() {
            if !lost.contains(&i) {
                dec.add_original_shard(i, c).unwrap();
            }
        }
        for (p, shard) in parity.iter().take(lost.len()).enumerate() {
            dec.add_recovery_shard(p, shard).unwrap();
        }
        let res = dec.decode().unwrap();
        if check {
            for &i in &lost {
                assert_eq!(
                    res.restored_original(i).unwrap(),
                    &data[i][..],
                    "{name} k={k}"
                );
            }
        }
    };
    let ((), decode_heap) = heap_of(|| run(true));
    let t = Instant::now();
    for _ in 0..iters {
        run(false);
    }
    Row {
        name: name.into(),
        k,
        decode_ns: t.elapsed().as_nanos() as f64 / f64::from(iters),
        decode_heap,
        tables_heap,
    }
}

fn gf8(k: usize, iters: u32) -> Row {
    use reed_solomon_erasure::galois_8::ReedSolomon;
    let data = block(k, k as u64);
    let r = k.min(255 - k);
    let lost = missing(k);
    let rs = ReedSolomon::new(k, r).unwrap();
    let mut shards: Vec<Vec<u8>> = data.clone();
    shards.extend((0..r).map(|_| vec![0u8; CHUNK]));
    rs.encode(&mut shards).unwrap();
    let run = |check: bool| {
        let mut opt: Vec<Option<Vec<u8>>> = shards.iter().cloned().map(Some).collect();
        for &i in &lost {
            opt[i] = None;
        }
        // Only as many parity symbols as chunks lost: the others did not arrive.
        for p in lost.len()..r {
            opt[k + p] = None;
        }
        let ((), heap) = heap_of(|| rs.reconstruct_data(&mut opt).unwrap());
        if check {
            for &i in &lost {
                assert_eq!(opt[i].as_deref().unwrap(), &data[i][..]);
            }
        }
        heap
    };
    let decode_heap = run(true);
    // Time the decode alone: the clones above are the test harness, not the decoder.
    let mut total = 0u128;
    for _ in 0..iters {
        let mut opt: Vec<Option<Vec<u8>>> = shards.iter().cloned().map(Some).collect();
        for &i in &lost {
            opt[i] = None;
        }
        for p in lost.len()..r {
            opt[k + p] = None;
        }
        let t = Instant::now();
        rs.reconstruct_data(&mut opt).unwrap();
        total += t.elapsed().as_nanos();
        black_box(&opt);
    }
    Row {
        name: "reed-solomon-erasure 6 (GF(2^8))".into(),
        k,
        decode_ns: total as f64 / f64::from(iters),
        decode_heap,
        tables_heap: 0,
    }
}

/// The protocol's own GF(2^8) Cauchy code (`proto::fec`, blocks ≤ 128 chunks).
fn cauchy(k: usize, iters: u32) -> Row {
    use proto::fec::{encode_block, BlockDecoder, SOURCE};
    let data: Vec<u8> = block(k, k as u64).concat();
    let lost = missing(k);
    let parity = encode_block(&data, CHUNK, k as u32).unwrap();
    let (mut dec, _) = heap_of(|| BlockDecoder::new(k as u32, CHUNK as u32).unwrap());
    let mut at = vec![SOURCE; k];
    let mut damaged = data.clone();
    for (p, &i) in lost.iter().enumerate() {
        damaged[i * CHUNK..(i + 1) * CHUNK].copy_from_slice(&parity[p * CHUNK..(p + 1) * CHUNK]);
        at[i] = p as u16;
    }
    let mut buf = damaged.clone();
    let ((), decode_heap) = heap_of(|| dec.decode(&mut buf, CHUNK, &at).unwrap());
    assert_eq!(buf, data, "cauchy k={k}");
    let mut total = 0u128;
    for _ in 0..iters {
        buf.copy_from_slice(&damaged);
        let t = Instant::now();
        dec.decode(black_box(&mut buf), CHUNK, &at).unwrap();
        total += t.elapsed().as_nanos();
    }
    // The decoder's own work space, allocated once per transfer.
    let (_, work) = heap_of(|| BlockDecoder::new(k as u32, CHUNK as u32).unwrap());
    Row {
        name: "firmcast Cauchy RS GF(2^8) (proto::fec, chosen for k ≤ 128)".into(),
        k,
        decode_ns: total as f64 / f64::from(iters),
        decode_heap: decode_heap.max(work),
        tables_heap: 0,
    }
}

/// Heap the first coder of engine `E` allocates for its global tables, in a
/// fresh process (tables are built once per process and shared).
fn tables_child<E: Engine + Default>() {
    let k = 64;
    let data = block(k, 1);
    let ((), heap) = heap_of(|| {
        let mut enc = DefaultRateEncoder::<E>::new(k, k, CHUNK, E::default(), None).unwrap();
        for c in &data {
            enc.add_original_shard(c).unwrap();
        }
        black_box(enc.encode().unwrap().recovery(0).map(<[u8]>::len));
        drop(enc);
    });
    // Whatever stays allocated after the coder is gone is the tables.
    let _ = heap;
    println!("{}", CUR.load(Relaxed));
}

/// Heap the engine's one-time tables take, measured in a fresh child
/// process; `None` where the binary cannot run itself (qemu-user without
/// binfmt_misc: "Exec format error").
fn tables_in_child(engine: &str) -> Option<usize> {
    let base = std::process::Command::new(std::env::current_exe().ok()?)
        .args(["tables", "none"])
        .output()
        .ok()?;
    let out = std::process::Command::new(std::env::current_exe().ok()?)
        .args(["tables", engine])
        .output()
        .ok()?;
    let n = |o: &std::process::Output| -> usize {
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    };
    Some(n(&out).saturating_sub(n(&base)))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "tables" {
        match args[2].as_str() {
            "naive" => tables_child::<Naive>(),
            "nosimd" => tables_child::<NoSimd>(),
            "default" => tables_child::<DefaultEngine>(),
            _ => println!("{}", CUR.load(Relaxed)),
        }
        return;
    }
    let iters = 200;
    let mut rows = Vec::new();
    for k in [64usize, 128, 256] {
        rows.push(simd::<DefaultEngine>(
            "reed-solomon-simd 3.1 DefaultEngine (AVX2 here)",
            k,
            iters,
        ));
        rows.push(simd::<NoSimd>(
            "reed-solomon-simd 3.1 NoSimd (MIPS default)",
            k,
            iters,
        ));
        rows.push(simd::<Naive>("reed-solomon-simd 3.1 Naive", k, iters / 4));
        if k < 255 {
            rows.push(gf8(k, iters));
        }
        if k <= 128 {
            rows.push(cauchy(k, iters));
        }
    }
    println!("| candidate | k | block | 5% lost | decode µs | memcpy µs | decode / memcpy | heap in decode | one-time tables |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &mut rows {
        if r.name.contains("simd") {
            let engine = if r.name.contains("Naive") {
                "naive"
            } else if r.name.contains("NoSimd") {
                "nosimd"
            } else {
                "default"
            };
            r.tables_heap = tables_in_child(engine).unwrap_or(usize::MAX);
        }
    }
    for r in rows {
        let mc = memcpy_ns(r.k, 2000);
        println!(
            "| {} | {} | {} KiB | {} | {:.1} | {:.2} | {:.0}× | {} KiB | {} |",
            r.name,
            r.k,
            r.k * CHUNK / 1024,
            missing(r.k).len(),
            r.decode_ns / 1000.0,
            mc / 1000.0,
            r.decode_ns / mc,
            r.decode_heap / 1024,
            if r.tables_heap == usize::MAX {
                "n/a (cannot re-exec under qemu-user)".to_string()
            } else {
                format!("{} KiB", r.tables_heap / 1024)
            },
        );
    }
}
