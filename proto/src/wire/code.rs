//! The one-byte codes of a Status ([`DeviceState`], [`Reason`]): each value,
//! its variant and its stable name written once, and a catch-all so that a
//! value this build does not know decodes as `Unknown(n)` instead of failing
//! the whole frame (R-STAT-9: values are only ever appended, and an older
//! operator tool must still show a newer agent's report).
//!
//! On the wire each code is one byte (postcard `u8`). For the values below
//! 128 that is byte for byte what postcard's enum encoding (a varint variant
//! index) wrote before, so the known values' encoding is unchanged.

use core::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Defines a one-byte wire code: the enum with an `Unknown(u8)` catch-all,
/// `from_u8`/`to_u8`, `as_str`, `Display` (`unknown(n)` for the catch-all)
/// and serde as a `u8`.
macro_rules! wire_code {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A value this build does not know (R-STAT-9), kept as received.
            /// Never holds a known value: [`Self::from_u8`] maps those to
            /// their variant.
            Unknown(u8),
        }

        impl $name {
            /// The variant for a wire byte; `Unknown(n)` for a value this
            /// build does not know.
            pub const fn from_u8(value: u8) -> Self {
                match value {
                    $( $value => Self::$variant, )*
                    n => Self::Unknown(n),
                }
            }

            /// The wire byte.
            pub const fn to_u8(self) -> u8 {
                match self {
                    $( Self::$variant => $value, )*
                    Self::Unknown(n) => n,
                }
            }

            /// A short stable name for logs and JSON; `"unknown"` for a
            /// value this build does not know (`Display` adds the number).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $text, )*
                    Self::Unknown(_) => "unknown",
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    Self::Unknown(n) => write!(f, "unknown({n})"),
                    known => f.write_str(known.as_str()),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_u8(self.to_u8())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                u8::deserialize(deserializer).map(Self::from_u8)
            }
        }
    };
}

wire_code! {
    /// Where a device is in an update. Non-exhaustive: values are appended
    /// (R-STAT-9), so other crates keep an arm for the ones they do not name.
    #[non_exhaustive]
    pub enum DeviceState {
        /// Waiting for an announce.
        Listening = 0 => "listening",
        /// Fetching and verifying the manifest.
        FetchingManifest = 1 => "manifest",
        /// Scanning the target for blocks already written.
        Resuming = 2 => "resuming",
        /// Receiving and flashing blocks.
        Receiving = 3 => "receiving",
        /// Reading back the whole image.
        Verifying = 4 => "verifying",
        /// Image written and verified.
        Done = 5 => "done",
        /// Refused this image (see the reason).
        Refused = 6 => "refused",
        /// Failed (see the reason).
        Failed = 7 => "failed",
        /// The new image is the one the bootloader boots next (A/B slot flipped,
        /// or the activation command succeeded); not yet confirmed.
        Activated = 8 => "activated",
        /// After booting the new image, the health check passed and the
        /// bootloader's rollback was disarmed.
        Confirmed = 9 => "confirmed",
        /// The bootloader fell back to the previous slot (the new image did not
        /// boot healthily).
        RolledBack = 10 => "rolled-back",
        /// The agent gave up: no progress for its stall timeout, or its run
        /// deadline passed (R-STAT-7); what is on flash stays, the next run resumes.
        Stalled = 11 => "stalled",
    }
}

wire_code! {
    /// Why a device refused or failed, or `None`. Non-exhaustive like
    /// [`DeviceState`].
    #[non_exhaustive]
    pub enum Reason {
        /// No reason: all is well.
        None = 0 => "none",
        /// The manifest signature does not verify with the device's key.
        BadSignature = 1 => "bad-signature",
        /// The manifest is for another board.
        WrongBoard = 2 => "wrong-board",
        /// The image is not newer than the running version (anti-rollback).
        NotNewer = 3 => "not-newer",
        /// The manifest does not agree with the announce, or is malformed.
        ManifestMismatch = 4 => "manifest-mismatch",
        /// The manifest asks for more memory or flash than the device has.
        TooLarge = 5 => "too-large",
        /// Writing flash failed.
        FlashError = 6 => "flash-error",
        /// The image read back from flash does not match.
        VerifyFailed = 7 => "verify-failed",
        /// The image is on flash but activation failed (environment write or
        /// activation command).
        ActivationFailed = 8 => "activation-failed",
        /// The health check failed after booting the new image; the bootloader's
        /// rollback stays armed.
        HealthCheckFailed = 9 => "health-check-failed",
        /// The flash target could not be opened (missing device, permissions, a
        /// `file:` target without a size).
        TargetOpen = 10 => "target-open",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips_and_only_unknown_values_are_unknown() {
        for n in 0..=u8::MAX {
            let (s, r) = (DeviceState::from_u8(n), Reason::from_u8(n));
            assert_eq!((s.to_u8(), r.to_u8()), (n, n));
            assert_eq!(matches!(s, DeviceState::Unknown(_)), n > 11, "state {n}");
            assert_eq!(matches!(r, Reason::Unknown(_)), n > 10, "reason {n}");
        }
    }

    #[test]
    fn r_stat_9_unknown_values_show_their_number() {
        use alloc::string::ToString;
        assert_eq!(DeviceState::from_u8(200).to_string(), "unknown(200)");
        assert_eq!(Reason::from_u8(200).to_string(), "unknown(200)");
        assert_eq!(DeviceState::RolledBack.to_string(), "rolled-back");
        assert_eq!(Reason::TargetOpen.to_string(), "target-open");
    }
}
