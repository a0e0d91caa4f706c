//! Real MTD character devices (`/dev/mtdN`) as [`Flash`], and partition
//! lookup by name in `/proc/mtd`.
//!
//! Reads and writes are `pread`/`pwrite` on the character device; erase, bad
//! blocks and ECC statistics are ioctls (see [`sys`]). The kernel's `mtdchar`
//! returns data even when ECC corrected bitflips or failed, so a NAND read
//! compares ECCGETSTATS before and after to report
//! [`ReadStatus::Corrected`] or [`ErrorKind::Uncorrectable`].

pub mod sys;

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::{Error, ErrorKind, Flash, FlashKind, Geometry, Op, ReadStatus};

const EUCLEAN: i32 = 117;
const EBADMSG: i32 = 74;

/// An open MTD character device.
#[derive(Debug)]
pub struct Mtd {
    file: File,
    path: PathBuf,
    geometry: Geometry,
    info: sys::MtdInfoUser,
}

/// NAND iff pages are larger than a byte and the driver says NAND; mtdram and
/// block2mtd report `ram` with write size 1 and behave like NOR.
fn kind_of(info: &sys::MtdInfoUser) -> FlashKind {
    if info.writesize > 1
        && (info.type_ == sys::MTD_NANDFLASH || info.type_ == sys::MTD_MLCNANDFLASH)
    {
        FlashKind::Nand
    } else {
        FlashKind::Nor
    }
}

impl Mtd {
    /// Opens `path` (e.g. `/dev/mtd3`) with `O_RDWR | O_SYNC` and reads its
    /// geometry with MEMGETINFO.
    pub fn open(path: impl AsRef<Path>) -> Result<Mtd, Error> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_SYNC)
            .open(path)
            .map_err(|e| Error::io(Op::Open, &e).with_detail(path.display().to_string()))?;
        let info = sys::get_info(file.as_fd()).map_err(|errno| {
            Error::new(ErrorKind::Io, Op::Open)
                .with_errno(errno as i32)
                .with_detail(format!(
                    "MEMGETINFO on {} (not an MTD device?)",
                    path.display()
                ))
        })?;
        let geometry = Geometry {
            kind: kind_of(&info),
            size: u64::from(info.size),
            erase_size: info.erasesize,
            write_size: info.writesize.max(1),
        };
        if geometry.erase_size == 0 {
            return Err(Error::new(ErrorKind::Geometry, Op::Open)
                .with_detail(format!("{} reports eraseblock size 0", path.display())));
        }
        Ok(Mtd {
            file,
            path: path.to_path_buf(),
            geometry,
            info,
        })
    }

    /// The device path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw MEMGETINFO answer (type, flags, OOB size).
    #[must_use]
    pub fn info(&self) -> &sys::MtdInfoUser {
        &self.info
    }

    fn block_offset(&self, op: Op, block: u32) -> Result<i64, Error> {
        let off = u64::from(block) * u64::from(self.geometry.erase_size);
        if off >= self.geometry.size {
            return Err(Error::new(ErrorKind::OutOfRange, op)
                .with_block(block)
                .with_detail(self.path.display().to_string()));
        }
        i64::try_from(off).map_err(|_| Error::new(ErrorKind::OutOfRange, op).with_block(block))
    }

    fn ecc(&self) -> Option<sys::MtdEccStats> {
        if self.geometry.kind == FlashKind::Nand {
            sys::ecc_stats(self.file.as_fd()).ok()
        } else {
            None
        }
    }

    fn check_range(&self, op: Op, offset: u64, len: usize) -> Result<(), Error> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.geometry.size => Ok(()),
            _ => Err(Error::new(ErrorKind::OutOfRange, op)
                .with_offset(offset)
                .with_detail(self.path.display().to_string())),
        }
    }
}

