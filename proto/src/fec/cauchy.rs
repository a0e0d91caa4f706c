//! The GF(2^8) block code of R-PAR-2 for blocks of at most
//! [`MAX_CHUNKS`] chunks: systematic Reed–Solomon with a Cauchy parity
//! matrix. Parity symbol `j` of a block with source chunks `s_0 .. s_{k-1}` is
//!
//! ```text
//! p_j = Σ_i  s_i / ((0x80 | j) ⊕ i)        (j < k ≤ 128, i < k)
//! ```
//!
//! Every square submatrix of a Cauchy matrix is invertible, so any `k`
//! distinct symbols (source or parity) rebuild the block. Decoding `m`
//! missing chunks costs `m · k` chunk-sized multiply-adds and needs an
//! `m × m` matrix (at most 16 KiB, allocated with the decoder), no tables.

use alloc::vec;
use alloc::vec::Vec;

use super::gf256;
use super::{FecError, SOURCE};

/// Most chunks a block coded here may have: source and parity points must be
/// 2k distinct field elements.
pub const MAX_CHUNKS: u32 = 128;

/// The Cauchy coefficient of source chunk `i` in parity symbol `j`.
fn coefficient(j: usize, i: usize) -> u8 {
    // (0x80 | j) and i differ for j, i < 128, so the XOR is never 0.
    gf256::inv((0x80 | j as u8) ^ i as u8).unwrap_or(0)
}

/// Parity symbols `0..k` of a block of `k` chunks held in `source`
/// (`k · chunk_size` bytes), written to `parity` (same length).
pub fn encode(source: &[u8], parity: &mut [u8], chunk_size: usize) {
    let k = source.len() / chunk_size;
    for (j, p) in parity.chunks_exact_mut(chunk_size).enumerate().take(k) {
        p.fill(0);
        for (i, s) in source.chunks_exact(chunk_size).enumerate() {
            gf256::mul_add(p, s, coefficient(j, i));
        }
    }
}

/// Parity symbol `j` alone of a block of `k` chunks held in `source`
/// (`k · chunk_size` bytes, the last chunk possibly short: it counts as padded
/// with zeros), written to `out` (`chunk_size` bytes): `k` multiply-adds.
pub fn encode_symbol(source: &[u8], chunk_size: usize, j: usize, out: &mut [u8]) {
    out.fill(0);
    for (i, s) in source.chunks(chunk_size).enumerate() {
        // A short last chunk: its missing tail is zeros and adds nothing.
        gf256::mul_add(&mut out[..s.len()], s, coefficient(j, i));
    }
}

/// Work space for decoding blocks of up to `max_k` chunks.
#[derive(Debug)]
pub struct Decoder {
    /// Row-major `m × m` system, `m ≤ max_k`.
    matrix: Vec<u8>,
    /// Positions (chunk indices) that hold parity, in row order.
    rows: Vec<usize>,
    max_k: usize,
}

impl Decoder {
    /// Work space for blocks of up to `max_k ≤ MAX_CHUNKS` chunks.
    pub fn new(max_k: u32) -> Result<Decoder, FecError> {
        if max_k == 0 || max_k > MAX_CHUNKS {
            return Err(FecError::Unsupported);
        }
        let k = max_k as usize;
        Ok(Decoder {
            matrix: vec![0; k * k],
            rows: Vec::with_capacity(k),
            max_k: k,
        })
    }

    /// Rebuild in place, as [`super::BlockDecoder::decode`] describes.
    pub fn decode(
        &mut self,
        buf: &mut [u8],
        chunk_size: usize,
        parity_at: &[u16],
    ) -> Result<(), FecError> {
        let k = parity_at.len();
        if k == 0 || k > self.max_k || chunk_size == 0 || buf.len() < k * chunk_size {
            return Err(FecError::Decode);
        }
        let buf = &mut buf[..k * chunk_size];
        self.rows.clear();
        let mut seen = [0u64; 2];
        for (pos, &p) in parity_at.iter().enumerate() {
            if p == SOURCE {
                continue;
            }
            let j = usize::from(p);
            if j >= k || seen[j / 64] & (1 << (j % 64)) != 0 {
                return Err(FecError::Decode);
            }
            seen[j / 64] |= 1 << (j % 64);
            self.rows.push(pos);
        }
        let m = self.rows.len();
        if m == 0 {
            return Ok(());
        }
        // Take the known source chunks out of each parity symbol: what is
        // left in row r is Σ over missing chunks c of coefficient · s_c.
        for &pos in &self.rows {
            let j = usize::from(parity_at[pos]);
            for (i, &held) in parity_at.iter().enumerate() {
                if held == SOURCE {
                    let (row, src) = two_chunks(buf, chunk_size, pos, i);
                    gf256::mul_add(row, src, coefficient(j, i));
                }
            }
        }
        // The m × m system: row r (parity j_r), column c (missing chunk rows[c]).
        for (r, &pos) in self.rows.iter().enumerate() {
            let j = usize::from(parity_at[pos]);
            for (c, &missing) in self.rows.iter().enumerate() {
                self.matrix[r * m + c] = coefficient(j, missing);
            }
        }
        // Gauss–Jordan on the matrix and, row for row, on the chunk data; the
        // data of row r sits at position rows[r], so when it is done row c
        // holds exactly source chunk rows[c].
        for col in 0..m {
            let pivot = (col..m)
                .find(|&r| self.matrix[r * m + col] != 0)
                .ok_or(FecError::Decode)?;
            if pivot != col {
                for c in 0..m {
                    self.matrix.swap(col * m + c, pivot * m + c);
                }
                let (a, b) = two_chunks(buf, chunk_size, self.rows[col], self.rows[pivot]);
                a.swap_with_slice(b);
            }
            let scale = gf256::inv(self.matrix[col * m + col]).ok_or(FecError::Decode)?;
            for c in 0..m {
                self.matrix[col * m + c] = gf256::mul(self.matrix[col * m + c], scale);
            }
            let at = self.rows[col] * chunk_size;
            gf256::scale(&mut buf[at..at + chunk_size], scale);
            for r in (0..m).filter(|&r| r != col) {
                let factor = self.matrix[r * m + col];
                if factor == 0 {
                    continue;
                }
                for c in 0..m {
                    let v = gf256::mul(self.matrix[col * m + c], factor);
                    self.matrix[r * m + c] ^= v;
                }
                let (dst, src) = two_chunks(buf, chunk_size, self.rows[r], self.rows[col]);
                gf256::mul_add(dst, src, factor);
            }
        }
        Ok(())
    }
}

