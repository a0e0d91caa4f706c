//! Opening a flash target from a string spec (config files, command lines).
//!
//! | spec | target |
//! |---|---|
//! | `file:PATH` | [`FileFlash`]: plain file or block device (created with `size_hint` if missing) |
//! | `simnor:PATH` | `SimNor`: opened if `PATH` exists, else created erased with `size_hint` bytes (64 KiB eraseblocks, write size 1) |
//! | `simnand:PATH` | `SimNand`: same, created with 128 KiB eraseblocks and 2 KiB pages |
//! | `mtd:NAME` | [`Mtd`] for the partition called `NAME` in `/proc/mtd` |
//! | `mtd:/dev/mtdN` | [`Mtd`] for that device |
//!
//! The `sim*` specs exist only with the `sim` feature (tests, the demo).

use std::path::Path;

#[cfg(any(test, feature = "sim"))]
use crate::sim::{NAND_DEFAULT_ERASE_SIZE, NAND_DEFAULT_PAGE_SIZE, NOR_DEFAULT_ERASE_SIZE};
use crate::{find_partition, Error, ErrorKind, FileFlash, Flash, Mtd, Op};
#[cfg(any(test, feature = "sim"))]
use crate::{SimNand, SimNor};

/// Opens the flash target described by `spec` (see the module docs).
///
/// `size_hint` is the size to create a missing file or simulated flash with
/// (rounded up to whole eraseblocks for the simulations); it is ignored for
/// MTD. Every error names the spec.
pub fn open_target(spec: &str, size_hint: Option<u64>) -> Result<Box<dyn Flash + Send>, Error> {
    open(spec, size_hint).map_err(|e| e.with_detail(format!("target {spec:?}")))
}

