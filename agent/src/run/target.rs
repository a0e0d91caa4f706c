//! Target-path helpers for the `command` activation: the file or device
//! behind a target spec, and a `file:` target cut to the image length.

use crate::activate::ActivationError;

/// The file or device path behind a target spec (for the command's `{image}`).
pub(super) fn image_path(target: &str) -> String {
    match flasher::TargetSpec::parse(target) {
        Some(flasher::TargetSpec::MtdName(name)) => flasher::find_partition(name)
            .map_or_else(|_| target.to_string(), |p| p.display().to_string()),
        Some(spec) => spec
            .path()
            .map_or_else(String::new, |p| p.display().to_string()),
        None => target.to_string(),
    }
}

/// A `file:` target that is a regular file is cut to the image length, so
/// the command sees exactly the verified image.
pub(super) fn trim_file_target(target: &str, len: u64) -> Result<(), ActivationError> {
    use std::os::unix::fs::OpenOptionsExt;
    let Some(flasher::TargetSpec::File(path)) = flasher::TargetSpec::parse(target) else {
        return Ok(());
    };
    // Not through a link (R-LOCAL-2), like the target itself.
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() && m.len() > len => std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
            .and_then(|f| f.set_len(len))
            .map_err(|error| ActivationError::Trim {
                path: path.to_path_buf(),
                error,
            }),
        _ => Ok(()),
    }
}