/// Chunks `a` (mutable) and `b` of `buf`, `a ≠ b`.
fn two_chunks(buf: &mut [u8], chunk_size: usize, a: usize, b: usize) -> (&mut [u8], &mut [u8]) {
    if a < b {
        let (lo, hi) = buf.split_at_mut(b * chunk_size);
        (
            &mut lo[a * chunk_size..(a + 1) * chunk_size],
            &mut hi[..chunk_size],
        )
    } else {
        let (lo, hi) = buf.split_at_mut(a * chunk_size);
        (
            &mut hi[..chunk_size],
            &mut lo[b * chunk_size..(b + 1) * chunk_size],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(k: usize, cs: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761) | 1;
        (0..k * cs)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    /// Lose `lost` chunks, put the given parity symbols in their places, decode.
    fn roundtrip(k: usize, cs: usize, lost: &[usize], parity_ids: &[u16]) {
        let src = block(k, cs, (k * 31 + lost.len()) as u32);
        let mut parity = vec![0u8; k * cs];
        encode(&src, &mut parity, cs);
        let mut buf = src.clone();
        let mut at = vec![SOURCE; k];
        for (&pos, &j) in lost.iter().zip(parity_ids) {
            let j = usize::from(j);
            buf[pos * cs..(pos + 1) * cs].copy_from_slice(&parity[j * cs..(j + 1) * cs]);
            at[pos] = j as u16;
        }
        let mut dec = Decoder::new(MAX_CHUNKS).expect("decoder");
        dec.decode(&mut buf, cs, &at).expect("decode");
        assert_eq!(buf, src, "k={k} lost={lost:?} parity={parity_ids:?}");
    }

    #[test]
    fn any_k_symbols_rebuild_the_block() {
        roundtrip(1, 8, &[0], &[0]);
        roundtrip(4, 16, &[1, 3], &[3, 0]);
        roundtrip(64, 32, &[0, 7, 63], &[5, 6, 60]);
        // Every source chunk lost: parity alone.
        let all: Vec<usize> = (0..128).collect();
        let ids: Vec<u16> = (0..128u16).rev().collect();
        roundtrip(128, 8, &all, &ids);
        roundtrip(
            100,
            4,
            &(0..50).map(|i| i * 2).collect::<Vec<_>>(),
            &(50..100).collect::<Vec<_>>(),
        );
    }

    #[test]
    fn one_symbol_equals_the_same_symbol_of_the_whole_block() {
        let (k, cs) = (5, 16);
        let src = block(k, cs, 7);
        let mut all = vec![0u8; k * cs];
        encode(&src, &mut all, cs);
        let mut one = vec![0u8; cs];
        for j in 0..k {
            encode_symbol(&src, cs, j, &mut one);
            assert_eq!(one, all[j * cs..(j + 1) * cs], "symbol {j}");
        }
        // A short last chunk is coded as if padded with zeros.
        let short = &src[..4 * cs + 3];
        let mut padded = short.to_vec();
        padded.resize(k * cs, 0);
        encode(&padded, &mut all, cs);
        encode_symbol(short, cs, 2, &mut one);
        assert_eq!(one, all[2 * cs..3 * cs]);
    }

    #[test]
    fn repeated_or_out_of_range_parity_is_refused() {
        let mut dec = Decoder::new(8).expect("decoder");
        let mut buf = vec![0u8; 4 * 8];
        assert_eq!(
            dec.decode(&mut buf, 8, &[1, 1, SOURCE, SOURCE]),
            Err(FecError::Decode)
        );
        assert_eq!(
            dec.decode(&mut buf, 8, &[4, SOURCE, SOURCE, SOURCE]),
            Err(FecError::Decode)
        );
        let mut big = vec![0u8; 9 * 8];
        assert_eq!(dec.decode(&mut big, 8, &[SOURCE; 9]), Err(FecError::Decode));
        assert!(Decoder::new(129).is_err());
    }
}
