//! Firmware version ordering for anti-rollback (rule `R-VER-1` in PROTOCOL.md).
//!
//! Versions are dot-separated segments (`2.10.1`, `2024.05`, `1.2.0-rc1`).
//! Each segment is a number with an optional suffix; numbers compare
//! numerically, then a segment without suffix is newer than one with a suffix
//! (a release is newer than its release candidate), then suffixes compare as
//! text. Missing trailing segments count as `0` (`2.1` == `2.1.0`).

use core::cmp::Ordering;

/// Compare two version strings by the rule above.
pub fn compare(a: &str, b: &str) -> Ordering {
    let mut left = a.trim().split('.');
    let mut right = b.trim().split('.');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (l, r) => {
                let ord = compare_segment(l.unwrap_or("0"), r.unwrap_or("0"));
                if ord != Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}

/// `true` when `candidate` is strictly newer than `current`.
pub fn is_newer(candidate: &str, current: &str) -> bool {
    compare(candidate, current) == Ordering::Greater
}

fn split_segment(s: &str) -> (u64, &str) {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (num, rest) = s.split_at(digits);
    let mut value: u64 = 0;
    for b in num.bytes() {
        value = value.saturating_mul(10).saturating_add(u64::from(b - b'0'));
    }
    (value, rest)
}

fn compare_segment(a: &str, b: &str) -> Ordering {
    let (na, sa) = split_segment(a);
    let (nb, sb) = split_segment(b);
    na.cmp(&nb)
        .then_with(|| match (sa.is_empty(), sb.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => sa.cmp(sb),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_like_an_operator_expects() {
        assert!(is_newer("2.1.0", "2.0.9"));
        assert!(is_newer("2.10.0", "2.9.0"));
        assert!(!is_newer("2.1.0", "2.1.0"));
        assert!(!is_newer("2.1", "2.1.0"));
        assert!(is_newer("2.1.0", "2.1.0-rc1"));
        assert!(is_newer("2.1.0-rc2", "2.1.0-rc1"));
        assert!(!is_newer("1.9", "2"));
        assert!(is_newer("2024.05.1", "2024.05"));
        assert_eq!(compare("99999999999999999999999", "1"), Ordering::Greater);
    }
}
