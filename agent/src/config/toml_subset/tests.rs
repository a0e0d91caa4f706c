//! The TOML subset against its list of accepted and rejected documents,
//! and against the `toml` crate as the oracle.

use super::*;

fn one(text: &str) -> Value {
    let d = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    assert_eq!(d.root.len(), 1, "{d:?}");
    d.root[0].value.clone()
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

fn int(n: i64) -> Value {
    Value::Integer(n)
}

fn entry(key: &str, line: usize, value: Value) -> Entry {
    Entry {
        key: key.to_string(),
        line,
        value,
    }
}

/// Documents the subset accepts (each also compared with the `toml`
/// crate in `same_as_toml`).
const ACCEPTED: &[&str] = &[
    "k = \"a b\"\n",
    "k = 'C:\\no\\escapes'\n",
    "k = \"\"\nl = ''\n",
    "k = \"héllo ✓\"\n",
    "a = 42\nb = 0\nc = -17\nd = +5\ne = 1_048_576\nf = -0\n",
    "a = 0xdead_BEEF\nb = 0o755\nc = 0b1010\nd = 0x0\n",
    "a = 9223372036854775807\nb = -9223372036854775808\n",
    "a = true\nb = false\n",
    "a = []\nb = [ ]\nc = [\"x\", 'y', \"\"]\nd = [1,2 , 3,]\ne = [[1], [\"x\"]]\nf = [1, \"mixed\"]\n",
    "a = \"q\\\" b\\\\ n\\n t\\t r\\r b\\b f\\f\"\nb = \"\\u00e9\\u2713\\U0001F600\"\n",
    "a = \"\\x41\\xe9 \\e[0m\"\n",
    "a = \"tab\there\"\nb = '\\n\\u'\n",
    "# head\n\n  a = 1 # one\n\tb='x'\t\n# [not_a_table]\n[t] # tab\n  c = \"# not a comment\"  \n",
    "",
    "# only\n\n",
    "k=1",
    "[ t ]\nk = 1\n",
    "\u{feff}k = 1\n",
    "\"quoted key\" = 1\n'lit' = 2\n\"\" = 3\n[\"quoted table\"]\n\"a-b\" = 4\n",
    "a = 1\r\n# c\r\n\r\n[t]\r\nb = \"x\" # c\r\nc = [\r\n  1, # one\r\n  2,\r\n]\r\n",
    "run = [\n  \"/bin/sh\",  # the shell\n\n  \"-c\",\n  'true'\n]\nnext = 1\n",
    "a = [ # open\n]\n",
    "[empty]\n[t]\nx = 1\n",
    "trailing = 1   \t\n[t]   \nk = 'v'\t \n",
    "A-Z_09 = 1\n1234 = 2\n",
];

/// (text, line, key, part of the message, valid TOML that the subset
/// leaves out).
#[allow(clippy::type_complexity)]
const REJECTED: &[(&str, usize, Option<&str>, &str, bool)] = &[
    ("a = 1\nb = \n", 2, Some("b"), "missing value", false),
    ("a = 1\nb = # c\n", 2, Some("b"), "missing value", false),
    ("b =", 1, Some("b"), "missing value", false),
    ("a = 1\nb\n", 2, Some("b"), "expected `=`", false),
    ("a = 1\n= 2\n", 2, None, "expected a key", false),
    (
        "a = 1\n\n[t]\nx = 1\nx = 2\n",
        5,
        Some("t.x"),
        "duplicate key",
        false,
    ),
    ("a = 1\na = 1\n", 2, Some("a"), "duplicate key", false),
    ("a = 1\n'a' = 1\n", 2, Some("a"), "duplicate key", false),
    ("[t]\n[u]\n[t]\n", 3, Some("t"), "defined twice", false),
    ("[t\n", 1, Some("t"), "expected `]`", false),
    ("[]\n", 1, None, "expected a key", false),
    ("[a.b]\n", 1, Some("a"), "nested tables", true),
    ("[[a]]\n", 1, None, "arrays of tables", true),
    ("a.b = 1\n", 1, Some("a"), "dotted keys", true),
    ("a = 1 2\n", 1, Some("a"), "unexpected `2`", false),
    ("a = \"x\" y\n", 1, Some("a"), "unexpected `y`", false),
    ("a = [1] ]\n", 1, Some("a"), "unexpected `]`", false),
    ("[t] x = 1\n", 1, Some("t"), "unexpected `x`", false),
    ("a = \"open\nb = 1\n", 1, Some("a"), "unterminated", false),
    ("a = 'open\n", 1, Some("a"), "unterminated", false),
    ("a = \"open", 1, Some("a"), "unterminated", false),
    ("a = \"x\r\n\"\n", 1, Some("a"), "unterminated", false),
    ("a = 1\rb = 2\n", 1, Some("a"), "carriage return", false),
    ("a = \"\"\"multi\"\"\"\n", 1, Some("a"), "multi-line", true),
    ("a = '''multi'''\n", 1, Some("a"), "multi-line", true),
    ("a = {x = 1}\n", 1, Some("a"), "inline tables", true),
    ("a = 1.5\n", 1, Some("a"), "floats and dates", true),
    ("a = 1.0\n", 1, Some("a"), "floats and dates", true),
    ("a = 1e3\n", 1, Some("a"), "floats and dates", true),
    ("a = inf\n", 1, Some("a"), "floats and dates", true),
    ("a = -nan\n", 1, Some("a"), "floats and dates", true),
    ("a = 1979-05-27\n", 1, Some("a"), "floats and dates", true),
    ("a = 07:32:00\n", 1, Some("a"), "floats and dates", true),
    ("a = yes\n", 1, Some("a"), "not a value", false),
    ("a = True\n", 1, Some("a"), "not a value", false),
    ("a = 012\n", 1, Some("a"), "leading zeros", false),
    ("a = 1__0\n", 1, Some("a"), "not a value", false),
    ("a = _1\n", 1, Some("a"), "not a value", false),
    ("a = 1_\n", 1, Some("a"), "not a value", false),
    ("a = 0x\n", 1, Some("a"), "not a value", false),
    ("a = 0xg\n", 1, Some("a"), "not a value", false),
    ("a = 0x_1\n", 1, Some("a"), "not a value", false),
    ("a = -0x10\n", 1, Some("a"), "not a value", false),
    ("a = 0b102\n", 1, Some("a"), "not a value", false),
    ("a = 9223372036854775808\n", 1, Some("a"), "64-bit", false),
    (
        "a = \"nul \u{0}\"\n",
        1,
        Some("a"),
        "control character",
        false,
    ),
    (
        "a = 'bell \u{7}'\n",
        1,
        Some("a"),
        "control character",
        false,
    ),
    ("a = [1,,2]\n", 1, Some("a"), "not a value", false),
    ("a = [\n1,\n2\n3]\n", 4, Some("a"), "`,` or `]`", false),
    ("a = [1, 2\n", 2, Some("a"), "`,` or `]`", false),
    ("k = \"\\x4\"\n", 1, Some("k"), "2 hex digits", false),
    ("k = \"\\a\"\n", 1, Some("k"), "invalid escape \\a", false),
    ("k = \"\\u12\"\n", 1, Some("k"), "4 hex digits", false),
    ("k = \"\\uD800\"\n", 1, Some("k"), "4 hex digits", false),
    ("k = \"\\U00110000\"\n", 1, Some("k"), "8 hex digits", false),
    ("k = \"\\\"\n", 1, Some("k"), "unterminated", false),
    ("k = \"\\", 1, Some("k"), "unterminated", false),
];

#[test]
fn value_types() {
    assert_eq!(one("k = \"a b\""), s("a b"));
    assert_eq!(one("k = 'C:\\no\\escapes'"), s("C:\\no\\escapes"));
    assert_eq!(one("k = \"\""), s(""));
    assert_eq!(one("k = ''"), s(""));
    assert_eq!(one("k = \"héllo ✓\""), s("héllo ✓"));
    assert_eq!(one("k = 42"), int(42));
    assert_eq!(one("k = 0"), int(0));
    assert_eq!(one("k = -17"), int(-17));
    assert_eq!(one("k = +5"), int(5));
    assert_eq!(one("k = 1_048_576"), int(1 << 20));
    assert_eq!(one("k = 0xdead_BEEF"), int(0xdead_beef));
    assert_eq!(one("k = 0o755"), int(0o755));
    assert_eq!(one("k = 0b1010"), int(10));
    assert_eq!(one("k = 9223372036854775807"), int(i64::MAX));
    assert_eq!(one("k = -9223372036854775808"), int(i64::MIN));
    assert_eq!(one("k = true"), Value::Boolean(true));
    assert_eq!(one("k = false"), Value::Boolean(false));
    assert_eq!(one("k = []"), Value::Array(vec![]));
    assert_eq!(
        one("k = [\"/sbin/sysupgrade\", '-n', \"{image}\"]"),
        Value::Array(vec![s("/sbin/sysupgrade"), s("-n"), s("{image}")])
    );
    assert_eq!(
        one("k = [1,2 , 3,]"),
        Value::Array(vec![int(1), int(2), int(3)])
    );
    assert_eq!(
        one("k = [[1], [\"x\"]]"),
        Value::Array(vec![Value::Array(vec![int(1)]), Value::Array(vec![s("x")])])
    );
}

#[test]
fn escapes() {
    assert_eq!(
        one(r#"k = "q\" b\\ n\n t\t r\r b\b f\f""#),
        s("q\" b\\ n\n t\t r\r b\u{8} f\u{c}")
    );
    assert_eq!(one(r#"k = "\u00e9\u2713\U0001F600""#), s("é✓😀"));
    assert_eq!(one(r#"k = "\x41\xe9 \e[0m""#), s("Aé \u{1b}[0m"));
    assert_eq!(one("k = \"tab\there\""), s("tab\there"));
    // Literal strings take backslashes as they are.
    assert_eq!(one(r"k = '\n\u'"), s("\\n\\u"));
    assert_eq!(one(r#"k = 'say "hi"'"#), s("say \"hi\""));
}

#[test]
fn comments_blank_lines_and_whitespace() {
    let d = parse(
        "# head\n\n  a = 1 # one\n\tb='x'\t\n# [not_a_table]\n[t] # tab\n  c = \"# not a comment\"  \n",
    )
    .expect("parses");
    assert_eq!(d.root, vec![entry("a", 3, int(1)), entry("b", 4, s("x"))]);
    assert_eq!(d.tables.len(), 1);
    assert_eq!((d.tables[0].name.as_str(), d.tables[0].line), ("t", 6));
    assert_eq!(
        d.tables[0].entries,
        vec![entry("c", 7, s("# not a comment"))]
    );
    assert_eq!(parse("").expect("empty"), Document::default());
    assert_eq!(parse("# only\n\n").expect("comments"), Document::default());
    assert_eq!(
        parse("k=1").expect("no newline at EOF").root,
        vec![entry("k", 1, int(1))]
    );
    assert_eq!(parse("[ t ]\n").expect("spaced header").tables[0].name, "t");
    assert_eq!(parse("\u{feff}k = 1\n").expect("BOM").root[0].key, "k");
    let d = parse("\"quoted key\" = 1\n'lit' = 2\n[\"q t\"]\n").expect("quoted");
    assert_eq!(d.root[0].key, "quoted key");
    assert_eq!(d.root[1].key, "lit");
    assert_eq!(d.tables[0].name, "q t");
}

#[test]
fn trailing_whitespace() {
    let d = parse("a = 1 \t\n[t]  \t\nb = \"x\"\t  \nc = [1, 2]   \r\n").expect("parses");
    assert_eq!(d.root, vec![entry("a", 1, int(1))]);
    assert_eq!(
        d.tables[0].entries,
        vec![
            entry("b", 3, s("x")),
            entry("c", 4, Value::Array(vec![int(1), int(2)]))
        ]
    );
}

#[test]
fn crlf_line_ends() {
    let lf = "a = 1\n# c\n\n[t]\nb = \"x\" # c\nc = [\n  1, # one\n  2,\n]\n";
    let crlf = lf.replace('\n', "\r\n");
    let d = parse(&crlf).expect("crlf");
    assert_eq!(d, parse(lf).expect("lf"));
    assert_eq!(d.root, vec![entry("a", 1, int(1))]);
    assert_eq!(d.tables[0].line, 4);
    assert_eq!(
        d.tables[0].entries,
        vec![
            entry("b", 5, s("x")),
            entry("c", 6, Value::Array(vec![int(1), int(2)]))
        ]
    );
    let e = parse("a = 1\r\nb = 2\r\nc = \r\n").expect_err("missing value");
    assert_eq!((e.line, e.key.as_deref()), (3, Some("c")), "{e}");
}

#[test]
fn multi_line_arrays() {
    let d = parse("run = [\n  \"/bin/sh\",  # the shell\n\n  \"-c\",\n  'true'\n]\nnext = 1\n")
        .expect("parses");
    assert_eq!(
        d.root,
        vec![
            entry(
                "run",
                1,
                Value::Array(vec![s("/bin/sh"), s("-c"), s("true")])
            ),
            entry("next", 7, int(1))
        ]
    );
}

#[test]
fn errors_name_line_and_key() {
    for &(text, line, key, what, _) in REJECTED {
        let e = parse(text).expect_err(text);
        assert_eq!((e.line, e.key.as_deref()), (line, key), "{text:?}: {e}");
        assert!(e.kind.to_string().contains(what), "{text:?}: {e}");
        assert!(!e.to_string().contains('\n'), "{text:?}: {e}");
    }
}

#[test]
fn line_of_finds_keys_and_tables() {
    let d = parse("a = 1\n[t]\nb = 2\n[u]\na = 3\n").expect("parses");
    assert_eq!(d.line_of("a"), Some(1));
    assert_eq!(d.line_of("t"), Some(2));
    assert_eq!(d.line_of("t.b"), Some(3));
    assert_eq!(d.line_of("u.a"), Some(5));
    assert_eq!(d.line_of("b"), None);
    assert_eq!(d.line_of("t.a"), None);
    assert_eq!(d.line_of("v.a"), None);
}

/// The `toml` crate (the agent's parser before this one) as the oracle:
/// whatever the subset accepts, it reads the same; whatever it rejects
/// is invalid TOML unless it is one of the features left out.
mod same_as_toml {
    use super::*;

    fn to_toml(v: &Value) -> toml::Value {
        match v {
            Value::String(s) => toml::Value::String(s.clone()),
            Value::Integer(n) => toml::Value::Integer(*n),
            Value::Boolean(b) => toml::Value::Boolean(*b),
            Value::Array(a) => toml::Value::Array(a.iter().map(to_toml).collect()),
        }
    }

    fn entries(entries: &[Entry]) -> toml::Table {
        entries
            .iter()
            .map(|e| (e.key.clone(), to_toml(&e.value)))
            .collect()
    }

    fn check(text: &str, what: &str) {
        let ours = parse(text).unwrap_or_else(|e| panic!("{what}: {e}"));
        let mut as_toml = entries(&ours.root);
        for t in &ours.tables {
            as_toml.insert(t.name.clone(), toml::Value::Table(entries(&t.entries)));
        }
        let theirs: toml::Table =
            toml::from_str(text).unwrap_or_else(|e| panic!("{what}: toml: {e}"));
        assert_eq!(as_toml, theirs, "{what}");
    }

    #[test]
    fn board_configs_read_the_same() {
        let mut n = 0;
        for (path, text) in crate::config::tests::board_config_files() {
            check(&text, &path.display().to_string());
            check(
                &text.replace('\n', "\r\n"),
                &format!("{} (CRLF)", path.display()),
            );
            n += 1;
        }
        assert!(n >= 6, "expected the six board files, found {n}");
    }

    #[test]
    fn accepted_documents_read_the_same() {
        for text in ACCEPTED {
            check(text, &format!("{text:?}"));
        }
    }

    #[test]
    fn rejected_documents_are_invalid_or_left_out() {
        for &(text, _, _, _, valid) in REJECTED {
            let theirs = toml::from_str::<toml::Table>(text);
            assert_eq!(theirs.is_ok(), valid, "{text:?}: {theirs:?}");
        }
    }
}
