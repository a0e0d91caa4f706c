//! [`ReadBackLedger`]: which image blocks have been read back from flash and
//! found right since anything last erased or programmed an eraseblock they
//! lie in.
//!
//! Every erase and program the writer makes goes through
//! [`ReadBackLedger::touch`] first, which stamps the logical eraseblock with
//! a new generation. A block counts as read back when its last confirmed
//! read is newer than every stamp of its eraseblocks: a later write into a
//! shared eraseblock (program disturb, a read-modify-write), a new bad block
//! (every logical eraseblock may have moved) or a caller given the flash
//! mutably ([`ImageWriter::flash_mut`](super::ImageWriter::flash_mut)) all
//! make it stale again, and it must be read once more.
//!
//! Memory is fixed at creation: one `u64` per logical eraseblock and one per
//! image block.

/// See the module docs.
#[derive(Debug)]
pub(crate) struct ReadBackLedger {
    /// The generation the next touch gets. 0 means never; 1 is the flash
    /// as found, so the first touch is 2.
    next: u64,
    /// Per logical eraseblock: generation of its last erase or program.
    touched: Vec<u64>,
    /// Per image block: generation of its last read that the caller
    /// confirmed right (0 = none).
    confirmed: Vec<u64>,
    /// The block last read, if nothing was erased or programmed since: its
    /// bytes are of the latest generation.
    last_read: Option<u32>,
    block_size: u64,
    erase_size: u64,
    image_len: u64,
}

impl ReadBackLedger {
    /// A ledger for `eraseblocks` logical eraseblocks of `erase_size` bytes
    /// under an image of `image_len` bytes in blocks of `block_size`.
    pub(crate) fn new(eraseblocks: u32, erase_size: u64, image_len: u64, block_size: u64) -> Self {
        let blocks = image_len.div_ceil(block_size.max(1));
        ReadBackLedger {
            next: 2,
            touched: vec![0; eraseblocks as usize],
            confirmed: vec![0; usize::try_from(blocks).unwrap_or(0)],
            last_read: None,
            block_size: block_size.max(1),
            erase_size: erase_size.max(1),
            image_len,
        }
    }

    /// Logical eraseblock `l` is about to be erased or programmed.
    pub(crate) fn touch(&mut self, l: u32) {
        if let Some(t) = self.touched.get_mut(l as usize) {
            *t = self.next;
        }
        self.next += 1;
        self.last_read = None;
    }

    /// Anything on the flash may have changed (a new map, a caller holding
    /// the flash mutably): every block is stale.
    pub(crate) fn touch_all(&mut self) {
        self.touched.fill(self.next);
        self.next += 1;
        self.last_read = None;
    }

    /// Block `index` was just read: its bytes are those of now.
    pub(crate) fn read(&mut self, index: u32) {
        self.last_read = Some(index);
    }

    /// The bytes of the last [`read`](Self::read) of `index` were found
    /// right. Nothing happens if anything was erased or programmed since.
    pub(crate) fn confirm(&mut self, index: u32) {
        if self.last_read != Some(index) {
            return;
        }
        if let Some(c) = self.confirmed.get_mut(index as usize) {
            *c = self.next - 1;
        }
    }

    /// Block `index` was just written and read back right.
    pub(crate) fn written_and_checked(&mut self, index: u32) {
        self.read(index);
        self.confirm(index);
    }

    /// Whether block `index` has been read back right since its eraseblocks
    /// were last erased or programmed.
    pub(crate) fn is_read_back(&self, index: u32) -> bool {
        let Some(&confirmed) = self.confirmed.get(index as usize) else {
            return false;
        };
        if confirmed == 0 {
            return false;
        }
        let start = u64::from(index) * self.block_size;
        let end = (start + self.block_size).min(self.image_len);
        if end <= start {
            return false;
        }
        let first = start / self.erase_size;
        let last = (end - 1) / self.erase_size;
        (first..=last).all(|l| {
            usize::try_from(l)
                .ok()
                .and_then(|l| self.touched.get(l))
                .is_some_and(|&t| t <= confirmed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four 4 KiB blocks, two per 8 KiB eraseblock.
    fn shared() -> ReadBackLedger {
        ReadBackLedger::new(2, 8192, 4 * 4096, 4096)
    }

    #[test]
    fn a_block_written_and_checked_is_read_back_until_its_eraseblock_is_touched() {
        let mut l = shared();
        assert!(!l.is_read_back(0), "never read");
        l.touch(0);
        l.written_and_checked(0);
        assert!(l.is_read_back(0));
        // Block 1 shares eraseblock 0: writing it makes block 0 stale.
        l.touch(0);
        l.written_and_checked(1);
        assert!(!l.is_read_back(0));
        assert!(l.is_read_back(1));
        // Eraseblock 1 is another one: blocks 0 and 1 are unaffected.
        l.touch(1);
        assert!(l.is_read_back(1));
        assert!(!l.is_read_back(2));
    }

    #[test]
    fn a_confirm_counts_only_for_the_block_read_and_only_with_no_touch_between() {
        let mut l = shared();
        l.touch(1);
        l.read(2);
        l.confirm(3);
        assert!(!l.is_read_back(3), "block 3 was not the one read");
        l.read(2);
        l.touch(1);
        l.confirm(2);
        assert!(
            !l.is_read_back(2),
            "a write came between the read and the confirm"
        );
        l.read(2);
        l.confirm(2);
        assert!(l.is_read_back(2));
        l.touch_all();
        assert!(!l.is_read_back(2));
    }

    #[test]
    fn a_block_spanning_eraseblocks_is_stale_when_any_of_them_is_touched() {
        // Two 8 KiB blocks over four 4 KiB eraseblocks, the last block short.
        let mut l = ReadBackLedger::new(4, 4096, 8192 + 100, 8192);
        l.written_and_checked(0);
        l.written_and_checked(1);
        assert!(l.is_read_back(0) && l.is_read_back(1));
        l.touch(1);
        assert!(!l.is_read_back(0));
        assert!(l.is_read_back(1));
        l.touch(3);
        assert!(
            l.is_read_back(1),
            "block 1 (100 bytes) lies in eraseblock 2 only"
        );
        l.touch(2);
        assert!(!l.is_read_back(1));
        assert!(!l.is_read_back(2), "out of the image");
    }
}
