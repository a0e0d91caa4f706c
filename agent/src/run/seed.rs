//! What the agent reads from the OS besides its sockets and flash: the
//! random seed of the receiver's NACK back-off, and the monotonic clock the
//! event loop reads once per turn to give every handler its `now`.

use proto::Instant;

/// 8 bytes from /dev/urandom, or the time if that fails.
pub fn os_seed() -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
    {
        return u64::from_le_bytes(b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.as_nanos() as u64) ^ u64::from(std::process::id()).rotate_left(32)
}

/// The monotonic clock, counting from this call: the event loop's `now`.
pub fn monotonic() -> impl Fn() -> Instant + Copy {
    let origin = std::time::Instant::now();
    move || Instant::from_micros(u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX))
}
