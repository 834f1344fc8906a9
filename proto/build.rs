//! Compiles the .proto files with protox (pure Rust), so the build needs no system protoc,
//! and keeps the compiled descriptors for gRPC server reflection.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(
        ["tracker/v1/tracker.proto", "peer/v1/peer.proto"],
        ["proto"],
    )?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("tessera_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
