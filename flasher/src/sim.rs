//! Simulated NOR and NAND flash with real physics, backed by files so that a
//! restarted process sees what an earlier one wrote.
//!
//! - The data file `PATH` holds exactly the raw flash contents (`cmp` it
//!   against an image). The sidecar `PATH.sim` holds `key=value` lines:
//!   `kind`, `size`, `erase_size`, `write_size` and `bad` (e.g. `bad=3,7`).
//! - Physics, each violation an [`Error`] that changes nothing: erased = `0xFF`;
//!   erase works on whole eraseblocks; a write may only clear bits
//!   ([`ErrorKind::NotErased`]); writes are aligned to and a multiple of the
//!   write size ([`ErrorKind::Unaligned`]); a NAND page is programmed at most
//!   once per erase ([`ErrorKind::PageAlreadyProgrammed`]; a page that is not
//!   all `0xFF` when the file is opened counts as programmed); erasing or
//!   writing a bad block fails ([`ErrorKind::BadBlock`]).
//! - Faults ([`Faults`]): a power cut at operation N (erase, write and
//!   mark-bad are counted from 0 since open), injected EIO on chosen
//!   eraseblocks, and reported (corrected) bitflips.
//!
//! Every change goes to the file at once with `pwrite`; `mark_bad` rewrites
//! the sidecar (write to a temp file, then rename).

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::{Error, ErrorKind, Flash, FlashKind, Geometry, Op, ReadStatus};

/// Default NOR eraseblock size when the sidecar is missing.
pub const NOR_DEFAULT_ERASE_SIZE: u32 = 64 * 1024;
/// Default NAND eraseblock size when the sidecar is missing.
pub const NAND_DEFAULT_ERASE_SIZE: u32 = 128 * 1024;
/// Default NAND page size when the sidecar is missing.
pub const NAND_DEFAULT_PAGE_SIZE: u32 = 2048;

const EIO: i32 = 5;

/// Faults to inject into a simulated flash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Cut the power at the operation with this index (erase, write and
    /// mark-bad are counted from 0 since open). That operation is torn (an
    /// erase leaves the first half of the eraseblock `0xFF` and the rest
    /// unchanged; a write programs only the first half of its bytes; a
    /// mark-bad does nothing), and it and every later operation return
    /// [`ErrorKind::PowerCut`] and change nothing more.
    pub power_cut_after: Option<u64>,
    /// Erasing these physical eraseblocks fails with EIO.
    pub fail_erase_blocks: Vec<u32>,
    /// Writing into these physical eraseblocks fails with EIO.
    pub fail_write_blocks: Vec<u32>,
    /// Every read reports one corrected bitflip ([`ReadStatus::Corrected`]).
    pub bitflips_on_read: bool,
}

/// Shared engine of [`SimNor`] and [`SimNand`].
struct Sim {
    file: File,
    path: PathBuf,
    kind: FlashKind,
    size: u64,
    erase_size: u32,
    write_size: u32,
    bad: Vec<u32>,
    /// NAND only: one flag per page, set when programmed since the last erase.
    programmed: Vec<bool>,
    faults: Faults,
    ops: u64,
    cut: bool,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("path", &self.path)
            .field("geometry", &self.geometry())
            .field("bad", &self.bad)
            .field(
                "programmed_pages",
                &self.programmed.iter().filter(|&&p| p).count(),
            )
            .field("faults", &self.faults)
            .field("ops", &self.ops)
            .field("cut", &self.cut)
            .finish()
    }
}

fn sidecar_path(path: &Path) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(".sim");
    PathBuf::from(s)
}

fn kind_name(kind: FlashKind) -> &'static str {
    match kind {
        FlashKind::Nor => "nor",
        FlashKind::Nand => "nand",
        FlashKind::Plain => "plain",
    }
}

fn geometry_error(op: Op, path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Geometry, op).with_detail(format!("{}: {msg}", path.display()))
}

