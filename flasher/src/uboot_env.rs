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

use std::collections::BTreeMap;
use std::fmt;

use crate::{Error, ErrorKind, Flash, FlashKind};

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
    /// The flash or file failed (see [`EnvError::flash`]).
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

/// Where one copy of the environment lives (one fw_env.config line).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EnvLocation {
    /// The device as written in fw_env.config (`/dev/mtd1`, a file, or a
    /// firmcast target spec such as `simnor:/tmp/env.bin`).
    pub device: String,
    /// Byte offset of the copy on the device.
    pub offset: u64,
    /// Size of the copy in bytes (header included).
    pub env_size: u32,
    /// Erase sector size; 0 = the device's eraseblock size.
    pub sector_size: u32,
    /// Sectors reserved for the copy (NAND: the spares for bad blocks); 0 = 1.
    pub sectors: u32,
}

impl EnvLocation {
    /// A location with the device's sector size and one sector.
    #[must_use]
    pub fn new(device: impl Into<String>, offset: u64, env_size: u32) -> Self {
        EnvLocation {
            device: device.into(),
            offset,
            env_size,
            sector_size: 0,
            sectors: 0,
        }
    }

    /// `device at 0xOFFSET` for messages.
    #[must_use]
    pub fn describe(&self) -> String {
        format!("{} at offset {:#x}", self.device, self.offset)
    }
}

/// A parsed fw_env.config: one location, or two for a redundant environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvConfig {
    /// The copies, in file order (copy 0, copy 1).
    pub copies: Vec<EnvLocation>,
}

impl EnvConfig {
    /// Whether there are two copies.
    #[must_use]
    pub fn redundant(&self) -> bool {
        self.copies.len() == 2
    }
}

/// `%lli`: decimal, `0x` hex or leading-0 octal, optionally negative.
fn parse_c_int(s: &str) -> Option<i64> {
    let (neg, t) = match s.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let v = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()?
    } else if t.len() > 1 && t.starts_with('0') {
        i64::from_str_radix(&t[1..], 8).ok()?
    } else {
        t.parse::<i64>().ok()?
    };
    Some(if neg { -v } else { v })
}

/// `%zx`: hexadecimal with or without `0x` (so `10000` means 0x10000, as in
/// U-Boot's tools).
fn parse_hex(s: &str) -> Option<u64> {
    let t = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    u64::from_str_radix(t, 16).ok()
}

/// Parses the fw_env.config format: per line `device offset env-size
/// [sector-size [sectors]]`; `#` starts a comment line; lines with fewer than
/// three fields are ignored (as libubootenv does); the first two valid lines
/// are the copies. The offset is a C integer (decimal, `0x` hex); sizes are
/// hexadecimal with or without `0x`. `source` names the file in errors.
pub fn parse_fw_env_config(source: &str, text: &str) -> Result<EnvConfig, EnvError> {
    let mut copies = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = t.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        let at = |what: &str, v: &str| {
            EnvError::new(
                EnvErrorKind::Config,
                format!("{source} line {}: {what} `{v}` is not valid", n + 1),
            )
        };
        let offset = parse_c_int(f[1]).ok_or_else(|| at("offset", f[1]))?;
        if offset < 0 {
            return Err(at("offset (negative offsets are not supported)", f[1]));
        }
        let env_size = parse_hex(f[2])
            .and_then(|v| u32::try_from(v).ok())
            .filter(|&v| v > 8)
            .ok_or_else(|| at("environment size", f[2]))?;
        let sector_size = match f.get(3) {
            Some(v) => parse_hex(v)
                .and_then(|x| u32::try_from(x).ok())
                .ok_or_else(|| at("sector size", v))?,
            None => 0,
        };
        let sectors = match f.get(4) {
            Some(v) => parse_hex(v)
                .and_then(|x| u32::try_from(x).ok())
                .ok_or_else(|| at("number of sectors", v))?,
            None => 0,
        };
        copies.push(EnvLocation {
            device: f[0].to_string(),
            offset: offset as u64,
            env_size,
            sector_size,
            sectors,
        });
        if copies.len() == 2 {
            break;
        }
    }
    match copies.as_slice() {
        [] => Err(EnvError::new(
            EnvErrorKind::Config,
            format!("{source}: no environment line (`device offset size [sector-size [sectors]]`)"),
        )),
        [a, b] if a.env_size != b.env_size => Err(EnvError::new(
            EnvErrorKind::Config,
            format!(
                "{source}: the two copies differ in size ({:#x} and {:#x})",
                a.env_size, b.env_size
            ),
        )),
        _ => Ok(EnvConfig { copies }),
    }
}

