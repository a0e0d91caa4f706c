//! What a state machine hands its shell: datagrams to send ([`Transmit`],
//! addressed by [`Dest`]) and why an input datagram was dropped ([`DropReason`]).

use core::net::SocketAddr;

use crate::wire::{DecodeError, FrameKind};

/// Where the shell should send a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// The data multicast group (sender) or the repair group (repair server).
    Group,
    /// The repair server configured on the device.
    RepairServer,
    /// One peer, by address (a device for a unicast repair, the sender for a status report).
    Peer(SocketAddr),
}

/// A datagram the state machine wrote into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub dest: Dest,
    /// Its length: send `buf[..len]`.
    pub len: usize,
    /// The kind of frame it carries (the shell need not parse its own
    /// output, e.g. to sign Status frames, R-STAT-4).
    pub kind: FrameKind,
}

/// Why an input datagram was dropped. Drops are counted, never fatal.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// It does not decode (see [`DecodeError`]).
    Decode(DecodeError),
    /// It belongs to another image than the one in progress.
    OtherImage,
    /// It belongs to a session this machine has not adopted.
    OtherSession,
    /// A frame kind this machine does not take in its current state.
    Unexpected,
    /// A field does not fit the manifest in force (block or chunk index, length).
    OutOfManifest,
    /// A resource bound was hit (pending table full, rate cap).
    Overload,
    /// A Status for a roster device without a valid signature (R-STAT-4).
    Unauthenticated,
    /// A Data chunk whose hash is not in its block's verified chunk-hash
    /// list, or a chunk-hash list that does not match the signed manifest
    /// (R-AUTH-3).
    Forged,
}

impl core::fmt::Display for DropReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DropReason::Decode(e) => write!(f, "undecodable: {e}"),
            DropReason::OtherImage => f.write_str("for another image"),
            DropReason::OtherSession => f.write_str("from a session not adopted"),
            DropReason::Unexpected => f.write_str("unexpected frame kind"),
            DropReason::OutOfManifest => f.write_str("index or length outside the manifest"),
            DropReason::Overload => f.write_str("over a resource bound"),
            DropReason::Unauthenticated => f.write_str("not signed by the device's roster key"),
            DropReason::Forged => {
                f.write_str("chunk or chunk list not matching the signed manifest")
            }
        }
    }
}

impl From<DecodeError> for DropReason {
    fn from(e: DecodeError) -> Self {
        DropReason::Decode(e)
    }
}
