//! The U-Boot environment: read and write it byte-compatibly with U-Boot and
//! libubootenv (`fw_printenv` / `fw_setenv`), on any [`Flash`].
//!
//! ```text
//!  single copy:     crc32 (4, CPU byte order) ‖ data
//!  redundant copy:  crc32 (4, CPU byte order) ‖ flag (1) ‖ data
//!  data:            "name=value\0" … "\0", then 0xFF up to the env size
//!                   (the CRC covers all of data, padding included, never the flag)
//! ```
//!
//! - **CRC**: CRC-32/ISO-HDLC (zlib's `crc32`) over the data area, stored in
//!   the target CPU's byte order ([`Endian`], native by default, as U-Boot and
//!   libubootenv write it with a plain `uint32_t` store).
//! - **Padding**: libubootenv and `mkenvimage` pad with `0xFF`; a reader accepts
//!   anything after the terminating `\0\0` (the CRC covers it).
//! - **Variables** are written sorted by name (U-Boot's `env export` and
//!   libubootenv do the same), so equal environments give equal bytes.
//! - **Redundant copies** ([`FlagScheme`]): boolean flags on NOR (the new copy
//!   is written with flag 1, then the old copy's flag byte is cleared to 0 in
//!   place — programming only clears bits); incremental flags on NAND and
//!   files (new = current + 1, wrapping 255 → 0). A read takes the copy whose
//!   CRC matches; both valid: the newer flag by libubootenv's rules
//!   ([`select_copy`]). A save always writes the *inactive* copy, so a power
//!   cut at any instant leaves the old environment valid (or the new one).
//! - **Where**: `/etc/fw_env.config` lines (`device offset env-size
//!   [sector-size [sectors]]`; [`parse_fw_env_config`]). On NOR/NAND the
//!   sectors holding a copy are erased just before it is written; on NAND bad
//!   sectors inside the copy's area (`sectors × sector-size` from the offset)
//!   are skipped, as libubootenv and U-Boot's `fw_env` do. Plain files and
//!   block devices are simply overwritten.
//!
//! Every error names the device and offset, or the variable, at fault.

use std::fmt;

use crate::{Error, ErrorKind, Flash, FlashKind};

mod config;
mod format;
mod vars;

pub use config::{parse_fw_env_config, EnvConfig, EnvLocation};
use format::header_len;
pub use format::{decode, encode, select_copy, Decoded};

pub use vars::Vars;

/// The default fw_env.config path.
pub const DEFAULT_FW_ENV_CONFIG: &str = "/etc/fw_env.config";

/// Byte order of the stored CRC: the target CPU's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endian {
    /// ARM, MIPSel, x86, RISC-V (nearly every target).
    Little,
    /// MIPS (big-endian), PowerPC.
    Big,
}

impl Endian {
    /// The byte order of the CPU this code runs on (the device itself).
    #[must_use]
    pub const fn native() -> Self {
        if cfg!(target_endian = "big") {
            Endian::Big
        } else {
            Endian::Little
        }
    }

    fn put(self, v: u32) -> [u8; 4] {
        match self {
            Endian::Little => v.to_le_bytes(),
            Endian::Big => v.to_be_bytes(),
        }
    }

    fn get(self, b: [u8; 4]) -> u32 {
        match self {
            Endian::Little => u32::from_le_bytes(b),
            Endian::Big => u32::from_be_bytes(b),
        }
    }
}

/// How the redundant copies' flag byte says which copy is newer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlagScheme {
    /// NOR: active = 1, obsolete = 0 (cleared in place after a save).
    Boolean,
    /// NAND, UBI, files: each save writes the current flag + 1 (wrapping).
    Incremental,
}

impl FlagScheme {
    /// The scheme libubootenv uses for a medium.
    #[must_use]
    pub fn for_kind(kind: FlashKind) -> Self {
        match kind {
            FlashKind::Nor => FlagScheme::Boolean,
            FlashKind::Nand | FlashKind::Plain => FlagScheme::Incremental,
        }
    }
}

/// Flag value of an active copy (boolean scheme).
pub const FLAG_ACTIVE: u8 = 1;
/// Flag value of an obsolete copy (boolean scheme).
pub const FLAG_OBSOLETE: u8 = 0;

