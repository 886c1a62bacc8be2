//! Test plugin built against the 0.1.0 plugin contract (chunks through
//! guest memory, SHA-256 in the entry): a node speaking a later version must refuse
//! it with a line that says why.

wit_bindgen::generate!({
    inline: r#"
        package ringshare:plugin@0.1.0;
        interface types {
            record file-entry { name: string, size: u64, sha256: string, modified-ns: u64 }
            variant error { io(string), other(string) }
        }
        interface index {
            use types.{file-entry, error};
            %list: func() -> result<list<file-entry>, error>;
        }
        world index-plugin { export index; }
    "#,
    world: "index-plugin",
});

use exports::ringshare::plugin::index::Guest;
use ringshare::plugin::types::{Error, FileEntry};

struct Plugin;

impl Guest for Plugin {
    fn list() -> Result<Vec<FileEntry>, Error> {
        Ok(Vec::new())
    }
}

export!(Plugin);
