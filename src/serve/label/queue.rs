//! The images waiting for a label and the answers given: each answer moves one file into
//! `INTO/<class>/` at once (a rename, or a copy made durable before the original is removed when
//! the folders are on different disks), so nothing is lost when the page or the program stops;
//! undo moves it back. A file is never written over: a taken name gets a `-1`, `-2`, ... suffix.

use crate::data::SourceKind;
use crate::data::tree;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Extensions of the files offered for labelling.
const IMAGE_EXTENSIONS: [&str; 11] = [
    "png", "jpg", "jpeg", "gif", "bmp", "tif", "tiff", "webp", "pgm", "ppm", "pnm",
];

/// The model's likeliest class for an image and its probability, when a model was given.
pub type Guess = Option<(usize, f32)>;

/// One image to label.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Item {
    /// Its name, as the page shows it.
    pub name: String,
    /// Where the file is now.
    #[serde(skip)]
    pub path: PathBuf,
    /// The folder holding the class folders it is filed into.
    #[serde(skip)]
    pub root: PathBuf,
    /// The class folder it is in (a label to check), or `None` while it waits in the pool.
    pub class: Option<usize>,
    /// Whether it was answered on this page.
    pub answered: bool,
    /// The model's guess.
    pub guess: Guess,
}

/// One answer, to undo.
#[derive(Debug, Clone)]
struct Move {
    item: usize,
    from: PathBuf,
    class: Option<usize>,
}

