//! The layering that `src/lib.rs` describes, checked: within every folder of the crate (the crate
//! root included), no two children import each other through a chain of paths — files and folder
//! modules alike (`fast/im2col.rs` and `fast/bf16/` are siblings; `fast/bf16/pack.rs` using
//! `super::super::im2col` is an edge bf16 → im2col of `fast/`). Paths are read from `crate::`,
//! `super::` and `self::`, `use` groups included; test code aside. A cycle is a layer doing
//! another's job; this names it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path from the crate root: `fast/bf16/mod.rs` → `[fast, bf16]`.
type ModPath = Vec<String>;

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

fn module_path(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut m: ModPath = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(m.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        m.pop();
    }
    m
}

/// A file's code before its unit tests, without `//` comments (doc links name paths too).
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_len(s: &str) -> usize {
    s.find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len())
}

/// The first segments of each item of a `use` group body (`a::X, b::{c, d}` → `a`, `b`).
fn group_heads(group: &str) -> Vec<String> {
    let (mut out, mut depth, mut cur) = (Vec::new(), 0, String::new());
    for ch in group.chars() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    out.push(cur);
    out.iter()
        .map(|item| {
            let item: String = item.chars().filter(|c| !c.is_whitespace()).collect();
            let head = item.split("::").next().unwrap_or("");
            head.split('{').next().unwrap_or("").to_string()
        })
        .filter(|h| !h.is_empty() && ident_len(h) == h.len())
        .collect()
}

/// The absolute module paths (as far as they go) that the code of module `me` names.
fn references(me: &[String], text: &str) -> Vec<ModPath> {
    let mut out = Vec::new();
    for start in ["crate::", "super::", "self::"] {
        for (i, _) in text.match_indices(start) {
            let before = text[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue; // part of a longer path, read from its first segment
            }
            let mut base: ModPath = Vec::new();
            let mut rest = &text[i..];
            let mut first = true;
            let mut names: Vec<String> = Vec::new();
            loop {
                let n = ident_len(rest);
                if n == 0 {
                    if let Some(g) = rest.strip_prefix('{') {
                        let end = g.find(';').unwrap_or(g.len());
                        let body = g[..end].trim_end();
                        let body = body.strip_suffix('}').unwrap_or(body);
                        names = group_heads(body);
                    }
                    break;
                }
                let word = &rest[..n];
                match (first, word) {
                    (true, "crate") => {}
                    (true, "self") => base = me.to_vec(),
                    (true, "super") => {
                        base = me.to_vec();
                        base.pop();
                    }
                    (false, "super") => {
                        base.pop();
                    }
                    (false, "self") => {}
                    _ => base.push(word.to_string()),
                }
                first = false;
                rest = &rest[n..];
                match rest.strip_prefix("::") {
                    Some(r) => rest = r,
                    None => break,
                }
            }
            if names.is_empty() {
                out.push(base);
            } else {
                out.extend(names.into_iter().map(|n| {
                    let mut p = base.clone();
                    p.push(n);
                    p
                }));
            }
        }
    }
    out
}

/// Per folder (a module path), which child imports which.
type Edges = BTreeMap<ModPath, BTreeMap<String, BTreeSet<String>>>;

fn edges(files: &[(ModPath, String)]) -> Edges {
    let mut children: BTreeMap<ModPath, BTreeSet<String>> = BTreeMap::new();
    for (m, _) in files {
        for k in 0..m.len() {
            children
                .entry(m[..k].to_vec())
                .or_default()
                .insert(m[k].clone());
        }
    }
    let mut out = Edges::new();
    for (me, text) in files {
        for r in references(me, &code(text)) {
            let k = me.iter().zip(&r).take_while(|(a, b)| a == b).count();
            if k >= me.len() || k >= r.len() {
                continue; // an ancestor, or something inside itself
            }
            let folder = me[..k].to_vec();
            let (a, b) = (&me[k], &r[k]);
            if a != b && children.get(&folder).is_some_and(|c| c.contains(b)) {
                out.entry(folder)
                    .or_default()
                    .entry(a.clone())
                    .or_default()
                    .insert(b.clone());
            }
        }
    }
    out
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
fn the_children_of_every_folder_import_in_one_direction() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    let files: Vec<(ModPath, String)> = paths
        .iter()
        .filter(|p| {
            let rel = p.strip_prefix(&src).unwrap();
            !rel.components().any(|c| c.as_os_str() == "tests") && !rel.ends_with("tests.rs")
        })
        .map(|p| (module_path(&src, p), std::fs::read_to_string(p).unwrap()))
        .collect();
    let all = edges(&files);
    assert!(
        all.get(&Vec::new()).is_some_and(|top| top.len() > 10),
        "found only {:?}",
        all.keys()
    );
    assert!(
        all.contains_key(&vec!["fast".to_string()]),
        "no edge inside src/fast"
    );
    for (folder, e) in &all {
        let cyclic = on_cycles(e);
        assert!(
            cyclic.is_empty(),
            "children of src/{} on an import cycle: {cyclic:?}",
            folder.join("/")
        );
    }
}

#[test]
fn a_cycle_through_a_folder_module_is_found() {
    let m = |s: &str| -> ModPath { s.split('/').map(String::from).collect() };
    let files =
        vec![
        (m("fast/im2col"), "use super::bf16::pack;\n".to_string()),
        (
            m("fast/bf16"),
            "mod pack;\n// crate::fast::nothing in a comment\nuse super::{im2col::Conv3x3, gemm};"
                .to_string(),
        ),
        (
            m("fast/bf16/pack"),
            "use super::super::gemm::x; use self::inner::y;".to_string(),
        ),
        (m("fast/gemm"), "use crate::fast::{operand, bf16::X};".to_string()),
        (m("data"), "use crate::{fast::gemm, model};\n".to_string()),
        (m("model"), "let _ = crate::data::load;".to_string()),
    ];
    let e = edges(&files);
    let fast = &e[&m("fast")];
    assert_eq!(on_cycles(fast), ["bf16", "gemm", "im2col"]);
    assert_eq!(fast["bf16"], ["gemm", "im2col"].map(String::from).into());
    assert_eq!(on_cycles(&e[&Vec::new()]), ["data", "model"]);
    let mut r = references(&m("a/b"), "use self::c::{d, e::f}; super::g::h()");
    r.sort();
    assert_eq!(r, [m("a/b/c/d"), m("a/b/c/e"), m("a/g/h")]);
}
