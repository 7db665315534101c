//! The layering that `src/lib.rs` describes, checked: no two top-level modules import each other
//! through a chain of `crate::` paths, and no two sibling files of a folder through `super::`
//! paths (test code aside). A cycle is a layer doing another's job; this names it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The words after each `prefix` (`crate::` or `super::`), also inside `use prefix{a, b}`.
fn targets(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices(prefix) {
        let before = text[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &text[i + prefix.len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group
                .split('}')
                .next()
                .unwrap_or("")
                .split(',')
                .map(|n| n.trim().split("::").next().unwrap_or(""))
                .collect(),
            None => vec![rest],
        };
        for n in names {
            let word: String = n
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !word.is_empty() {
                out.insert(word);
            }
        }
    }
    out
}

/// Everything before a file's unit tests.
fn code(p: &Path) -> String {
    let s = std::fs::read_to_string(p).unwrap();
    match s.find("#[cfg(test)]\nmod tests") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// The nodes on some cycle of `edges` (a node reaching itself).
fn on_cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let reaches = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&String> = edges.get(from).into_iter().flatten().collect();
        while let Some(n) = todo.pop() {
            if seen.insert(n.clone()) {
                todo.extend(edges.get(n).into_iter().flatten());
            }
        }
        seen.contains(from)
    };
    edges.keys().filter(|n| reaches(n)).cloned().collect()
}

#[test]
fn modules_and_sibling_files_import_in_one_direction() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.retain(|p| {
        let rel = p.strip_prefix(&src).unwrap();
        !rel.components().any(|c| c.as_os_str() == "tests") && !rel.ends_with("tests.rs")
    });
    let top = |p: &Path| -> String {
        let rel = p.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        first.trim_end_matches(".rs").to_string()
    };
    let tops: BTreeSet<String> = files
        .iter()
        .map(|p| top(p))
        .filter(|t| t != "lib" && t != "main")
        .collect();
    let mut modules: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut siblings: BTreeMap<PathBuf, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for p in &files {
        let (t, text) = (top(p), code(p));
        if !tops.contains(&t) {
            continue;
        }
        let used = targets(&text, "crate::");
        let e = modules.entry(t.clone()).or_default();
        e.extend(used.into_iter().filter(|n| tops.contains(n) && *n != t));
        let dir = p.parent().unwrap();
        let me = p.file_stem().unwrap().to_string_lossy().to_string();
        if me != "mod" && dir != src {
            let near: BTreeSet<String> = targets(&text, "super::")
                .into_iter()
                .filter(|n| *n != me && dir.join(format!("{n}.rs")).is_file())
                .collect();
            siblings
                .entry(dir.to_path_buf())
                .or_default()
                .entry(me)
                .or_default()
                .extend(near);
        }
    }
    assert!(modules.len() > 10, "found only {:?}", modules.keys());
    let cyclic = on_cycles(&modules);
    assert!(cyclic.is_empty(), "modules on an import cycle: {cyclic:?}");
    for (dir, edges) in &siblings {
        let cyclic = on_cycles(edges);
        assert!(
            cyclic.is_empty(),
            "files of {} on an import cycle: {cyclic:?}",
            dir.display()
        );
    }
}

#[test]
fn a_cycle_is_found() {
    let e: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(on_cycles(&e), ["a", "b", "c"]);
    let names = targets(
        "use crate::{data::X, plan};\nlet _ = crate::eval::f; xcrate::no",
        "crate::",
    );
    assert_eq!(names, ["data", "eval", "plan"].map(String::from).into());
}
