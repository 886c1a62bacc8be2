//! Hostile test plugin (download world): `open` panics, which traps.

wit_bindgen::generate!({ path: "../../../wit", world: "download-plugin" });

use exports::ringshare::plugin::download::{Guest, GuestReader, Reader};
use ringshare::plugin::types::{Error, FileEntry};

struct Plugin;
struct Never;

impl Guest for Plugin {
    type Reader = Never;

    fn open(name: String) -> Result<Reader, Error> {
        panic!("crash plugin asked to open {name:?}");
    }
}

impl GuestReader for Never {
    fn entry(&self) -> FileEntry {
        unreachable!("no reader is ever created")
    }
    fn read(&self, _offset: u64, _len: u32) -> Result<Vec<u8>, Error> {
        unreachable!("no reader is ever created")
    }
}

export!(Plugin);
