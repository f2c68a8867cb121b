//! Compiles the contract in `../proto` with protox (pure Rust, no system protoc) into the
//! message types and gRPC clients, and keeps its encoded descriptor set for reflection-based
//! tools (the load generator, the server's reflection service).

mod contract_files;

use contract_files::contract_files;
use protox::prost::Message;
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let fds = protox::compile(contract_files(&proto)?, [&proto])?;
    // compile_fds() does not honour file_descriptor_set_path(), so the set is written here.
    std::fs::write(
        out_dir.join("netpathway_descriptor.bin"),
        fds.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        // google.rpc.Status is tonic-types' own, so in-stream errors carry the same details types.
        .extern_path(".google.rpc", "::tonic_types::pb")
        // A patient profile is most of a request's size; boxed, a request is cheap to move
        // through the futures that carry it from decoding to the handler.
        .boxed(".netpathway.v1.EvaluateEligibilityRequest.patient")
        .boxed(".netpathway.v1.ClassifyFundingRequest.patient")
        .boxed(".netpathway.v1.ScreenCohortRequest.patient")
        .compile_fds(fds)?;
    Ok(())
}
