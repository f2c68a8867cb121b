//! Compiles the gRPC services of `proto/` with protox (pure Rust, no system protoc) and
//! tonic-prost-build, on the message types of the client package, and names the build
//! (`NET_PATHWAY_BUILD`) that every answer and decision record carries.

#[path = "client/contract_files.rs"]
mod contract_files;

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // sqlx::migrate! embeds the migrations: a new one must rebuild the crate.
    println!("cargo:rerun-if-changed=migrations");
    name_the_build()?;
    let files = contract_files::contract_files(std::path::Path::new("proto"))?;
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        // The messages are the client package's, so server and callers share one set of types.
        .extern_path(".netpathway.v1", "::net_pathway_client::pb")
        .extern_path(".google.type", "::net_pathway_client::google::r#type")
        .extern_path(".google.rpc", "::tonic_types::pb")
        // prost's encoding, with answers' therapy lists written by src/wire.rs.
        .codec_path("crate::wire::Codec")
        .compile_fds(fds)?;
    Ok(())
}

/// Sets `NET_PATHWAY_BUILD`: the package version and, when known, the commit it was built from
/// as SemVer build metadata ("0.1.0+f45f353c0a1b"). The commit comes from
/// `NET_PATHWAY_REVISION` (the container build passes it, having no `.git`), else from git.
/// Two builds under one policy can answer differently (an engine fix), so a decision record
/// names both.
fn name_the_build() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-env-changed=NET_PATHWAY_REVISION");
    let version = env::var("CARGO_PKG_VERSION")?;
    let revision = match env::var("NET_PATHWAY_REVISION") {
        Ok(given) => Some(given.trim().to_owned()).filter(|r| !r.is_empty()),
        Err(_) => git_revision(),
    };
    if let Some(r) = &revision {
        // SemVer build metadata: ASCII letters, digits and hyphens, dot-separated.
        let valid = r.split('.').all(|part| {
            !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
        if !valid {
            return Err(format!("NET_PATHWAY_REVISION {r:?} is not SemVer build metadata ([0-9A-Za-z-] parts, dot-separated)").into());
        }
    }
    let build = match revision {
        Some(r) => format!("{version}+{r}"),
        None => version,
    };
    println!("cargo:rustc-env=NET_PATHWAY_BUILD={build}");
    Ok(())
}

/// The checked-out commit, abbreviated to 12 hex digits; None without git, or when the crate
/// is not the top of its own checkout (a vendored or packaged copy inside another repository
/// must not take that repository's commit). Re-runs when HEAD or its branch moves, so a new
/// commit renames the build.
fn git_revision() -> Option<String> {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").ok()?);
    let git = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&crate_dir)
            .args(args)
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (out.status.success() && !text.is_empty()).then_some(text)
    };
    let top = PathBuf::from(git(&["rev-parse", "--show-toplevel"])?);
    if top.canonicalize().ok()? != crate_dir.canonicalize().ok()? {
        return None;
    }
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
            let path = crate_dir.join(path);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    git(&["rev-parse", "--short=12", "HEAD"])
}
