//! Wire decoding (R-WIRE-*): `decode` never panics, and whatever it accepts
//! re-encodes, with the header fields it returned, to exactly the input bytes
//! (the encoding is canonical: one frame, one datagram).
//!
//! Every input is tried twice: as is, and with its last four bytes replaced by
//! the correct CRC, so that the fuzzer explores the body parsers instead of
//! stopping at the CRC check.
//! Overlong varints are refused by the decoder (R-WIRE-3), so the identity
//! holds for every accepted datagram.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::wire::{decode, encode, CRC32, HEADER_LEN, TRAILER_LEN};

fn check(datagram: &[u8]) {
    let Ok((header, frame)) = decode(datagram) else {
        return;
    };
    // Re-encoding an accepted frame never needs more room than the input had.
    let mut buf = vec![0u8; datagram.len()];
    let n = encode(
        header.session,
        header.image_id,
        header.flags,
        &frame,
        &mut buf,
    )
    .expect("a decoded frame re-encodes into as many bytes as it came in");
    let again = &buf[..n];
    assert!(
        again == datagram,
        "decode → encode is not the identity\n input: {}\noutput: {}",
        hex(datagram),
        hex(again)
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() >= HEADER_LEN + TRAILER_LEN {
        let mut sealed = data.to_vec();
        let n = sealed.len() - TRAILER_LEN;
        let crc = CRC32.checksum(&sealed[..n]);
        sealed[n..].copy_from_slice(&crc.to_be_bytes());
        check(&sealed);
    }
});
