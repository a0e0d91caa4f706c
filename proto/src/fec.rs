//! The erasure code of parity repair (rules `R-PAR-*` in PROTOCOL.md):
//! Reed–Solomon over GF(2^16) (`reed-solomon-simd`, Leopard algorithm), one
//! code per block. A block of `k` source chunks (the short last chunk padded
//! with zeros to `chunk_size`) has `k` parity symbols, indices `0..k`, each
//! `chunk_size` bytes; any `k` distinct symbols of a block rebuild it.
//!
//! Chosen by measurement (`examples/fec_bench.rs`): GF(2^8)
//! (`reed-solomon-erasure`) is faster but cannot code 256 chunks with their
//! parity (255 shards at most). The device uses the crate's `Naive` engine:
//! its global tables are about 450 KiB, where the `NoSimd` and SIMD engines
//! build 8.6 MiB of multiplication tables, too much for a 64 MB router.
//!
//! Memory: one [`BlockDecoder`] per transfer, allocated when the manifest is
//! accepted, reused for every block; its work space is about two blocks.

use alloc::vec::Vec;

use reed_solomon_simd::engine::Naive;
use reed_solomon_simd::rate::{DefaultRateDecoder, DefaultRateEncoder, RateDecoder, RateEncoder};

/// Why a block could not be coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FecError {
    /// Geometry the code does not support (odd chunk size, no chunks).
    Unsupported,
    /// The decoder refused its input (wrong sizes, too few symbols).
    Decode,
}

impl core::fmt::Display for FecError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FecError::Unsupported => {
                f.write_str("block geometry not supported by the erasure code")
            }
            FecError::Decode => f.write_str("erasure decoding failed"),
        }
    }
}

/// In a position map, "this position holds its own source chunk".
pub const SOURCE: u16 = u16::MAX;

/// Parity symbols a block of `k` source chunks has (R-PAR-2): `k`.
pub fn parity_count(k: u32) -> u32 {
    k
}

/// Whether parity repair is possible for this geometry (R-PAR-2): the shard
/// size must be even and the block at most 32768 chunks.
pub fn supported(chunk_size: u32, chunks_per_block: u32) -> bool {
    chunk_size % 2 == 0 && chunk_size > 0 && (1..=32_768).contains(&chunks_per_block)
}

/// All parity symbols of one block: `block` is its bytes (the last block may
/// be short); returns `parity_count(k)` symbols of `chunk_size` bytes,
/// concatenated.
pub fn encode_block(block: &[u8], chunk_size: usize) -> Result<Vec<u8>, FecError> {
    let k = block.len().div_ceil(chunk_size.max(1));
    if k == 0 || !supported(chunk_size as u32, k as u32) {
        return Err(FecError::Unsupported);
    }
    let r = parity_count(k as u32) as usize;
    let mut enc = DefaultRateEncoder::<Naive>::new(k, r, chunk_size, Naive::default(), None)
        .map_err(|_| FecError::Unsupported)?;
    let mut pad = alloc::vec![0u8; chunk_size];
    for c in block.chunks(chunk_size) {
        let shard = if c.len() == chunk_size {
            c
        } else {
            pad[..c.len()].copy_from_slice(c);
            &pad[..]
        };
        enc.add_original_shard(shard)
            .map_err(|_| FecError::Unsupported)?;
    }
    let res = enc.encode().map_err(|_| FecError::Unsupported)?;
    let mut out = Vec::with_capacity(r * chunk_size);
    for s in res.recovery_iter() {
        out.extend_from_slice(s);
    }
    Ok(out)
}

/// A reusable block decoder, sized once for the largest block.
pub struct BlockDecoder {
    dec: DefaultRateDecoder<Naive>,
}

impl core::fmt::Debug for BlockDecoder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("BlockDecoder")
    }
}

impl BlockDecoder {
    /// A decoder for blocks of up to `k` chunks of `chunk_size` bytes.
    /// Allocates its work space (and, the first time in a process, the
    /// engine's tables) now, not while datagrams arrive.
    pub fn new(k: u32, chunk_size: u32) -> Result<BlockDecoder, FecError> {
        if !supported(chunk_size, k) {
            return Err(FecError::Unsupported);
        }
        let dec = DefaultRateDecoder::<Naive>::new(
            k as usize,
            parity_count(k) as usize,
            chunk_size as usize,
            Naive::default(),
            None,
        )
        .map_err(|_| FecError::Unsupported)?;
        Ok(BlockDecoder { dec })
    }

    /// Rebuild a block in place. `buf` holds `k` positions of `chunk_size`
    /// bytes; position `i` holds source chunk `i` when `parity_at[i]` is
    /// [`SOURCE`], else parity symbol `parity_at[i]`. Exactly `k` symbols are
    /// held. On success every position holds its source chunk.
    pub fn decode(
        &mut self,
        buf: &mut [u8],
        chunk_size: usize,
        parity_at: &[u16],
    ) -> Result<(), FecError> {
        let k = parity_at.len();
        if k == 0 || buf.len() < k * chunk_size {
            return Err(FecError::Decode);
        }
        let r = parity_count(k as u32) as usize;
        self.dec
            .reset(k, r, chunk_size)
            .map_err(|_| FecError::Decode)?;
        for (i, p) in parity_at.iter().enumerate() {
            let shard = &buf[i * chunk_size..(i + 1) * chunk_size];
            match *p {
                SOURCE => self.dec.add_original_shard(i, shard),
                p => self.dec.add_recovery_shard(usize::from(p), shard),
            }
            .map_err(|_| FecError::Decode)?;
        }
        let res = self.dec.decode().map_err(|_| FecError::Decode)?;
        for (i, p) in parity_at.iter().enumerate() {
            if *p != SOURCE {
                let restored = res.restored_original(i).ok_or(FecError::Decode)?;
                buf[i * chunk_size..(i + 1) * chunk_size].copy_from_slice(restored);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn r_par_2_any_k_symbols_rebuild_a_short_last_block() {
        let cs = 64usize;
        let block: Vec<u8> = (0..cs * 5 + 10).map(|i| (i * 31 % 251) as u8).collect();
        let k = block.len().div_ceil(cs);
        let parity = encode_block(&block, cs).expect("encode");
        assert_eq!(parity.len(), k * cs);
        let mut dec = BlockDecoder::new(8, cs as u32).expect("decoder");
        // Lose chunks 1 and 5 (the short one); hold parity 4 and 0 in their places.
        let mut buf = vec![0u8; k * cs];
        buf[..block.len()].copy_from_slice(&block);
        let mut at = vec![SOURCE; k];
        buf[cs..2 * cs].copy_from_slice(&parity[4 * cs..5 * cs]);
        at[1] = 4;
        buf[5 * cs..6 * cs].copy_from_slice(&parity[..cs]);
        at[5] = 0;
        dec.decode(&mut buf, cs, &at).expect("decode");
        assert_eq!(&buf[..block.len()], &block[..]);
        assert!(
            buf[block.len()..].iter().all(|&b| b == 0),
            "padding is zeros"
        );
    }

    #[test]
    fn odd_chunk_sizes_are_unsupported() {
        assert!(!supported(65, 4));
        assert_eq!(encode_block(&[1, 2, 3], 65), Err(FecError::Unsupported));
        assert!(BlockDecoder::new(4, 65).is_err());
    }
}