/// A target spec, parsed: the one reader of `scheme:rest` strings (the
/// config check, the open, the device id, the agent's `{image}` path and
/// its permission checks all go through it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetSpec<'a> {
    /// `file:PATH`.
    File(&'a Path),
    /// `simnor:PATH`.
    SimNor(&'a Path),
    /// `simnand:PATH`.
    SimNand(&'a Path),
    /// `mtd:/dev/mtdN`.
    MtdDevice(&'a Path),
    /// `mtd:NAME`: a partition name of `/proc/mtd`.
    MtdName(&'a str),
}

impl<'a> TargetSpec<'a> {
    /// `spec` parsed; `None` for an unknown scheme or an empty rest.
    pub fn parse(spec: &'a str) -> Option<Self> {
        let (scheme, rest) = spec.split_once(':')?;
        if rest.is_empty() {
            return None;
        }
        let path = Path::new(rest);
        Some(match scheme {
            "file" => TargetSpec::File(path),
            "simnor" => TargetSpec::SimNor(path),
            "simnand" => TargetSpec::SimNand(path),
            "mtd" if rest.starts_with('/') => TargetSpec::MtdDevice(path),
            "mtd" => TargetSpec::MtdName(rest),
            _ => return None,
        })
    }

    /// The scheme, as written before the `:`.
    pub fn scheme(&self) -> &'static str {
        match self {
            TargetSpec::File(_) => "file",
            TargetSpec::SimNor(_) => "simnor",
            TargetSpec::SimNand(_) => "simnand",
            TargetSpec::MtdDevice(_) | TargetSpec::MtdName(_) => "mtd",
        }
    }

    /// The file or device path it names (`None` for a partition name).
    pub fn path(&self) -> Option<&'a Path> {
        match *self {
            TargetSpec::File(p)
            | TargetSpec::SimNor(p)
            | TargetSpec::SimNand(p)
            | TargetSpec::MtdDevice(p) => Some(p),
            TargetSpec::MtdName(_) => None,
        }
    }

    /// A simulated flash (`simnor:`, `simnand:`: the `sim` feature).
    pub fn is_sim(&self) -> bool {
        matches!(self, TargetSpec::SimNor(_) | TargetSpec::SimNand(_))
    }
}

fn open(spec: &str, size_hint: Option<u64>) -> Result<Box<dyn Flash + Send>, Error> {
    let parsed = TargetSpec::parse(spec).ok_or_else(bad_spec)?;
    #[cfg(any(test, feature = "sim"))]
    let need_size = |path: &Path, erase: u32| match size_hint {
        Some(n) if n > 0 => Ok(n.div_ceil(u64::from(erase)) * u64::from(erase)),
        _ => Err(
            Error::new(ErrorKind::NotFound, Op::Open).with_detail(format!(
                "{} does not exist and no size was given to create it",
                path.display()
            )),
        ),
    };
    Ok(match parsed {
        TargetSpec::File(path) => Box::new(FileFlash::open(path, size_hint)?),
        #[cfg(any(test, feature = "sim"))]
        TargetSpec::SimNor(path) if path.exists() => Box::new(SimNor::open(path)?),
        #[cfg(any(test, feature = "sim"))]
        TargetSpec::SimNor(path) => Box::new(SimNor::create(
            path,
            need_size(path, NOR_DEFAULT_ERASE_SIZE)?,
            NOR_DEFAULT_ERASE_SIZE,
            1,
        )?),
        #[cfg(any(test, feature = "sim"))]
        TargetSpec::SimNand(path) if path.exists() => Box::new(SimNand::open(path)?),
        #[cfg(any(test, feature = "sim"))]
        TargetSpec::SimNand(path) => Box::new(SimNand::create(
            path,
            need_size(path, NAND_DEFAULT_ERASE_SIZE)?,
            NAND_DEFAULT_ERASE_SIZE,
            NAND_DEFAULT_PAGE_SIZE,
            &[],
        )?),
        #[cfg(not(any(test, feature = "sim")))]
        TargetSpec::SimNor(_) | TargetSpec::SimNand(_) => return Err(bad_spec()),
        TargetSpec::MtdDevice(path) => Box::new(Mtd::open(path)?),
        TargetSpec::MtdName(name) => Box::new(Mtd::open(find_partition(name)?)?),
    })
}

fn bad_spec() -> Error {
    Error::new(ErrorKind::NotFound, Op::Open).with_detail(
        "unknown target spec (expected file:PATH, simnor:PATH, simnand:PATH, mtd:NAME or mtd:/dev/mtdN)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{random_bytes, TempDir};
    use crate::{FlashKind, ImageWriter, WriterOptions};

    #[test]
    fn bad_specs_name_the_spec() {
        for spec in ["", "nonsense", "floppy:/dev/fd0", "file:", "simnand:"] {
            let e = open_target(spec, None).err().expect("must fail");
            assert_eq!(e.kind, ErrorKind::NotFound, "{spec}");
            assert!(e.to_string().contains(&format!("{spec:?}")), "{e}");
        }
    }

    #[test]
    fn sim_targets_create_then_reopen() {
        let dir = TempDir::new("target-sim");
        let p = dir.join("nand.bin");
        let spec = format!("simnand:{}", p.display());
        let e = open_target(&spec, None).err().expect("no size");
        assert!(e.to_string().contains("nand.bin"), "{e}");
        let f = open_target(&spec, Some(300_000)).expect("create");
        let g = f.geometry();
        assert_eq!(
            (g.kind, g.size, g.erase_size, g.write_size),
            (FlashKind::Nand, 3 * 131_072, 131_072, 2048)
        );
        drop(f);
        let f = open_target(&spec, None).expect("reopen");
        assert_eq!(f.geometry(), g);

        let p = dir.join("nor.bin");
        let spec = format!("simnor:{}", p.display());
        let f = open_target(&spec, Some(65_536)).expect("create");
        assert_eq!(f.geometry().kind, FlashKind::Nor);
    }

    #[test]
    fn boxed_target_drives_an_image_writer() {
        let dir = TempDir::new("target-writer");
        let p = dir.join("slot.img");
        let image = random_bytes(7, 100_000);
        let f = open_target(&format!("file:{}", p.display()), Some(200_000)).expect("create");
        let mut w = ImageWriter::new(f, image.len() as u64, 16_384, WriterOptions::default())
            .expect("writer");
        for i in 0..w.block_count() {
            let s = i as usize * 16_384;
            w.write_block(i, &image[s..(s + 16_384).min(image.len())])
                .expect("write");
        }
        drop(w);
        assert_eq!(&std::fs::read(&p).expect("read")[..image.len()], &image[..]);
    }

    #[test]
    fn mtd_errors_name_the_spec() {
        let e = open_target("mtd:/nonexistent/mtd7", None)
            .err()
            .expect("missing");
        assert!(e.to_string().contains("/nonexistent/mtd7"), "{e}");
        // No MTD on the build machine: the name lookup fails and says which name.
        if !Path::new("/proc/mtd").exists() {
            let e = open_target("mtd:firmware", None)
                .err()
                .expect("no /proc/mtd");
            assert!(e.to_string().contains("firmware"), "{e}");
        }
    }
}
