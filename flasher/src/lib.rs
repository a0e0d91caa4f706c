//! firmcast flasher: writes a verified firmware image onto raw flash without
//! ever leaving a board bricked by a torn write.
//!
//! ```text
//!                 ImageWriter<F: Flash>          writer.rs: bad-block map, erase just
//!                         |                       before write, whole pages, read-back
//!                         |                       verify, header last
//!                  trait Flash                    lib.rs: geometry, read, erase, write,
//!                         |                       bad-block query/mark, sync
//!      +-----------+------+------+------------+
//!      |           |             |            |
//!     Mtd       SimNor        SimNand     FileFlash
//!   mtd/ (ioctls  sim.rs (files with real     file.rs (plain file or
//!   in mtd/sys.rs) flash physics + faults)     block device, no physics)
//! ```
//!
//! `target::open_target` turns a string spec (`mtd:firmware`, `simnand:/tmp/x`,
//! `file:/dev/mmcblk0p2`) into a `Box<dyn Flash + Send>`.
//! `uboot_env` reads and writes U-Boot's environment on any `Flash`; `ab` is
//! the A/B slot policy over it (running slot, update target, activation,
//! confirmation), pure decisions the agent saves.
//!
//! # The physics every [`Flash`] implementation follows (and the sims enforce)
//!
//! - Erased flash reads `0xFF`. Erasing works on whole eraseblocks only.
//! - Programming can only clear bits (1 → 0): a write of `new` over `old` is legal
//!   only if `new & old == new`. Getting a 1 back needs an erase.
//! - Writes are aligned to, and a multiple of, `write_size` (1 on NOR, the page
//!   size on NAND). A NAND page is programmed at most once per erase.
//! - NAND has bad eraseblocks; they are skipped (logical eraseblock k is the k-th
//!   good physical one, as `nandwrite` and U-Boot do) and new ones are marked.
//! - A power cut leaves the operation in flight torn: an erase may leave the
//!   eraseblock partly erased, a write may program only part of its bytes. Nothing
//!   after the cut happens. The writer orders its work so that a torn update never
//!   shows a valid new header in front of a partly written image (header last).
//!
//! [`FlashKind::Plain`] (files, eMMC block devices) has none of these rules: a
//! write simply overwrites, so the writer does not erase before writing there.
//!
//! The only `unsafe` code lives in `mtd::sys` (the ioctl mirrors).

use std::fmt;

pub mod ab;
pub mod compare;
pub mod file;
pub mod mtd;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod target;
pub mod uboot_env;
pub mod writer;

pub use compare::{same_bytes, uniform_byte};
pub use file::FileFlash;
pub use mtd::{find_partition, parse_proc_mtd, Mtd};
#[cfg(any(test, feature = "sim"))]
pub use sim::{Faults, SimNand, SimNor};
pub use target::{open_target, TargetSpec};
pub use writer::{ImageWriter, WriterOptions};

/// What kind of medium a [`Flash`] is; decides which physics rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlashKind {
    /// NOR flash: bit-level programming (write size usually 1), no bad blocks.
    Nor,
    /// NAND flash: page programming, once per erase, bad blocks, ECC.
    Nand,
    /// A plain file or block device: writes overwrite, no erase needed.
    Plain,
}

/// Sizes of a flash device or partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// Medium kind.
    pub kind: FlashKind,
    /// Total size in bytes.
    pub size: u64,
    /// Eraseblock size in bytes.
    pub erase_size: u32,
    /// Minimum write unit (NAND page) in bytes; 1 on NOR and plain files.
    pub write_size: u32,
}

impl Geometry {
    /// Number of eraseblocks (a partial last eraseblock of a plain file counts).
    #[must_use]
    pub fn eraseblocks(&self) -> u32 {
        if self.erase_size == 0 {
            return 0;
        }
        u32::try_from(self.size.div_ceil(u64::from(self.erase_size))).unwrap_or(u32::MAX)
    }
}

/// Outcome of a successful read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadStatus {
    /// Data read without ECC correction.
    Clean,
    /// Data read correctly, but ECC corrected this many bitflips (the block is
    /// wearing; the data is good).
    Corrected(u32),
}