/// What went wrong, for callers that branch on it.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EnvErrorKind {
    /// fw_env.config (or the location given) is malformed.
    Config,
    /// The flash or file failed (see `EnvError::flash`).
    Flash,
    /// No copy has a valid CRC.
    NoValidCopy,
    /// The variables do not fit in the environment size.
    TooLarge,
    /// A variable name or value U-Boot cannot store.
    BadVariable,
    /// Sizes and offsets do not fit the device's geometry.
    Geometry,
}

/// A U-Boot environment error: one line naming the device and offset, or
/// the variable, at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvError {
    /// What kind of failure.
    pub kind: EnvErrorKind,
    /// The whole message (without the flash error).
    pub message: String,
    /// The underlying flash error, if any.
    pub flash: Option<Error>,
}

impl EnvError {
    fn new(kind: EnvErrorKind, message: impl Into<String>) -> Self {
        EnvError {
            kind,
            message: message.into(),
            flash: None,
        }
    }

    fn flash(message: impl Into<String>, e: Error) -> Self {
        EnvError {
            kind: EnvErrorKind::Flash,
            message: message.into(),
            flash: Some(e),
        }
    }

    /// Whether the underlying flash error was an injected power cut.
    #[must_use]
    pub fn is_power_cut(&self) -> bool {
        self.flash
            .as_ref()
            .is_some_and(|e| e.kind == ErrorKind::PowerCut)
    }
}

impl fmt::Display for EnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(e) = &self.flash {
            write!(f, ": {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for EnvError {}

/// Checks that U-Boot can store `name=value`.
pub fn check_variable(name: &str, value: &str) -> Result<(), EnvError> {
    let bad = |why: &str| {
        EnvError::new(
            EnvErrorKind::BadVariable,
            format!("variable {name:?}: {why}"),
        )
    };
    if name.is_empty() {
        return Err(bad("empty name"));
    }
    if name.contains('=') || name.contains('\0') {
        return Err(bad("name contains '=' or NUL"));
    }
    if value.contains('\0') {
        return Err(bad("value contains NUL"));
    }
    Ok(())
}

/// One copy: which device (index into the devices) and where on it.
#[derive(Debug, Clone)]
struct Slot {
    dev: usize,
    loc: EnvLocation,
}

/// What [`UbootEnv::save`] will do (for `--dry-run` and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavePlan {
    /// The copy that gets written (0 or 1).
    pub copy: usize,
    /// Where.
    pub location: EnvLocation,
    /// The flag written with it (redundant only).
    pub flag: Option<u8>,
    /// Boolean scheme: the old copy whose flag is then cleared.
    pub obsolete: Option<EnvLocation>,
}

impl fmt::Display for SavePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "write copy {} ({})", self.copy, self.location.describe())?;
        if let Some(flag) = self.flag {
            write!(f, " with flag {flag}")?;
        }
        if let Some(o) = &self.obsolete {
            write!(f, ", then clear the flag of {}", o.describe())?;
        }
        Ok(())
    }
}

/// An open U-Boot environment (one or two copies) on one or two devices.
pub struct UbootEnv<F: Flash> {
    devs: Vec<F>,
    slots: Vec<Slot>,
    endian: Endian,
    scheme: FlagScheme,
    /// The copy read (and the one a save does *not* write).
    current: usize,
    /// Whether any copy was valid when read (or a save succeeded since).
    valid: bool,
    flags: [u8; 2],
    vars: Vars,
}

impl<F: Flash> fmt::Debug for UbootEnv<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UbootEnv")
            .field("copies", &self.slots)
            .field("endian", &self.endian)
            .field("scheme", &self.scheme)
            .field("current", &self.current)
            .field("valid", &self.valid)
            .field("flags", &self.flags)
            .field("vars", &self.vars.len())
            .finish()
    }
}

