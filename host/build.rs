//! Compiles `proto/` with tonic-prost-build, using the protoc shipped in the
//! protoc-bin-vendored crate (no system protoc needed), and finds the default
//! plugins the binary embeds (`target/plugins/default/*.wasm`, built by
//! `scripts/build-plugins.sh`, which this runs when they are missing: a
//! `cargo install --path host` gets them too).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The default plugins, embedded by `plugins::embedded`.
const DEFAULTS: [&str; 3] = ["index.wasm", "upload.wasm", "download.wasm"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // File chunks travel as `Bytes`: no copy between the wire and the plugins.
    config.bytes(["."]);
    tonic_prost_build::configure().compile_with_config(
        config,
        &["../proto/ringshare/chord/v1/chord.proto", "../proto/ringshare/files/v1/files.proto"],
        &["../proto"],
    )?;
    // Printing any rerun-if-changed line replaces cargo's default (rerun on
    // any change in the package), so the protos are named too.
    println!("cargo:rerun-if-changed=../proto");
    println!("cargo:rerun-if-changed=build.rs");
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("..");
    let dir = root.join("target/plugins/default");
    if !DEFAULTS.iter().all(|f| dir.join(f).exists()) {
        build_plugins(&root)?;
    }
    for file in DEFAULTS {
        let path = dir.join(file);
        if !path.exists() {
            return Err(format!("{} is missing after scripts/build-plugins.sh", path.display()).into());
        }
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rustc-env=RINGSHARE_DEFAULT_PLUGINS={}", dir.canonicalize()?.display());
    Ok(())
}

/// Runs `scripts/build-plugins.sh` with an environment free of this
/// build's cargo and rustc settings (the plugins are their own workspace,
/// built for another target).
fn build_plugins(root: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut command = Command::new("bash");
    command.arg(root.join("scripts/build-plugins.sh"));
    // What steers this build's compiler, profile and target folder; cargo's
    // home, network, registry and job settings are kept.
    let steering = [
        "CARGO_BUILD_",
        "CARGO_PROFILE_",
        "CARGO_TARGET_",
        "CARGO_ENCODED_",
        "CARGO_INCREMENTAL",
        "RUSTC",
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
    ];
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if steering.iter().any(|s| key.starts_with(s)) {
            command.env_remove(&key);
        }
    }
    let status = command.status()?;
    if !status.success() {
        return Err(format!("scripts/build-plugins.sh failed ({status}): the binary embeds the default plugins").into());
    }
    Ok(())
}