/// Raw flash access: the operations an MTD character device offers.
///
/// Addresses are physical byte offsets; `block` arguments are physical
/// eraseblock indices. Implementations refuse, with an [`Error`] and no
/// change, anything the physics forbids (see the crate docs).
pub trait Flash {
    /// Sizes and kind of the medium.
    fn geometry(&self) -> Geometry;
    /// Reads `buf.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<ReadStatus, Error>;
    /// Erases physical eraseblock `block` to all `0xFF`.
    fn erase_block(&mut self, block: u32) -> Result<(), Error>;
    /// Programs `data` at `offset` (aligned to and a multiple of `write_size`).
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), Error>;
    /// Whether physical eraseblock `block` is marked bad (always false on NOR).
    fn is_bad(&mut self, block: u32) -> Result<bool, Error>;
    /// Marks physical eraseblock `block` bad.
    fn mark_bad(&mut self, block: u32) -> Result<(), Error>;
    /// Makes everything written so far durable (a no-op on raw flash).
    fn sync(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

impl<F: Flash + ?Sized> Flash for Box<F> {
    fn geometry(&self) -> Geometry {
        (**self).geometry()
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<ReadStatus, Error> {
        (**self).read(offset, buf)
    }
    fn erase_block(&mut self, block: u32) -> Result<(), Error> {
        (**self).erase_block(block)
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        (**self).write(offset, data)
    }
    fn is_bad(&mut self, block: u32) -> Result<bool, Error> {
        (**self).is_bad(block)
    }
    fn mark_bad(&mut self, block: u32) -> Result<(), Error> {
        (**self).mark_bad(block)
    }
    fn sync(&mut self) -> Result<(), Error> {
        (**self).sync()
    }
}

impl<F: Flash + ?Sized> Flash for &mut F {
    fn geometry(&self) -> Geometry {
        (**self).geometry()
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<ReadStatus, Error> {
        (**self).read(offset, buf)
    }
    fn erase_block(&mut self, block: u32) -> Result<(), Error> {
        (**self).erase_block(block)
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        (**self).write(offset, data)
    }
    fn is_bad(&mut self, block: u32) -> Result<bool, Error> {
        (**self).is_bad(block)
    }
    fn mark_bad(&mut self, block: u32) -> Result<(), Error> {
        (**self).mark_bad(block)
    }
    fn sync(&mut self) -> Result<(), Error> {
        (**self).sync()
    }
}

/// The operation that failed.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Opening the device, file or partition.
    Open,
    /// Reading.
    Read,
    /// Erasing an eraseblock.
    Erase,
    /// Programming.
    Write,
    /// Asking whether an eraseblock is bad.
    BadBlockQuery,
    /// Marking an eraseblock bad.
    MarkBad,
    /// Flushing to stable storage.
    Sync,
    /// Reading back and comparing what was written.
    Verify,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Open => "open",
            Op::Read => "read",
            Op::Erase => "erase",
            Op::Write => "write",
            Op::BadBlockQuery => "bad-block query",
            Op::MarkBad => "mark-bad",
            Op::Sync => "sync",
            Op::Verify => "verify",
        })
    }
}

/// Why an operation failed.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The OS reported an error (`errno` says which).
    Io,
    /// Offset, length or eraseblock index outside the device or image.
    OutOfRange,
    /// Offset or length not a multiple of the write size.
    Unaligned,
    /// Programming would set a 0 bit to 1; the target needs an erase first.
    NotErased,
    /// A NAND page was already programmed since its last erase.
    PageAlreadyProgrammed,
    /// The eraseblock is marked bad.
    BadBlock,
    /// Injected power cut (simulation): this and every later operation fail.
    PowerCut,
    /// ECC could not correct the data.
    Uncorrectable,
    /// Read-back differs from what was written.
    VerifyMismatch,
    /// Not enough good eraseblocks to hold the image.
    NoSpareBlocks,
    /// An eraseblock went bad during this write and was marked bad: the
    /// logical → physical mapping changed, so the caller must rescan.
    NewBadBlock,
    /// No such MTD partition (or other named thing).
    NotFound,
    /// Incompatible sizes (block size vs eraseblock vs page, sidecar vs file).
    Geometry,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Io => "I/O error",
            ErrorKind::OutOfRange => "out of range",
            ErrorKind::Unaligned => "not aligned to the write size",
            ErrorKind::NotErased => "not erased (programming would set a 0 bit to 1)",
            ErrorKind::PageAlreadyProgrammed => "NAND page already programmed since its last erase",
            ErrorKind::BadBlock => "eraseblock is marked bad",
            ErrorKind::PowerCut => "power cut (injected)",
            ErrorKind::Uncorrectable => "uncorrectable ECC error",
            ErrorKind::VerifyMismatch => "read-back does not match what was written",
            ErrorKind::NoSpareBlocks => "not enough good eraseblocks for the image",
            ErrorKind::NewBadBlock => {
                "eraseblock went bad and was marked bad (block map changed, rescan)"
            }
            ErrorKind::NotFound => "not found",
            ErrorKind::Geometry => "incompatible geometry",
        })
    }
}

