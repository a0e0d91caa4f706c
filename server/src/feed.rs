//! Where `firmcast send`'s carousel gets its blocks, and what else a caller
//! that runs the send loop for its own purpose (`firmcast relay`) plugs in.
//!
//! A [`Blocks`] source vouches for a prefix of the image: the send loop asks
//! for the block its next chunk comes from before every datagram, and sends
//! nothing while the source answers "not yet" (a relay still downloading);
//! an error (a block that differs from the manifest) ends the run.

use crate::error::Error;
use crate::image_file::StreamedImage;
use crate::relay::forward::StatusForward;

/// The image, made available block by block in order, each block checked
/// against the manifest before it is exposed.
pub trait Blocks {
    /// Make blocks `0..end` ready if they can be now: `Ok(true)` once they
    /// are, `Ok(false)` while a block is still on its way; the error names
    /// the first block that failed its check.
    fn through(&mut self, end: usize) -> Result<bool, Error>;
    /// Make up to `n` more blocks ready, as far as they are available.
    fn more(&mut self, n: usize) -> Result<(), Error>;
    /// The whole image's length: the blocks made ready, zeros after them.
    fn bytes(&self) -> &[u8];
    /// The blocks made ready so far, as a prefix of the image.
    fn ready(&self) -> &[u8];
}

impl Blocks for StreamedImage<'_> {
    fn through(&mut self, end: usize) -> Result<bool, Error> {
        StreamedImage::through(self, end).map(|()| true)
    }
    fn more(&mut self, n: usize) -> Result<(), Error> {
        StreamedImage::more(self, n)
    }
    fn bytes(&self) -> &[u8] {
        StreamedImage::bytes(self)
    }
    fn ready(&self) -> &[u8] {
        StreamedImage::ready(self)
    }
}

/// What a caller of the send loop plugs in instead of the defaults.
#[derive(Default)]
pub struct Feed<'f> {
    /// The image's blocks (default: `--image`, read from the file).
    pub blocks: Option<Box<dyn Blocks + 'f>>,
    /// Where every Status frame the fleet accepted is forwarded (R-RELAY-4).
    pub forward: Option<&'f mut StatusForward>,
}
