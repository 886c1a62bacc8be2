//! Host bindings of the WIT package `ringshare:plugin@0.1.0` (../wit), one
//! module per world; the shared `types` and `log` interfaces are generated
//! once, in `index`, and reused by the others.

#![allow(missing_docs)]

pub mod index {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "index-plugin",
        additional_derives: [PartialEq, Eq],
    });
}

pub mod upload {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "upload-plugin",
        with: {
            "ringshare:plugin/types": super::index::ringshare::plugin::types,
            "ringshare:plugin/log": super::index::ringshare::plugin::log,
        },
    });
}

pub mod download {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "download-plugin",
        with: {
            "ringshare:plugin/types": super::index::ringshare::plugin::types,
            "ringshare:plugin/log": super::index::ringshare::plugin::log,
        },
    });
}

pub use index::ringshare::plugin::log;
pub use index::ringshare::plugin::types::{Error as WitError, FileEntry};
