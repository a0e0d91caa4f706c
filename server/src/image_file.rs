//! The image `firmcast send` sends, read from its file a block at a time
//! just before the carousel first reaches it, each block checked against the
//! manifest as it is read.
//!
//! Reading a 32 MiB image whole before the first datagram (the copy and
//! 8,192 page faults) and hashing it kept the carousel back by tens of
//! milliseconds, a per cent of a 100 Mbit/s update. Here the buffer is
//! allocated zeroed (the kernel hands out its pages only when a block is
//! read into them), the first block is read at once, and the send
//! loop asks for the block its next chunk comes from before sending it, and
//! for a few more each turn, so no byte of a block that differs from the
//! manifest ever goes out; the repair server is given the blocks read so far
//! ([`StreamedImage::ready`]) and keeps requests for the rest queued.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{config, runtime, Error};
use crate::manifest_file::{block_span, check_block, check_length, ManifestInfo};

/// An image file being read and checked in block order.
pub struct StreamedImage<'a> {
    info: &'a ManifestInfo,
    image_path: &'a Path,
    manifest_path: &'a Path,
    file: File,
    /// `info.image_len` bytes; blocks `0..ready` hold the image, the rest zeros.
    bytes: Vec<u8>,
    ready: usize,
}

impl<'a> StreamedImage<'a> {
    /// Open `image_path`, check its length against the manifest, and read
    /// and check block 0.
    pub fn open(
        info: &'a ManifestInfo,
        image_path: &'a Path,
        manifest_path: &'a Path,
    ) -> Result<Self, Error> {
        let file = File::open(image_path)
            .map_err(|e| config(format!("image {}: {e}", image_path.display())))?;
        let len = file
            .metadata()
            .map_err(|e| config(format!("image {}: {e}", image_path.display())))?
            .len();
        check_length(info, len, image_path, manifest_path)?;
        let len = usize::try_from(len).map_err(|_| {
            config(format!(
                "image {}: {len} bytes do not fit in memory",
                image_path.display()
            ))
        })?;
        let mut image = StreamedImage {
            info,
            image_path,
            manifest_path,
            file,
            bytes: vec![0; len],
            ready: 0,
        };
        image.through(1)?;
        Ok(image)
    }

    /// Read and check blocks up to `end` (exclusive); the error names the
    /// first block that cannot be read or does not match.
    pub fn through(&mut self, end: usize) -> Result<(), Error> {
        while self.ready < end.min(self.info.block_count()) {
            let i = self.ready;
            let span = block_span(self.info, i);
            let block = &mut self.bytes[span.clone()];
            self.file.read_exact(block).map_err(|e| {
                runtime(format!(
                    "image {}: reading block {i} (bytes {}..{}): {e}",
                    self.image_path.display(),
                    span.start,
                    span.end
                ))
            })?;
            check_block(self.info, i, block, self.image_path, self.manifest_path)?;
            self.ready += 1;
        }
        Ok(())
    }

    /// Read and check up to `n` more blocks.
    pub fn more(&mut self, n: usize) -> Result<(), Error> {
        self.through(self.ready.saturating_add(n))
    }

    /// Every block is read and matches.
    pub fn is_complete(&self) -> bool {
        self.ready >= self.info.block_count()
    }

    /// The image: blocks `0..ready` as read, zeros after them. Callers send
    /// only what [`StreamedImage::through`] has vouched for.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The blocks read and checked so far, as a prefix of the image (the
    /// repair server serves only blocks inside what it is given).
    pub fn ready(&self) -> &[u8] {
        let end = match self.ready {
            0 => 0,
            n => block_span(self.info, n - 1).end,
        };
        &self.bytes[..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest_file::parse_unverified;
    use crate::manifest_file::tests::fixture;

    fn write_fixture(
        dir: &Path,
        flip: Option<usize>,
    ) -> (ManifestInfo, std::path::PathBuf, Vec<u8>) {
        let (_kp, image, signed) = fixture();
        let mut on_disk = image.clone();
        if let Some(at) = flip {
            on_disk[at] ^= 1;
        }
        let path = dir.join("fw.bin");
        std::fs::write(&path, &on_disk).expect("write image");
        (parse_unverified(&signed).expect("parse"), path, image)
    }

    #[test]
    fn blocks_arrive_in_order_and_only_when_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (info, path, image) = write_fixture(dir.path(), None);
        let m = Path::new("fw.manifest");
        let mut s = StreamedImage::open(&info, &path, m).expect("open");
        assert_eq!(s.bytes().len(), image.len());
        assert_eq!(
            &s.bytes()[..4096],
            &image[..4096],
            "block 0 is read at once"
        );
        assert!(s.bytes()[4096..].iter().all(|&b| b == 0), "the rest is not");
        assert!(!s.is_complete());
        assert_eq!(s.ready(), &image[..4096]);
        s.more(1).expect("block 1");
        assert_eq!(&s.bytes()[..8192], &image[..8192]);
        assert_eq!(s.ready(), &image[..8192]);
        s.through(usize::MAX).expect("all");
        assert!(s.is_complete());
        assert_eq!(s.bytes(), &image[..], "the short last block too");
        assert_eq!(s.ready(), &image[..]);
    }

    #[test]
    fn a_block_that_differs_is_named_when_reached_and_never_exposed_as_ready() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (info, path, _) = write_fixture(dir.path(), Some(5000));
        let m = Path::new("fw.manifest");
        let mut s = StreamedImage::open(&info, &path, m).expect("block 0 matches");
        let err = s.through(3).expect_err("block 1 differs");
        let msg = err.to_string();
        assert!(msg.contains("block 1 (bytes 4096..8192)"), "{msg}");
        assert!(
            msg.contains("fw.bin") && msg.contains("fw.manifest"),
            "{msg}"
        );
        assert!(!s.is_complete());
    }

    #[test]
    fn wrong_length_and_missing_files_are_refused_with_their_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (info, path, image) = write_fixture(dir.path(), None);
        let m = Path::new("fw.manifest");
        std::fs::write(&path, &image[..100]).expect("truncate");
        let err = StreamedImage::open(&info, &path, m).err().expect("short");
        assert!(
            err.to_string().contains("is 100 bytes but manifest"),
            "{err}"
        );
        let gone = dir.path().join("gone.bin");
        let err = StreamedImage::open(&info, &gone, m).err().expect("missing");
        assert!(err.to_string().contains("gone.bin"), "{err}");
    }
}
