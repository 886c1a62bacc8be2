//! The file an upload plugin hands the host for a file's content. The host
//! writes it natively, and as each window of it fills asks the kernel to
//! start writing that window to disk (`posix_fadvise(DONTNEED)`, which on
//! Linux starts writeback of the range's dirty pages without waiting and
//! leaves pages under writeback cached): the disk works while the network
//! does, and the plugin's sync before it commits finds little left to
//! write. Without this the whole file is written out by that one sync,
//! after the last byte arrived (a third of a 1 GiB upload's time here).

use std::fs::File;
use std::io::{self, IoSlice};
use std::sync::Arc;

use bytes::Bytes;

use wasmtime_wasi::OpenMode;
use wasmtime_wasi::filesystem::Descriptor;

/// Bytes written between two writeback steps.
const WINDOW: u64 = 16 << 20;

/// The content file of one upload, written from its first byte.
pub(crate) struct ContentFile {
    file: Arc<File>,
    written: u64,
    /// Where the next window to hand to writeback begins.
    flushed: u64,
}

impl ContentFile {
    /// The file behind a descriptor a plugin handed over; refused unless it
    /// is a file the plugin opened for writing with a grant to write.
    pub(crate) fn from_descriptor(descriptor: Descriptor) -> Result<Self, String> {
        match descriptor {
            Descriptor::File(f) if f.open_mode.contains(OpenMode::WRITE) && !f.perms.write_not_permitted() => {
                Ok(Self { file: f.file, written: 0, flushed: 0 })
            }
            Descriptor::File(_) => Err("handed over a content file it did not open for writing".into()),
            Descriptor::Dir(_) => Err("handed over a directory as the content file".into()),
        }
    }

    /// Appends `pieces`, in order, with as few calls as the kernel allows.
    pub(crate) fn write(&mut self, pieces: &[Bytes]) -> io::Result<()> {
        let mut slices: Vec<IoSlice> = pieces.iter().map(|p| IoSlice::new(p)).collect();
        let mut left = &mut slices[..];
        while !left.is_empty() {
            let wrote = rustix::io::pwritev(&*self.file, left, self.written)?;
            if wrote == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.written += wrote as u64;
            IoSlice::advance_slices(&mut left, wrote);
        }
        while self.written - self.flushed >= WINDOW {
            writeback(&self.file, self.flushed);
            self.flushed += WINDOW;
        }
        Ok(())
    }
}

/// Starts writing the window at `start` to disk. Best effort: durability
/// is the plugin's sync at commit; this only moves the work earlier.
fn writeback(file: &File, start: u64) {
    if let Err(e) = rustix::fs::fadvise(file, start, std::num::NonZeroU64::new(WINDOW), rustix::fs::Advice::DontNeed) {
        tracing::debug!("starting writeback: {e}");
    }
}
