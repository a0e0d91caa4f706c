//! The image's geometry as the two servers use it: derived once from the
//! manifest, held by [`crate::sender::Sender`] and
//! [`crate::repair::RepairServer`] instead of each copying the fields.

use crate::manifest::Manifest;
use crate::wire::{self, ImageId};

/// Where the image's blocks and chunks lie (R-WIRE-6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// The image the manifest names.
    pub image_id: ImageId,
    /// Image length in bytes.
    pub image_len: u64,
    /// Block size in bytes.
    pub block_size: u32,
    /// Chunk size in bytes, at least 1.
    pub chunk_size: u32,
    /// Blocks in the image.
    pub block_count: u32,
    /// Chunks in a full block, at least 1.
    pub chunks_per_block: u32,
    /// Chunks in the last block.
    pub last_block_chunks: u32,
    /// Chunks in the image: one past the last global chunk index.
    pub chunk_count: u64,
}

impl Geometry {
    /// The geometry `manifest` describes.
    pub fn of(manifest: &Manifest) -> Geometry {
        let block_count = manifest.block_count();
        let chunks_per_block = manifest.chunks_per_block().max(1);
        let last_block_chunks = manifest.chunks_in_block(block_count.saturating_sub(1));
        Geometry {
            image_id: manifest.image_id,
            image_len: manifest.image_len,
            block_size: manifest.block_size,
            chunk_size: manifest.chunk_size.max(1),
            block_count,
            chunks_per_block,
            last_block_chunks,
            chunk_count: u64::from(block_count.saturating_sub(1)) * u64::from(chunks_per_block)
                + u64::from(last_block_chunks),
        }
    }

    /// One past the last global chunk index, as a `u32` (saturating).
    pub fn chunk_end(&self) -> u32 {
        u32::try_from(self.chunk_count).unwrap_or(u32::MAX)
    }

    /// Chunks in block `block`; 0 past the image.
    pub fn chunks_in_block(&self, block: u32) -> u32 {
        if block.saturating_add(1) < self.block_count {
            self.chunks_per_block
        } else if block.saturating_add(1) == self.block_count {
            self.last_block_chunks
        } else {
            0
        }
    }

    /// The bytes of chunk `chunk` of block `block` within `image` (the
    /// image, or as much of it as has been read).
    pub fn chunk_bytes<'a>(&self, image: &'a [u8], block: u32, chunk: u32) -> Option<&'a [u8]> {
        wire::chunk_bytes(
            image,
            self.image_len,
            self.block_size,
            self.chunk_size,
            block,
            chunk,
        )
    }
}
