//! [`FileFlash`]: a plain file or block device (eMMC partition, loop device)
//! seen as a [`Flash`] of kind [`FlashKind::Plain`].
//!
//! No physics: a write overwrites whatever is there, there are no bad blocks,
//! and "erase" just writes `0xFF`. The eraseblock size is the writer's choice
//! ([`DEFAULT_ERASE_SIZE`] unless set with [`FileFlash::with_erase_size`]).

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::{Error, ErrorKind, Flash, FlashKind, Geometry, Op, ReadStatus};

/// Eraseblock size reported by a [`FileFlash`] unless changed.
pub const DEFAULT_ERASE_SIZE: u32 = 64 * 1024;

/// A plain file or block device as a [`Flash`].
#[derive(Debug)]
pub struct FileFlash {
    file: File,
    path: PathBuf,
    size: u64,
    erase_size: u32,
}

impl FileFlash {
    /// Opens `path` read-write.
    ///
    /// If the file does not exist it is created only when `size_hint` is
    /// `Some` (with that length). A regular file shorter than `size_hint` is
    /// extended. The size of a block device is taken from the device.
    ///
    /// A symbolic link is never followed (`O_NOFOLLOW`, R-LOCAL-2): whoever
    /// can plant a link where the target should be would otherwise aim a
    /// root daemon's writes at any file. Only the last path component is
    /// checked; the agent checks that the directories above it are root's
    /// (R-LOCAL-1).
    pub fn open(path: impl AsRef<Path>, size_hint: Option<u64>) -> Result<Self, Error> {
        let path = path.as_ref();
        let fail =
            |e: &std::io::Error| Error::io(Op::Open, e).with_detail(path.display().to_string());
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(size_hint.is_some())
            .truncate(false)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(nix::libc::ELOOP) {
                    Error::io(Op::Open, &e).with_detail(format!(
                        "{} is a symbolic link; file: targets are not followed through links (name the real file or device)",
                        path.display()
                    ))
                } else {
                    fail(&e)
                }
            })?;
        let meta = file.metadata().map_err(|e| fail(&e))?;
        if meta.is_file() {
            if let Some(hint) = size_hint {
                if meta.len() < hint {
                    file.set_len(hint).map_err(|e| fail(&e))?;
                }
            }
        }
        // Block devices report a zero length in metadata; seeking to the end works for both.
        let size = file.seek(SeekFrom::End(0)).map_err(|e| fail(&e))?;
        Ok(FileFlash {
            file,
            path: path.to_path_buf(),
            size,
            erase_size: DEFAULT_ERASE_SIZE,
        })
    }

    /// Sets the eraseblock size this file reports (must be non-zero).
    #[must_use]
    pub fn with_erase_size(mut self, erase_size: u32) -> Self {
        self.erase_size = erase_size.max(1);
        self
    }

    /// The path this was opened from.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check(&self, op: Op, offset: u64, len: usize) -> Result<(), Error> {
        let end = offset.checked_add(len as u64);
        match end {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(Error::new(ErrorKind::OutOfRange, op)
                .with_offset(offset)
                .with_detail(format!(
                    "{} bytes past the end of {} ({} bytes)",
                    len,
                    self.path.display(),
                    self.size
                ))),
        }
    }
}

impl Flash for FileFlash {
    fn geometry(&self) -> Geometry {
        Geometry {
            kind: FlashKind::Plain,
            size: self.size,
            erase_size: self.erase_size,
            write_size: 1,
        }
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<ReadStatus, Error> {
        self.check(Op::Read, offset, buf.len())?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| Error::io(Op::Read, &e).with_offset(offset))?;
        Ok(ReadStatus::Clean)
    }

