//! `firmcast-docgen`: writes the man pages and shell completions that the
//! OpenWrt, Buildroot and Yocto packages ship, from the help texts the
//! binaries print, so the pages cannot drift from `--help`.
//!
//! `firmcast` (clap): `clap_mangen` pages for the command and each
//! subcommand, `clap_complete` scripts for bash, zsh and fish.
//! `firmcast-agent` (hand-written `--help`): [`agent_man::render`], in the
//! manner of help2man.
//!
//! ```text
//! firmcast-docgen packaging           # (re)write packaging/man, packaging/completions
//! firmcast-docgen --check packaging   # exit 1 naming each file that is not up to date
//! ```
//!
//! A host tool: it links the server and agent crates as libraries and never
//! ends up on a device.

mod agent_man;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

/// One generated file: where it goes (relative to the output root) and its bytes.
struct Generated {
    path: PathBuf,
    bytes: Vec<u8>,
}

/// Why generation or the check failed.
#[derive(Debug)]
enum Error {
    Render(&'static str, std::io::Error),
    Write(PathBuf, std::io::Error),
    Usage(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Render(what, e) => write!(f, "rendering {what}: {e}"),
            Error::Write(p, e) => write!(f, "{}: {e}", p.display()),
            Error::Usage(m) => write!(f, "{m}\nusage: firmcast-docgen [--check] OUTDIR"),
        }
    }
}

/// Every file this tool owns, in a fixed order.
fn generate() -> Result<Vec<Generated>, Error> {
    let mut out = Vec::new();
    let cmd = firmcast_server::cli::Cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .map_err(|e| Error::Render("firmcast.1", e))?;
    out.push(Generated {
        path: "man/firmcast.1".into(),
        bytes: page,
    });
    for sub in cmd.get_subcommands() {
        let name = format!("firmcast-{}", sub.get_name());
        let sub = sub.clone().name(name.clone());
        let mut page = Vec::new();
        clap_mangen::Man::new(sub)
            .render(&mut page)
            .map_err(|e| Error::Render("a firmcast subcommand page", e))?;
        out.push(Generated {
            path: format!("man/{name}.1").into(),
            bytes: page,
        });
    }
    out.push(Generated {
        path: "man/firmcast-agent.8".into(),
        bytes: agent_man::render(&firmcast_agent::help()).into_bytes(),
    });
    for (shell, file) in [
        (Shell::Bash, "completions/firmcast.bash"),
        (Shell::Zsh, "completions/_firmcast"),
        (Shell::Fish, "completions/firmcast.fish"),
    ] {
        let mut cmd = firmcast_server::cli::Cli::command();
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut cmd, "firmcast", &mut script);
        out.push(Generated {
            path: file.into(),
            bytes: script,
        });
    }
    Ok(out)
}

fn run() -> Result<bool, Error> {
    let mut check = false;
    let mut root = None;
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                return Err(Error::Usage(
                    "writes packaging/man and packaging/completions".into(),
                ))
            }
            _ if root.is_none() => root = Some(PathBuf::from(a)),
            _ => return Err(Error::Usage(format!("unexpected argument {a}"))),
        }
    }
    let root = root.ok_or_else(|| Error::Usage("OUTDIR missing".into()))?;
    let mut stale = 0;
    for g in generate()? {
        let path = root.join(&g.path);
        if check {
            if fs::read(&path).ok().as_deref() != Some(&g.bytes[..]) {
                eprintln!(
                    "{}: not up to date: run firmcast-docgen {}",
                    path.display(),
                    root.display()
                );
                stale += 1;
            }
        } else {
            write(&path, &g.bytes)?;
            println!("{}: {} bytes", path.display(), g.bytes.len());
        }
    }
    Ok(stale == 0)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| Error::Write(dir.to_path_buf(), e))?;
    }
    fs::write(path, bytes).map_err(|e| Error::Write(path.to_path_buf(), e))
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("firmcast-docgen: {e}");
            ExitCode::from(2)
        }
    }
}