/// The images the page goes through, and the answers given so far.
#[derive(Debug)]
pub struct Queue {
    classes: Vec<String>,
    items: Vec<Item>,
    undo: Vec<Move>,
    warnings: Vec<String>,
    /// Answers and undos so far: a page that answers from an older state is told (two tabs).
    version: u64,
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Every image file under `dir`, at any depth, in path order, symbolic links left out (the page
/// moves what it finds), and what was left out.
fn image_files(dir: &Path) -> Result<(Vec<PathBuf>, Vec<String>)> {
    let tree = tree::files(dir, tree::Links::Skip, "reading the images to label")?;
    let images = tree.files.into_iter().filter(|p| is_image(p)).collect();
    Ok((images, tree.warnings))
}

/// `dir/name`, or `dir/stem-N.ext` with the first N that is free.
fn free_name(dir: &Path, name: &str) -> PathBuf {
    let first = dir.join(name);
    if !first.exists() {
        return first;
    }
    let p = Path::new(name);
    let stem = p.file_stem().map_or(name.into(), |s| s.to_string_lossy());
    let ext = p.extension().map(|e| format!(".{}", e.to_string_lossy()));
    (1..)
        .map(|n| dir.join(format!("{stem}-{n}{}", ext.as_deref().unwrap_or(""))))
        .find(|p| !p.exists())
        .unwrap_or(first)
}

/// The name ending of a cross-disk move's copy until it is complete: a hidden file no loader
/// reads, which a later start of the page removes (the original is still in place then).
const PARTIAL: &str = ".warmstart-move";

/// Moves `from` to `to` (which must not exist): a rename, or across disks a copy (streamed, under
/// a hidden [`PARTIAL`] name, synced) renamed into place, then the original removed. Killed at any
/// point, the image is whole in one place at least.
fn move_file(from: &Path, to: &Path) -> Result<()> {
    let dir = to.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    if std::fs::rename(from, to).is_ok() {
        return Ok(());
    }
    copy_then_remove(from, to)
}

fn copy_then_remove(from: &Path, to: &Path) -> Result<()> {
    let dir = to.parent().unwrap_or(Path::new("."));
    let name = to
        .file_name()
        .map_or("image".into(), |n| n.to_string_lossy());
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(PARTIAL)
        .tempfile_in(dir)
        .map_err(|e| Error::write(dir, e))?;
    let mut src = std::fs::File::open(from).map_err(|e| Error::io(from, e))?;
    std::io::copy(&mut src, tmp.as_file_mut()).map_err(|e| Error::write(to, e))?;
    tmp.as_file().sync_all().map_err(|e| Error::write(to, e))?;
    tmp.persist_noclobber(to)
        .map_err(|e| Error::write(to, e.error))?;
    std::fs::remove_file(from).map_err(|e| Error::io(from, e))
}

/// Removes the unfinished copies of moves cut short (a killed page) from `root`'s class folders;
/// how many.
fn remove_partial_copies(root: &Path) -> usize {
    let mut n = 0;
    let folders = std::fs::read_dir(root).into_iter().flatten().flatten();
    for folder in folders.filter(|e| e.path().is_dir()) {
        for f in std::fs::read_dir(folder.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.starts_with('.')
                && name.ends_with(PARTIAL)
                && std::fs::remove_file(f.path()).is_ok()
            {
                n += 1;
            }
        }
    }
    n
}

/// Refuses an `--into` that `train --data` would not read as `INTO/<class>/*`: a folder of IDX or
/// CSV files (a class folder beside them makes the folder unreadable), or one with the
/// `{train,val,test}/<class>` layout (its split folders would be offered as classes, and images
/// filed beside them ignored).
fn check_into(into: &Path) -> Result<()> {
    if !into.is_dir() {
        return Ok(());
    }
    if let Ok(kind @ (SourceKind::Idx | SourceKind::Csv)) = crate::data::detect(into) {
        return Err(Error::format(
            into,
            format!(
                "holds {} files: `label` files images into class folders; give --into an image \
                 folder (a new one, or one of class folders)",
                if kind == SourceKind::Idx {
                    "IDX"
                } else {
                    "CSV"
                }
            ),
        ));
    }
    if crate::data::folder::split_parts(into)?.is_some() {
        return Err(Error::format(
            into,
            format!(
                "has the {{train,val,test}}/<class> layout: give --into {}",
                into.join("train").display()
            ),
        ));
    }
    Ok(())
}

/// The data folder a class folder's parent `root` belongs to, canonical: `root` itself, or its
/// parent for the `{train,val,test}/<class>` layout.
fn data_folder(root: &Path) -> Result<PathBuf> {
    let c = std::fs::canonicalize(root).map_err(|e| Error::io(root, e))?;
    let split = crate::data::folder::part_of(&c).is_some();
    Ok(match (split, c.parent()) {
        (true, Some(p)) => p.to_path_buf(),
        _ => c,
    })
}

/// Refuses a pool inside the labelled data `into` (its images are labelled already), by canonical
/// paths (`..` and links resolved).
pub(super) fn refuse_pool_inside(pool: &Path, into: &Path) -> Result<()> {
    if crate::fsutil::within(pool, into) {
        return Err(Error::invalid(format!(
            "--pool {} is inside --into {} (its images are labelled already): give a pool \
             outside the labelled data",
            pool.display(),
            into.display()
        )));
    }
    Ok(())
}

/// Refuses class names that cannot be folder names.
fn check_names(classes: &[String]) -> Result<()> {
    match classes.iter().find(|c| {
        c.is_empty() || c.starts_with('.') || c.contains(['/', '\\']) || c.as_str() == ".."
    }) {
        Some(bad) => Err(Error::invalid(format!(
            "{bad:?} cannot be a class folder's name"
        ))),
        None => Ok(()),
    }
}

impl Queue {
    /// Images already in class folders whose labels are to be checked (an audit's likely wrong
    /// labels): each `(file, its class, the model's guess)`, the file in `ROOT/<class>/`.
    pub fn to_check(classes: Vec<String>, files: Vec<(PathBuf, usize, Guess)>) -> Result<Queue> {
        check_names(&classes)?;
        let mut items = Vec::with_capacity(files.len());
        let mut data_root: Option<PathBuf> = None;
        for (path, class, guess) in files {
            let root = path
                .parent()
                .and_then(Path::parent)
                .ok_or_else(|| Error::format(&path, "is not inside a class folder"))?;
            if !path.is_file() {
                return Err(Error::format(
                    &path,
                    "is not there any more (moved or relabelled since the audit?)",
                ));
            }
            // An answer moves the file to a sibling class folder: only an image of the audited
            // data, in the folder of the label the audit read, may move.
            let folder = path.parent().and_then(Path::file_name);
            if folder.and_then(|f| f.to_str()) != classes.get(class).map(String::as_str) {
                return Err(Error::format(
                    &path,
                    format!(
                        "is listed with the label {:?} but is not in a folder of that name: the \
                         audit's list was changed, or the images were moved since",
                        classes.get(class).map_or("?", String::as_str)
                    ),
                ));
            }
            let whole = data_folder(root)?;
            match &data_root {
                None => data_root = Some(whole),
                Some(first) if *first != whole => {
                    return Err(Error::format(
                        &path,
                        format!(
                            "is outside the audited data ({}): an audit lists the images of one \
                             data folder",
                            first.display()
                        ),
                    ));
                }
                Some(_) => {}
            }
            items.push(Item {
                name: path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .display()
                    .to_string(),
                root: root.to_path_buf(),
                path,
                class: Some(class),
                answered: false,
                guess,
            });
        }
        if items.is_empty() {
            return Err(Error::invalid("no image to check"));
        }
        Ok(Queue {
            classes,
            items,
            undo: Vec::new(),
            warnings: Vec::new(),
            version: 0,
        })
    }

    /// The image files under `pool`, to be filed into `into`'s class folders named `classes`.
    /// Refuses a pool inside `into` (its images are labelled already; `..` and links resolved)
    /// and an `into` that is not a folder of class folders; leaves out `into`'s own files when
    /// it lies inside the pool.
    pub fn new(pool: &Path, into: &Path, classes: Vec<String>) -> Result<Queue> {
        check_into(into)?;
        let partial = remove_partial_copies(into);
        refuse_pool_inside(pool, into)?;
        let (files, mut warnings) = image_files(pool)?;
        if partial > 0 {
            warnings.push(format!(
                "removed {partial} unfinished copy(ies) of an interrupted move from {}'s class \
                 folders (their images are still in the pool)",
                into.display()
            ));
        }
        if files.is_empty() {
            return Err(Error::format(
                pool,
                "holds no image files to label (png, jpg, gif, bmp, tiff, webp, pgm/ppm)",
            ));
        }
        check_names(&classes)?;
        let items = files
            .into_iter()
            .filter(|f| !crate::fsutil::within(f, into))
            .map(|path| Item {
                name: path
                    .strip_prefix(pool)
                    .unwrap_or(&path)
                    .display()
                    .to_string(),
                path,
                root: into.to_path_buf(),
                class: None,
                answered: false,
                guess: None,
            })
            .collect();
        Ok(Queue {
            classes,
            items,
            undo: Vec::new(),
            warnings,
            version: 0,
        })
    }

    /// What was left out of the pool (symbolic links), to tell the user.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// How many answers and undos changed the queue so far.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The class names, in key order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// The images, in order.
    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// Sets the model's guesses (one per image, in order).
    pub fn set_guesses(&mut self, guesses: Vec<Guess>) {
        for (item, g) in self.items.iter_mut().zip(guesses) {
            item.guess = g;
        }
    }

    /// The first image not yet answered.
    pub fn next(&self) -> Option<usize> {
        self.items.iter().position(|i| !i.answered)
    }

    /// Images answered so far.
    pub fn done(&self) -> usize {
        self.items.iter().filter(|i| i.answered).count()
    }

    /// Whether there is an answer to undo.
    pub fn can_undo(&self) -> bool {
        !self.undo.is_empty()
    }

    /// Files image `item` into class `class` (moving it again if it had another class; keeping
    /// it where it is if that is its class already).
    pub fn label(&mut self, item: usize, class: usize) -> Result<()> {
        let name = self
            .classes
            .get(class)
            .ok_or_else(|| Error::invalid(format!("there is no class {class}")))?
            .clone();
        let it = self
            .items
            .get(item)
            .ok_or_else(|| Error::invalid(format!("there is no image {item}")))?;
        let from = it.path.clone();
        let undo = Move {
            item,
            from: from.clone(),
            class: it.class,
        };
        let to = if it.class == Some(class) {
            from
        } else {
            let file = it
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            let to = free_name(
                &it.root.join(&name),
                &file.unwrap_or_else(|| "image".into()),
            );
            move_file(&from, &to)?;
            to
        };
        self.undo.push(undo);
        self.version += 1;
        let it = &mut self.items[item];
        it.path = to;
        it.class = Some(class);
        it.answered = true;
        Ok(())
    }

    /// Takes the last answer back (the file returns where it was); the image it concerned.
    pub fn undo(&mut self) -> Result<Option<usize>> {
        let Some(m) = self.undo.pop() else {
            return Ok(None);
        };
        let now = self.items[m.item].path.clone();
        let back = if now == m.from {
            now
        } else {
            // Where it came from may have been taken meanwhile (a file put there by hand).
            let back = if m.from.exists() {
                let dir = m.from.parent().unwrap_or(Path::new("."));
                let name = m.from.file_name().map(|n| n.to_string_lossy().into_owned());
                free_name(dir, &name.unwrap_or_else(|| "image".into()))
            } else {
                m.from
            };
            move_file(&now, &back)?;
            back
        };
        let it = &mut self.items[m.item];
        it.path = back;
        it.class = m.class;
        it.answered = self.undo.iter().any(|u| u.item == m.item);
        self.version += 1;
        Ok(Some(m.item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path, bytes: &[u8]) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    #[test]
    fn answers_move_files_and_undo_moves_them_back() {
        let d = tempfile::tempdir().unwrap();
        let pool = d.path().join("pool");
        let into = d.path().join("data");
        touch(&pool.join("b/2.png"), b"two");
        touch(&pool.join("1.png"), b"one");
        touch(&pool.join("notes.txt"), b"not an image");
        touch(&into.join("cat/1.png"), b"already there");
        let mut q = Queue::new(&pool, &into, vec!["cat".into(), "dog".into()]).unwrap();
        let names: Vec<&str> = q.items().iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["1.png", "b/2.png"]);
        assert_eq!(q.next(), Some(0));
        q.label(0, 0).unwrap();
        // The name was taken: a suffix, and the file already there is untouched.
        assert_eq!(std::fs::read(into.join("cat/1-1.png")).unwrap(), b"one");
        assert_eq!(
            std::fs::read(into.join("cat/1.png")).unwrap(),
            b"already there"
        );
        assert!(!pool.join("1.png").exists());
        assert_eq!((q.next(), q.done()), (Some(1), 1));
        q.label(1, 1).unwrap();
        assert_eq!(std::fs::read(into.join("dog/2.png")).unwrap(), b"two");
        // Relabel, then undo twice: back to the first answer, then to the pool.
        q.label(1, 0).unwrap();
        assert_eq!(std::fs::read(into.join("cat/2.png")).unwrap(), b"two");
        assert_eq!(q.undo().unwrap(), Some(1));
        assert_eq!(std::fs::read(into.join("dog/2.png")).unwrap(), b"two");
        assert_eq!(q.undo().unwrap(), Some(1));
        assert_eq!(std::fs::read(pool.join("b/2.png")).unwrap(), b"two");
        assert_eq!((q.next(), q.done()), (Some(1), 1));
        assert!(q.label(0, 7).is_err() && q.label(9, 0).is_err());
    }

    #[test]
    fn a_checked_label_stays_or_moves_to_the_sibling_class_folder() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data/train");
        touch(&data.join("cat/1.png"), b"one");
        touch(&data.join("dog/2.png"), b"two");
        let mut q = Queue::to_check(
            vec!["cat".into(), "dog".into()],
            vec![
                (data.join("cat/1.png"), 0, Some((1, 0.9))),
                (data.join("dog/2.png"), 1, None),
            ],
        )
        .unwrap();
        assert_eq!(q.items()[0].name, "cat/1.png");
        q.label(0, 1).unwrap();
        assert_eq!(std::fs::read(data.join("dog/1.png")).unwrap(), b"one");
        q.label(1, 1).unwrap();
        assert_eq!(std::fs::read(data.join("dog/2.png")).unwrap(), b"two");
        assert_eq!((q.done(), q.next()), (2, None));
        q.undo().unwrap();
        q.undo().unwrap();
        assert_eq!(std::fs::read(data.join("cat/1.png")).unwrap(), b"one");
        assert_eq!((q.done(), q.next()), (0, Some(0)));
        let gone = Queue::to_check(vec!["cat".into()], vec![(data.join("cat/9.png"), 0, None)]);
        assert!(gone.unwrap_err().to_string().contains("9.png"));
    }

    #[test]
    fn a_move_across_disks_copies_whole_and_a_cut_one_is_cleaned_up() {
        let data = tempfile::tempdir().unwrap();
        // /dev/shm is another file system than the temporary folder where it exists.
        let other = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir());
        let other = other.unwrap();
        let from = other.path().join("7.png");
        touch(&from, &[7u8; 100_000]);
        let to = data.path().join("cat/7.png");
        move_file(&from, &to).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), vec![7u8; 100_000]);
        assert!(!from.exists());
        // A copy that was never finished, as a killed page leaves it.
        touch(&from, b"x");
        let left = data.path().join("cat/.8.png.abc123.warmstart-move");
        touch(&left, b"half");
        let q = Queue::new(other.path(), data.path(), vec!["cat".into()]).unwrap();
        assert!(!left.exists());
        assert!(
            q.warnings()
                .iter()
                .any(|w| w.contains("removed 1 unfinished"))
        );
        let names: Vec<_> = std::fs::read_dir(data.path().join("cat"))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // The copy path itself never leaves its partial file behind.
        copy_then_remove(&from, &data.path().join("cat/9.png")).unwrap();
        assert_eq!(
            std::fs::read_dir(data.path().join("cat")).unwrap().count(),
            2
        );
    }

    #[test]
    fn an_empty_pool_and_bad_class_names_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let e = Queue::new(d.path(), &d.path().join("x"), vec!["a".into()]).unwrap_err();
        assert!(e.to_string().contains("no image files"), "{e}");
        touch(&d.path().join("p/1.png"), b"x");
        let data = d.path().join("data");
        let e = Queue::new(&d.path().join("p"), &data, vec!["../up".into()]).unwrap_err();
        assert!(e.to_string().contains("../up"), "{e}");
        // The pool inside the labelled data, however it is spelled.
        let e = Queue::new(&d.path().join("p/../p"), d.path(), vec!["a".into()]).unwrap_err();
        assert!(e.to_string().contains("is inside --into"), "{e}");
    }
}
