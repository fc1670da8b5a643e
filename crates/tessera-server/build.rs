//! Compiles `proto/tessera/v1/*.proto` with pure-Rust tooling (protox): no `protoc` on
//! the machine. Writes the services' Rust code and the encoded descriptor set that
//! gRPC reflection serves.

use prost::Message;

const PROTOS: &[&str] = &[
    "tessera/v1/auth.proto",
    "tessera/v1/profile.proto",
    "tessera/v1/audience.proto",
    "tessera/v1/admin.proto",
    "tessera/v1/privacy.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script compiled for one checkout may be run for another
    // (a shared target folder), and `env!` would point it at the first one.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }
    let fds = protox::compile(PROTOS, [&root])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("tessera_v1_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    // The server side of `ProfileService` once more, answering with messages that
    // carry each profile already encoded (`crate::wire`): the same bytes on the
    // wire as `GetProfileResponse` / `BatchGetProfilesResponse`.
    let method = |name: &str, route: &str, input: &str, output: &str| {
        tonic_build::manual::Method::builder()
            .name(name)
            .route_name(route)
            .input_type(input)
            .output_type(output)
            .codec_path("tonic_prost::ProstCodec")
            .build()
    };
    let profile_service = tonic_build::manual::Service::builder()
        .name("ProfileService")
        .package("tessera.v1")
        .method(method(
            "get_profile",
            "GetProfile",
            "crate::v1::GetProfileRequest",
            "crate::wire::GetProfileReply",
        ))
        .method(method(
            "batch_get_profiles",
            "BatchGetProfiles",
            "crate::v1::BatchGetProfilesRequest",
            "crate::wire::BatchGetProfilesReply",
        ))
        .build();
    tonic_build::manual::Builder::new()
        .build_client(false)
        .build_server(true)
        .compile(&[profile_service]);
    Ok(())
}
