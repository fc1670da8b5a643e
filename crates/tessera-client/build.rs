//! Compiles `proto/tessera/v1/*.proto` (client side only) with pure-Rust tooling
//! (protox): no `protoc` on the machine.

const PROTOS: &[&str] = &[
    "tessera/v1/auth.proto",
    "tessera/v1/profile.proto",
    "tessera/v1/audience.proto",
    "tessera/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script compiled for one checkout may be run for another
    // (a shared target folder).
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }
    let fds = protox::compile(PROTOS, [&root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
