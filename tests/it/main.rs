//! The integration tests: one binary, so the server is linked once. Each module is one area of
//! the service, driven as its callers drive it (the client library over a real socket, the
//! real binary, raw HTTP/2 frames); `common` is the harness they share.

mod common;

mod architecture;
mod auth;
mod bad_input;
mod client;
mod clinical_cases;
mod crash;
mod decision_log;
mod hostile;
mod limits;
mod logs;
mod lu177_prrt;
mod metrics;
mod policy_changes;
mod policy_files;
mod registry;
mod reload;
mod replicas;
mod screening;
mod service;
mod store;
mod tls;
