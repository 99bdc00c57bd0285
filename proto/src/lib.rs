//! The gRPC wire contract between `ca-server` and its clients, package `dtca.v1`.
//!
//! - [`v1`]: messages, the `Ca` and `Admin` clients and servers generated from
//!   `proto/v1/dtca.proto`.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for gRPC reflection.
//!
//! It holds no logic: the CA and the client translate between these types and their own.

/// Version 1 of the API. Breaking changes go to a new module, never into this one.
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
pub mod v1 {
    tonic::include_proto!("dtca.v1");
}

/// Encoded `FileDescriptorSet` of `dtca.v1`, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("dtca_v1_descriptor");
