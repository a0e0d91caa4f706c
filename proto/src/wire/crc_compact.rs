//! CRC-32/ISO-HDLC by slice-by-4 over a 4 KiB table built at compile time,
//! for targets where `crc32fast` has no CRC instructions to use (armv7,
//! MIPS): there it falls back to slice-by-16 and its 16 KiB table, the
//! largest single object of the static device agent. Slice-by-4 keeps the
//! per-word loop (about half slice-by-16's speed, far above the datagram
//! rate of a device link) at a quarter of the table.

const POLY: u32 = 0xEDB8_8320;

const fn tables() -> [[u32; 256]; 4] {
    let mut t = [[0u32; 256]; 4];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { POLY ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut s = 1;
        while s < 4 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xFF) as usize];
            s += 1;
        }
        i += 1;
    }
    t
}

static TABLES: [[u32; 256]; 4] = tables();

/// The CRC-32 of `data` (same value as `crc32fast::hash`).
pub fn hash(data: &[u8]) -> u32 {
    append(0, data)
}

/// The CRC-32 of bytes whose CRC-32 is `crc`, followed by `data`.
pub fn append(crc: u32, data: &[u8]) -> u32 {
    let t = &TABLES;
    let mut crc = !crc;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        let v = crc ^ u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        crc = t[3][(v & 0xFF) as usize]
            ^ t[2][((v >> 8) & 0xFF) as usize]
            ^ t[1][((v >> 16) & 0xFF) as usize]
            ^ t[0][(v >> 24) as usize];
    }
    for &b in words.remainder() {
        crc = (crc >> 8) ^ t[0][((crc ^ u32::from(b)) & 0xFF) as usize];
    }
    !crc
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_crc32fast_at_every_length_and_alignment() {
        let data: std::vec::Vec<u8> = (0..1031u32).map(|i| (i * 131 + 7) as u8).collect();
        assert_eq!(super::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(super::hash(b""), 0);
        for start in 0..4 {
            for len in [0, 1, 3, 4, 5, 63, 64, 65, 1000] {
                let s = &data[start..start + len];
                assert_eq!(
                    super::hash(s),
                    crc32fast::hash(s),
                    "start {start} len {len}"
                );
                for cut in [0, len / 3, len] {
                    let (a, b) = s.split_at(cut);
                    assert_eq!(
                        super::append(super::hash(a), b),
                        crc32fast::hash(s),
                        "start {start} len {len} cut {cut}"
                    );
                }
            }
        }
    }
}
