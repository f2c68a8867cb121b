//! net-pathway's client: the gRPC types generated from `proto/` ([`pb`]) and the typed
//! [`NetPathwayClient`] that other hospital services use to ask which neuroendocrine tumour
//! (NET) therapies a patient can be considered for and how each is funded.
//!
//! It carries no server, database or allocator: add it with
//! `net-pathway-client = { git = "…", package = "net-pathway-client" }`. TLS (`tls`) and gzip
//! (`gzip`) are features, on by default. tonic and tonic-types are re-exported, so callers
//! use the versions the generated code was built with.
//!
//! [`NetPathwayClient::builder`] takes `http(s)://host:port` or `dns:///host:port` (a
//! Kubernetes headless Service: every replica, balanced, re-resolved), connects eagerly or
//! lazily, and sets the deadline, credential, TLS and retries; see [`NetPathwayClient`] for
//! which failed calls are tried again.
#![forbid(unsafe_code)]

/// Generated protobuf and gRPC types, nested as their proto packages are.
pub mod netpathway {
    /// `netpathway.v1`.
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("netpathway.v1");
    }
}

/// Generated protobuf and gRPC client types for `netpathway.v1`.
pub use netpathway::v1 as pb;

/// `google.type` messages used by the contract (`google.type.Date`).
pub mod google {
    /// `google.type`.
    pub mod r#type {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("google.r#type");
    }
}

/// Encoded file descriptor set of `proto/`, for reflection-based tools (JSON in the proto
/// mapping, dynamic messages, server reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/netpathway_descriptor.bin"));

mod client;
mod connect;

pub use client::{FieldViolation, NetPathwayClient, field_violations, stream_error};
pub use connect::{
    ClientBuilder, ClientError, ClientOptions, DEFAULT_CONNECT_TIMEOUT, DEFAULT_DEADLINE,
    DNS_REFRESH,
};
pub use tonic;
pub use tonic_types;
