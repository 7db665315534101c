//! The files under a folder, at any depth, in path order: what a pool of images is. Walked with
//! `walkdir`, which notices a symbolic link that leads back to a folder above it (`ln -s . pool/self`)
//! instead of walking it for ever; such a loop is skipped with a warning. Hidden entries are
//! never data. A command that moves files walks without following links ([`Links::Skip`]): a
//! link's target lies outside the folder, and moving "the pool's" files must not move those.

use super::folder::hidden;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// What to do with symbolic links under the folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Read through them (a pool that reads its images).
    Follow,
    /// Leave them out, with a warning (a command that moves the files it finds).
    Skip,
}

/// The files found and what was left out.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    /// Every regular file (or, with [`Links::Follow`], link to one), sorted by path.
    pub files: Vec<PathBuf>,
    /// One line per thing left out: loops, links not followed.
    pub warnings: Vec<String>,
}

/// The files under `root` (see the module documentation); `what` names the walk in a
/// cancellation message. Ctrl-C stops a long walk.
pub fn files(root: &Path, links: Links, what: &'static str) -> Result<Tree> {
    let mut tree = Tree::default();
    let mut skipped_links = Vec::new();
    let walk = walkdir::WalkDir::new(root)
        .follow_links(links == Links::Follow)
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !hidden(e.path()));
    for (n, entry) in walk.enumerate() {
        if n % 256 == 0 {
            crate::cancel::check(what)?;
        }
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let at = e.path().unwrap_or(root).to_path_buf();
                if e.loop_ancestor().is_some() {
                    tree.warnings.push(format!(
                        "{} is a symbolic link to a folder that holds it (a loop): skipped",
                        at.display()
                    ));
                    continue;
                }
                let io = e
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("cannot be walked"));
                return Err(Error::io(&at, io));
            }
        };
        let t = entry.file_type();
        if t.is_dir() {
            continue;
        }
        if t.is_symlink() {
            // Only when links are not followed (a followed link reports its target's type).
            skipped_links.push(entry.into_path());
            continue;
        }
        tree.files.push(entry.into_path());
    }
    if let Some(first) = skipped_links.first() {
        tree.warnings.push(format!(
            "{} symbolic link(s) under {} left out (the first: {}): this command moves files, and \
             a link's target lies outside the folder",
            skipped_links.len(),
            root.display(),
            first.display()
        ));
    }
    tree.files.sort();
    Ok(tree)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn loops_end_links_are_skipped_when_asked_and_hidden_entries_never_count() {
        let tmp = tempfile::tempdir().unwrap();
        let pool = tmp.path().join("pool");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(pool.join("a")).unwrap();
        std::fs::create_dir_all(pool.join(".hidden")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        for p in [
            pool.join("b.png"),
            pool.join("a/c.png"),
            pool.join(".hidden/d.png"),
            outside.join("e.png"),
        ] {
            std::fs::write(p, b"x").unwrap();
        }
        symlink(".", pool.join("self")).unwrap();
        symlink(&outside, pool.join("out")).unwrap();
        let t = files(&pool, Links::Follow, "test").unwrap();
        assert_eq!(
            t.files,
            [
                pool.join("a/c.png"),
                pool.join("b.png"),
                pool.join("out/e.png")
            ]
        );
        assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
        assert!(t.warnings[0].contains("a loop"), "{:?}", t.warnings);
        let t = files(&pool, Links::Skip, "test").unwrap();
        assert_eq!(t.files, [pool.join("a/c.png"), pool.join("b.png")]);
        assert!(
            t.warnings[0].starts_with("2 symbolic link(s)"),
            "{:?}",
            t.warnings
        );
    }
}
