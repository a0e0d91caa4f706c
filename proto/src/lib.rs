//! firmcast protocol core: the wire format and the sans-IO state machines of
//! the sender, the repair server and the device receiver.
//!
//! ```text
//!   shell (agent / firmcast send / firmcast repair)     owns sockets, clock, flash
//!     │  handle_datagram(now, from, bytes)   handle_timeout(now)   handle_flash_done(..)
//!     ▼
//!   proto state machine                                   no I/O, no clock, bounded memory
//!     │  poll_transmit(now, buf) → Transmit   poll_event() → Event   poll_timeout() → Instant
//!     ▼
//!   shell sends, writes flash, sleeps until the deadline or a readable socket
//! ```
//!
//! The driving contract: after every input, drain every output
//! (`poll_event` and `poll_transmit` until `None`), then sleep until
//! `poll_timeout()` or until a socket is readable, whichever comes first, and
//! call `handle_timeout(now)` when the deadline passes. Time and randomness are
//! inputs: nothing here reads a clock or the OS's random source.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod chunk_list;
pub mod fec;
pub mod fleet;
pub mod geometry;
pub mod link;
pub mod manifest;
pub mod pace;
pub mod pacer;
pub mod receiver;
pub mod repair;
pub mod report;
pub mod rng;
pub mod sender;
pub mod time;
pub mod transmit;
pub mod version;
pub mod wire;

pub use time::Instant;
pub use transmit::{Dest, DropReason, Transmit};