/// A flasher error: what failed, where, and why (the [`Fault`]'s fields,
/// reached through `Deref`).
///
/// `Display` is one line, e.g. `erase of eraseblock 12 failed: I/O error (errno 5)`.
///
/// Boxed: every read, erase and program returns `Result<_, Error>`, and a
/// pointer comes back in a register instead of the six fields through
/// memory, on the success path too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(Box<Fault>);

/// What an [`Error`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Why it failed.
    pub kind: ErrorKind,
    /// What was being done.
    pub op: Op,
    /// Physical eraseblock involved, if any.
    pub block: Option<u32>,
    /// Byte offset involved, if any (physical unless the detail says otherwise).
    pub offset: Option<u64>,
    /// OS error number, if the OS reported one.
    pub errno: Option<i32>,
    /// Free-text context: the path or spec at fault, what was expected.
    pub detail: Option<String>,
}

impl Error {
    /// A new error with no location.
    #[must_use]
    pub fn new(kind: ErrorKind, op: Op) -> Self {
        Error(Box::new(Fault {
            kind,
            op,
            block: None,
            offset: None,
            errno: None,
            detail: None,
        }))
    }

    /// An [`ErrorKind::Io`] error from a `std::io::Error`, keeping its errno.
    #[must_use]
    pub fn io(op: Op, err: &std::io::Error) -> Self {
        let e = Error::new(ErrorKind::Io, op);
        match err.raw_os_error() {
            Some(n) => e.with_errno(n),
            None => e.with_detail(err.to_string()),
        }
    }

    /// Sets the eraseblock.
    #[must_use]
    pub fn with_block(mut self, block: u32) -> Self {
        self.block = Some(block);
        self
    }

    /// Sets the byte offset.
    #[must_use]
    pub fn with_offset(mut self, offset: u64) -> Self {
        self.offset = Some(offset);
        self
    }

    /// Sets the errno.
    #[must_use]
    pub fn with_errno(mut self, errno: i32) -> Self {
        self.errno = Some(errno);
        self
    }

    /// Sets the detail, or prefixes an existing one (`new: old`).
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        self.detail = Some(match self.detail.take() {
            Some(old) => format!("{detail}: {old}"),
            None => detail,
        });
        self
    }
}

impl std::ops::Deref for Error {
    type Target = Fault;
    fn deref(&self) -> &Fault {
        &self.0
    }
}

impl std::ops::DerefMut for Error {
    fn deref_mut(&mut self) -> &mut Fault {
        &mut self.0
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.op)?;
        if let Some(b) = self.block {
            write!(f, " of eraseblock {b}")?;
        }
        if let Some(o) = self.offset {
            write!(f, " at offset {o:#x}")?;
        }
        f.write_str(" failed: ")?;
        match (self.kind, self.errno) {
            (ErrorKind::Io, Some(n)) => {
                let desc = nix::errno::Errno::from_raw(n).desc();
                write!(f, "{desc} (errno {n})")?;
            }
            (kind, Some(n)) => write!(f, "{kind} (errno {n})")?,
            (kind, None) => write!(f, "{kind}")?,
        }
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
pub(crate) mod testutil {
    //! Shared test helpers: temp dirs and a seeded byte generator.
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A temp dir removed on drop.
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(name: &str) -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "firmcast-flasher-{}-{name}-{n}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }
        pub fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Deterministic pseudo-random bytes (xorshift64*).
    pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s >> 12;
                s ^= s << 25;
                s ^= s >> 27;
                (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_display_is_one_clear_line() {
        let e = Error::new(ErrorKind::Io, Op::Erase)
            .with_block(12)
            .with_errno(5);
        assert_eq!(
            e.to_string(),
            "erase of eraseblock 12 failed: I/O error (errno 5)"
        );
        let e = Error::new(ErrorKind::NotFound, Op::Open).with_detail("no MTD partition \"x\"");
        assert_eq!(
            e.to_string(),
            "open failed: not found: no MTD partition \"x\""
        );
        let e = Error::new(ErrorKind::Unaligned, Op::Write).with_offset(0x801);
        assert_eq!(
            e.to_string(),
            "write at offset 0x801 failed: not aligned to the write size"
        );
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn detail_prefixes() {
        let e = Error::new(ErrorKind::Io, Op::Open)
            .with_detail("inner")
            .with_detail("outer");
        assert_eq!(e.detail.as_deref(), Some("outer: inner"));
    }
}
