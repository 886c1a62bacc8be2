//! Hostile test plugin (download world): `open` panics, which traps.

wit_bindgen::generate!({ path: "../../../wit", world: "download-plugin", generate_all });

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
    fn content(&self, _offset: u64) -> Result<wasi::io::streams::InputStream, Error> {
        unreachable!("no reader is ever created")
    }
    fn outboard(&self) -> Result<wasi::io::streams::InputStream, Error> {
        unreachable!("no reader is ever created")
    }
}

export!(Plugin);
