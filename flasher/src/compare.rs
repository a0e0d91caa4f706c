//! Byte comparisons for the hot paths (read-back verify, the resume scan),
//! eight bytes at a time in plain Rust.
//!
//! `==` on byte slices calls the C library's `memcmp`/`bcmp`. The device
//! build links musl statically, whose `memcmp` compares one byte per loop
//! turn, a large share of the static agent's CPU (`perf record`; figures in
//! bench/README.md), and MIPS routers run the same C loop. These functions
//! compile to word loads and XORs on every target and at every opt-level.

/// `a == b`.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut a8 = a.chunks_exact(8);
    let mut b8 = b.chunks_exact(8);
    let mut diff = 0u64;
    for (x, y) in (&mut a8).zip(&mut b8) {
        diff |= word(x) ^ word(y);
    }
    diff == 0 && a8.remainder() == b8.remainder()
}

/// `Some(b)` when every byte of `data` is `b` (and `data` is not empty).
pub fn uniform_byte(data: &[u8]) -> Option<u8> {
    let &first = data.first()?;
    let pattern = u64::from_ne_bytes([first; 8]);
    let mut words = data.chunks_exact(8);
    let mut diff = 0u64;
    for w in &mut words {
        diff |= word(w) ^ pattern;
    }
    (diff == 0 && words.remainder().iter().all(|&b| b == first)).then_some(first)
}

/// The 8 bytes of `c` (exactly 8 long) as a native-endian word: one load.
/// `inline(always)`: at the device build's opt-level z a call per word (and
/// a `memcpy` call inside it) cost more than musl's byte loop did.
#[inline(always)]
fn word(c: &[u8]) -> u64 {
    u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_finds_a_difference_anywhere() {
        for len in [0usize, 1, 7, 8, 9, 63, 64, 65, 4096, 4099] {
            let a: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            assert!(same_bytes(&a, &a.clone()), "len {len}");
            for at in [0, len / 2, len.saturating_sub(1)] {
                if at < len {
                    let mut b = a.clone();
                    b[at] ^= 0x10;
                    assert!(!same_bytes(&a, &b), "len {len}, differs at {at}");
                }
            }
        }
        assert!(!same_bytes(&[1, 2, 3], &[1, 2]));
    }

    #[test]
    fn uniform_byte_looks_at_every_byte() {
        assert_eq!(uniform_byte(&[]), None);
        assert_eq!(uniform_byte(&[7; 1]), Some(7));
        assert_eq!(uniform_byte(&[0xFF; 4096]), Some(0xFF));
        for at in [0, 1, 7, 8, 63, 64, 127, 4095, 4099] {
            let mut d = vec![0u8; 4100];
            d[at] = 1;
            assert_eq!(uniform_byte(&d), None, "odd byte at {at}");
        }
    }
}