impl Sim {
    fn create(
        path: &Path,
        kind: FlashKind,
        size: u64,
        erase_size: u32,
        write_size: u32,
        bad: &[u32],
    ) -> Result<Sim, Error> {
        check_geometry(path, size, erase_size, write_size)?;
        let nblocks = size / u64::from(erase_size);
        if let Some(b) = bad.iter().find(|&&b| u64::from(b) >= nblocks) {
            return Err(geometry_error(
                Op::Open,
                path,
                format!("bad block {b} outside the {nblocks} eraseblocks"),
            ));
        }
        let io =
            |e: std::io::Error| Error::io(Op::Open, &e).with_detail(path.display().to_string());
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(io)?;
        let ff = vec![0xFFu8; 64 * 1024];
        let mut left = size;
        while left > 0 {
            let n = left.min(ff.len() as u64) as usize;
            file.write_all(&ff[..n]).map_err(io)?;
            left -= n as u64;
        }
        let mut bad = bad.to_vec();
        bad.sort_unstable();
        bad.dedup();
        let pages = if kind == FlashKind::Nand {
            (size / u64::from(write_size)) as usize
        } else {
            0
        };
        let sim = Sim {
            file,
            path: path.to_path_buf(),
            kind,
            size,
            erase_size,
            write_size,
            bad,
            programmed: vec![false; pages],
            faults: Faults::default(),
            ops: 0,
            cut: false,
        };
        sim.write_sidecar(Op::Open)?;
        Ok(sim)
    }

