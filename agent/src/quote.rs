//! One string-literal writer for the agent's two output formats: the state
//! file (JSON) and the config writer (TOML basic strings). Both accept the
//! same escapes (`\"`, `\\`, `\n`, `\t`, `\r`, `\uXXXX`), so one escaping
//! rule serves both; every control character is escaped, since versions and
//! boards come from the network and the config.

/// `s` as a double-quoted JSON string, which is also a TOML basic string.
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::quoted;

    #[test]
    fn control_characters_quotes_and_backslashes_are_escaped() {
        assert_eq!(
            quoted("a\"b\\c\nd\u{1b}e\u{7f}"),
            "\"a\\\"b\\\\c\\nd\\u001be\\u007f\""
        );
    }
}
