//! Wire format v1: every datagram is a fixed [`Header`], a postcard-encoded
//! body, and a CRC-32 trailer. [`decode`] checks all three and returns a typed
//! [`Frame`] that borrows from the datagram; [`encode`] is its inverse.
//!
//! Decoding never panics: truncated input, bad magic, unknown version or kind,
//! bad CRC, trailing bytes and out-of-range fields are all [`DecodeError`]s
//! (rules `R-WIRE-*` in PROTOCOL.md). No frame carries an IP address, so
//! every frame is the same over IPv4 and IPv6 (R-NET-3): peers are the UDP
//! source addresses the shells hand in.

mod bytes;
mod code;
// Used where crc32fast has no CRC instructions; tested on every target.
#[cfg_attr(any(target_arch = "x86_64", target_arch = "aarch64"), allow(dead_code))]
mod crc_compact;
mod header;
mod signed;

pub use bytes::Bytes;
pub use code::{DeviceState, Reason};
/// CRC-32/ISO-HDLC of `data` with whichever implementation this target uses
/// (for other crates that need the same CRC: the U-Boot environment).
pub fn crc32(data: &[u8]) -> u32 {
    CRC32.checksum(data)
}
pub use header::{
    check_crc, Crc32, FrameKind, Header, ImageId, CRC32, FLAG_PARITY, FLAG_REPAIR, FLAG_SIGNED,
    HEADER_LEN, MAGIC, TRAILER_LEN, VERSION,
};
pub use signed::{sign_status, status_signature, verify_status, SIGNATURE_LEN};

use serde::{Deserialize, Serialize};

/// Largest chunk payload a sender may use (fits a 9000-byte jumbo frame).
pub const MAX_CHUNK_SIZE: u32 = 8192;
/// Smallest chunk payload.
pub const MIN_CHUNK_SIZE: u32 = 64;
/// Largest block (the unit of SHA-256 verification and flashing).
pub const MAX_BLOCK_SIZE: u32 = 1 << 20;
/// Largest signed manifest a receiver accepts.
pub const MAX_MANIFEST_LEN: u32 = 1 << 20;
/// Largest datagram any firmcast peer emits or accepts.
pub const MAX_DATAGRAM: usize = MAX_CHUNK_SIZE as usize + 128;
/// Most chunk ranges in one NACK.
pub const MAX_NACK_RANGES: usize = 64;
/// Longest board id, in bytes.
pub const MAX_BOARD_LEN: usize = 64;
/// Longest version string, in bytes.
pub const MAX_VERSION_LEN: usize = 32;

/// Why a datagram was dropped. Every variant is counted by the receiving machine.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than header + trailer, or the body ended early.
    Truncated,
    /// The first four bytes are not `FMCS`.
    BadMagic,
    /// A wire version this build does not speak.
    UnsupportedVersion(u8),
    /// A frame kind this build does not know.
    UnknownKind(u8),
    /// Unknown flag bits or a non-zero reserved byte.
    ReservedBits,
    /// The CRC-32 trailer does not match.
    BadCrc,
    /// The body does not decode as the frame kind's structure.
    Malformed,
    /// The body decoded but left bytes over.
    TrailingBytes,
    /// A field is outside its allowed range; names the field.
    OutOfRange(&'static str),
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("truncated datagram"),
            DecodeError::BadMagic => f.write_str("bad magic"),
            DecodeError::UnsupportedVersion(v) => write!(f, "unsupported wire version {v}"),
            DecodeError::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            DecodeError::ReservedBits => f.write_str("reserved header bits set"),
            DecodeError::BadCrc => f.write_str("CRC-32 mismatch"),
            DecodeError::Malformed => f.write_str("malformed body"),
            DecodeError::TrailingBytes => f.write_str("trailing bytes after body"),
            DecodeError::OutOfRange(field) => write!(f, "field `{field}` out of range"),
        }
    }
}

/// Why a frame could not be encoded.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer is too small.
    BufferTooSmall,
}

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("output buffer too small for frame")
    }
}

/// Sender → group, repeated through the carousel: what is on offer.
/// Unauthenticated: a receiver uses it only to decide whether to fetch the
/// manifest, which is authoritative (R-ANN-1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announce<'a> {
    /// Board id the image is for, e.g. `acme,rt1`.
    pub board: &'a str,
    /// Version of the image.
    pub version: &'a str,
    /// Image length in bytes.
    pub image_len: u64,
    /// Bytes per block (the unit of SHA-256 check and flashing).
    pub block_size: u32,
    /// Payload bytes per Data chunk.
    pub chunk_size: u32,
    /// Length of the signed manifest in bytes.
    pub manifest_len: u32,
    /// Carousel rate in kbit/s (for receivers' timers).
    pub rate_kbps: u32,
    /// Carousel pass number, from 0.
    pub pass: u32,
}