    fn erase_block(&mut self, block: u32) -> Result<(), Error> {
        let start = u64::from(block) * u64::from(self.erase_size);
        if start >= self.size {
            return Err(Error::new(ErrorKind::OutOfRange, Op::Erase).with_block(block));
        }
        let end = (start + u64::from(self.erase_size)).min(self.size);
        let ff = [0xFFu8; 4096];
        let mut off = start;
        while off < end {
            let n = (end - off).min(ff.len() as u64) as usize;
            self.file
                .write_all_at(&ff[..n], off)
                .map_err(|e| Error::io(Op::Erase, &e).with_block(block).with_offset(off))?;
            off += n as u64;
        }
        Ok(())
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.check(Op::Write, offset, data.len())?;
        self.file
            .write_all_at(data, offset)
            .map_err(|e| Error::io(Op::Write, &e).with_offset(offset))
    }

    fn is_bad(&mut self, _block: u32) -> Result<bool, Error> {
        Ok(false)
    }

    fn mark_bad(&mut self, block: u32) -> Result<(), Error> {
        Err(Error::new(ErrorKind::Io, Op::MarkBad)
            .with_block(block)
            .with_errno(nix::libc::EOPNOTSUPP)
            .with_detail(format!("{} has no bad blocks", self.path.display())))
    }

    fn sync(&mut self) -> Result<(), Error> {
        self.file.sync_data().map_err(|e| Error::io(Op::Sync, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn open_missing_without_hint_fails_naming_path() {
        let dir = TempDir::new("file-missing");
        let p = dir.join("nope.img");
        let err = FileFlash::open(&p, None).expect_err("must fail");
        assert_eq!(err.kind, ErrorKind::Io);
        assert_eq!(err.errno, Some(nix::libc::ENOENT));
        assert!(err.to_string().contains("nope.img"), "{err}");
        assert!(!p.exists());
    }

    /// R-LOCAL-2: a link at the target path is an error naming the path, and
    /// neither the file it points to nor a dangling link's target is touched.
    #[test]
    fn symlink_target_is_refused() {
        let dir = TempDir::new("file-symlink");
        let victim = dir.join("victim");
        std::fs::write(&victim, b"precious").expect("write");
        let link = dir.join("slot.img");
        std::os::unix::fs::symlink(&victim, &link).expect("symlink");
        let err = FileFlash::open(&link, Some(100_000)).expect_err("a link");
        assert_eq!(err.errno, Some(nix::libc::ELOOP));
        let msg = err.to_string();
        assert!(
            msg.contains("slot.img") && msg.contains("symbolic link"),
            "{msg}"
        );
        assert_eq!(std::fs::read(&victim).expect("read"), b"precious");
        let dangling = dir.join("dangling.img");
        let nowhere = dir.join("created-through-link");
        std::os::unix::fs::symlink(&nowhere, &dangling).expect("symlink");
        assert!(FileFlash::open(&dangling, Some(4096)).is_err());
        assert!(!nowhere.exists(), "created a file through a dangling link");
        println!("symlinked file: target refused: {msg}");
    }

    #[test]
    fn create_read_write_erase() {
        let dir = TempDir::new("file-rw");
        let p = dir.join("slot.img");
        let mut f = FileFlash::open(&p, Some(100_000)).expect("create");
        let g = f.geometry();
        assert_eq!(g.kind, FlashKind::Plain);
        assert_eq!(g.size, 100_000);
        assert_eq!(g.eraseblocks(), 2);
        f.write(10, b"hello").expect("write");
        f.write(10, b"HELLO")
            .expect("overwrite is fine on plain files");
        let mut buf = [0u8; 5];
        f.read(10, &mut buf).expect("read");
        assert_eq!(&buf, b"HELLO");
        f.erase_block(1).expect("erase partial last block");
        let mut tail = vec![0u8; 100_000 - 65_536];
        f.read(65_536, &mut tail).expect("read");
        assert!(tail.iter().all(|&b| b == 0xFF));
        assert_eq!(
            f.write(99_999, b"xy").expect_err("past end").kind,
            ErrorKind::OutOfRange
        );
        assert!(!f.is_bad(0).expect("is_bad"));
        f.sync().expect("sync");
        drop(f);
        // Reopen without a hint: the existing file is used as is.
        let f = FileFlash::open(&p, None).expect("reopen");
        assert_eq!(f.geometry().size, 100_000);
    }
}