    fn open(path: &Path, kind: FlashKind) -> Result<Sim, Error> {
        let io =
            |e: std::io::Error| Error::io(Op::Open, &e).with_detail(path.display().to_string());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let (def_erase, def_write) = match kind {
            FlashKind::Nand => (NAND_DEFAULT_ERASE_SIZE, NAND_DEFAULT_PAGE_SIZE),
            _ => (NOR_DEFAULT_ERASE_SIZE, 1),
        };
        let side = sidecar_path(path);
        let (size, erase_size, write_size, bad) = match std::fs::read_to_string(&side) {
            Ok(text) => parse_sidecar(&text, kind, len, def_erase, def_write)
                .map_err(|msg| geometry_error(Op::Open, &side, msg))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (len, def_erase, def_write, Vec::new())
            }
            Err(e) => {
                return Err(Error::io(Op::Open, &e).with_detail(side.display().to_string()));
            }
        };
        check_geometry(path, size, erase_size, write_size)?;
        if len != size {
            return Err(geometry_error(
                Op::Open,
                path,
                format!("file is {len} bytes but the sidecar says size={size}"),
            ));
        }
        let mut sim = Sim {
            file,
            path: path.to_path_buf(),
            kind,
            size,
            erase_size,
            write_size,
            bad,
            programmed: Vec::new(),
            faults: Faults::default(),
            ops: 0,
            cut: false,
        };
        if kind == FlashKind::Nand {
            sim.scan_programmed()?;
        }
        Ok(sim)
    }

    /// A page that is not all `0xFF` counts as programmed.
    fn scan_programmed(&mut self) -> Result<(), Error> {
        let ws = self.write_size as usize;
        let mut buf = vec![0u8; self.erase_size as usize];
        self.programmed = Vec::with_capacity((self.size / ws as u64) as usize);
        let mut off = 0u64;
        while off < self.size {
            self.file.read_exact_at(&mut buf, off).map_err(|e| {
                Error::io(Op::Open, &e).with_detail(self.path.display().to_string())
            })?;
            self.programmed
                .extend(buf.chunks(ws).map(|p| p.iter().any(|&b| b != 0xFF)));
            off += buf.len() as u64;
        }
        Ok(())
    }

    fn write_sidecar(&self, op: Op) -> Result<(), Error> {
        let side = sidecar_path(&self.path);
        let bad: Vec<String> = self.bad.iter().map(u32::to_string).collect();
        let text = format!(
            "kind={}\nsize={}\nerase_size={}\nwrite_size={}\nbad={}\n",
            kind_name(self.kind),
            self.size,
            self.erase_size,
            self.write_size,
            bad.join(",")
        );
        let mut tmp = side.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let io = |e: std::io::Error| Error::io(op, &e).with_detail(side.display().to_string());
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, &side).map_err(io)
    }

    fn geometry(&self) -> Geometry {
        Geometry {
            kind: self.kind,
            size: self.size,
            erase_size: self.erase_size,
            write_size: self.write_size,
        }
    }

    fn nblocks(&self) -> u64 {
        self.size / u64::from(self.erase_size)
    }

    /// Counts an operation; `Ok(true)` means this is the one the power cut tears.
    fn begin_op(&mut self, op: Op) -> Result<bool, Error> {
        let index = self.ops;
        self.ops += 1;
        if self.cut {
            return Err(Error::new(ErrorKind::PowerCut, op));
        }
        match self.faults.power_cut_after {
            Some(n) if index > n => {
                self.cut = true;
                Err(Error::new(ErrorKind::PowerCut, op))
            }
            Some(n) if index == n => {
                self.cut = true;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn check_block(&self, op: Op, block: u32) -> Result<(), Error> {
        if u64::from(block) >= self.nblocks() {
            return Err(Error::new(ErrorKind::OutOfRange, op)
                .with_block(block)
                .with_detail(format!("device has {} eraseblocks", self.nblocks())));
        }
        Ok(())
    }

    fn pwrite(&mut self, op: Op, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.file.write_all_at(data, offset).map_err(|e| {
            Error::io(op, &e)
                .with_offset(offset)
                .with_detail(self.path.display().to_string())
        })
    }

    fn set_programmed(&mut self, offset: u64, len: u64, value: bool) {
        if self.kind != FlashKind::Nand || len == 0 {
            return;
        }
        let ws = u64::from(self.write_size);
        let first = (offset / ws) as usize;
        let last = (offset + len).div_ceil(ws) as usize;
        for p in &mut self.programmed[first..last] {
            *p = value;
        }
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<ReadStatus, Error> {
        match offset.checked_add(buf.len() as u64) {
            Some(end) if end <= self.size => {}
            _ => return Err(Error::new(ErrorKind::OutOfRange, Op::Read).with_offset(offset)),
        }
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| Error::io(Op::Read, &e).with_offset(offset))?;
        Ok(if self.faults.bitflips_on_read {
            ReadStatus::Corrected(1)
        } else {
            ReadStatus::Clean
        })
    }

    fn erase_block(&mut self, block: u32) -> Result<(), Error> {
        let torn = self.begin_op(Op::Erase)?;
        let cut = |e: Error| {
            if torn {
                Error::new(ErrorKind::PowerCut, Op::Erase).with_block(block)
            } else {
                e
            }
        };
        self.check_block(Op::Erase, block).map_err(cut)?;
        if self.bad.binary_search(&block).is_ok() {
            return Err(cut(
                Error::new(ErrorKind::BadBlock, Op::Erase).with_block(block)
            ));
        }
        if self.faults.fail_erase_blocks.contains(&block) {
            return Err(cut(Error::new(ErrorKind::Io, Op::Erase)
                .with_block(block)
                .with_errno(EIO)));
        }
        let es = u64::from(self.erase_size);
        let start = u64::from(block) * es;
        let len = if torn { es / 2 } else { es };
        let ff = vec![0xFFu8; len as usize];
        self.pwrite(Op::Erase, start, &ff)?;
        self.set_programmed(start, len, false);
        if torn {
            return Err(Error::new(ErrorKind::PowerCut, Op::Erase).with_block(block));
        }
        Ok(())
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        let torn = self.begin_op(Op::Write)?;
        let cut = |e: Error| {
            if torn {
                Error::new(ErrorKind::PowerCut, Op::Write).with_offset(offset)
            } else {
                e
            }
        };
        self.check_write(offset, data).map_err(cut)?;
        let len = if torn { data.len() / 2 } else { data.len() };
        self.pwrite(Op::Write, offset, &data[..len])?;
        self.set_programmed(offset, len as u64, true);
        if torn {
            return Err(Error::new(ErrorKind::PowerCut, Op::Write).with_offset(offset));
        }
        Ok(())
    }

    fn check_write(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        let err = |kind| Error::new(kind, Op::Write).with_offset(offset);
        let len = data.len() as u64;
        match offset.checked_add(len) {
            Some(end) if end <= self.size => {}
            _ => return Err(err(ErrorKind::OutOfRange)),
        }
        let ws = u64::from(self.write_size);
        if offset % ws != 0 || len % ws != 0 {
            return Err(err(ErrorKind::Unaligned)
                .with_detail(format!("{len} bytes at {offset:#x}, write size {ws}")));
        }
        if len == 0 {
            return Ok(());
        }
        let es = u64::from(self.erase_size);
        let (first, last) = ((offset / es) as u32, ((offset + len - 1) / es) as u32);
        for b in first..=last {
            if self.bad.binary_search(&b).is_ok() {
                return Err(err(ErrorKind::BadBlock).with_block(b));
            }
            if self.faults.fail_write_blocks.contains(&b) {
                return Err(err(ErrorKind::Io).with_block(b).with_errno(EIO));
            }
        }
        if self.kind == FlashKind::Nand {
            let first_page = (offset / ws) as usize;
            let pages = (len / ws) as usize;
            if let Some(i) = self.programmed[first_page..first_page + pages]
                .iter()
                .position(|&p| p)
            {
                let page_off = (first_page + i) as u64 * ws;
                return Err(Error::new(ErrorKind::PageAlreadyProgrammed, Op::Write)
                    .with_block((page_off / es) as u32)
                    .with_offset(page_off));
            }
        }
        let mut old = vec![0u8; data.len()];
        self.file
            .read_exact_at(&mut old, offset)
            .map_err(|e| Error::io(Op::Write, &e).with_offset(offset))?;
        if let Some(i) = old.iter().zip(data).position(|(&o, &n)| o & n != n) {
            let at = offset + i as u64;
            return Err(Error::new(ErrorKind::NotErased, Op::Write)
                .with_block((at / es) as u32)
                .with_offset(at));
        }
        Ok(())
    }

    fn is_bad(&mut self, block: u32) -> Result<bool, Error> {
        self.check_block(Op::BadBlockQuery, block)?;
        Ok(self.bad.binary_search(&block).is_ok())
    }

    fn mark_bad(&mut self, block: u32) -> Result<(), Error> {
        let torn = self.begin_op(Op::MarkBad)?;
        if torn {
            return Err(Error::new(ErrorKind::PowerCut, Op::MarkBad).with_block(block));
        }
        self.check_block(Op::MarkBad, block)?;
        if let Err(pos) = self.bad.binary_search(&block) {
            self.bad.insert(pos, block);
            if let Err(e) = self.write_sidecar(Op::MarkBad) {
                self.bad.remove(pos);
                return Err(e.with_block(block));
            }
        }
        Ok(())
    }
}

fn check_geometry(path: &Path, size: u64, erase_size: u32, write_size: u32) -> Result<(), Error> {
    if erase_size == 0 || write_size == 0 || erase_size % write_size != 0 {
        return Err(geometry_error(
            Op::Open,
            path,
            format!(
                "erase size {erase_size} is not a non-zero multiple of write size {write_size}"
            ),
        ));
    }
    if size == 0 || size % u64::from(erase_size) != 0 {
        return Err(geometry_error(
            Op::Open,
            path,
            format!("size {size} is not a non-zero multiple of the erase size {erase_size}"),
        ));
    }
    if size / u64::from(erase_size) > u64::from(u32::MAX) {
        return Err(geometry_error(Op::Open, path, "too many eraseblocks"));
    }
    Ok(())
}

type SidecarFields = (u64, u32, u32, Vec<u32>);

fn parse_sidecar(
    text: &str,
    kind: FlashKind,
    file_len: u64,
    def_erase: u32,
    def_write: u32,
) -> Result<SidecarFields, String> {
    let (mut size, mut erase, mut write, mut bad) = (file_len, def_erase, def_write, Vec::new());
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {line:?} is not key=value"))?;
        let (key, value) = (key.trim(), value.trim());
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{key}={v}: not a number"))
        };
        match key {
            "kind" if value != kind_name(kind) => {
                return Err(format!("kind={value}, expected kind={}", kind_name(kind)));
            }
            "size" => size = num(value)?,
            "erase_size" => {
                erase = u32::try_from(num(value)?).map_err(|_| format!("{key} too large"))?;
            }
            "write_size" => {
                write = u32::try_from(num(value)?).map_err(|_| format!("{key} too large"))?;
            }
            "bad" => {
                bad = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        s.parse::<u32>()
                            .map_err(|_| format!("bad={value}: {s:?} is not a block"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            _ => {}
        }
    }
    bad.sort_unstable();
    bad.dedup();
    Ok((size, erase, write, bad))
}

macro_rules! sim_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name(Sim);

        impl $name {
            /// Sets the faults to inject from now on.
            pub fn set_faults(&mut self, faults: Faults) {
                self.0.faults = faults;
            }

            /// The faults currently injected.
            #[must_use]
            pub fn faults(&self) -> &Faults {
                &self.0.faults
            }

            /// Operations (erase, write, mark-bad) attempted since open.
            #[must_use]
            pub fn op_count(&self) -> u64 {
                self.0.ops
            }

            /// The data file.
            #[must_use]
            pub fn path(&self) -> &Path {
                &self.0.path
            }

            /// The bad eraseblocks, sorted.
            #[must_use]
            pub fn bad_blocks(&self) -> &[u32] {
                &self.0.bad
            }
        }

        impl Flash for $name {
            fn geometry(&self) -> Geometry {
                self.0.geometry()
            }
            fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<ReadStatus, Error> {
                self.0.read(offset, buf)
            }
            fn erase_block(&mut self, block: u32) -> Result<(), Error> {
                self.0.erase_block(block)
            }
            fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
                self.0.write(offset, data)
            }
            fn is_bad(&mut self, block: u32) -> Result<bool, Error> {
                self.0.is_bad(block)
            }
            fn mark_bad(&mut self, block: u32) -> Result<(), Error> {
                self.mark_bad_impl(block)
            }
        }
    };
}