impl<F: Flash> UbootEnv<F> {
    /// Opens an environment whose copies live on `devs`: `copies[i]` is
    /// `(index into devs, location)`. One copy, or two for a redundant
    /// environment (possibly on the same device). Reads both copies.
    ///
    /// An environment with no valid copy opens with no variables and
    /// [`UbootEnv::is_valid`] false (U-Boot would use its built-in default);
    /// callers decide whether that is an error.
    pub fn open_on(
        mut devs: Vec<F>,
        copies: Vec<(usize, EnvLocation)>,
        endian: Endian,
    ) -> Result<Self, EnvError> {
        if copies.is_empty() || copies.len() > 2 {
            return Err(EnvError::new(
                EnvErrorKind::Config,
                "an environment has one or two copies",
            ));
        }
        let redundant = copies.len() == 2;
        let mut slots = Vec::with_capacity(2);
        let mut kinds = Vec::new();
        for (dev, mut loc) in copies {
            let Some(flash) = devs.get_mut(dev) else {
                return Err(EnvError::new(
                    EnvErrorKind::Config,
                    format!("{}: no such device index {dev}", loc.describe()),
                ));
            };
            check_location(flash.geometry(), &mut loc, redundant)?;
            kinds.push(flash.geometry().kind);
            slots.push(Slot { dev, loc });
        }
        if redundant {
            if kinds[0] != kinds[1] {
                return Err(EnvError::new(
                    EnvErrorKind::Config,
                    format!(
                        "{} and {} are different kinds of flash",
                        slots[0].loc.describe(),
                        slots[1].loc.describe()
                    ),
                ));
            }
            let (a, b) = (&slots[0], &slots[1]);
            if a.dev == b.dev && overlaps(&a.loc, &b.loc, kinds[0]) {
                return Err(EnvError::new(
                    EnvErrorKind::Geometry,
                    format!(
                        "copies {} and {} share erase sectors: writing one would destroy the other",
                        a.loc.describe(),
                        b.loc.describe()
                    ),
                ));
            }
        }
        let scheme = FlagScheme::for_kind(kinds[0]);
        let mut env = UbootEnv {
            devs,
            slots,
            endian,
            scheme,
            current: 0,
            valid: false,
            flags: [0; 2],
            vars: Vars::new(),
        };
        env.reload()?;
        Ok(env)
    }

    /// One copy on one device.
    pub fn open_single(flash: F, loc: EnvLocation, endian: Endian) -> Result<Self, EnvError> {
        Self::open_on(vec![flash], vec![(0, loc)], endian)
    }

    /// Two copies on one device (e.g. two sectors of one MTD partition).
    pub fn open_redundant_on_one(
        flash: F,
        copy0: EnvLocation,
        copy1: EnvLocation,
        endian: Endian,
    ) -> Result<Self, EnvError> {
        Self::open_on(vec![flash], vec![(0, copy0), (0, copy1)], endian)
    }

    /// Reads the copies again and selects the current one.
    pub fn reload(&mut self) -> Result<(), EnvError> {
        let redundant = self.slots.len() == 2;
        let mut decoded = Vec::with_capacity(2);
        for i in 0..self.slots.len() {
            let bytes = self.read_copy(i)?;
            decoded.push(decode(&bytes, redundant, self.endian));
        }
        let valid = [decoded[0].crc_ok, decoded.get(1).is_some_and(|d| d.crc_ok)];
        let flags = [
            decoded[0].flag.unwrap_or(0),
            decoded.get(1).and_then(|d| d.flag).unwrap_or(0),
        ];
        self.flags = flags;
        match select_copy(valid, flags, self.scheme) {
            Some(c) => {
                self.current = c;
                self.valid = true;
                self.vars = std::mem::take(&mut decoded[c].vars);
            }
            None => {
                self.current = 0;
                self.valid = false;
                self.vars = Vars::new();
            }
        }
        Ok(())
    }

    /// Whether a valid copy was found.
    #[must_use]
    pub fn is_valid(&self) -> bool {
        self.valid
    }

    /// Whether there are two copies.
    #[must_use]
    pub fn is_redundant(&self) -> bool {
        self.slots.len() == 2
    }

    /// The copy in use (0 or 1).
    #[must_use]
    pub fn current_copy(&self) -> usize {
        self.current
    }

