//! Parsing of sizes (`64K`, binary multiples) and rates (`50M`, decimal
//! bits per second), integer arithmetic only.

/// Parse a byte size: a number with an optional `K`, `M` or `G` suffix
/// (powers of 1024; case-insensitive; an optional trailing `B` or `iB`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    parse_scaled(s, 1024, &["ib", "b"]).map_err(|e| format!("invalid size `{s}`: {e}"))
}

/// Parse a rate in bits per second: a number with a `K`, `M` or `G` suffix
/// (powers of 1000; case-insensitive; decimals like `1.5M` allowed; an
/// optional trailing `bit`, `bps` or `bit/s`). A bare number is refused:
/// `50000` meant as kbit/s would have sent at 50 kbit/s.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let bare = s.trim().to_ascii_lowercase();
    let bare = ["bit/s", "bps", "bit"]
        .iter()
        .find_map(|u| bare.strip_suffix(u))
        .unwrap_or(&bare);
    if !bare.is_empty() && bare.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!(
            "invalid rate `{s}`: needs a unit: 50M, 800K, 1G (bits per second, powers of 1000)"
        ));
    }
    let v = parse_scaled(s, 1000, &["bit/s", "bps", "bit"])
        .map_err(|e| format!("invalid rate `{s}`: {e}"))?;
    if v == 0 {
        return Err(format!("invalid rate `{s}`: must be more than 0"));
    }
    Ok(v)
}

fn parse_scaled(s: &str, base: u64, units: &[&str]) -> Result<u64, String> {
    let mut t = s.trim().to_ascii_lowercase();
    for u in units {
        if let Some(stripped) = t.strip_suffix(u) {
            t = stripped.to_string();
            break;
        }
    }
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], base),
        Some('m') => (&t[..t.len() - 1], base * base),
        Some('g') => (&t[..t.len() - 1], base * base * base),
        _ => (&t[..], 1),
    };
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err("expected a number with an optional K/M/G suffix".into());
    }
    let int: u64 = int.parse().map_err(|_| "number too large".to_string())?;
    let mut value = int.checked_mul(mult).ok_or("number too large")?;
    // Fractional part, digit by digit, in integers.
    let mut scale = mult;
    for d in frac.bytes() {
        scale /= 10;
        if scale == 0 {
            if d != b'0' {
                return Err("too many decimal places".into());
            }
            continue;
        }
        value = value
            .checked_add(u64::from(d - b'0') * scale)
            .ok_or("number too large")?;
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_binary() {
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert!(parse_size("").is_err());
        assert!(parse_size("K").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }

    #[test]
    fn rates_are_decimal_bits() {
        assert_eq!(parse_rate("50M"), Ok(50_000_000));
        assert_eq!(parse_rate("1.5G"), Ok(1_500_000_000));
        assert_eq!(parse_rate("20mbit"), Ok(20_000_000));
        assert_eq!(parse_rate("800k"), Ok(800_000));
        assert_eq!(parse_rate("12.5kbit/s"), Ok(12_500));
        let bare = parse_rate("50000").expect_err("a bare number has no unit");
        assert!(bare.contains("needs a unit: 50M, 800K, 1G"), "{bare}");
        assert!(parse_rate("5bps").is_err());
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("1.2.3M").is_err());
    }
}