impl Flash for Mtd {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<ReadStatus, Error> {
        self.check_range(Op::Read, offset, buf.len())?;
        let before = self.ecc();
        let mut corrected_errno = false;
        let mut done = 0usize;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => {
                    return Err(Error::new(ErrorKind::OutOfRange, Op::Read)
                        .with_offset(offset + done as u64)
                        .with_detail("unexpected end of device"));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // Older kernels may hand EUCLEAN to user space: the data is fine
                // after correction, so read again and report the correction.
                Err(e) if e.raw_os_error() == Some(EUCLEAN) && !corrected_errno => {
                    corrected_errno = true;
                }
                Err(e) if e.raw_os_error() == Some(EBADMSG) => {
                    let at = offset + done as u64;
                    return Err(Error::new(ErrorKind::Uncorrectable, Op::Read)
                        .with_offset(at)
                        .with_block((at / u64::from(self.geometry.erase_size)) as u32)
                        .with_errno(EBADMSG));
                }
                Err(e) => return Err(Error::io(Op::Read, &e).with_offset(offset + done as u64)),
            }
        }
        let after = self.ecc();
        if let (Some(b), Some(a)) = (before, after) {
            if a.failed != b.failed {
                return Err(Error::new(ErrorKind::Uncorrectable, Op::Read)
                    .with_offset(offset)
                    .with_block((offset / u64::from(self.geometry.erase_size)) as u32));
            }
            let n = a.corrected.wrapping_sub(b.corrected);
            if n > 0 {
                return Ok(ReadStatus::Corrected(n));
            }
        }
        Ok(if corrected_errno {
            ReadStatus::Corrected(1)
        } else {
            ReadStatus::Clean
        })
    }

    fn erase_block(&mut self, block: u32) -> Result<(), Error> {
        let start = self.block_offset(Op::Erase, block)? as u64;
        sys::erase(
            self.file.as_fd(),
            start,
            u64::from(self.geometry.erase_size),
        )
        .map_err(|errno| {
            Error::new(ErrorKind::Io, Op::Erase)
                .with_block(block)
                .with_errno(errno as i32)
        })
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.check_range(Op::Write, offset, data.len())?;
        let ws = u64::from(self.geometry.write_size);
        if offset % ws != 0 || data.len() as u64 % ws != 0 {
            return Err(Error::new(ErrorKind::Unaligned, Op::Write).with_offset(offset));
        }
        self.file.write_all_at(data, offset).map_err(|e| {
            Error::io(Op::Write, &e)
                .with_offset(offset)
                .with_block((offset / u64::from(self.geometry.erase_size)) as u32)
        })
    }

    fn is_bad(&mut self, block: u32) -> Result<bool, Error> {
        let off = self.block_offset(Op::BadBlockQuery, block)?;
        if self.geometry.kind != FlashKind::Nand {
            return Ok(false);
        }
        sys::get_bad_block(self.file.as_fd(), off).map_err(|errno| {
            Error::new(ErrorKind::Io, Op::BadBlockQuery)
                .with_block(block)
                .with_errno(errno as i32)
        })
    }

    fn mark_bad(&mut self, block: u32) -> Result<(), Error> {
        let off = self.block_offset(Op::MarkBad, block)?;
        sys::set_bad_block(self.file.as_fd(), off).map_err(|errno| {
            Error::new(ErrorKind::Io, Op::MarkBad)
                .with_block(block)
                .with_errno(errno as i32)
        })
    }
}

/// Parses `/proc/mtd` text and returns the number N of the partition called
/// `name` (for `/dev/mtdN`).
///
/// Lines look like `mtd3: 00700000 00010000 "firmware"`.
#[must_use]
pub fn parse_proc_mtd(text: &str, name: &str) -> Option<u32> {
    proc_mtd_entries(text)
        .find(|(_, n)| *n == name)
        .map(|(i, _)| i)
}

fn proc_mtd_entries(text: &str) -> impl Iterator<Item = (u32, &str)> {
    text.lines().filter_map(|line| {
        let (dev, rest) = line.trim().split_once(':')?;
        let index = dev.strip_prefix("mtd")?.parse::<u32>().ok()?;
        let open = rest.find('"')?;
        let close = rest.rfind('"')?;
        (close > open).then(|| (index, &rest[open + 1..close]))
    })
}

/// Finds the MTD partition called `name` in `/proc/mtd` and returns its
/// character device, e.g. `/dev/mtd3`.
pub fn find_partition(name: &str) -> Result<PathBuf, Error> {
    let text = std::fs::read_to_string("/proc/mtd").map_err(|e| {
        Error::io(Op::Open, &e)
            .with_detail(format!("/proc/mtd (looking for MTD partition \"{name}\")"))
    })?;
    find_in(&text, name)
}

