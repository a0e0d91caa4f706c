//! The relay's image: blocks read back from the cache file as the download
//! brings them, each checked against the signed manifest before the send
//! loop may send a byte of it (R-RELAY-3).
//!
//! Like `firmcast send` the relay keeps the image in memory (the carousel
//! and the repair server read any verified block at any time); the cache
//! file holds the download, so a restarted relay resumes it by Range.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::error::{runtime, Error};
use crate::feed::Blocks;
use crate::manifest_file::{block_span, check_block, ManifestInfo};

use super::fetch::Download;

/// The blocks the download has brought and the manifest vouched for.
pub struct CachedImage {
    info: ManifestInfo,
    image_url: String,
    manifest_url: String,
    file: File,
    download: Arc<Download>,
    bytes: Vec<u8>,
    ready: usize,
}

impl CachedImage {
    /// Blocks of `info` from `file` as `download` fills it.
    pub fn new(
        info: ManifestInfo,
        image_url: String,
        manifest_url: String,
        file: File,
        download: Arc<Download>,
    ) -> Result<Self, Error> {
        let len = usize::try_from(info.image_len).map_err(|_| {
            runtime(format!(
                "{image_url}: {} bytes do not fit in memory",
                info.image_len
            ))
        })?;
        Ok(CachedImage {
            info,
            image_url,
            manifest_url,
            file,
            download,
            bytes: vec![0; len],
            ready: 0,
        })
    }
}

impl Blocks for CachedImage {
    fn through(&mut self, end: usize) -> Result<bool, Error> {
        while self.ready < end.min(self.info.block_count()) {
            let i = self.ready;
            let span = block_span(&self.info, i);
            if self.download.have() < span.end as u64 {
                if let Some(why) = self.download.failed() {
                    return Err(runtime(format!(
                        "downloading {}: {why}; block {i} (bytes {}..{}) never arrived",
                        self.image_url, span.start, span.end
                    )));
                }
                return Ok(false);
            }
            let block = &mut self.bytes[span.clone()];
            self.file
                .read_exact_at(block, span.start as u64)
                .map_err(|e| runtime(format!("cache file: reading block {i}: {e}")))?;
            // R-RELAY-3: a block that differs from the signed manifest ends
            // the relay before any byte of it is sent.
            if let Err(e) = check_block(
                &self.info,
                i,
                block,
                Path::new(&self.image_url),
                Path::new(&self.manifest_url),
            ) {
                // Not even the buffer keeps what the origin got wrong.
                block.fill(0);
                return Err(runtime(format!(
                    "refusing the origin's image: {e}; nothing of block {i} was sent"
                )));
            }
            self.ready += 1;
            if i == 0 {
                self.download.note_block_0();
            }
        }
        Ok(true)
    }

    fn more(&mut self, n: usize) -> Result<(), Error> {
        self.through(self.ready.saturating_add(n)).map(|_| ())
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn ready(&self) -> &[u8] {
        let end = match self.ready {
            0 => 0,
            n => block_span(&self.info, n - 1).end,
        };
        &self.bytes[..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest_file::parse_unverified;
    use crate::manifest_file::tests::fixture;
    use std::io::Write;

    /// The fixture's image in a cache file as far as `have` bytes, with
    /// byte `flip` changed; the image, the checked blocks and the download.
    fn cached(flip: Option<usize>) -> (Vec<u8>, CachedImage, tempfile::NamedTempFile) {
        let (_kp, image, signed) = fixture();
        let info = parse_unverified(&signed).expect("parse");
        let mut on_disk = image.clone();
        if let Some(at) = flip {
            on_disk[at] ^= 1;
        }
        let mut f = tempfile::NamedTempFile::new().expect("temp");
        f.write_all(&on_disk).expect("write");
        let file = File::open(f.path()).expect("open");
        let c = CachedImage::new(
            info,
            "https://o/fw.img".into(),
            "https://o/fw.manifest".into(),
            file,
            Arc::new(Download::default()),
        )
        .expect("new");
        (image, c, f)
    }

    #[test]
    fn r_relay_3_a_block_waits_for_its_last_byte_then_is_checked() {
        let (image, mut c, _f) = cached(None);
        assert!(!c.through(1).expect("no error"), "nothing downloaded");
        assert!(c.ready().is_empty());
        c.download.set_have(4095);
        assert!(!c.through(1).expect("no error"), "one byte short");
        c.download.set_have(4096 + 10);
        assert!(c.through(1).expect("block 0"));
        assert_eq!(c.ready(), &image[..4096]);
        assert!(!c.through(2).expect("no error"), "block 1 not in");
        c.download.set_have(image.len() as u64);
        c.more(usize::MAX).expect("all");
        assert_eq!(c.ready(), &image[..]);
        assert_eq!(c.bytes(), &image[..]);
    }

    #[test]
    fn r_relay_3_a_tampered_block_is_named_and_never_ready() {
        let (image, mut c, _f) = cached(Some(4096 + 7));
        c.download.set_have(image.len() as u64);
        let err = c.through(3).expect_err("block 1 differs").to_string();
        println!("{err}");
        assert!(err.contains("block 1 (bytes 4096..8192)"), "{err}");
        assert!(err.contains("https://o/fw.img") && err.contains("nothing of block 1 was sent"));
        assert_eq!(c.ready(), &image[..4096], "only block 0 can be sent");
        assert!(c.bytes()[4096..].iter().all(|&b| b == 0));
    }

    #[test]
    fn r_relay_2_a_download_that_gave_up_ends_the_wait_with_the_reason() {
        let (_, mut c, _f) = cached(None);
        c.download.give_up("HTTP status 404".into());
        let err = c.through(1).expect_err("gave up").to_string();
        assert!(
            err.contains("HTTP status 404") && err.contains("block 0"),
            "{err}"
        );
    }
}
