//! The module structure ARCHITECTURE.md describes, re-drawn from the code's imports: the
//! server's top-level modules depend one way (no cycles), the engine and the domain never see
//! proto, tonic or the layers above them, and the store never sees the engine or the adapters.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level modules each top-level module of `src/` names as `crate::<module>` or in a
/// `crate::{…}` group in its code (comments and `mod tests` blocks left out), `tonic` or `prost`
/// where it uses them, and `pb` wherever it reaches the generated types.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = vec![src.clone()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            let entries = std::fs::read_dir(&path).expect("read src");
            files.extend(entries.map(|e| e.expect("entry").path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let relative = path.strip_prefix(&src).expect("under src");
        let first = relative.iter().next().expect("a name").to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read module");
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
        let deps = graph.entry(module.clone()).or_default();
        let code: String = code
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        // The generated types, however they are reached, count as `pb`.
        for (marker, framework) in [
            ("tonic::", "tonic"),
            ("tonic_types::", "tonic"),
            ("prost::", "prost"),
            ("prost_types::", "prost"),
            ("net_pathway_client::", "pb"),
        ] {
            if code.contains(marker) {
                deps.insert(framework.to_string());
            }
        }
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + 7..];
            // `crate::{a, b::c}` names several modules at once, over several lines or one.
            let names: Vec<&str> = match rest.strip_prefix('{') {
                Some(group) => group
                    .split('}')
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .map(str::trim)
                    .collect(),
                None => vec![rest],
            };
            for name in names {
                let name: String = name
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    deps.insert(name);
                }
            }
        }
    }
    graph
}

/// A cycle through `from`, if there is one, as the path of modules that closes it.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![from.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().expect("a path has a module");
        for next in graph.get(last).into_iter().flatten() {
            if next == from {
                let mut closed = path.clone();
                closed.push(next.clone());
                return Some(closed);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn the_server_modules_depend_one_way() {
    let graph = module_graph();
    assert!(graph.len() >= 10, "found the modules: {graph:?}");
    let cycles: Vec<_> = graph.keys().filter_map(|m| cycle(&graph, m)).collect();
    assert!(
        cycles.is_empty(),
        "modules that import each other: {cycles:?}"
    );
}

#[test]
fn the_engine_and_the_domain_never_see_proto_or_the_layers_above() {
    let graph = module_graph();
    for (module, allowed) in [
        ("domain", &[][..]),
        ("engine", &["domain"][..]),
        ("store", &["pb", "prost"][..]),
    ] {
        let deps = &graph[module];
        let beyond: Vec<_> = deps
            .iter()
            .filter(|d| !allowed.contains(&d.as_str()))
            .collect();
        assert!(beyond.is_empty(), "{module} depends on {beyond:?}");
    }
}
