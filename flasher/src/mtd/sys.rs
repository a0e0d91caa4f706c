//! Raw MTD ABI: `repr(C)` mirrors of `linux/include/uapi/mtd/mtd-abi.h` and
//! the ioctls firmcast uses, behind safe wrappers. The only `unsafe` code in
//! the crate.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

/// `MTD_NANDFLASH` in `mtd_info_user.type`.
pub const MTD_NANDFLASH: u8 = 4;
/// `MTD_MLCNANDFLASH` in `mtd_info_user.type`.
pub const MTD_MLCNANDFLASH: u8 = 8;

/// `struct mtd_info_user` (MEMGETINFO).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MtdInfoUser {
    /// `MTD_RAM` (1), `MTD_ROM` (2), `MTD_NORFLASH` (3), `MTD_NANDFLASH` (4), ...
    pub type_: u8,
    /// `MTD_WRITEABLE`, `MTD_BIT_WRITEABLE`, `MTD_NO_ERASE` bits.
    pub flags: u32,
    /// Total size in bytes (truncated for devices of 4 GiB or more).
    pub size: u32,
    /// Eraseblock size.
    pub erasesize: u32,
    /// Minimal writable unit (NAND page; 1 on NOR).
    pub writesize: u32,
    /// Out-of-band bytes per page.
    pub oobsize: u32,
    /// Unused.
    pub padding: u64,
}

/// `struct erase_info_user64` (MEMERASE64).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EraseInfoUser64 {
    /// Byte offset of the first eraseblock.
    pub start: u64,
    /// Bytes to erase (a multiple of the eraseblock size).
    pub length: u64,
}

/// `struct mtd_ecc_stats` (ECCGETSTATS).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MtdEccStats {
    /// Bitflips corrected by ECC since boot.
    pub corrected: u32,
    /// Uncorrectable ECC errors since boot.
    pub failed: u32,
    /// Bad blocks in this device.
    pub badblocks: u32,
    /// Blocks reserved for the bad block table.
    pub bbtblocks: u32,
}

// Sizes from mtd-abi.h (identical on 32- and 64-bit ABIs: the u64 ends on an
// 8-byte boundary either way).
const _: () = assert!(size_of::<MtdInfoUser>() == 32);
const _: () = assert!(size_of::<EraseInfoUser64>() == 16);
const _: () = assert!(size_of::<MtdEccStats>() == 16);
const _: () = assert!(size_of::<i64>() == 8); // __kernel_loff_t

mod raw {
    use super::{EraseInfoUser64, MtdEccStats, MtdInfoUser};

    nix::ioctl_read!(mem_get_info, b'M', 1, MtdInfoUser);
    nix::ioctl_write_ptr!(mem_erase64, b'M', 20, EraseInfoUser64);
    nix::ioctl_write_ptr!(mem_get_bad_block, b'M', 11, i64);
    nix::ioctl_write_ptr!(mem_set_bad_block, b'M', 12, i64);
    nix::ioctl_read!(ecc_get_stats, b'M', 18, MtdEccStats);
}

/// MEMGETINFO.
pub fn get_info(fd: BorrowedFd<'_>) -> Result<MtdInfoUser, Errno> {
    let mut info = MtdInfoUser::default();
    // SAFETY: `fd` is open for the borrow; `info` is a live, writable repr(C)
    // mtd_info_user whose size matches the one encoded in the request, so the
    // kernel writes only inside it.
    unsafe { raw::mem_get_info(fd.as_raw_fd(), &mut info) }?;
    Ok(info)
}

/// MEMERASE64 of `length` bytes at `start`.
pub fn erase(fd: BorrowedFd<'_>, start: u64, length: u64) -> Result<(), Errno> {
    let arg = EraseInfoUser64 { start, length };
    // SAFETY: `fd` is open for the borrow; `arg` is a live repr(C)
    // erase_info_user64 that the kernel only reads.
    unsafe { raw::mem_erase64(fd.as_raw_fd(), &arg) }?;
    Ok(())
}

