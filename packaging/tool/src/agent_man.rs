//! The `firmcast-agent(8)` page from the agent's hand-written `--help`, the
//! way help2man reads a help text: the first line names the program and says
//! what it does, a line at column 0 that starts with an upper-case word and
//! ends with `:` opens a section, paragraphs at column 0 are filled text, and
//! indented blocks (usage, options, exit codes, the config example) stay as
//! they are.

/// The roff source of the page.
pub fn render(help: &str) -> String {
    let mut lines = help.lines();
    let first = lines.next().unwrap_or("firmcast-agent");
    let (name_version, summary) = first.split_once(": ").unwrap_or((first, ""));
    let version = name_version
        .strip_prefix("firmcast-agent")
        .unwrap_or("")
        .trim();
    let mut out = String::new();
    out.push_str(&format!(
        ".TH FIRMCAST-AGENT 8 \"\" \"firmcast-agent {}\" \"System Administration\"\n",
        escape(version)
    ));
    out.push_str(".SH NAME\nfirmcast-agent \\- ");
    out.push_str(&escape(summary));
    out.push('\n');

    // Paragraphs that precede any heading after USAGE are the description.
    let mut in_block = false;
    let mut in_para = false;
    let mut described = false;
    let mut last_heading = String::new();
    for line in lines {
        if line.trim().is_empty() {
            in_para = false;
            if in_block {
                out.push_str(".fi\n.RE\n");
                in_block = false;
            }
            continue;
        }
        if let Some(h) = heading(line) {
            if in_block {
                out.push_str(".fi\n.RE\n");
                in_block = false;
            }
            out.push_str(&format!(".SH \"{}\"\n", escape(h)));
            last_heading = h.to_string();
            in_para = false;
            continue;
        }
        if line.starts_with(' ') {
            if !in_block {
                out.push_str(".RS 4\n.nf\n");
                in_block = true;
            }
            out.push_str(&escape_line(line.strip_prefix("    ").unwrap_or(line)));
            out.push('\n');
            continue;
        }
        if last_heading == "USAGE" && !described {
            out.push_str(".SH DESCRIPTION\n");
            described = true;
            last_heading = "DESCRIPTION".into();
        } else if !in_para {
            out.push_str(".PP\n");
        }
        in_para = true;
        out.push_str(&escape_line(line));
        out.push('\n');
    }
    if in_block {
        out.push_str(".fi\n.RE\n");
    }
    out.push_str(".SH \"SEE ALSO\"\nfirmcast(1)\n");
    out
}

/// `USAGE:` → `USAGE`; `MINIMAL CONFIG (all keys: …):` → its text without the colon.
fn heading(line: &str) -> Option<&str> {
    let text = line.strip_suffix(':')?;
    let first = text.split([' ', '(']).next()?;
    let is_heading = !line.starts_with(' ')
        && first.len() >= 2
        && first.chars().all(|c| c.is_ascii_uppercase() || c == '-');
    is_heading.then_some(text)
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\e")
        .replace('-', "\\-")
        .replace('"', "\\(dq")
}

/// A text line: escapes, and `\&` before a leading `.` or `'` (roff requests).
fn escape_line(s: &str) -> String {
    let e = s.replace('\\', "\\e").replace('-', "\\-");
    if e.starts_with('.') || e.starts_with('\'') {
        format!("\\&{e}")
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_paragraphs_and_blocks() {
        let help = "prog-x 1.0: does a thing\n\nUSAGE:\n    firmcast-agent [--x]\n\nFirst line\nsecond line.\n\nNext para.\n\nEXIT CODES:\n    0    ok\n";
        let page = render(help);
        assert!(
            page.contains(".SH \"USAGE\"\n.RS 4\n.nf\nfirmcast\\-agent [\\-\\-x]\n.fi\n.RE\n"),
            "{page}"
        );
        assert!(
            page.contains(".SH DESCRIPTION\nFirst line\nsecond line.\n.PP\nNext para.\n"),
            "{page}"
        );
        assert!(page.contains(".SH \"EXIT CODES\"\n"), "{page}");
    }

    #[test]
    fn the_agent_help_has_every_section() {
        let page = render(&firmcast_agent::help());
        for s in [
            "NAME",
            "\"USAGE\"",
            "DESCRIPTION",
            "\"OPTIONS\"",
            "\"EXIT CODES\"",
        ] {
            assert!(
                page.contains(&format!(".SH {s}\n")),
                "section {s} missing:\n{page}"
            );
        }
    }
}
