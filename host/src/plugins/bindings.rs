//! Host bindings of the WIT package `ringshare:plugin` (../wit, at the version `CONTRACT_VERSION` names), one
//! module per world; the shared `types` and `log` interfaces are generated
//! once, in `index`, and reused by the others. The `wasi:io` streams a
//! plugin hands over are wasmtime-wasi's own, so the host drains or fills
//! them natively.

#![allow(missing_docs)]

pub mod index {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "index-plugin",
        additional_derives: [PartialEq, Eq],
    });
}

/// The bindings of `world`, which shares the index world's `types` and
/// `log` and wasmtime-wasi's `io`, `filesystem` and `clocks`.
macro_rules! sharing_bindings {
    ($world:tt) => {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: $world,
            require_store_data_send: true,
            with: {
                "ringshare:plugin/types": super::index::ringshare::plugin::types,
                "ringshare:plugin/log": super::index::ringshare::plugin::log,
                "wasi:io": wasmtime_wasi::p2::bindings::io,
                "wasi:filesystem": wasmtime_wasi::p2::bindings::filesystem,
                "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            },
        });
    };
}

pub mod upload {
    sharing_bindings!("upload-plugin");
}

pub mod download {
    sharing_bindings!("download-plugin");
}

pub use index::ringshare::plugin::log;
pub use index::ringshare::plugin::types::{Error as WitError, FileEntry as WitEntry};
