//! Arithmetic in GF(2^8) with the polynomial x^8 + x^4 + x^3 + x^2 + 1
//! (0x11D, generator 2), as used by [`super::cauchy`]: log/exp tables built
//! at compile time (768 bytes of read-only data, no heap), and the one
//! operation a block code needs in bulk, `dst ^= c · src` over a slice.
//!
//! In bulk a product is a look-up: where the CPU has a byte shuffle (`gf8`:
//! x86_64 with SSSE3, aarch64) sixteen at a time in two 16-entry tables, c
//! times each nibble; elsewhere one at a time in a 256-entry table. Under
//! loss parity decode is a large share of a device's CPU, and the byte loop
//! was most of it (bench/README.md, "Figures behind code comments").

/// exp[i] = 2^i, doubled so that `exp[log a + log b]` needs no reduction.
const EXP: [u8; 512] = exp_table();
/// log[x] for x ≠ 0 (log[0] is unused).
const LOG: [u8; 256] = log_table();

const fn exp_table() -> [u8; 512] {
    let mut t = [0u8; 512];
    let mut x: u16 = 1;
    let mut i = 0;
    while i < 512 {
        t[i] = x as u8;
        x <<= 1;
        if x & 0x100 != 0 {
            x ^= 0x11D;
        }
        i += 1;
    }
    t
}

const fn log_table() -> [u8; 256] {
    let exp = exp_table();
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 255 {
        t[exp[i] as usize] = i as u8;
        i += 1;
    }
    t
}

/// a · b.
pub fn mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        return 0;
    }
    EXP[usize::from(LOG[usize::from(a)]) + usize::from(LOG[usize::from(b)])]
}

/// 1 / a; `None` for 0.
pub fn inv(a: u8) -> Option<u8> {
    (a != 0).then(|| EXP[255 - usize::from(LOG[usize::from(a)])])
}

/// `dst[i] ^= c · src[i]` for every byte (the slices' common length).
pub fn mul_add(dst: &mut [u8], src: &[u8], c: u8) {
    match c {
        0 => {}
        1 => dst.iter_mut().zip(src).for_each(|(d, s)| *d ^= *s),
        _ if gf8::vector() => {
            let t = nibble_tables(c);
            let n = gf8::mul_add(dst, src, &t);
            dst.iter_mut()
                .zip(src)
                .skip(n)
                .for_each(|(d, s)| *d ^= t.map(*s));
        }
        _ => {
            let table = mul_table(c);
            dst.iter_mut()
                .zip(src)
                .for_each(|(d, s)| *d ^= table[usize::from(*s)]);
        }
    }
}

/// `buf[i] = c · buf[i]` for every byte.
pub fn scale(buf: &mut [u8], c: u8) {
    if c == 1 {
        return;
    }
    if gf8::vector() {
        let t = nibble_tables(c);
        let n = gf8::map_in_place(buf, &t);
        buf[n..].iter_mut().for_each(|b| *b = t.map(*b));
        return;
    }
    let table = mul_table(c);
    buf.iter_mut().for_each(|b| *b = table[usize::from(*b)]);
}

/// c times each low and each high nibble: c · x is the XOR of the two
/// (multiplying by c is linear over the bits of x).
fn nibble_tables(c: u8) -> gf8::Tables {
    let mut t = gf8::Tables {
        lo: [0; 16],
        hi: [0; 16],
    };
    for x in 0..16u8 {
        t.lo[usize::from(x)] = mul(c, x);
        t.hi[usize::from(x)] = mul(c, x << 4);
    }
    t
}

/// c · x for every x, built by linearity (c · x = ⊕ of c · 2^bit over x's
/// set bits): 256 XORs instead of 256 log/exp look-ups.
fn mul_table(c: u8) -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut bit = 1usize;
    let mut c_times_bit = c;
    while bit < 256 {
        t[bit] = c_times_bit;
        for low in 1..bit {
            t[bit | low] = c_times_bit ^ t[low];
        }
        bit <<= 1;
        c_times_bit = mul(c_times_bit, 2);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Carry-less multiplication reduced by 0x11D, bit by bit: the oracle.
    fn mul_slow(mut a: u8, mut b: u8) -> u8 {
        let mut p = 0u8;
        while b != 0 {
            if b & 1 != 0 {
                p ^= a;
            }
            let carry = a & 0x80 != 0;
            a <<= 1;
            if carry {
                a ^= 0x1D;
            }
            b >>= 1;
        }
        p
    }

    #[test]
    fn mul_matches_the_bitwise_definition_for_every_pair() {
        for a in 0..=255u8 {
            let t = mul_table(a);
            for b in 0..=255u8 {
                assert_eq!(mul(a, b), mul_slow(a, b), "{a} · {b}");
                assert_eq!(t[usize::from(b)], mul_slow(a, b), "table {a} · {b}");
            }
        }
    }

    #[test]
    fn every_nonzero_element_has_an_inverse_and_zero_has_none() {
        assert_eq!(inv(0), None);
        for a in 1..=255u8 {
            assert_eq!(inv(a).map(|i| mul(a, i)), Some(1), "{a}");
        }
    }

    #[test]
    fn mul_add_and_scale_are_the_bytewise_operations() {
        let src: [u8; 7] = [0, 1, 2, 3, 0x80, 0xFE, 0xFF];
        for c in [0u8, 1, 2, 0x53, 0xFF] {
            let mut dst = [9u8; 7];
            mul_add(&mut dst, &src, c);
            let mut scaled = src;
            scale(&mut scaled, c);
            for i in 0..7 {
                assert_eq!(dst[i], 9 ^ mul_slow(c, src[i]));
                assert_eq!(scaled[i], mul_slow(c, src[i]));
            }
        }
    }

    #[test]
    fn nibble_tables_give_every_product() {
        for c in 0..=255u8 {
            let t = nibble_tables(c);
            for x in 0..=255u8 {
                assert_eq!(t.map(x), mul_slow(c, x), "{c} · {x}");
            }
        }
    }

    /// Lengths the kernels do in vectors, with a tail, at odd offsets: the
    /// same bytes as the byte-wise definition for every c.
    #[test]
    fn mul_add_and_scale_over_chunks_match_the_bytewise_definition() {
        let src: std::vec::Vec<u8> = (0..1409usize).map(|i| (i * 37 + 11) as u8).collect();
        for c in 0..=255u8 {
            for (off, len) in [(0usize, 1408usize), (1, 1407), (3, 33), (0, 16), (5, 15)] {
                let s = &src[off..off + len];
                let mut dst: std::vec::Vec<u8> = (0..len).map(|i| (i * 5) as u8).collect();
                let mut scaled = s.to_vec();
                mul_add(&mut dst, s, c);
                scale(&mut scaled, c);
                for i in 0..len {
                    assert_eq!(
                        dst[i],
                        ((i * 5) as u8) ^ mul_slow(c, s[i]),
                        "c {c} len {len} i {i}"
                    );
                    assert_eq!(scaled[i], mul_slow(c, s[i]), "scale c {c} len {len} i {i}");
                }
            }
        }
    }
}