/// Sender → group: bytes `offset..offset+bytes.len()` of the signed manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestChunk<'a> {
    /// Offset into the signed manifest.
    pub offset: u32,
    /// The manifest bytes.
    #[serde(borrow)]
    pub bytes: Bytes<'a>,
}

/// Image bytes: chunk `chunk` of block `block`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Data<'a> {
    /// Block index.
    pub block: u32,
    /// Chunk index within the block.
    pub chunk: u32,
    /// Chunk payload (`chunk_size` bytes, shorter only at the image's end).
    #[serde(borrow)]
    pub payload: Bytes<'a>,
}

/// Sender → group, ahead of a block's chunks: hashes `first..` of the
/// block's chunk-hash list (R-AUTH-2). Unsigned: a device keeps a list only
/// once all of it hashes to the block's digest in the signed manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkList<'a> {
    /// Block index.
    pub block: u32,
    /// Index of the chunk whose hash comes first.
    pub first: u32,
    /// Consecutive chunk hashes, [`CHUNK_HASH_LEN`] bytes each.
    #[serde(borrow)]
    pub hashes: Bytes<'a>,
}

/// Bytes of one chunk hash in a [`ChunkList`] (the manifest's
/// `CHUNK_HASH_LEN`).
pub const CHUNK_HASH_LEN: usize = 16;

/// A run of chunks by global chunk index (`block * chunks_per_block + chunk`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRange {
    /// First global chunk index.
    pub start: u32,
    /// Number of chunks (at least 1).
    pub len: u32,
}

impl ChunkRange {
    /// One past the last chunk.
    pub fn end(&self) -> u32 {
        self.start.saturating_add(self.len)
    }
}

/// Device → repair server: the chunks this device is missing (R-NACK-*).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nack {
    /// The device's id.
    pub device_id: u64,
    /// Missing ranges, sorted, non-overlapping, at most [`MAX_NACK_RANGES`].
    pub ranges: heapless::Vec<ChunkRange, MAX_NACK_RANGES>,
}

/// Device → sender and repair server: progress and outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status<'a> {
    /// The device's id.
    pub device_id: u64,
    /// Where the device is.
    pub state: DeviceState,
    /// Blocks written and verified.
    pub blocks_done: u32,
    /// Blocks in the image.
    pub blocks_total: u32,
    /// The version the device runs now.
    pub current_version: &'a str,
    /// Why it refused or failed.
    pub reason: Reason,
    /// R-PACE-1: the rate, in kbit/s of image bytes, at which the device
    /// wrote its latest blocks to flash; 0 when not measured yet.
    pub write_kbps: u32,
    /// R-PACE-1: free slots in the device's block window;
    /// [`WINDOW_FREE_NONE`] when it has no window (not receiving).
    pub window_free: u16,
}

/// `Status::window_free` of a device that has no block window.
pub const WINDOW_FREE_NONE: u16 = u16::MAX;

/// A decoded frame body, borrowing from the datagram.
// Nack carries its bounded range list inline (about 520 bytes): frames are
// decoded on the stack, and boxing it would allocate for every NACK.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// See [`Announce`].
    Announce(Announce<'a>),
    /// See [`ManifestChunk`].
    ManifestChunk(ManifestChunk<'a>),
    /// See [`Data`].
    Data(Data<'a>),
    /// See [`Nack`].
    Nack(Nack),
    /// See [`Status`].
    Status(Status<'a>),
    /// See [`ChunkList`].
    ChunkList(ChunkList<'a>),
}

/// A datagram decoded once by the shell and handed, with its bytes, to
/// every machine that takes it (`firmcast send --repair-listen` feeds one
/// Status to both the sender's and the repair server's fleet).
pub type Decoded<'a> = Result<(Header, Frame<'a>), DecodeError>;

impl Frame<'_> {
    /// The header kind for this body.
    pub fn kind(&self) -> FrameKind {
        match self {
            Frame::Announce(_) => FrameKind::Announce,
            Frame::ManifestChunk(_) => FrameKind::ManifestChunk,
            Frame::Data(_) => FrameKind::Data,
            Frame::Nack(_) => FrameKind::Nack,
            Frame::Status(_) => FrameKind::Status,
            Frame::ChunkList(_) => FrameKind::ChunkList,
        }
    }
}

fn body<'a, T: Deserialize<'a> + Serialize>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    let (value, rest) = postcard::take_from_bytes::<T>(bytes).map_err(|e| match e {
        postcard::Error::DeserializeUnexpectedEnd => DecodeError::Truncated,
        _ => DecodeError::Malformed,
    })?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes);
    }
    // R-WIRE-3: one frame has one encoding. Postcard's reader accepts
    // overlong varints (`81 81 00` for 129); the canonical size exposes them.
    let canonical = postcard::serialize_with_flavor::<T, _, usize>(
        &value,
        postcard::ser_flavors::Size::default(),
    );
    if canonical.map_err(|_| DecodeError::Malformed)? != bytes.len() {
        return Err(DecodeError::Malformed);
    }
    Ok(value)
}

