//! The engine's modules import each other without circles wider than a module: the database
//! (`db`) sits on top, and the commit pipeline, the background worker, flush, compaction,
//! recovery and the VersionSet reach it only through the narrow traits it implements. A `use`
//! of `crate::db` from below (or any other circle) fails here, naming the modules in it.

// The test reads the engine's own source files, not a database: the runtime's file system
// has nothing to do with it.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module of `src` and the top-level modules its code (tests aside) names.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("list src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let relative = path.strip_prefix(&src).expect("under src");
            let first = relative.components().next().expect("a name");
            let name = first.as_os_str().to_str().expect("UTF-8");
            let module = name.trim_end_matches(".rs").to_string();
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            // Test files (`tests.rs`, `robustness_tests.rs`) and the test runtime are code of
            // tests, which may reach anything.
            if module == "lib" || stem.ends_with("tests") || module == "testing" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            // Unit tests may reach anything; the marker starts every test module here.
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
            let deps = graph.entry(module.clone()).or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (at, _) in line.match_indices("crate::") {
                    let rest = &line[at + "crate::".len()..];
                    let end = rest
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(rest.len());
                    let dep = &rest[..end];
                    if !dep.is_empty() && dep != module {
                        deps.insert(dep.to_string());
                    }
                }
            }
        }
    }
    graph
}

/// A circle through `start`, if the graph has one: the modules on it, in order.
fn circle_through(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        at: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            if next == start {
                return true;
            }
            if graph.contains_key(next) && seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, start, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    walk(graph, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let graph = imports();
    assert!(graph.contains_key("db") && graph.contains_key("commit"), "found the modules");
    let circles: Vec<String> = graph
        .keys()
        .filter_map(|m| circle_through(&graph, m))
        .map(|c| format!("{} -> {}", c.join(" -> "), c[0]))
        .collect();
    assert!(circles.is_empty(), "import circles between modules:\n{}", circles.join("\n"));
}

#[test]
fn the_check_sees_a_circle() {
    let mut graph = imports();
    graph.get_mut("version_set").expect("version_set").insert("db".to_string());
    let circle = circle_through(&graph, "version_set").expect("db imports version_set");
    assert_eq!(circle.first().map(String::as_str), Some("version_set"));
    assert!(circle.contains(&"db".to_string()));
}