    /// The flag bytes read (redundant only; 0 for a missing copy).
    #[must_use]
    pub fn flags(&self) -> [u8; 2] {
        self.flags
    }

    /// The flag scheme of this medium.
    #[must_use]
    pub fn scheme(&self) -> FlagScheme {
        self.scheme
    }

    /// The variables.
    #[must_use]
    pub fn vars(&self) -> &Vars {
        &self.vars
    }

    /// One variable.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name)
    }

    /// Sets a variable in memory ([`UbootEnv::save`] writes).
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), EnvError> {
        check_variable(name, value)?;
        self.vars.insert(name.to_string(), value.to_string());
        Ok(())
    }

    /// Removes a variable in memory; returns its old value.
    pub fn unset(&mut self, name: &str) -> Option<String> {
        self.vars.remove(name)
    }

    /// Gives the devices back.
    #[must_use]
    pub fn into_devices(self) -> Vec<F> {
        self.devs
    }

    /// The devices (e.g. to inject faults in tests).
    pub fn devices_mut(&mut self) -> &mut [F] {
        &mut self.devs
    }

    /// What [`UbootEnv::save`] would do now.
    #[must_use]
    pub fn plan(&self) -> SavePlan {
        if !self.is_redundant() {
            return SavePlan {
                copy: 0,
                location: self.slots[0].loc.clone(),
                flag: None,
                obsolete: None,
            };
        }
        let target = 1 - self.current;
        let cur_flag = self.flags[self.current];
        let (flag, obsolete) = match self.scheme {
            FlagScheme::Boolean => (
                FLAG_ACTIVE,
                self.valid.then(|| self.slots[self.current].loc.clone()),
            ),
            FlagScheme::Incremental => (cur_flag.wrapping_add(1), None),
        };
        SavePlan {
            copy: target,
            location: self.slots[target].loc.clone(),
            flag: Some(flag),
            obsolete,
        }
    }

    /// Writes the variables to the inactive copy (the only copy when not
    /// redundant), reads it back, and on NOR clears the old copy's flag.
    /// After a power cut at any point one valid copy remains, holding
    /// either the old or the new variables.
    pub fn save(&mut self) -> Result<(), EnvError> {
        let plan = self.plan();
        let size = plan.location.env_size as usize;
        let image = encode(&self.vars, size, plan.flag, self.endian).map_err(|e| EnvError {
            message: format!("{}: {}", plan.location.describe(), e.message),
            ..e
        })?;
        self.write_copy(plan.copy, &image)?;
        let back = self.read_copy(plan.copy)?;
        if back != image {
            let at = back
                .iter()
                .zip(&image)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            return Err(EnvError::new(
                EnvErrorKind::Flash,
                format!(
                    "{}: read-back differs from what was written at byte {at}",
                    plan.location.describe()
                ),
            ));
        }
        self.sync(plan.copy)?;
        if let Some(old) = &plan.obsolete {
            let slot = self.slots[self.current].clone();
            let (phys, _) = self.copy_sectors(&slot)?.first().copied().ok_or_else(|| {
                EnvError::new(
                    EnvErrorKind::Geometry,
                    format!("{}: no good sector", old.describe()),
                )
            })?;
            let flash = &mut self.devs[slot.dev];
            flash.write(phys + 4, &[FLAG_OBSOLETE]).map_err(|e| {
                EnvError::flash(
                    format!("{}: clearing the obsolete copy's flag", old.describe()),
                    e,
                )
            })?;
            self.sync(self.current)?;
            self.flags[self.current] = FLAG_OBSOLETE;
        }
        if let Some(f) = plan.flag {
            self.flags[plan.copy] = f;
        }
        self.current = plan.copy;
        self.valid = true;
        Ok(())
    }

    fn sync(&mut self, copy: usize) -> Result<(), EnvError> {
        let slot = &self.slots[copy];
        let desc = slot.loc.describe();
        self.devs[slot.dev]
            .sync()
            .map_err(|e| EnvError::flash(format!("{desc}: sync"), e))
    }

    /// Physical (offset, length) pieces holding a copy: on NOR/NAND one per
    /// sector, bad NAND sectors in the copy's area skipped.
    fn copy_sectors(&mut self, slot: &Slot) -> Result<Vec<(u64, usize)>, EnvError> {
        let flash = &mut self.devs[slot.dev];
        let geo = flash.geometry();
        let loc = &slot.loc;
        let size = loc.env_size as usize;
        if geo.kind == FlashKind::Plain {
            return Ok(vec![(loc.offset, size)]);
        }
        let ss = u64::from(loc.sector_size);
        let area_end = loc.offset + area_len(loc);
        let mut out = Vec::new();
        let mut left = size;
        let mut at = loc.offset;
        while left > 0 {
            if at + ss > area_end || at + ss > geo.size {
                return Err(EnvError::new(
                    EnvErrorKind::Flash,
                    format!(
                        "{}: no good sector left for the environment ({} sectors of {ss:#x} reserved)",
                        loc.describe(),
                        loc.sectors.max(1)
                    ),
                ));
            }
            if geo.kind == FlashKind::Nand {
                let first = (at / u64::from(geo.erase_size)) as u32;
                let last = ((at + ss - 1) / u64::from(geo.erase_size)) as u32;
                let mut bad = false;
                for b in first..=last {
                    bad |= flash.is_bad(b).map_err(|e| {
                        EnvError::flash(format!("{}: bad-block query", loc.describe()), e)
                    })?;
                }
                if bad {
                    log::info!("{}: skipping bad sector at {at:#x}", loc.describe());
                    at += ss;
                    continue;
                }
            }
            let n = left.min(ss as usize);
            out.push((at, n));
            left -= n;
            at += ss;
        }
        Ok(out)
    }

    fn read_copy(&mut self, copy: usize) -> Result<Vec<u8>, EnvError> {
        let slot = self.slots[copy].clone();
        let pieces = self.copy_sectors(&slot)?;
        let mut out = vec![0u8; slot.loc.env_size as usize];
        let mut at = 0;
        let flash = &mut self.devs[slot.dev];
        for (phys, n) in pieces {
            flash.read(phys, &mut out[at..at + n]).map_err(|e| {
                EnvError::flash(format!("{}: reading copy {copy}", slot.loc.describe()), e)
            })?;
            at += n;
        }
        Ok(out)
    }

    fn write_copy(&mut self, copy: usize, image: &[u8]) -> Result<(), EnvError> {
        let slot = self.slots[copy].clone();
        let pieces = self.copy_sectors(&slot)?;
        let flash = &mut self.devs[slot.dev];
        let geo = flash.geometry();
        let desc = slot.loc.describe();
        let ws = geo.write_size.max(1) as usize;
        let mut at = 0;
        for (phys, n) in pieces {
            if geo.kind != FlashKind::Plain {
                let es = u64::from(geo.erase_size);
                let first = (phys / es) as u32;
                let last = ((phys + u64::from(slot.loc.sector_size) - 1) / es) as u32;
                for b in first..=last {
                    flash
                        .erase_block(b)
                        .map_err(|e| EnvError::flash(format!("{desc}: erasing copy {copy}"), e))?;
                }
            }
            let piece = &image[at..at + n];
            let padded = n.div_ceil(ws) * ws;
            let r = if padded == n {
                flash.write(phys, piece)
            } else {
                let mut buf = vec![0xFFu8; padded];
                buf[..n].copy_from_slice(piece);
                flash.write(phys, &buf)
            };
            r.map_err(|e| EnvError::flash(format!("{desc}: writing copy {copy}"), e))?;
            at += n;
        }
        Ok(())
    }
}