fn find_in(text: &str, name: &str) -> Result<PathBuf, Error> {
    match parse_proc_mtd(text, name) {
        Some(n) => Ok(PathBuf::from(format!("/dev/mtd{n}"))),
        None => {
            let have: Vec<String> = proc_mtd_entries(text)
                .map(|(i, n)| format!("mtd{i} \"{n}\""))
                .collect();
            let have = if have.is_empty() {
                "none".to_string()
            } else {
                have.join(", ")
            };
            Err(
                Error::new(ErrorKind::NotFound, Op::Open).with_detail(format!(
                    "no MTD partition named \"{name}\" in /proc/mtd (partitions: {have})"
                )),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENWRT: &str = "dev:    size   erasesize  name\n\
mtd0: 00030000 00010000 \"u-boot\"\n\
mtd1: 00010000 00010000 \"u-boot-env\"\n\
mtd2: 00010000 00010000 \"factory\"\n\
mtd3: 00fb0000 00010000 \"firmware\"\n\
mtd4: 001c2d4a 00010000 \"kernel\"\n\
mtd5: 00ded2b6 00010000 \"rootfs\"\n\
mtd6: 00a40000 00010000 \"rootfs_data\"\n";

    const NAND: &str = "dev:    size   erasesize  name\n\
mtd0: 00100000 00020000 \"Bootloader\"\n\
mtd1: 00080000 00020000 \"u-boot env\"\n\
mtd10: 07800000 00020000 \"ubi\"\n\
mtd11: 00020000 00020000 \"name with \"quotes\"\"\n";

    #[test]
    fn finds_partitions() {
        assert_eq!(parse_proc_mtd(OPENWRT, "firmware"), Some(3));
        assert_eq!(parse_proc_mtd(OPENWRT, "u-boot"), Some(0));
        assert_eq!(parse_proc_mtd(OPENWRT, "rootfs_data"), Some(6));
        assert_eq!(parse_proc_mtd(NAND, "ubi"), Some(10));
        assert_eq!(parse_proc_mtd(NAND, "u-boot env"), Some(1));
        assert_eq!(parse_proc_mtd(NAND, "name with \"quotes\""), Some(11));
    }

    #[test]
    fn no_partial_or_header_matches() {
        assert_eq!(parse_proc_mtd(OPENWRT, "rootfs_"), None);
        assert_eq!(parse_proc_mtd(OPENWRT, "root"), None);
        assert_eq!(parse_proc_mtd(OPENWRT, "name"), None);
        assert_eq!(parse_proc_mtd(OPENWRT, ""), None);
        assert_eq!(parse_proc_mtd("", "firmware"), None);
        assert_eq!(
            parse_proc_mtd("garbage\nmtdx: 1 2 \"firmware\"\n", "firmware"),
            None
        );
    }

    #[test]
    fn not_found_lists_what_exists() {
        let e = find_in(OPENWRT, "kernel2").expect_err("missing");
        assert_eq!(e.kind, ErrorKind::NotFound);
        let s = e.to_string();
        assert!(s.contains("\"kernel2\""), "{s}");
        assert!(s.contains("mtd3 \"firmware\""), "{s}");
        assert!(!s.contains('\n'));
        assert_eq!(
            find_in(OPENWRT, "firmware").expect("found"),
            PathBuf::from("/dev/mtd3")
        );
        let e = find_in("dev:    size   erasesize  name\n", "firmware").expect_err("empty");
        assert!(e.to_string().contains("partitions: none"), "{e}");
    }

    #[test]
    fn kind_from_geometry_not_type() {
        let info = |type_, writesize| sys::MtdInfoUser {
            type_,
            writesize,
            ..Default::default()
        };
        assert_eq!(kind_of(&info(sys::MTD_NANDFLASH, 2048)), FlashKind::Nand);
        assert_eq!(kind_of(&info(sys::MTD_MLCNANDFLASH, 4096)), FlashKind::Nand);
        assert_eq!(kind_of(&info(3, 1)), FlashKind::Nor); // MTD_NORFLASH
        assert_eq!(kind_of(&info(1, 1)), FlashKind::Nor); // mtdram / block2mtd: MTD_RAM
        assert_eq!(kind_of(&info(sys::MTD_NANDFLASH, 1)), FlashKind::Nor);
    }

    #[test]
    fn open_non_mtd_fails_naming_path() {
        let e = Mtd::open("/dev/null").expect_err("not mtd");
        assert_eq!(e.kind, ErrorKind::Io);
        assert!(e.to_string().contains("/dev/null"), "{e}");
        let e = Mtd::open("/nonexistent/mtd9").expect_err("missing");
        assert!(e.to_string().contains("/nonexistent/mtd9"), "{e}");
    }
}
