//! Firmware version ordering for anti-rollback (rule `R-VER-1` in PROTOCOL.md).
//!
//! A version is `core[-pre-release][+build]` (`2.10.1`, `2024.05`,
//! `2.1.0-rc10`, `1.0.0-alpha.1+g1234`). The core is dot-separated segments,
//! each a number with an optional suffix (`1.2rc1`); missing trailing
//! segments count as `0` (`2.1` == `2.1.0`). A version with a pre-release is
//! older than the same core without one (semver). Pre-release identifiers
//! (split on `.`) compare as semver orders them, except that an identifier
//! mixing letters and digits compares run by run, digits numerically
//! (`rc9` < `rc10`, which plain text order gets wrong). Build metadata is
//! ignored.

use core::cmp::Ordering;

/// Compare two version strings by the rule above.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (core_a, pre_a) = split_version(a);
    let (core_b, pre_b) = split_version(b);
    compare_core(core_a, core_b).then_with(|| match (pre_a, pre_b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => compare_pre(x, y),
    })
}

/// `true` when `candidate` is older than the anti-rollback `floor`
/// (R-ROLL-1); never for an empty floor.
pub fn below_floor(candidate: &str, floor: &str) -> bool {
    !floor.is_empty() && compare(candidate, floor) == Ordering::Less
}

/// `true` when `candidate` is strictly newer than `current` (R-VER-1).
pub fn is_newer(candidate: &str, current: &str) -> bool {
    compare(candidate, current) == Ordering::Greater
}

/// `(core, pre-release)`, build metadata dropped.
fn split_version(v: &str) -> (&str, Option<&str>) {
    let v = v.trim();
    let v = v.split_once('+').map_or(v, |(head, _)| head);
    match v.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (v, None),
    }
}

fn compare_core(a: &str, b: &str) -> Ordering {
    let mut left = a.split('.');
    let mut right = b.split('.');
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

/// A core segment: number, then a bare number is newer than the same number
/// with a suffix, then suffixes in natural order.
fn compare_segment(a: &str, b: &str) -> Ordering {
    let (na, sa) = split_number(a);
    let (nb, sb) = split_number(b);
    na.cmp(&nb)
        .then_with(|| match (sa.is_empty(), sb.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => compare_natural(sa, sb),
        })
}

/// Pre-release identifiers: numeric ones numerically and below alphanumeric
/// ones; a shorter list that is a prefix of a longer one is older.
fn compare_pre(a: &str, b: &str) -> Ordering {
    let mut left = a.split('.');
    let mut right = b.split('.');
    loop {
        let ord = match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => match (is_numeric(x), is_numeric(y)) {
                (true, true) => split_number(x).0.cmp(&split_number(y).0),
                (true, false) => Ordering::Less,
                (false, true) => Ordering::Greater,
                (false, false) => compare_natural(x, y),
            },
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
}

fn is_numeric(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Runs of digits numerically, other runs as text, a digit run before a
/// text run.
fn compare_natural(mut a: &str, mut b: &str) -> Ordering {
    loop {
        match (a.is_empty(), b.is_empty()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            _ => {}
        }
        let da = a.as_bytes()[0].is_ascii_digit();
        let db = b.as_bytes()[0].is_ascii_digit();
        let ord = match (da, db) {
            (true, true) => {
                let (na, ra) = split_number(a);
                let (nb, rb) = split_number(b);
                a = ra;
                b = rb;
                na.cmp(&nb)
            }
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (false, false) => {
                let la = a.bytes().take_while(|c| !c.is_ascii_digit()).count();
                let lb = b.bytes().take_while(|c| !c.is_ascii_digit()).count();
                let (ta, ra) = a.split_at(la);
                let (tb, rb) = b.split_at(lb);
                a = ra;
                b = rb;
                ta.cmp(tb)
            }
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
}

/// The leading number (saturating) and what follows it.
fn split_number(s: &str) -> (u64, &str) {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (num, rest) = s.split_at(digits);
    let mut value: u64 = 0;
    for b in num.bytes() {
        value = value.saturating_mul(10).saturating_add(u64::from(b - b'0'));
    }
    (value, rest)
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

    /// R-VER-1: pre-releases in semver order, numbers numerically.
    #[test]
    fn r_ver_1_pre_releases_order_numerically() {
        assert!(
            is_newer("2.1.0-rc10", "2.1.0-rc9"),
            "rc10 is newer than rc9"
        );
        assert!(!is_newer("2.1.0-rc9", "2.1.0-rc10"));
        let ascending = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1-rc1",
            "1.0.1",
        ];
        for w in ascending.windows(2) {
            assert_eq!(compare(w[0], w[1]), Ordering::Less, "{} < {}", w[0], w[1]);
            assert_eq!(compare(w[1], w[0]), Ordering::Greater);
        }
        assert_eq!(compare("1.0.0+build.7", "1.0.0"), Ordering::Equal);
        assert_eq!(compare("2.1-rc1", "2.1.0-rc1"), Ordering::Equal);
    }
}
