//! The fixed 20-byte header every firmcast datagram starts with, and the
//! CRC-32 trailer that ends it (rules `R-WIRE-1` .. `R-WIRE-4`).
//!
//! ```text
//!  0      4   5    6     7     8          12             20        n-4   n
//!  +------+---+----+-----+-----+----------+--------------+---...---+-----+
//!  |"FMCS"|ver|kind|flags| rsv | session  |   image id   |  body   | CRC |
//!  +------+---+----+-----+-----+----------+--------------+---...---+-----+
//!                               u32 BE      8 bytes        postcard  u32 BE
//! ```

use super::DecodeError;

/// Magic bytes at the start of every datagram.
pub const MAGIC: [u8; 4] = *b"FMCS";
/// The wire version this crate speaks.
pub const VERSION: u8 = 1;
/// Bytes of fixed header.
pub const HEADER_LEN: usize = 20;
/// Bytes of CRC-32 trailer.
pub const TRAILER_LEN: usize = 4;

/// Header flag: this Data frame was sent by a repair server, not the carousel.
pub const FLAG_REPAIR: u8 = 0x01;
/// Header flag (Data frames only): the payload is parity symbol number
/// `chunk` of the block's erasure code, not source chunk `chunk` (R-PAR-1).
pub const FLAG_PARITY: u8 = 0x02;
/// Header flag (Status frames only): the body is followed by a 64-byte
/// Ed25519 signature over header and body, made with the device's own key
/// (R-WIRE-7).
pub const FLAG_SIGNED: u8 = 0x04;
const KNOWN_FLAGS: u8 = FLAG_REPAIR | FLAG_PARITY | FLAG_SIGNED;

/// The CRC used for the trailer: CRC-32/ISO-HDLC (the zlib/Ethernet CRC).
pub static CRC32: Crc32 = Crc32;

/// CRC-32/ISO-HDLC by `crc32fast` on x86_64 and aarch64: carry-less
/// multiplication (PCLMULQDQ) and the CRC instructions where the CPU has
/// them (with the `std` feature, detected at run time): the CRC runs over
/// every datagram and a table-driven one was a large share of the agent's
/// CPU (`perf record`; figures in bench/README.md). Elsewhere (armv7, MIPS)
/// `crc32fast` could only use tables, and the compact slice-by-4 of
/// `crc_compact` costs a quarter of their size.
#[derive(Debug, Clone, Copy, Default)]
pub struct Crc32;

impl Crc32 {
    /// The CRC-32 of `data`.
    pub fn checksum(&self, data: &[u8]) -> u32 {
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        return crc32fast::hash(data);
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        return super::crc_compact::hash(data);
    }

    /// The CRC-32 of some bytes whose CRC-32 is `crc`, followed by `data`:
    /// `append(checksum(a), b) == checksum(a ++ b)`, and `append(0, b) ==
    /// checksum(b)`. For a block read back from flash in pieces.
    pub fn append(&self, crc: u32, data: &[u8]) -> u32 {
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        return {
            let mut h = crc32fast::Hasher::new_with_initial(crc);
            h.update(data);
            h.finalize()
        };
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        return super::crc_compact::append(crc, data);
    }
}

/// Identifies one signed image: the first 8 bytes of SHA-256 over the signed manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ImageId(pub [u8; 8]);

impl core::fmt::Display for ImageId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Frame type, the header's `kind` byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Sender → group: what is being sent.
    Announce = 1,
    /// Sender → group: a slice of the signed manifest.
    ManifestChunk = 2,
    /// Sender or repair server → group (or one device): image bytes.
    Data = 3,
    /// Device → repair server: missing chunk ranges.
    Nack = 4,
    /// Device → sender and repair server: progress and outcome.
    Status = 5,
    /// Sender → group: a piece of a block's chunk-hash list (R-AUTH-2).
    ChunkList = 6,
}

impl FrameKind {
    fn from_byte(b: u8) -> Result<Self, DecodeError> {
        Ok(match b {
            1 => FrameKind::Announce,
            2 => FrameKind::ManifestChunk,
            3 => FrameKind::Data,
            4 => FrameKind::Nack,
            5 => FrameKind::Status,
            6 => FrameKind::ChunkList,
            other => return Err(DecodeError::UnknownKind(other)),
        })
    }
}

/// The decoded fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Frame type.
    pub kind: FrameKind,
    /// Flag bits (`FLAG_*`).
    pub flags: u8,
    /// Sender-chosen random session id; a new `firmcast send` gets a new one.
    pub session: u32,
    /// The image this datagram belongs to.
    pub image_id: ImageId,
}

impl Header {
    /// Parse and check the header of `datagram` (R-WIRE-1: magic, version,
    /// kind, reserved bits). Does not check the CRC; see [`check_crc`].
    pub fn parse(datagram: &[u8]) -> Result<Header, DecodeError> {
        let h = datagram.get(..HEADER_LEN).ok_or(DecodeError::Truncated)?;
        if h[0..4] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if h[4] != VERSION {
            return Err(DecodeError::UnsupportedVersion(h[4]));
        }
        let kind = FrameKind::from_byte(h[5])?;
        let flags = h[6];
        if flags & !KNOWN_FLAGS != 0 || h[7] != 0 {
            return Err(DecodeError::ReservedBits);
        }
        let session = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&h[12..20]);
        Ok(Header {
            kind,
            flags,
            session,
            image_id: ImageId(id),
        })
    }

    /// Write the header into the first [`HEADER_LEN`] bytes of `out`.
    pub fn emit(&self, out: &mut [u8; HEADER_LEN]) {
        out[0..4].copy_from_slice(&MAGIC);
        out[4] = VERSION;
        out[5] = self.kind as u8;
        out[6] = self.flags;
        out[7] = 0;
        out[8..12].copy_from_slice(&self.session.to_be_bytes());
        out[12..20].copy_from_slice(&self.image_id.0);
    }
}

/// Check the CRC-32 trailer (R-WIRE-2) and return the bytes it covers.
pub fn check_crc(datagram: &[u8]) -> Result<&[u8], DecodeError> {
    if datagram.len() < HEADER_LEN + TRAILER_LEN {
        return Err(DecodeError::Truncated);
    }
    let (covered, trailer) = datagram.split_at(datagram.len() - TRAILER_LEN);
    let expected = u32::from_be_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    if CRC32.checksum(covered) != expected {
        return Err(DecodeError::BadCrc);
    }
    Ok(covered)
}