/// Fills in the sector size and checks alignment against the device.
fn check_location(
    geo: crate::Geometry,
    loc: &mut EnvLocation,
    redundant: bool,
) -> Result<(), EnvError> {
    let desc = loc.describe();
    let bad = |msg: String| {
        Err(EnvError::new(
            EnvErrorKind::Geometry,
            format!("{desc}: {msg}"),
        ))
    };
    if (loc.env_size as usize) < header_len(redundant) + 2 {
        return bad(format!("environment size {:#x} is too small", loc.env_size));
    }
    if loc.sector_size == 0 {
        loc.sector_size = geo.erase_size.max(1);
    }
    let end = loc.offset + u64::from(loc.env_size);
    if end > geo.size {
        return bad(format!(
            "environment of {:#x} bytes runs past the end of the device ({:#x} bytes)",
            loc.env_size, geo.size
        ));
    }
    if geo.kind != FlashKind::Plain {
        let es = u64::from(geo.erase_size);
        if u64::from(loc.sector_size) % es != 0 {
            return bad(format!(
                "sector size {:#x} is not a multiple of the eraseblock size {es:#x}",
                loc.sector_size
            ));
        }
        if loc.offset % es != 0 {
            return bad(format!(
                "offset is not aligned to the eraseblock size {es:#x}"
            ));
        }
        if geo.kind == FlashKind::Nand && loc.env_size % geo.write_size != 0 {
            return bad(format!(
                "environment size {:#x} is not a multiple of the NAND page ({:#x})",
                loc.env_size, geo.write_size
            ));
        }
    }
    Ok(())
}

