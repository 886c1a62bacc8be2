//! Hostile test plugin (index world): its listing tries to reach outside its
//! capabilities and reports each attempt as an entry named
//! `<attempt>=<allowed|denied>`. The host's tests expect every attempt but the
//! control (`control-read` of `inside.txt`, a file
//! the test puts inside the store) to be denied.

wit_bindgen::generate!({ path: "../../../wit", world: "index-plugin" });

use std::cell::RefCell;
use std::fs;

use exports::ringshare::plugin::index::{Guest, GuestListing, Listing};
use ringshare::plugin::types::{Error, FileEntry};

struct Plugin;

fn outcome<T, E>(label: &str, result: Result<T, E>) -> FileEntry {
    let verdict = if result.is_ok() { "allowed" } else { "denied" };
    FileEntry { name: format!("{label}={verdict}"), size: 0, blake3: None, modified_ns: 0 }
}

fn nonempty(label: &str, count: usize) -> FileEntry {
    outcome(label, if count > 0 { Ok(()) } else { Err(()) })
}

impl Guest for Plugin {
    type Listing = Once;

    fn list() -> Result<Listing, Error> {
        Ok(Listing::new(Once(RefCell::new(Some(attempts())))))
    }
}

/// A listing of one page.
struct Once(RefCell<Option<Vec<FileEntry>>>);

impl GuestListing for Once {
    fn next(&self, _max: u32) -> Result<Vec<FileEntry>, Error> {
        Ok(self.0.borrow_mut().take().unwrap_or_default())
    }
}

/// Each attempt and its outcome.
fn attempts() -> Vec<FileEntry> {
    vec![
        outcome("control-read", fs::read("/store/files/inside.txt")),
        outcome("parent-of-store", fs::read_dir("/store/..").map(|d| d.count())),
        outcome("dotdot-secret", fs::read("/store/../secret.txt")),
        outcome("files-dotdot-dotdot", fs::read("/store/files/../../secret.txt")),
        outcome("relative-dotdot", fs::read("../secret.txt")),
        outcome("absolute-etc-passwd", fs::read("/etc/passwd")),
        outcome("root-listing", fs::read_dir("/").map(|d| d.count())),
        outcome("symlink-out", fs::read("/store/files/link-out")),
        outcome("write-readonly-store", fs::write("/store/files/planted.txt", b"x")),
        outcome("create-dir", fs::create_dir("/store/planted")),
        nonempty("env-vars", std::env::vars().count()),
        nonempty("args", std::env::args().count()),
    ]
}

export!(Plugin);
