//! The erasure code's hot loop, sixteen bytes per instruction where the CPU
//! has a byte shuffle: `dst ^= f(src)` and `buf = f(buf)` for a map `f` of
//! bytes given by two 16-entry [`Tables`], `f(x) = lo[x & 15] ^ hi[x >> 4]`.
//! Multiplying by a constant in GF(2^8) is such a map (it is linear over
//! the bits of `x`); `proto::fec` builds the tables, this crate knows no
//! field.
//!
//! Where: x86_64 with SSSE3 (`PSHUFB`, detected at run time) and aarch64
//! (`TBL`, NEON is part of the architecture). Elsewhere (MIPS, armv7)
//! [`vector`] is `false`, the kernels do nothing, and the caller's byte
//! loop runs: no code of this crate ends up in those agents.
//!
//! This crate is where the workspace's SIMD `unsafe` lives: loads and stores
//! at offsets checked against both slices' lengths, and calls of functions
//! compiled for SSSE3 once SSSE3 was detected.
#![no_std]
#![allow(unsafe_code)]

/// A map of bytes by nibbles: `f(x) = lo[x & 15] ^ hi[x >> 4]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tables {
    /// `f` of each low nibble, `0..16`.
    pub lo: [u8; 16],
    /// `f` of each high nibble, `x << 4` for `x` in `0..16`.
    pub hi: [u8; 16],
}

impl Tables {
    /// `f(x)`, one byte: the kernels' tail and the reference they match.
    #[inline]
    pub fn map(&self, x: u8) -> u8 {
        self.lo[usize::from(x & 15)] ^ self.hi[usize::from(x >> 4)]
    }
}

/// Whether this CPU has a kernel: when `false`, [`mul_add`] and
/// [`map_in_place`] do nothing and return 0.
#[inline]
pub fn vector() -> bool {
    arch::vector()
}

/// `dst[i] ^= f(src[i])` for `i < n`, `n` the slices' common length rounded
/// down to a multiple of 16; returns `n` (0 without a kernel). The caller
/// does the rest.
#[inline]
pub fn mul_add(dst: &mut [u8], src: &[u8], t: &Tables) -> usize {
    arch::mul_add(dst, src, t)
}

/// `buf[i] = f(buf[i])` for `i < n`, `n` the length rounded down to a
/// multiple of 16; returns `n` (0 without a kernel).
#[inline]
pub fn map_in_place(buf: &mut [u8], t: &Tables) -> usize {
    arch::map_in_place(buf, t)
}

#[cfg(target_arch = "x86_64")]
mod arch {
    use super::Tables;
    use core::arch::x86_64::{
        __m128i, _mm_and_si128, _mm_loadu_si128, _mm_set1_epi8, _mm_shuffle_epi8, _mm_srli_epi16,
        _mm_storeu_si128, _mm_xor_si128,
    };

    cpufeatures::new!(ssse3, "ssse3");

    pub(super) fn vector() -> bool {
        ssse3::get()
    }

    pub(super) fn mul_add(dst: &mut [u8], src: &[u8], t: &Tables) -> usize {
        if !vector() {
            return 0;
        }
        // SAFETY: SSSE3 was detected just above.
        unsafe { mul_add_ssse3(dst, src, t) }
    }

    pub(super) fn map_in_place(buf: &mut [u8], t: &Tables) -> usize {
        if !vector() {
            return 0;
        }
        // SAFETY: SSSE3 was detected just above.
        unsafe { map_ssse3(buf, t) }
    }

    /// `f` of the 16 bytes `s`.
    #[inline]
    #[target_feature(enable = "ssse3")]
    unsafe fn map16(s: __m128i, lo: __m128i, hi: __m128i, nibble: __m128i) -> __m128i {
        let low = _mm_shuffle_epi8(lo, _mm_and_si128(s, nibble));
        let high = _mm_shuffle_epi8(hi, _mm_and_si128(_mm_srli_epi16(s, 4), nibble));
        _mm_xor_si128(low, high)
    }

    #[target_feature(enable = "ssse3")]
    unsafe fn mul_add_ssse3(dst: &mut [u8], src: &[u8], t: &Tables) -> usize {
        let n = dst.len().min(src.len()) & !15;
        let lo = _mm_loadu_si128(t.lo.as_ptr().cast());
        let hi = _mm_loadu_si128(t.hi.as_ptr().cast());
        let nibble = _mm_set1_epi8(0x0f);
        let mut i = 0;
        while i < n {
            // i + 16 <= n <= both lengths: both 16-byte accesses are in bounds.
            let s = _mm_loadu_si128(src.as_ptr().add(i).cast());
            let at = dst.as_mut_ptr().add(i).cast::<__m128i>();
            let d = _mm_loadu_si128(at);
            _mm_storeu_si128(at, _mm_xor_si128(d, map16(s, lo, hi, nibble)));
            i += 16;
        }
        n
    }

    #[target_feature(enable = "ssse3")]
    unsafe fn map_ssse3(buf: &mut [u8], t: &Tables) -> usize {
        let n = buf.len() & !15;
        let lo = _mm_loadu_si128(t.lo.as_ptr().cast());
        let hi = _mm_loadu_si128(t.hi.as_ptr().cast());
        let nibble = _mm_set1_epi8(0x0f);
        let mut i = 0;
        while i < n {
            // i + 16 <= n <= buf.len().
            let at = buf.as_mut_ptr().add(i).cast::<__m128i>();
            _mm_storeu_si128(at, map16(_mm_loadu_si128(at), lo, hi, nibble));
            i += 16;
        }
        n
    }
}