sim_type!(
    /// Simulated NOR flash: bit-level writes (usually `write_size` 1), a write
    /// only clears bits, no bad blocks (`mark_bad` fails with EOPNOTSUPP).
    SimNor
);

sim_type!(
    /// Simulated NAND flash: page writes, each page programmed once per
    /// erase, bad blocks (`bad=` in the sidecar).
    SimNand
);

impl SimNor {
    /// Creates (or truncates) `path` as an erased NOR of `size` bytes and
    /// writes the sidecar.
    pub fn create(
        path: impl AsRef<Path>,
        size: u64,
        erase_size: u32,
        write_size: u32,
    ) -> Result<SimNor, Error> {
        Sim::create(
            path.as_ref(),
            FlashKind::Nor,
            size,
            erase_size,
            write_size,
            &[],
        )
        .map(SimNor)
    }

    /// Opens an existing NOR image; without a sidecar: 64 KiB eraseblocks,
    /// write size 1, size = file length.
    pub fn open(path: impl AsRef<Path>) -> Result<SimNor, Error> {
        Sim::open(path.as_ref(), FlashKind::Nor).map(SimNor)
    }

    fn mark_bad_impl(&mut self, block: u32) -> Result<(), Error> {
        Err(Error::new(ErrorKind::Io, Op::MarkBad)
            .with_block(block)
            .with_errno(nix::libc::EOPNOTSUPP)
            .with_detail("NOR flash has no bad blocks"))
    }
}

impl SimNand {
    /// Creates (or truncates) `path` as an erased NAND of `size` bytes with
    /// the given bad eraseblocks, and writes the sidecar.
    pub fn create(
        path: impl AsRef<Path>,
        size: u64,
        erase_size: u32,
        page_size: u32,
        bad_blocks: &[u32],
    ) -> Result<SimNand, Error> {
        Sim::create(
            path.as_ref(),
            FlashKind::Nand,
            size,
            erase_size,
            page_size,
            bad_blocks,
        )
        .map(SimNand)
    }

    /// Opens an existing NAND image; without a sidecar: 128 KiB eraseblocks,
    /// 2048-byte pages, no bad blocks, size = file length.
    pub fn open(path: impl AsRef<Path>) -> Result<SimNand, Error> {
        Sim::open(path.as_ref(), FlashKind::Nand).map(SimNand)
    }

    fn mark_bad_impl(&mut self, block: u32) -> Result<(), Error> {
        self.0.mark_bad(block)
    }
}

#[cfg(test)]
mod tests;