fn check_announce(a: &Announce<'_>) -> Result<(), DecodeError> {
    if a.board.is_empty() || a.board.len() > MAX_BOARD_LEN {
        return Err(DecodeError::OutOfRange("board"));
    }
    if a.version.is_empty() || a.version.len() > MAX_VERSION_LEN {
        return Err(DecodeError::OutOfRange("version"));
    }
    check_geometry(a.image_len, a.block_size, a.chunk_size).map_err(DecodeError::OutOfRange)?;
    if a.manifest_len == 0 || a.manifest_len > MAX_MANIFEST_LEN {
        return Err(DecodeError::OutOfRange("manifest_len"));
    }
    Ok(())
}

/// Check an image geometry (R-WIRE-5): chunk size in range, block size at
/// least one chunk and at most [`MAX_BLOCK_SIZE`], at least one block. The
/// block size need not be a multiple of the chunk size: the last chunk of
/// every block may be short (R-WIRE-6). Returns the offending field's name.
pub fn check_geometry(
    image_len: u64,
    block_size: u32,
    chunk_size: u32,
) -> Result<(), &'static str> {
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        return Err("chunk_size");
    }
    if block_size < chunk_size || block_size > MAX_BLOCK_SIZE {
        return Err("block_size");
    }
    if image_len == 0 || image_len.div_ceil(u64::from(block_size)) > u64::from(u32::MAX) {
        return Err("image_len");
    }
    Ok(())
}

/// Where chunk `chunk` of block `block` lies in the image (R-WIRE-6):
/// `(offset, len)`, the chunk cut at the end of its block and of the image;
/// `None` past either end. Sender, repair server and receiver all place
/// chunks with this one function.
pub fn chunk_span(
    image_len: u64,
    block_size: u32,
    chunk_size: u32,
    block: u32,
    chunk: u32,
) -> Option<(u64, usize)> {
    let block_start = u64::from(block) * u64::from(block_size);
    let block_end = (block_start + u64::from(block_size)).min(image_len);
    let start = block_start + u64::from(chunk) * u64::from(chunk_size);
    if start >= block_end {
        return None;
    }
    let len = (block_end - start).min(u64::from(chunk_size));
    Some((start, len as usize))
}

/// The bytes of chunk `chunk` of block `block` in `image`, the image of
/// `image_len` bytes that a manifest describes ([`chunk_span`]); `None` past
/// its end or where `image` is shorter than `image_len` says.
pub fn chunk_bytes(
    image: &[u8],
    image_len: u64,
    block_size: u32,
    chunk_size: u32,
    block: u32,
    chunk: u32,
) -> Option<&[u8]> {
    let (start, len) = chunk_span(image_len, block_size, chunk_size, block, chunk)?;
    let start = usize::try_from(start).ok()?;
    image.get(start..start.checked_add(len)?)
}

/// Chunks in a full block: the last one short where `chunk_size` does not
/// divide `block_size` (R-WIRE-6).
pub fn chunks_per_block(block_size: u32, chunk_size: u32) -> u32 {
    block_size.div_ceil(chunk_size.max(1))
}

fn check_nack(n: &Nack) -> Result<(), DecodeError> {
    let mut prev_end = 0u32;
    for (i, r) in n.ranges.iter().enumerate() {
        if r.len == 0 || r.start.checked_add(r.len).is_none() || (i > 0 && r.start < prev_end) {
            return Err(DecodeError::OutOfRange("ranges"));
        }
        prev_end = r.end();
    }
    Ok(())
}

