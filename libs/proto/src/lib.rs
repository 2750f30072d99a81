//! kvs's gRPC protocol, generated from `proto/` at build time by protox (no system
//! `protoc`): the server side for the `grpc` plug-in, the client side for tests and
//! tools.
//!
//! * [`book`]: the book's `keyvalue.proto` (no proto package: the service is `KeyValue`),
//!   unchanged so clients generated from the book's file work as they are.
//! * [`v1`]: `kvs.v1.KeyValue`, the same calls with `bytes` keys and values, and
//!   conditions, counters and deadlines.
//!
//! Kept apart from the plug-in because a plug-in library exports fixed symbols: two of
//! them cannot be linked into one test binary, but this crate can be.

/// Code generated from `proto/keyvalue.proto` (the book's service, no package).
pub mod book {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("_");
}

/// Code generated from `proto/kvs/v1/kvs.proto`.
pub mod v1 {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("kvs.v1");
}

/// The encoded descriptors of both services, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/kvs_descriptor.bin"));
