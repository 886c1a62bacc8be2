//! Compiles `proto/` with tonic-prost-build, using the protoc shipped in the
//! protoc-bin-vendored crate (no system protoc needed).

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
    Ok(())
}
