//! Chunk-hash lists (R-AUTH-1, R-AUTH-2): how a block's list is cut into
//! ChunkList frames and built from the image. Shared by the sender, which
//! sends the pieces ahead of each block, and the receiver, which places them.
//!
//! A block's list is the [`CHUNK_HASH_LEN`]-byte hash of each of its chunks
//! in order; a format 2 manifest signs its SHA-256 as the block's digest. A
//! piece carries at most `chunk_size / CHUNK_HASH_LEN` hashes, so a ChunkList
//! frame is never larger than a Data frame; piece `p` starts at hash
//! `p * hashes_per_piece`.

use crate::manifest::{chunk_hash, CHUNK_HASH_LEN};
use crate::wire;

/// Hashes in one ChunkList piece for this chunk size (at least 4: chunk
/// sizes start at 64 bytes).
pub fn hashes_per_piece(chunk_size: u32) -> u32 {
    (chunk_size as usize / CHUNK_HASH_LEN).max(1) as u32
}

/// Pieces of the list of a block of `chunks` chunks.
pub fn pieces(chunks: u32, chunk_size: u32) -> u32 {
    chunks.div_ceil(hashes_per_piece(chunk_size))
}

/// The hashes piece `piece` of a block of `chunks` chunks carries:
/// `(first, count)`; `None` past the end of the list.
pub fn piece_span(chunks: u32, chunk_size: u32, piece: u32) -> Option<(u32, u32)> {
    let per = hashes_per_piece(chunk_size);
    let first = piece.checked_mul(per)?;
    if first >= chunks {
        return None;
    }
    Some((first, (chunks - first).min(per)))
}

/// Write the hashes of chunks `first..first + count` of block `block` of
/// `image` (an image of `image_len` bytes in this geometry) into `out`;
/// returns the bytes written, `None` where the image is short or `out` too
/// small.
pub fn fill_piece(
    image: &[u8],
    image_len: u64,
    block_size: u32,
    chunk_size: u32,
    block: u32,
    (first, count): (u32, u32),
    out: &mut [u8],
) -> Option<usize> {
    let len = count as usize * CHUNK_HASH_LEN;
    let out = out.get_mut(..len)?;
    for (i, h) in out.chunks_exact_mut(CHUNK_HASH_LEN).enumerate() {
        let chunk = first + i as u32;
        let bytes = wire::chunk_bytes(image, image_len, block_size, chunk_size, block, chunk)?;
        h.copy_from_slice(&chunk_hash(bytes));
    }
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sender::testutil::{image, manifest_format};
    use crate::sender::{Sender, SenderConfig};
    use crate::time::Instant;
    use crate::wire::{decode, Frame, MAX_DATAGRAM};
    use alloc::vec;
    use alloc::vec::Vec;

    #[test]
    fn r_auth_2_pieces_cover_the_list_once_and_fit_a_data_frame() {
        for (chunks, cs) in [(47u32, 1408u32), (64, 1024), (16384, 64), (1, 64), (5, 64)] {
            let n = pieces(chunks, cs);
            let mut next = 0;
            for p in 0..n {
                let (first, count) = piece_span(chunks, cs, p).expect("in range");
                assert_eq!(first, next);
                assert!(count as usize * CHUNK_HASH_LEN <= cs as usize);
                next = first + count;
            }
            assert_eq!(next, chunks);
            assert_eq!(piece_span(chunks, cs, n), None);
        }
        assert_eq!(
            pieces(47, 1408),
            1,
            "the default geometry's list is one frame"
        );
    }

    #[test]
    fn r_auth_2_each_blocks_chunk_list_goes_just_before_its_first_chunk() {
        let img = image(10_000);
        let (m, signed) = manifest_format(&img, 4096, 1024, crate::manifest::MANIFEST_FORMAT);
        let mut cfg = SenderConfig::new(42, 10_000_000);
        cfg.manifest_repeats_per_pass = 0;
        cfg.manifest_lead_copies = 1;
        let mut s = Sender::new(cfg, &m, signed, Instant::ZERO);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut now = Instant::ZERO;
        let (mut lists, mut prev) = (Vec::new(), None);
        while lists.len() < 3 {
            let Some(t) = s.poll_transmit(now, &img, &mut buf) else {
                now = s.poll_timeout().expect("deadline");
                continue;
            };
            match decode(&buf[..t.len]).expect("decodes").1 {
                Frame::ChunkList(l) => {
                    assert_eq!(l.first, 0);
                    let block = &img[l.block as usize * 4096..];
                    let block = &block[..block.len().min(4096)];
                    assert!(
                        m.digest(l.block) == Some(&crate::manifest::chunk_list_digest(l.hashes.0))
                    );
                    assert_eq!(
                        m.digest_of(block),
                        crate::manifest::chunk_list_digest(l.hashes.0)
                    );
                    lists.push(l.block);
                    prev = Some(l.block);
                }
                Frame::Data(d) if d.chunk == 0 => {
                    assert_eq!(prev.take(), Some(d.block), "the list just before chunk 0")
                }
                _ => {}
            }
        }
        assert_eq!(lists, [0, 1, 2]);
        assert_eq!(s.stats().chunk_lists, 3);
    }
}
