//! The module dependency rule of docs/architecture.md, read from the source:
//! no import cycle between files, the sans-IO cores import only the leaf
//! modules, and nothing imports a front end.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `src/` file (as `a/b.rs`) and the files it names through `crate::`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    let mut graph = BTreeMap::new();
    for file in &files {
        let name = relative(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        let mut targets = BTreeSet::new();
        for path in crate_paths(&text) {
            if let Some(target) = resolve(&src, &path)
                && target != name
            {
                targets.insert(target);
            }
        }
        graph.insert(name, targets);
    }
    graph
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn relative(src: &Path, file: &Path) -> String {
    file.strip_prefix(src)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// The module paths a file refers to: `use crate::a::{b, c::D}` gives
/// `a::b` and `a::c::D`; `crate::a::f()` in code gives `a::f`. Test modules
/// (everything after `#[cfg(test)]`) are left out: tests may reach anywhere.
fn crate_paths(text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    let code: String = (code.lines())
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut paths = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let head = rest[..end].trim_end_matches(':').to_owned();
        if rest[end..].starts_with('{') {
            let close = rest.find('}').unwrap_or(rest.len());
            for item in rest[end + 1..close].split(',') {
                let item = item.trim().trim_start_matches("self");
                let first = item.split("::").next().unwrap_or_default().trim();
                paths.push(if first.is_empty() {
                    head.clone()
                } else {
                    format!("{head}::{first}")
                });
            }
        } else {
            paths.push(head);
        }
    }
    paths
}

/// The file that holds the longest prefix of `path` that is a module.
fn resolve(src: &Path, path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    (1..=segments.len()).rev().find_map(|n| {
        let dir = segments[..n].join("/");
        [format!("{dir}.rs"), format!("{dir}/mod.rs")]
            .into_iter()
            .find(|candidate| src.join(candidate).is_file())
    })
}

/// Files reachable from `start` by following imports.
fn reachable(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![start.to_owned()];
    while let Some(file) = todo.pop() {
        for next in graph.get(&file).into_iter().flatten() {
            if seen.insert(next.clone()) {
                todo.push(next.clone());
            }
        }
    }
    seen
}

#[test]
fn no_file_imports_itself_through_others() {
    let graph = imports();
    let cycles: Vec<String> = (graph.keys())
        .filter(|file| reachable(&graph, file).contains(*file))
        .cloned()
        .collect();
    assert!(
        cycles.is_empty(),
        "these files are in an import cycle: {cycles:?}"
    );
}

/// The sans-IO cores see the wire protocol, ids, errors and time, and the
/// records and reports their own events carry: nothing with I/O in it.
#[test]
fn the_cores_import_only_leaf_modules() {
    let graph = imports();
    let leaves = [
        "error.rs",
        "ids.rs",
        "protocol.rs",
        "time.rs",
        "usersig.rs",
        "media/quality.rs",
        "media/report.rs",
        "media/control.rs",
        "media/spec.rs",
    ];
    let cores: [(&str, &[&str]); 2] = [
        ("relay/core", &["relay/rate.rs"]),
        ("client/engine", &["client/event.rs", "client/records.rs"]),
    ];
    for (core, own) in cores {
        for (file, targets) in graph.iter().filter(|(f, _)| f.starts_with(core)) {
            for target in targets {
                let allowed = target.starts_with(core)
                    || leaves.contains(&target.as_str())
                    || own.contains(&target.as_str());
                assert!(allowed, "{file} imports {target}, outside its core");
            }
        }
    }
}

#[test]
fn nothing_imports_a_front_end() {
    let graph = imports();
    let front_ends = [
        "main.rs",
        "cli.rs",
        "demo.rs",
        "flow",
        "headless.rs",
        "load",
        "tui",
    ];
    let is_front = |f: &str| front_ends.iter().any(|fe| f.starts_with(fe));
    let upward: Vec<(&String, &String)> = (graph.iter())
        .filter(|(f, _)| !is_front(f))
        .flat_map(|(f, targets)| targets.iter().filter(|t| is_front(t)).map(move |t| (f, t)))
        .collect();
    assert!(upward.is_empty(), "imports of a front end: {upward:?}");
}

/// The checks above read the imports they think they read.
#[test]
fn the_import_reader_finds_grouped_and_inline_paths() {
    let text = "use crate::relay::{self, core::Settings};\nfn f() { crate::time::unix_millis(); }\n#[cfg(test)]\nuse crate::tui::Model;";
    assert_eq!(
        crate_paths(text),
        ["relay", "relay::core", "time::unix_millis"]
    );
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    assert_eq!(
        resolve(&src, "relay::core::Settings").as_deref(),
        Some("relay/core.rs")
    );
    assert_eq!(resolve(&src, "tui::Model").as_deref(), Some("tui/mod.rs"));
    let graph = imports();
    assert!(graph["headless.rs"].contains("client/engine.rs"));
}