/// The variables: sorted by name, as U-Boot exports them.
pub type Vars = BTreeMap<String, String>;

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

fn header_len(redundant: bool) -> usize {
    if redundant {
        5
    } else {
        4
    }
}

/// Encodes one copy of `env_size` bytes: CRC, flag (when `flag` is `Some`,
/// i.e. redundant), the sorted variables, `\0` terminator, `0xFF` padding.
pub fn encode(
    vars: &Vars,
    env_size: usize,
    flag: Option<u8>,
    endian: Endian,
) -> Result<Vec<u8>, EnvError> {
    let h = header_len(flag.is_some());
    if env_size < h + 2 {
        return Err(EnvError::new(
            EnvErrorKind::Geometry,
            format!("environment size {env_size} is too small"),
        ));
    }
    let mut out = vec![0xFFu8; env_size];
    let data_len = env_size - h;
    let mut at = h;
    for (k, v) in vars {
        check_variable(k, v)?;
        let need = k.len() + 1 + v.len() + 1;
        // Room for this entry and the final terminator.
        if at + need + 1 > env_size {
            return Err(EnvError::new(
                EnvErrorKind::TooLarge,
                format!("variable {k:?} does not fit: the environment holds {data_len} bytes of variables"),
            ));
        }
        out[at..at + k.len()].copy_from_slice(k.as_bytes());
        at += k.len();
        out[at] = b'=';
        at += 1;
        out[at..at + v.len()].copy_from_slice(v.as_bytes());
        at += v.len();
        out[at] = 0;
        at += 1;
    }
    out[at] = 0;
    if vars.is_empty() {
        out[at + 1] = 0;
    }
    let crc = proto::wire::crc32(&out[h..]);
    out[..4].copy_from_slice(&endian.put(crc));
    if let Some(f) = flag {
        out[4] = f;
    }
    Ok(out)
}

/// One decoded copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Whether the CRC matches.
    pub crc_ok: bool,
    /// The flag byte (redundant copies only).
    pub flag: Option<u8>,
    /// The variables (empty when the CRC does not match).
    pub vars: Vars,
}

/// Decodes one copy (`bytes` is the whole copy, `env_size` bytes).
/// Entries without `=` are skipped; a later duplicate wins; non-UTF-8 bytes
/// are replaced (U-Boot environments are ASCII).
#[must_use]
pub fn decode(bytes: &[u8], redundant: bool, endian: Endian) -> Decoded {
    let h = header_len(redundant);
    if bytes.len() < h + 1 {
        return Decoded {
            crc_ok: false,
            flag: None,
            vars: Vars::new(),
        };
    }
    let stored = endian.get([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let data = &bytes[h..];
    let crc_ok = proto::wire::crc32(data) == stored;
    let flag = redundant.then(|| bytes[4]);
    let mut vars = Vars::new();
    if crc_ok {
        for entry in data.split(|&b| b == 0) {
            if entry.is_empty() {
                break;
            }
            let s = String::from_utf8_lossy(entry);
            if let Some((k, v)) = s.split_once('=') {
                if !k.is_empty() {
                    vars.insert(k.to_string(), v.to_string());
                }
            }
        }
    }
    Decoded { crc_ok, flag, vars }
}

/// Which copy is current given each copy's CRC validity and flag
/// (libubootenv's and U-Boot's rules). `None`: no valid copy.
#[must_use]
pub fn select_copy(valid: [bool; 2], flags: [u8; 2], scheme: FlagScheme) -> Option<usize> {
    match valid {
        [false, false] => None,
        [true, false] => Some(0),
        [false, true] => Some(1),
        [true, true] => {
            let (f0, f1) = (flags[0], flags[1]);
            Some(match scheme {
                // 0xFF: written by a tool that did not know the scheme (an
                // erased flag byte programmed later); it counts as the newer.
                FlagScheme::Boolean if f1 == 0xFF => 1,
                FlagScheme::Boolean if f0 == 0xFF => 0,
                FlagScheme::Incremental if f0 == 0xFF && f1 == 0 => 1,
                FlagScheme::Incremental if f1 == 0xFF && f0 == 0 => 0,
                _ if f1 > f0 => 1,
                _ => 0,
            })
        }
    }
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
        self.vars.get(name).map(String::as_str)
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