/// Decode one datagram: header, CRC, body, field ranges.
pub fn decode(datagram: &[u8]) -> Decoded<'_> {
    let header = Header::parse(datagram)?;
    let covered = check_crc(datagram)?;
    // R-PAR-1: the parity flag means something on Data frames only.
    if header.flags & FLAG_PARITY != 0 && header.kind != FrameKind::Data {
        return Err(DecodeError::ReservedBits);
    }
    // R-WIRE-7: only a Status carries a signature, between body and CRC.
    let b = if header.flags & FLAG_SIGNED != 0 {
        if header.kind != FrameKind::Status {
            return Err(DecodeError::ReservedBits);
        }
        let end = covered
            .len()
            .checked_sub(SIGNATURE_LEN)
            .filter(|end| *end >= HEADER_LEN)
            .ok_or(DecodeError::Truncated)?;
        &covered[HEADER_LEN..end]
    } else {
        &covered[HEADER_LEN..]
    };
    let frame = match header.kind {
        FrameKind::Announce => {
            let a: Announce<'_> = body(b)?;
            check_announce(&a)?;
            Frame::Announce(a)
        }
        FrameKind::ManifestChunk => {
            let m: ManifestChunk<'_> = body(b)?;
            let end = u64::from(m.offset) + m.bytes.0.len() as u64;
            if m.bytes.0.is_empty() || end > u64::from(MAX_MANIFEST_LEN) {
                return Err(DecodeError::OutOfRange("offset"));
            }
            Frame::ManifestChunk(m)
        }
        FrameKind::Data => {
            let d: Data<'_> = body(b)?;
            if d.payload.0.is_empty() || d.payload.0.len() > MAX_CHUNK_SIZE as usize {
                return Err(DecodeError::OutOfRange("payload"));
            }
            if d.chunk >= MAX_BLOCK_SIZE / MIN_CHUNK_SIZE {
                return Err(DecodeError::OutOfRange("chunk"));
            }
            Frame::Data(d)
        }
        FrameKind::Nack => {
            let n: Nack = body(b)?;
            check_nack(&n)?;
            Frame::Nack(n)
        }
        FrameKind::Status => {
            let s: Status<'_> = body(b)?;
            if s.current_version.len() > MAX_VERSION_LEN || s.blocks_done > s.blocks_total {
                return Err(DecodeError::OutOfRange("status"));
            }
            Frame::Status(s)
        }
        FrameKind::ChunkList => {
            let l: ChunkList<'_> = body(b)?;
            let n = l.hashes.0.len();
            let max = MAX_BLOCK_SIZE / MIN_CHUNK_SIZE;
            if n == 0 || n % CHUNK_HASH_LEN != 0 || n > MAX_CHUNK_SIZE as usize {
                return Err(DecodeError::OutOfRange("hashes"));
            }
            if l.first >= max || l.first + (n / CHUNK_HASH_LEN) as u32 > max {
                return Err(DecodeError::OutOfRange("first"));
            }
            Frame::ChunkList(l)
        }
    };
    Ok((header, frame))
}

/// Encode `frame` with the given session, image id and flags into `out`;
/// returns the datagram length.
pub fn encode(
    session: u32,
    image_id: ImageId,
    flags: u8,
    frame: &Frame<'_>,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    if out.len() < HEADER_LEN + TRAILER_LEN {
        return Err(EncodeError::BufferTooSmall);
    }
    let header = Header {
        kind: frame.kind(),
        flags,
        session,
        image_id,
    };
    let (head, rest) = out.split_at_mut(HEADER_LEN);
    let head: &mut [u8; HEADER_LEN] = head.try_into().map_err(|_| EncodeError::BufferTooSmall)?;
    header.emit(head);
    let body_room = rest.len() - TRAILER_LEN;
    let body_len = {
        let room = &mut rest[..body_room];
        let written = match frame {
            Frame::Announce(a) => postcard::to_slice(a, room),
            Frame::ManifestChunk(m) => postcard::to_slice(m, room),
            Frame::Data(d) => postcard::to_slice(d, room),
            Frame::Nack(n) => postcard::to_slice(n, room),
            Frame::Status(s) => postcard::to_slice(s, room),
            Frame::ChunkList(l) => postcard::to_slice(l, room),
        }
        .map_err(|_| EncodeError::BufferTooSmall)?;
        written.len()
    };
    let total = HEADER_LEN + body_len;
    let crc = CRC32.checksum(&out[..total]);
    out[total..total + TRAILER_LEN].copy_from_slice(&crc.to_be_bytes());
    Ok(total + TRAILER_LEN)
}

#[cfg(test)]
mod tests;
