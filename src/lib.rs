//! net-pathway: which treatments a patient with a neuroendocrine tumour (NET) can be
//! considered for, and how each is funded in the NHS in England and Wales.
//!
//! The server package: the engine, the policy loader, the decision log and the gRPC server.
//! Other services depend on the `net-pathway-client` package (in `client/`) instead: the
//! generated types and the typed client, without any of this.
#![forbid(unsafe_code)]

mod wire;

/// The contract's types (from the client package) and the generated gRPC services.
pub mod pb {
    pub use net_pathway_client::pb::*;

    #[allow(clippy::all, missing_docs)]
    mod services {
        tonic::include_proto!("netpathway.v1");
    }
    pub use services::*;
}

pub use net_pathway_client::{FILE_DESCRIPTOR_SET, google};

/// This build of the service: the package version and, when built from a git checkout (or given
/// `NET_PATHWAY_REVISION` at build time), the commit as SemVer build metadata, for example
/// `0.1.0+f45f353c0a1b`. Every answer's policy reference carries it, so a decision record names
/// the build that applied the policy as well as the policy.
pub const SERVICE_BUILD: &str = env!("NET_PATHWAY_BUILD");

// What a binary, a benchmark or a test assembles a service from: the policy and engine, the
// patient, the configuration, the stores, who may call, the server, reload and logs.
pub mod auth;
pub mod config;
pub mod domain;
pub mod engine;
pub mod reload;
pub mod server;
pub mod store;
pub mod telemetry;

pub use admission::WAITING_PER_PLACE;
pub use api::{ActivePolicy, AppState, today};
pub use metrics::ReloadCounters;

// The service's own workings: reached only through the items above.
mod admission;
mod api;
mod errors;
mod gate;
mod metrics;
