//! The generated `tessera.v1` messages, clients and servers of `proto/tessera/v1/`.
tonic::include_proto!("tessera.v1");

/// The encoded descriptors of `proto/tessera/v1/`, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tessera_v1_descriptor.bin"));
