//! net-pathway: which treatments a patient with a neuroendocrine tumour (NET) can be
//! considered for, and how each is funded in the NHS in England and Wales.
//!
//! Other services depend on this crate for the generated gRPC types ([`pb`]) and, with the
//! `client` feature, the typed [`client::NetPathwayClient`]. The `server` feature (on by
//! default) adds the engine, the policy loader and the server itself.
#![forbid(unsafe_code)]

mod wire;

/// Generated protobuf and gRPC types, nested as their proto packages are.
pub mod netpathway {
    /// `netpathway.v1`.
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("netpathway.v1");
    }
}

/// Generated protobuf and gRPC types for `netpathway.v1`.
pub use netpathway::v1 as pb;

/// `google.type` messages used by the contract (`google.type.Date`).
pub mod google {
    /// `google.type`.
    pub mod r#type {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("google.r#type");
    }
}

/// Encoded file descriptor set of `proto/`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/netpathway_descriptor.bin"));

/// This build of the service: the package version and, when built from a git checkout (or given
/// `NET_PATHWAY_REVISION` at build time), the commit as SemVer build metadata, for example
/// `0.1.0+f45f353c0a1b`. Every answer's policy reference carries it, so a decision record names
/// the build that applied the policy as well as the policy.
pub const SERVICE_BUILD: &str = env!("NET_PATHWAY_BUILD");

#[cfg(feature = "client")]
pub mod client;

#[cfg(feature = "server")]
pub mod admission;
#[cfg(feature = "server")]
pub mod api;
#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod domain;
#[cfg(feature = "server")]
pub mod engine;
#[cfg(feature = "server")]
pub mod gate;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod reload;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod telemetry;
