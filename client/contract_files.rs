//! The contract's files, for the build scripts of the client (the types and clients) and of
//! the server (the services): every `.proto` in `netpathway/v1/`, relative to the proto root,
//! in name order, so both compile the same contract.

pub fn contract_files(proto: &std::path::Path) -> std::io::Result<Vec<String>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(proto.join("netpathway/v1"))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".proto") {
            files.push(format!("netpathway/v1/{name}"));
        }
    }
    files.sort();
    Ok(files)
}
