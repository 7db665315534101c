//! docs/architecture.md stays true: its tree lists exactly the source files there are (unit-test
//! files aside), and every `module::item` path it names resolves to a module of `src/` and an
//! item defined there.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn page() -> String {
    std::fs::read_to_string(root().join("docs/architecture.md")).unwrap()
}

/// The source files, relative to `src/` (`fast/bf16/mod.rs`), without unit-test files.
fn source_files() -> BTreeSet<String> {
    fn walk(dir: &Path, src: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                if name != "tests" {
                    walk(&p, src, out);
                }
            } else if name.ends_with(".rs") && name != "tests.rs" {
                let rel = p.strip_prefix(src).unwrap();
                out.insert(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let src = root().join("src");
    let mut out = BTreeSet::new();
    walk(&src, &src, &mut out);
    out
}

/// The files of the page's tree: each line `├── name` at depth (its column / 4), folders ending
/// in `/`; lines without a branch are a job's continuation.
fn tree_files(page: &str) -> BTreeSet<String> {
    let start = page
        .find("```\nsrc/\n")
        .expect("the tree block starts with src/")
        + 4;
    let block = &page[start..start + page[start..].find("```").unwrap()];
    let mut stack: Vec<String> = Vec::new();
    let mut out = BTreeSet::new();
    for line in block.lines().skip(1) {
        let chars: Vec<char> = line.chars().collect();
        let Some(at) = chars
            .windows(3)
            .position(|w| (w[0] == '├' || w[0] == '└') && w[1] == '─' && w[2] == '─')
        else {
            continue;
        };
        let depth = at / 4;
        let name: String = chars[at + 4..]
            .iter()
            .take_while(|c| !c.is_whitespace())
            .collect();
        stack.truncate(depth);
        match name.strip_suffix('/') {
            Some(folder) => stack.push(folder.to_string()),
            None => {
                let mut path = stack.join("/");
                if !path.is_empty() {
                    path.push('/');
                }
                out.insert(path + &name);
            }
        }
    }
    out
}

/// Every path of two or more segments the page names, in prose or in a figure
/// (`plan::resolve`, `TrainOptions::over`).
fn item_paths(page: &str) -> Vec<Vec<String>> {
    page.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .map(|t| t.trim_matches(':'))
        .filter(|t| t.contains("::"))
        .filter(|t| {
            t.split("::").all(|seg| {
                !seg.is_empty()
                    && seg.chars().all(|c| c.is_alphanumeric() || c == '_')
                    && !seg.starts_with(|c: char| c.is_ascii_digit())
            })
        })
        .map(|t| t.split("::").map(String::from).collect())
        .collect()
}

/// Whether `text` defines `name` (a function, type, constant, module or re-export).
fn defines(text: &str, name: &str) -> bool {
    [
        "fn ", "struct ", "enum ", "trait ", "const ", "static ", "type ", "mod ",
    ]
    .iter()
    .any(|kw| {
        text.match_indices(&format!("{kw}{name}")).any(|(i, m)| {
            let after = text[i + m.len()..].chars().next();
            !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
    }) || text.contains(&format!("use {name};"))
        || text.contains(&format!(", {name}}}"))
        || text.contains(&format!("{{{name},"))
        || text.contains(&format!("::{name};"))
}

/// Resolves `segments`: leading ones as modules of `src/`, the rest as items defined in the
/// module reached (or anywhere in `src/` when the path starts with a type).
fn resolves(segments: &[String], files: &BTreeSet<String>) -> Result<(), String> {
    let src = root().join("src");
    let mut module = String::new();
    let mut k = 0;
    while k < segments.len() {
        let next = if module.is_empty() {
            segments[k].clone()
        } else {
            format!("{module}/{}", segments[k])
        };
        if files.contains(&format!("{next}.rs")) || files.contains(&format!("{next}/mod.rs")) {
            module = next;
            k += 1;
        } else {
            break;
        }
    }
    if k == segments.len() {
        return Ok(()); // a module path
    }
    let texts: Vec<String> = if module.is_empty() {
        files
            .iter()
            .map(|f| std::fs::read_to_string(src.join(f)).unwrap())
            .collect()
    } else {
        let f = if files.contains(&format!("{module}.rs")) {
            format!("{module}.rs")
        } else {
            format!("{module}/mod.rs")
        };
        vec![std::fs::read_to_string(src.join(f)).unwrap()]
    };
    for name in &segments[k..] {
        if !texts.iter().any(|t| defines(t, name)) {
            let place = if module.is_empty() {
                "src/".to_string()
            } else {
                format!("src/{module}")
            };
            return Err(format!("{name} is not defined in {place}"));
        }
    }
    Ok(())
}

#[test]
fn the_tree_lists_every_source_file_and_nothing_else() {
    let (have, listed) = (source_files(), tree_files(&page()));
    let missing: Vec<&String> = have.difference(&listed).collect();
    let gone: Vec<&String> = listed.difference(&have).collect();
    assert!(
        missing.is_empty() && gone.is_empty(),
        "docs/architecture.md: not listed {missing:?}; listed but not in src/ {gone:?}"
    );
}

#[test]
fn every_path_the_page_names_exists() {
    let files = source_files();
    let paths = item_paths(&page());
    assert!(paths.len() >= 10, "found only {paths:?}");
    let wrong: Vec<String> = paths
        .iter()
        .filter_map(|p| {
            resolves(p, &files)
                .err()
                .map(|e| format!("{}: {e}", p.join("::")))
        })
        .collect();
    assert!(wrong.is_empty(), "docs/architecture.md names {wrong:?}");
}

#[test]
fn the_checks_catch_a_stale_page() {
    let files = source_files();
    let stale = |s: &str| -> Vec<String> { s.split("::").map(String::from).collect() };
    assert!(resolves(&stale("report::run::finish_run"), &files).is_err());
    assert!(resolves(&stale("report::run::write_run_report"), &files).is_ok());
    assert!(resolves(&stale("TrainOptions::no_such_method"), &files).is_err());
    assert!(resolves(&stale("no_such_module::x"), &files).is_err());
    let tree = "```\nsrc/\n├── a.rs   x\n├── b/\n│   ├── mod.rs  y\n│   │                cont.\n\
                │   └── c/\n│       └── d.rs\n└── e.rs\n```\n";
    assert_eq!(
        tree_files(tree),
        ["a.rs", "b/mod.rs", "b/c/d.rs", "e.rs"]
            .map(String::from)
            .into()
    );
}