/// MEMGETBADBLOCK: whether the eraseblock at byte offset `offset` is bad.
pub fn get_bad_block(fd: BorrowedFd<'_>, offset: i64) -> Result<bool, Errno> {
    // SAFETY: `fd` is open for the borrow; `offset` is a live i64
    // (__kernel_loff_t) that the kernel only reads.
    let r = unsafe { raw::mem_get_bad_block(fd.as_raw_fd(), &offset) }?;
    Ok(r > 0)
}

/// MEMSETBADBLOCK: marks the eraseblock at byte offset `offset` bad.
pub fn set_bad_block(fd: BorrowedFd<'_>, offset: i64) -> Result<(), Errno> {
    // SAFETY: `fd` is open for the borrow; `offset` is a live i64
    // (__kernel_loff_t) that the kernel only reads.
    unsafe { raw::mem_set_bad_block(fd.as_raw_fd(), &offset) }?;
    Ok(())
}

/// ECCGETSTATS.
pub fn ecc_stats(fd: BorrowedFd<'_>) -> Result<MtdEccStats, Errno> {
    let mut stats = MtdEccStats::default();
    // SAFETY: `fd` is open for the borrow; `stats` is a live, writable
    // repr(C) mtd_ecc_stats whose size matches the request, so the kernel
    // writes only inside it.
    unsafe { raw::ecc_get_stats(fd.as_raw_fd(), &mut stats) }?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn layout_matches_mtd_abi_h() {
        assert_eq!(offset_of!(MtdInfoUser, type_), 0);
        assert_eq!(offset_of!(MtdInfoUser, flags), 4);
        assert_eq!(offset_of!(MtdInfoUser, size), 8);
        assert_eq!(offset_of!(MtdInfoUser, erasesize), 12);
        assert_eq!(offset_of!(MtdInfoUser, writesize), 16);
        assert_eq!(offset_of!(MtdInfoUser, oobsize), 20);
        assert_eq!(offset_of!(MtdInfoUser, padding), 24);
        assert_eq!(size_of::<MtdInfoUser>(), 32);
        assert_eq!(size_of::<EraseInfoUser64>(), 16);
        assert_eq!(size_of::<MtdEccStats>(), 16);
    }

    #[test]
    fn request_numbers_match_the_kernel() {
        // Values from the kernel headers on x86/ARM/generic ioctl encoding:
        // MEMGETINFO 0x80204d01, MEMERASE64 0x40104d14, MEMGETBADBLOCK 0x40084d0b,
        // MEMSETBADBLOCK 0x40084d0c, ECCGETSTATS 0x80104d12. (MIPS/PowerPC use a
        // different encoding; nix picks it per target.)
        #[cfg(any(
            target_arch = "x86_64",
            target_arch = "x86",
            target_arch = "aarch64",
            target_arch = "arm"
        ))]
        {
            assert_eq!(
                nix::request_code_read!(b'M', 1, size_of::<MtdInfoUser>()) as u32,
                0x8020_4d01
            );
            assert_eq!(
                nix::request_code_write!(b'M', 20, size_of::<EraseInfoUser64>()) as u32,
                0x4010_4d14
            );
            assert_eq!(
                nix::request_code_write!(b'M', 11, size_of::<i64>()) as u32,
                0x4008_4d0b
            );
            assert_eq!(
                nix::request_code_write!(b'M', 12, size_of::<i64>()) as u32,
                0x4008_4d0c
            );
            assert_eq!(
                nix::request_code_read!(b'M', 18, size_of::<MtdEccStats>()) as u32,
                0x8010_4d12
            );
        }
    }

    #[test]
    fn ioctls_on_a_non_mtd_fd_fail_cleanly() {
        let f = std::fs::File::open("/dev/null").expect("open /dev/null");
        use std::os::fd::AsFd;
        assert!(get_info(f.as_fd()).is_err());
        assert!(ecc_stats(f.as_fd()).is_err());
    }
}
