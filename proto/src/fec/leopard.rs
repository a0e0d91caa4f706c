//! The GF(2^16) block code of R-PAR-2 for blocks of more than
//! [`super::cauchy::MAX_CHUNKS`] chunks: Reed–Solomon as in Leopard-RS
//! (`reed-solomon-simd`, `original_count = recovery_count = k`,
//! `shard_bytes = chunk_size`). The device uses the crate's `Naive` engine:
//! its global tables are about 450 KiB, built the first time a coder is made
//! (the `NoSimd` and SIMD engines build 8.6 MiB, too much for a router).

use reed_solomon_simd::engine::Naive;
use reed_solomon_simd::rate::{DefaultRateDecoder, DefaultRateEncoder, RateDecoder, RateEncoder};

use super::{FecError, SOURCE};

/// Whether this code can carry the geometry: even shards, at most 32768 chunks.
pub fn supported(chunk_size: u32, k: u32) -> bool {
    chunk_size % 2 == 0 && chunk_size > 0 && (1..=32_768).contains(&k)
}

/// Parity symbols `0..k` of `source` (`k · chunk_size` bytes), into `parity`.
pub fn encode(source: &[u8], parity: &mut [u8], chunk_size: usize) -> Result<(), FecError> {
    let k = source.len() / chunk_size;
    let mut enc = DefaultRateEncoder::<Naive>::new(k, k, chunk_size, Naive::default(), None)
        .map_err(|_| FecError::Unsupported)?;
    for shard in source.chunks_exact(chunk_size) {
        enc.add_original_shard(shard)
            .map_err(|_| FecError::Unsupported)?;
    }
    let res = enc.encode().map_err(|_| FecError::Unsupported)?;
    for (dst, s) in parity.chunks_exact_mut(chunk_size).zip(res.recovery_iter()) {
        dst.copy_from_slice(s);
    }
    Ok(())
}

/// A reusable decoder (and, the first time in a process, the engine's tables).
pub struct Decoder {
    dec: DefaultRateDecoder<Naive>,
}

impl Decoder {
    /// Work space for blocks of up to `k` chunks of `chunk_size` bytes.
    pub fn new(k: u32, chunk_size: u32) -> Result<Decoder, FecError> {
        if !supported(chunk_size, k) {
            return Err(FecError::Unsupported);
        }
        let dec = DefaultRateDecoder::<Naive>::new(
            k as usize,
            k as usize,
            chunk_size as usize,
            Naive::default(),
            None,
        )
        .map_err(|_| FecError::Unsupported)?;
        Ok(Decoder { dec })
    }

    /// Rebuild in place, as [`super::BlockDecoder::decode`] describes.
    ///
    /// Never inlined: the crate's decoder keeps a table of every field
    /// element on the stack, and inlined into the receiver's `decode_slot`
    /// that frame (probed page by page on entry) would be paid by every
    /// GF(2^8) decode too, whose blocks never come here.
    #[inline(never)]
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
        self.dec
            .reset(k, k, chunk_size)
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