#[cfg(target_arch = "aarch64")]
mod arch {
    use super::Tables;
    use core::arch::aarch64::{
        uint8x16_t, vandq_u8, vdupq_n_u8, veorq_u8, vld1q_u8, vqtbl1q_u8, vshrq_n_u8, vst1q_u8,
    };

    pub(super) fn vector() -> bool {
        true
    }

    /// `f` of the 16 bytes `s` (NEON is always there on aarch64).
    #[inline]
    fn map16(s: uint8x16_t, lo: uint8x16_t, hi: uint8x16_t) -> uint8x16_t {
        // SAFETY: register-only NEON operations; aarch64 always has NEON.
        unsafe {
            let low = vqtbl1q_u8(lo, vandq_u8(s, vdupq_n_u8(0x0f)));
            let high = vqtbl1q_u8(hi, vshrq_n_u8::<4>(s));
            veorq_u8(low, high)
        }
    }

    pub(super) fn mul_add(dst: &mut [u8], src: &[u8], t: &Tables) -> usize {
        let n = dst.len().min(src.len()) & !15;
        // SAFETY: the tables are 16 bytes each; i + 16 <= n <= both lengths,
        // so every 16-byte load and store below is in bounds.
        unsafe {
            let lo = vld1q_u8(t.lo.as_ptr());
            let hi = vld1q_u8(t.hi.as_ptr());
            let mut i = 0;
            while i < n {
                let s = vld1q_u8(src.as_ptr().add(i));
                let at = dst.as_mut_ptr().add(i);
                vst1q_u8(at, veorq_u8(vld1q_u8(at), map16(s, lo, hi)));
                i += 16;
            }
        }
        n
    }

    pub(super) fn map_in_place(buf: &mut [u8], t: &Tables) -> usize {
        let n = buf.len() & !15;
        // SAFETY: as in `mul_add`, i + 16 <= n <= buf.len().
        unsafe {
            let lo = vld1q_u8(t.lo.as_ptr());
            let hi = vld1q_u8(t.hi.as_ptr());
            let mut i = 0;
            while i < n {
                let at = buf.as_mut_ptr().add(i);
                vst1q_u8(at, map16(vld1q_u8(at), lo, hi));
                i += 16;
            }
        }
        n
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod arch {
    use super::Tables;

    pub(super) fn vector() -> bool {
        false
    }

    pub(super) fn mul_add(_: &mut [u8], _: &[u8], _: &Tables) -> usize {
        0
    }

    pub(super) fn map_in_place(_: &mut [u8], _: &Tables) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tables from a small generator, different for each `seed`.
    fn tables(seed: u32) -> Tables {
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        };
        let mut t = Tables {
            lo: [0; 16],
            hi: [0; 16],
        };
        t.lo.iter_mut().for_each(|b| *b = next());
        t.hi.iter_mut().for_each(|b| *b = next());
        t
    }

    fn bytes(len: usize, seed: usize) -> [u8; 300] {
        let mut b = [0u8; 300];
        for (i, v) in b.iter_mut().enumerate().take(len) {
            *v = (i * 151 + seed * 7 + 3) as u8;
        }
        b
    }

    #[test]
    fn mul_add_matches_the_byte_map_for_every_length_and_offset() {
        for seed in 0..8 {
            let t = tables(seed);
            for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 47, 100, 256, 257] {
                for off in [0usize, 1, 7] {
                    let src = bytes(len + off, seed as usize);
                    let mut dst = bytes(len + off, seed as usize + 100);
                    let before = dst;
                    let src = &src[off..off + len];
                    let n = mul_add(&mut dst[off..off + len], src, &t);
                    if vector() {
                        assert_eq!(n, len & !15, "len {len}");
                    } else {
                        assert_eq!(n, 0);
                    }
                    for i in 0..len {
                        let want = if i < n {
                            before[off + i] ^ t.map(src[i])
                        } else {
                            before[off + i]
                        };
                        assert_eq!(dst[off + i], want, "seed {seed} len {len} off {off} i {i}");
                    }
                    assert_eq!(dst[..off], before[..off]);
                    assert_eq!(dst[off + len..], before[off + len..]);
                }
            }
        }
    }

    #[test]
    fn map_in_place_matches_the_byte_map_and_leaves_the_tail() {
        for seed in 0..8 {
            let t = tables(seed);
            for len in [0usize, 5, 16, 40, 64, 299] {
                let mut buf = bytes(len, seed as usize);
                let before = buf;
                let n = map_in_place(&mut buf[..len], &t);
                assert_eq!(n, if vector() { len & !15 } else { 0 });
                for i in 0..300 {
                    let want = if i < n { t.map(before[i]) } else { before[i] };
                    assert_eq!(buf[i], want, "seed {seed} len {len} i {i}");
                }
            }
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn this_x86_64_host_has_the_kernel() {
        // Every x86_64 CPU this project builds or races on has SSSE3 (2006+):
        // a false here means detection broke and the race measures the byte loop.
        assert!(vector());
    }

    #[test]
    fn mismatched_lengths_use_the_shorter() {
        let t = tables(3);
        let src = [0x5au8; 40];
        let mut dst = [0u8; 20];
        let n = mul_add(&mut dst, &src, &t);
        assert!(n <= 16);
        assert!(dst[..n].iter().all(|&d| d == t.map(0x5a)));
        assert!(dst[n..].iter().all(|&d| d == 0));
    }
}
