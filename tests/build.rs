//! A stranger's gRPC client for the members-only tests, generated here from
//! `proto/` as anyone holding the contracts would (client stubs only; none
//! of the node's own RPC code).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto");
    println!("cargo:rerun-if-changed=build.rs");
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().build_server(false).compile_with_config(
        config,
        &["../proto/ringshare/chord/v1/chord.proto", "../proto/ringshare/files/v1/files.proto"],
        &["../proto"],
    )?;
    Ok(())
}
