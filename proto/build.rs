//! Compiles the .proto files with protox (pure Rust), so the build needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(
        ["tracker/v1/tracker.proto", "peer/v1/peer.proto"],
        ["proto"],
    )?;
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
