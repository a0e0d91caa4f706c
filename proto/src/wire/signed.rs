//! Signed Status frames (R-WIRE-7): a device with its own Ed25519 key makes
//! its reports attributable, so that a forged Status cannot move an
//! operator's `--until-done` count.
//!
//! ```text
//!  header (flags has FLAG_SIGNED) ‖ body ‖ Ed25519 signature (64) ‖ CRC-32
//!  └──────────── signed ────────────┘
//! ```
//!
//! Signing is deterministic (RFC 8032): no randomness is needed, so the
//! device-side code stays a pure function of key and frame.

use super::header::{FrameKind, Header, FLAG_SIGNED, HEADER_LEN, TRAILER_LEN};
use super::{EncodeError, CRC32};

/// Bytes of the signature that follows a signed Status body.
pub const SIGNATURE_LEN: usize = 64;

/// Turn the unsigned Status datagram `buf[..len]` (as [`super::encode`]
/// wrote it) into a signed one in place: set [`FLAG_SIGNED`], insert the
/// signature over header and body before the CRC, and recompute the CRC.
/// Returns the new length (`len + 64`).
pub fn sign_status(
    buf: &mut [u8],
    len: usize,
    key: &ed25519_compact::SecretKey,
) -> Result<usize, EncodeError> {
    let header = buf
        .get(..len)
        .and_then(|d| Header::parse(d).ok())
        .ok_or(EncodeError::BufferTooSmall)?;
    if header.kind != FrameKind::Status
        || header.flags & FLAG_SIGNED != 0
        || len < HEADER_LEN + TRAILER_LEN
    {
        return Err(EncodeError::BufferTooSmall);
    }
    let signed_len = len - TRAILER_LEN;
    let total = signed_len + SIGNATURE_LEN + TRAILER_LEN;
    if buf.len() < total {
        return Err(EncodeError::BufferTooSmall);
    }
    buf[6] |= FLAG_SIGNED;
    let sig = key.sign(&buf[..signed_len], None);
    buf[signed_len..signed_len + SIGNATURE_LEN].copy_from_slice(sig.as_ref());
    let crc = CRC32.checksum(&buf[..signed_len + SIGNATURE_LEN]);
    buf[signed_len + SIGNATURE_LEN..total].copy_from_slice(&crc.to_be_bytes());
    Ok(total)
}

/// The signed bytes (header ‖ body) and the signature of a signed Status
/// datagram; `None` when it carries no signature. Call it on a datagram that
/// [`super::decode`] accepted (the CRC is not checked again).
pub fn status_signature(datagram: &[u8]) -> Option<(&[u8], &[u8; SIGNATURE_LEN])> {
    let header = Header::parse(datagram).ok()?;
    if header.kind != FrameKind::Status || header.flags & FLAG_SIGNED == 0 {
        return None;
    }
    let sig_end = datagram.len().checked_sub(TRAILER_LEN)?;
    let signed_end = sig_end
        .checked_sub(SIGNATURE_LEN)
        .filter(|e| *e >= HEADER_LEN)?;
    let sig: &[u8; SIGNATURE_LEN] = datagram.get(signed_end..sig_end)?.try_into().ok()?;
    Some((&datagram[..signed_end], sig))
}

/// Whether `datagram` is a signed Status whose signature verifies with
/// `public_key` (R-WIRE-7).
pub fn verify_status(datagram: &[u8], public_key: &[u8; 32]) -> bool {
    let Some((signed, sig)) = status_signature(datagram) else {
        return false;
    };
    let pk = ed25519_compact::PublicKey::new(*public_key);
    let sig = ed25519_compact::Signature::new(*sig);
    pk.verify(signed, &sig).is_ok()
}