/// Bytes reserved for a copy on NOR/NAND: the sectors it needs plus
/// `sectors - 1` spares (libubootenv skips at most `sectors - 1` bad sectors;
/// for the usual environment of at most one sector this is U-Boot's "N
/// sectors from the offset").
fn area_len(l: &EnvLocation) -> u64 {
    let ss = u64::from(l.sector_size.max(1));
    let need = u64::from(l.env_size).div_ceil(ss);
    ss * (need + u64::from(l.sectors.max(1)) - 1)
}

/// Whether two copies on one device share an erase sector (or bytes).
fn overlaps(a: &EnvLocation, b: &EnvLocation, kind: FlashKind) -> bool {
    let span = |l: &EnvLocation| {
        let len = if kind == FlashKind::Plain {
            u64::from(l.env_size)
        } else {
            area_len(l)
        };
        (l.offset, l.offset + len)
    };
    let (a0, a1) = span(a);
    let (b0, b1) = span(b);
    a0 < b1 && b0 < a1
}

/// Opens one fw_env.config device: `/dev/mtdN` as MTD, a firmcast target
/// spec (`simnor:`, `simnand:`, `file:`, `mtd:NAME`) through
/// [`crate::open_target`], anything else as a plain file or block device.
pub fn open_device(device: &str) -> Result<Box<dyn Flash + Send>, EnvError> {
    let err = |e: Error| EnvError::flash(format!("environment device {device}"), e);
    let is_spec = ["simnor:", "simnand:", "file:", "mtd:"]
        .iter()
        .any(|p| device.starts_with(p));
    if is_spec {
        return crate::open_target(device, None).map_err(err);
    }
    let is_mtd_char = device
        .strip_prefix("/dev/mtd")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if is_mtd_char {
        return crate::Mtd::open(device)
            .map(|m| Box::new(m) as Box<dyn Flash + Send>)
            .map_err(err);
    }
    crate::FileFlash::open(device, None)
        .map(|f| Box::new(f) as Box<dyn Flash + Send>)
        .map_err(err)
}

/// Opens the environment described by `config`; copies on the same device
/// share one handle.
pub fn open_config(
    config: &EnvConfig,
    endian: Endian,
) -> Result<UbootEnv<Box<dyn Flash + Send>>, EnvError> {
    let mut names: Vec<&str> = Vec::new();
    let mut devs = Vec::new();
    let mut copies = Vec::new();
    for loc in &config.copies {
        let idx = match names.iter().position(|n| *n == loc.device) {
            Some(i) => i,
            None => {
                devs.push(open_device(&loc.device)?);
                names.push(&loc.device);
                names.len() - 1
            }
        };
        copies.push((idx, loc.clone()));
    }
    UbootEnv::open_on(devs, copies, endian)
}

/// Reads and parses the fw_env.config at `path`, then opens the environment.
pub fn open_config_file(
    path: &std::path::Path,
    endian: Endian,
) -> Result<UbootEnv<Box<dyn Flash + Send>>, EnvError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        EnvError::new(
            EnvErrorKind::Config,
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let cfg = parse_fw_env_config(&path.display().to_string(), &text)?;
    open_config(&cfg, endian)
}

#[cfg(test)]
mod tests;
