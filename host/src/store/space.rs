//! Free space on the store's filesystem, and the room uploads leave free:
//! an upload that would leave less than the node's reserve is refused, so
//! that deletions, tombstones and the outbox always have room.

use std::io;
use std::path::Path;

/// Bytes available to this process on the filesystem holding `path`.
pub fn available(path: &Path) -> io::Result<u64> {
    let stats = rustix::fs::statvfs(path)?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// Writing more would leave too little free.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the store's disk has {available} bytes free; {more} more would leave less than the {reserve} bytes kept free")]
pub struct NoRoom {
    /// Bytes free now.
    pub available: u64,
    /// Bytes about to be written.
    pub more: u64,
    /// Bytes the node keeps free.
    pub reserve: u64,
}

/// Whether `more` bytes can be written under `path` leaving `reserve`
/// free. A filesystem that cannot say is given the benefit of the doubt
/// (the write itself will tell).
pub fn room_for(path: &Path, more: u64, reserve: u64) -> Result<(), NoRoom> {
    match available(path) {
        Ok(available) if available < more.saturating_add(reserve) => Err(NoRoom { available, more, reserve }),
        _ => Ok(()),
    }
}

/// Whether `e` says the disk is full.
pub fn is_full(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_what_is_free_less_the_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let free = available(dir.path()).unwrap();
        assert!(free > 0);
        assert_eq!(room_for(dir.path(), 0, 0), Ok(()));
        let refused = room_for(dir.path(), 1, free).unwrap_err();
        assert_eq!((refused.more, refused.reserve), (1, free));
        assert!(refused.to_string().contains("kept free"), "{refused}");
        assert!(room_for(dir.path(), u64::MAX, 0).is_err(), "no disk holds that much");
        // A path that does not exist cannot say: the write will.
        assert_eq!(room_for(&dir.path().join("gone/deeper"), 1, u64::MAX), Ok(()));
        assert!(is_full(&io::Error::from_raw_os_error(28)), "ENOSPC");
        assert!(!is_full(&io::Error::from(io::ErrorKind::PermissionDenied)));
    }
}
