//! The anti-rollback floor's storage on the device (R-ROLL-2): the newest
//! signed `min_version` of an image this device activated. On `ab-uboot`
//! boards it is the U-Boot variable [`ENV_VAR`], written in the same
//! environment save that flips the slot, so a power cut leaves both or
//! neither and a reflash of the root filesystem keeps it. Elsewhere it is
//! `floor_file`, opened (and created) before root is dropped and rewritten
//! in place once an update is activated; it survives a rootfs reflash only
//! when it lives on a partition that is not reflashed.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use proto::version;

/// The U-Boot environment variable holding the floor on `ab-uboot` boards.
pub const ENV_VAR: &str = "firmcast_min_version";

/// The newer of two floors (an empty one is no floor).
pub fn newest<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.is_empty() || version::is_newer(b, a) {
        b
    } else {
        a
    }
}

/// `true` when `new` raises the floor `current`.
pub fn raises(current: &str, new: &str) -> bool {
    !new.is_empty() && (current.is_empty() || version::is_newer(new, current))
}

/// Why `floor_file` could not be used: the file and what failed on it.
#[derive(Debug)]
pub struct FloorError {
    /// The `floor_file` at fault.
    pub path: PathBuf,
    /// What failed.
    pub kind: FloorErrorKind,
}

/// What failed on a `floor_file` ([`FloorError`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum FloorErrorKind {
    /// Opening (or creating) it.
    Open(io::Error),
    /// Reading its first line.
    Read(io::Error),
    /// Its first line is longer than a version may be (its length in bytes).
    TooLong(usize),
    /// Writing the raised floor.
    Write(io::Error),
}

impl fmt::Display for FloorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "floor_file {}: ", self.path.display())?;
        match &self.kind {
            FloorErrorKind::Open(e) => write!(f, "cannot open: {e}"),
            FloorErrorKind::Read(e) => write!(f, "cannot read: {e}"),
            FloorErrorKind::TooLong(len) => write!(
                f,
                "{len} bytes on its first line, at most {} (a version)",
                proto::wire::MAX_VERSION_LEN
            ),
            FloorErrorKind::Write(e) => write!(f, "cannot write: {e}"),
        }
    }
}

impl std::error::Error for FloorError {}

/// `floor_file`, held open from startup (the privilege drop would forbid
/// opening it later).
pub struct FloorFile {
    path: PathBuf,
    file: File,
    floor: String,
}

impl FloorFile {
    /// Open or create `path` (mode 0600) and read the floor on its first line.
    pub fn open(path: &Path) -> Result<FloorFile, FloorError> {
        use std::os::unix::fs::OpenOptionsExt;
        let fail = |kind| FloorError {
            path: path.to_path_buf(),
            kind,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| fail(FloorErrorKind::Open(e)))?;
        let mut text = String::new();
        Read::by_ref(&mut file)
            .take(256)
            .read_to_string(&mut text)
            .map_err(|e| fail(FloorErrorKind::Read(e)))?;
        let floor = text.lines().next().unwrap_or("").trim().to_string();
        if floor.len() > proto::wire::MAX_VERSION_LEN {
            return Err(fail(FloorErrorKind::TooLong(floor.len())));
        }
        Ok(FloorFile {
            path: path.to_path_buf(),
            file,
            floor,
        })
    }

    /// The floor it holds (empty for none).
    pub fn floor(&self) -> &str {
        &self.floor
    }

    /// Raise the floor to `new` when it is newer; returns whether it wrote.
    pub fn raise(&mut self, new: &str) -> Result<bool, FloorError> {
        if !raises(&self.floor, new) {
            return Ok(false);
        }
        let line = format!("{new}\n");
        let write = |f: &mut File| -> std::io::Result<()> {
            f.seek(SeekFrom::Start(0))?;
            f.write_all(line.as_bytes())?;
            f.set_len(line.len() as u64)?;
            f.sync_all()
        };
        write(&mut self.file).map_err(|e| FloorError {
            path: self.path.clone(),
            kind: FloorErrorKind::Write(e),
        })?;
        self.floor = new.to_string();
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r_roll_2_the_floor_file_only_rises() {
        let dir = std::env::temp_dir().join(format!("firmcast-floor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("floor");
        let _ = std::fs::remove_file(&path);
        let mut f = FloorFile::open(&path).expect("create");
        assert_eq!(f.floor(), "");
        assert!(f.raise("2.3.0").expect("raise"));
        assert!(!f.raise("2.2.9").expect("raise"), "never lowered");
        assert!(!f.raise("").expect("raise"));
        assert!(f.raise("2.10.0").expect("raise"), "numeric order (R-VER-1)");
        drop(f);
        let f = FloorFile::open(&path).expect("reopen");
        assert_eq!(f.floor(), "2.10.0");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "2.10.0\n");
        assert_eq!(newest("2.3.0", "2.10.0"), "2.10.0");
        assert_eq!(newest("", "1"), "1");
        assert_eq!(newest("3", ""), "3");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("firmcast-floor-long-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("floor");
        std::fs::write(&path, "9".repeat(40)).expect("write");
        let Err(e) = FloorFile::open(&path) else {
            panic!("too long")
        };
        assert!(matches!(e.kind, FloorErrorKind::TooLong(40)));
        assert_eq!(
            e.to_string(),
            format!(
                "floor_file {}: 40 bytes on its first line, at most 32 (a version)",
                path.display()
            )
        );
        let Err(e) = FloorFile::open(&dir) else {
            panic!("a directory")
        };
        assert!(e
            .to_string()
            .starts_with(&format!("floor_file {}: cannot ", dir.display())));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
