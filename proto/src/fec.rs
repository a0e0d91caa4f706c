//! The erasure code of parity repair (rules `R-PAR-*` in PROTOCOL.md), one
//! code per block: a block of `k` source chunks (the short last chunk padded
//! with zeros to `chunk_size`) has `k` parity symbols, indices `0..k`, each
//! `chunk_size` bytes; any `k` distinct symbols of a block rebuild it.
//!
//! Which code a transfer uses follows from its geometry (R-PAR-2): blocks of
//! at most 128 chunks use a Cauchy Reed–Solomon code over GF(2^8)
//! (`cauchy`), larger ones Leopard Reed–Solomon over GF(2^16)
//! (`leopard`). Chosen by measurement (`cargo run --release -p
//! firmcast-proto --example fec_bench` prints it): on blocks of tens of
//! chunks the GF(2^8) code decodes much faster than the GF(2^16) crate's
//! table-light engine and needs no global tables, but it cannot code more
//! than 128 chunks with their parity.
//!
//! Memory: one [`BlockDecoder`] per transfer, allocated when the manifest is
//! accepted, reused for every block.

use alloc::vec;
use alloc::vec::Vec;

mod cauchy;
mod gf256;
mod leopard;

/// Why a block could not be coded.
#[non_exhaustive]
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

/// Whether a transfer's blocks of `chunks_per_block` chunks are coded over
/// GF(2^8) (R-PAR-2); otherwise over GF(2^16).
pub fn uses_gf256(chunks_per_block: u32) -> bool {
    (1..=cauchy::MAX_CHUNKS).contains(&chunks_per_block)
}

/// Whether parity repair is possible for this geometry (R-PAR-2): any chunk
/// size up to 128 chunks per block; beyond that an even chunk size and at
/// most 32768 chunks.
pub fn supported(chunk_size: u32, chunks_per_block: u32) -> bool {
    chunk_size > 0
        && (uses_gf256(chunks_per_block) || leopard::supported(chunk_size, chunks_per_block))
}

/// All parity symbols of one block of a transfer with `chunks_per_block`
/// chunks per block: `block` is its bytes (the last block may be short);
/// returns `parity_count(k)` symbols of `chunk_size` bytes, concatenated.
pub fn encode_block(
    block: &[u8],
    chunk_size: usize,
    chunks_per_block: u32,
) -> Result<Vec<u8>, FecError> {
    let k = block.len().div_ceil(chunk_size.max(1));
    if k == 0 || k > chunks_per_block as usize || !supported(chunk_size as u32, chunks_per_block) {
        return Err(FecError::Unsupported);
    }
    let mut source = vec![0u8; k * chunk_size];
    source[..block.len()].copy_from_slice(block);
    let mut parity = vec![0u8; parity_count(k as u32) as usize * chunk_size];
    if uses_gf256(chunks_per_block) {
        cauchy::encode(&source, &mut parity, chunk_size);
    } else {
        leopard::encode(&source, &mut parity, chunk_size)?;
    }
    Ok(parity)
}

/// Parity symbol `index` alone of one block (`block` its bytes, the last
/// block may be short), into `out` (`chunk_size` bytes). GF(2^8) only, where
/// it costs `k` chunk multiply-adds instead of the `k²` of the whole block;
/// `Unsupported` for GF(2^16) transfers (use [`encode_block`]).
pub fn encode_symbol(
    block: &[u8],
    chunk_size: usize,
    chunks_per_block: u32,
    index: u32,
    out: &mut [u8],
) -> Result<(), FecError> {
    let k = block.len().div_ceil(chunk_size.max(1));
    if k == 0
        || k > chunks_per_block as usize
        || !uses_gf256(chunks_per_block)
        || index as usize >= k
        || out.len() != chunk_size
    {
        return Err(FecError::Unsupported);
    }
    cauchy::encode_symbol(block, chunk_size, index as usize, out);
    Ok(())
}

/// A reusable block decoder, sized once for the largest block.
pub enum BlockDecoder {
    /// GF(2^8), blocks of at most 128 chunks.
    Gf256(cauchy::Decoder),
    /// GF(2^16), larger blocks.
    Gf65536(leopard::Decoder),
}

impl core::fmt::Debug for BlockDecoder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            BlockDecoder::Gf256(_) => "BlockDecoder(GF(2^8))",
            BlockDecoder::Gf65536(_) => "BlockDecoder(GF(2^16))",
        })
    }
}

impl BlockDecoder {
    /// A decoder for a transfer's blocks of up to `chunks_per_block` chunks
    /// of `chunk_size` bytes. Allocates its work space (and, for GF(2^16)
    /// the first time in a process, the engine's tables) now, not while
    /// datagrams arrive.
    /// Without the `parity-decode` feature every geometry is `Unsupported`:
    /// the receiver then ignores parity as it does for a geometry the code
    /// cannot handle, and no decoder is linked.
    pub fn new(chunks_per_block: u32, chunk_size: u32) -> Result<BlockDecoder, FecError> {
        if !cfg!(feature = "parity-decode") || !supported(chunk_size, chunks_per_block) {
            return Err(FecError::Unsupported);
        }
        if uses_gf256(chunks_per_block) {
            cauchy::Decoder::new(chunks_per_block).map(BlockDecoder::Gf256)
        } else {
            leopard::Decoder::new(chunks_per_block, chunk_size).map(BlockDecoder::Gf65536)
        }
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
        match self {
            BlockDecoder::Gf256(d) => d.decode(buf, chunk_size, parity_at),
            BlockDecoder::Gf65536(d) => d.decode(buf, chunk_size, parity_at),
        }
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
        for cpb in [8, 200] {
            let parity = encode_block(&block, cs, cpb).expect("encode");
            assert_eq!(parity.len(), k * cs);
            let mut dec = BlockDecoder::new(cpb, cs as u32).expect("decoder");
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
    }

    #[test]
    fn odd_chunk_sizes_are_unsupported_only_beyond_128_chunks() {
        assert!(supported(65, 4));
        assert!(!supported(65, 129));
        assert_eq!(
            encode_block(&[1, 2, 3], 65, 129),
            Err(FecError::Unsupported)
        );
        assert!(BlockDecoder::new(129, 65).is_err());
        assert!(BlockDecoder::new(4, 65).is_ok());
        assert!(!supported(0, 4));
    }

    #[test]
    fn the_code_follows_the_transfer_geometry_not_the_block() {
        // A short last block of a 256-chunk transfer is still GF(2^16): its
        // parity differs from the GF(2^8) parity of the same bytes.
        let block: Vec<u8> = (0..64 * 4).map(|i| i as u8).collect();
        let small = encode_block(&block, 64, 128).expect("gf256");
        let large = encode_block(&block, 64, 256).expect("gf65536");
        assert_ne!(small, large);
        assert!(matches!(
            BlockDecoder::new(128, 64),
            Ok(BlockDecoder::Gf256(_))
        ));
        assert!(matches!(
            BlockDecoder::new(129, 64),
            Ok(BlockDecoder::Gf65536(_))
        ));
    }
}
