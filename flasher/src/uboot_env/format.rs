//! The environment's bytes: encoding and decoding one copy (CRC, flag,
//! `name=value` data, padding) and choosing between two copies by their
//! flags, as U-Boot and libubootenv do.

use super::{check_variable, Endian, EnvError, EnvErrorKind, FlagScheme, Vars};

pub(super) fn header_len(redundant: bool) -> usize {
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
    for (k, v) in vars.iter() {
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
