//! Generates the Rust code for `v1/dtca.proto`.
//!
//! Uses `$PROTOC` when set, otherwise the vendored protoc binary, so a fresh machine
//! builds with nothing installed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = match std::env::var_os("PROTOC") {
        Some(path) => PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("dtca_v1_descriptor.bin"))
        .compile_with_config(config, &["v1/dtca.proto"], &["v1"])?;
    println!("cargo:rerun-if-changed=v1/dtca.proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    Ok(())
}
