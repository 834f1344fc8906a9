//! ARCHITECTURE.md is kept true: every path it names exists, and its module graph of the
//! `peer` and `tracker` crates is the one the code has, with no cycle in it. Each edge is a
//! top-level module of a crate naming another through `crate::` outside its unit tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the peer crate sits in the workspace")
        .to_path_buf()
}

/// Every `.rs` file below `dir` except unit-test files.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir)
        .expect("readable source dir")
        .flatten()
    {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs")
            && p.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(p);
        }
    }
}

/// The first identifiers of the paths after each `crate::` in `text`
/// (`crate::a::b` → a; `crate::{a, b::c}` → a, b).
fn crate_refs(text: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut start) = (0, 0);
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.insert(ident(&group[start..j]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident(&group[start..j]));
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.remove("");
    out
}

/// `module -> modules it names` for the top-level modules of the crate at `src`.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let top: BTreeSet<String> = std::fs::read_dir(src)
        .expect("readable src")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let m = name.strip_suffix(".rs").unwrap_or(&name).to_string();
            (e.path().is_dir() || name.ends_with(".rs")).then_some(m)
        })
        .filter(|m| m != "lib" && m != "main")
        .collect();
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(src).expect("below src");
        let first = rel.components().next().expect("a component");
        let module = first.as_os_str().to_string_lossy();
        let module = module.strip_suffix(".rs").unwrap_or(&module).to_string();
        if !top.contains(&module) {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("readable source");
        // Unit tests sit at the end of a file, behind `#[cfg(test)]`.
        let code = text
            .split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or(&text);
        let refs = crate_refs(code);
        let edges = graph.entry(module.clone()).or_default();
        edges.extend(refs.into_iter().filter(|r| *r != module && top.contains(r)));
    }
    graph
}

/// A cycle in `graph`, if any, as the modules along it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        n: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut cycle = path[i..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(g, m, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(graph, n, &mut Vec::new(), &mut done))
}

/// The graph as ARCHITECTURE.md writes it: one line per module, `- module → a, b`.
fn render(crate_name: &str, graph: &BTreeMap<String, BTreeSet<String>>) -> String {
    let mut s = format!("`{crate_name}`:\n");
    for (m, deps) in graph {
        let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
        let deps = if deps.is_empty() {
            "(nothing)".to_string()
        } else {
            deps.join(", ")
        };
        s.push_str(&format!("- `{m}` → {deps}\n"));
    }
    s
}

#[test]
fn should_have_no_module_cycles_and_the_graph_architecture_md_shows() {
    let root = workspace();
    let doc = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let mut wanted = String::new();
    for krate in ["peer", "tracker"] {
        let graph = module_graph(&root.join(krate).join("src"));
        if let Some(cycle) = find_cycle(&graph) {
            panic!("{krate}: modules import each other: {}", cycle.join(" → "));
        }
        let shown = render(krate, &graph);
        if !doc.contains(&shown) {
            wanted.push_str(&shown);
        }
    }
    assert!(
        wanted.is_empty(),
        "ARCHITECTURE.md's module graph is out of date; it should read:\n{wanted}"
    );
}

#[test]
fn should_name_only_paths_that_exist_in_architecture_md() {
    let root = workspace();
    let doc = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let mut missing = Vec::new();
    for (i, span) in doc.split('`').enumerate() {
        // Odd pieces are inside backticks; a path has a slash and no spaces.
        let looks_like_path = i % 2 == 1
            && span.contains('/')
            && !span.contains(' ')
            && !span.contains("://")
            && !span.starts_with('/')
            && [".rs", ".md", ".sh", ".proto", ".toml", ".yml", "/"]
                .iter()
                .any(|x| span.ends_with(x));
        if looks_like_path && !root.join(span).exists() {
            missing.push(span.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names paths that do not exist: {missing:?}"
    );
}

#[test]
fn crate_refs_reads_paths_and_groups() {
    let refs = crate_refs("use crate::a::b;\nuse crate::{c, d::{e, f}, g};\nlet x = crate::h(1);");
    let want: BTreeSet<String> = ["a", "c", "d", "g", "h"].map(String::from).into();
    assert_eq!(refs, want);
}
