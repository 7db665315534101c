//! `warmstart suggest`: which unlabelled images to label next. A trained model scores every pool
//! image by how unsure it is ([`rank`]); the most unsure candidates are then spread over the
//! kinds of image the model tells apart ([`spread`]), so that a batch is not twenty copies of one
//! confusing kind. The picks are copied into a folder to label (the original files for an image
//! folder, prepared 28x28 PNGs otherwise) and listed in `suggested.csv`.

pub mod rank;
pub mod spread;

use crate::checkpoint;
use crate::data::labelled::{self, Origin};
use crate::data::pool::{self, Pool};
use crate::data::prepare::png_bytes;
use crate::device;
use crate::error::{Error, Result};
use crate::fsutil::{self, create_dir, write_atomic};
use crate::model::{Net, images_tensor};
use crate::options::RuntimeArgs;
use crate::progress::{Event, Progress};
use crate::record::Stage;
use burn::prelude::Device;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rank::Strategy;
use spread::Points;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Candidates a batch is spread over, per image picked: the most unsure `CANDIDATES x count`.
pub const CANDIDATES: usize = 10;
/// Images predicted at a time.
const CHUNK: usize = 1000;

/// How a batch is spread over kinds of image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Diversity {
    /// Group the most unsure candidates (k-means on the model's features, one group per pick)
    /// and take the most unsure of each group.
    Clusters,
    /// The most unsure images, in order.
    None,
}

/// `warmstart suggest`.
#[derive(clap::Args, Debug, Clone)]
pub struct SuggestRequest {
    /// The trained model: a checkpoint or a run directory.
    #[arg(long)]
    pub model: PathBuf,
    /// The unlabelled images: an image folder (any nesting), an IDX images file or a directory
    /// holding train-images-idx3-ubyte[.gz], or a CSV file.
    #[arg(long)]
    pub unlabeled: PathBuf,
    /// How many images to suggest.
    #[arg(long, default_value_t = 100)]
    pub count: usize,
    /// Which images first: margin (unsure between two classes), entropy, least-confidence, bald
    /// (passes with dropout on disagree), random, or typical (the most typical image of each
    /// kind, for a first round with a handful of labels a class).
    #[arg(long, value_enum, default_value = "margin")]
    pub strategy: Strategy,
    /// Spread a batch over kinds of image (clusters) or take the most unsure in order (none).
    #[arg(long, value_enum, default_value = "clusters")]
    pub diversity: Diversity,
    /// Labelled data (any --data format): pool images identical to one of its images are
    /// already labelled and never suggested (the pool can stay as it is between rounds).
    #[arg(long)]
    pub labelled: Option<PathBuf>,
    /// Where the picks go: OUT/suggested.csv and OUT/to-label/.
    #[arg(long, default_value = "runs/suggest")]
    pub out: PathBuf,
    /// Replace an earlier suggestion in OUT.
    #[arg(long)]
    pub overwrite: bool,
    /// Seeds k-means, the random strategy and BALD's dropout masks.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where and how to compute.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// One suggested image.
#[derive(Debug, Clone, PartialEq)]
pub struct Pick {
    /// Its index in the pool.
    pub image: usize,
    /// Where it came from.
    pub origin: Origin,
    /// The model's likeliest class.
    pub guess: u32,
    /// Its probability.
    pub guess_probability: f32,
    /// The strategy's score (higher: more worth labelling; 0 for random and typical).
    pub score: f32,
    /// The copy to label, inside OUT/to-label/.
    pub copy: PathBuf,
}

/// What `suggest` picked.
#[derive(Debug, Clone)]
pub struct Suggestion {
    /// The model's class names.
    pub classes: Vec<String>,
    /// The picks, first to label first.
    pub picks: Vec<Pick>,
    /// Pool images considered (those not already labelled).
    pub considered: usize,
    /// Pool images skipped as already labelled.
    pub already_labelled: usize,
    /// Where `suggested.csv` and `to-label/` are.
    pub out: PathBuf,
}

/// The files `suggest` writes into OUT.
pub const FILES: [&str; 2] = ["suggested.csv", "to-label"];

/// The model's view of the pool images it may suggest, in the order of `keep`.
struct Scored {
    /// Penultimate features, unit length, a row per image.
    feats: Vec<f32>,
    /// Class probabilities (evaluation mode), a row per image.
    probs: Vec<f32>,
    /// The strategy's score of each image (higher: more worth labelling).
    scores: Vec<f32>,
}

/// Scores every pool image in `keep` under `strategy` (`seed` draws BALD's dropout masks).
fn score_pool(
    model: &Net,
    pool: &Pool,
    keep: &[usize],
    (strategy, seed): (Strategy, u64),
    dev: &Device,
) -> Result<Scored> {
    let c = model.classes();
    let (mut feats, mut probs, mut scores) = (Vec::new(), Vec::new(), Vec::new());
    for (k, chunk) in keep.chunks(CHUNK).enumerate() {
        crate::cancel::check("scoring the pool")?;
        let px: Vec<f32> = chunk
            .iter()
            .flat_map(|&i| pool.image(i).iter().map(|&v| v as f32 / 255.0))
            .collect();
        let x = images_tensor(px, dev);
        let (f, logits) = model.features_and_logits(x.clone());
        feats.extend(f.into_data().iter::<f32>());
        let p: Vec<f32> = burn::tensor::activation::softmax(logits, 1)
            .into_data()
            .iter::<f32>()
            .collect();
        if strategy == Strategy::Bald {
            let chunk_seed = seed ^ ((k as u64 + 1) << 32);
            let passes: Vec<Vec<f32>> = model
                .dropout_samples(x, rank::DROPOUT_PASSES, chunk_seed)
                .into_iter()
                .map(|t| t.into_data().iter::<f32>().collect())
                .collect();
            scores.extend(rank::bald(&passes, c));
        } else {
            scores.extend(p.chunks(c).map(|row| rank::score(strategy, row)));
        }
        probs.extend(p);
    }
    let dim = feats.len() / keep.len().max(1);
    spread::unit_rows(&mut feats, dim.max(1));
    Ok(Scored {
        feats,
        probs,
        scores,
    })
}

/// The pool images not already among the labelled images of `labelled`.
fn unlabelled(
    pool: &Pool,
    labelled: Option<&Path>,
    model_invert_fit: (crate::data::Invert, crate::data::Fit),
) -> Result<Vec<usize>> {
    let Some(path) = labelled else {
        return Ok((0..pool.len()).collect());
    };
    let l = labelled::load(path, model_invert_fit.0, model_invert_fit.1)?;
    let known: HashSet<&[u8]> = (0..l.images.len()).map(|i| l.images.image(i)).collect();
    Ok((0..pool.len())
        .filter(|&i| !known.contains(pool.image(i)))
        .collect())
}

/// Picks `count` of the scored candidates (positions in `keep`), with their scores.
fn choose(req: &SuggestRequest, scored: &Scored) -> Vec<(usize, f32)> {
    let (feats, scores) = (&scored.feats, &scored.scores);
    let n = scores.len();
    let count = req.count.min(n);
    let dim = feats.len() / n.max(1);
    match req.strategy {
        Strategy::Random => {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(req.seed ^ 0x7a4d_0001);
            let mut all: Vec<usize> = (0..n).collect();
            all.shuffle(&mut rng);
            all.truncate(count);
            all.into_iter().map(|i| (i, 0.0)).collect()
        }
        Strategy::Typical => {
            let points = Points { data: feats, dim };
            let group = spread::kmeans(&points, count, req.seed);
            let typical = spread::typicality(&points, &group);
            // The largest groups first: the kinds of image that matter most.
            let mut sizes = vec![0usize; count];
            group.iter().for_each(|&g| sizes[g] += 1);
            let mut picks = spread::best_of_each(&group, &typical);
            picks.sort_by(|&a, &b| sizes[group[b]].cmp(&sizes[group[a]]).then(a.cmp(&b)));
            let mut rest: Vec<usize> = (0..n).collect();
            rest.sort_by(|&a, &b| typical[b].total_cmp(&typical[a]).then(a.cmp(&b)));
            fill(&mut picks, &rest, count);
            picks.into_iter().map(|i| (i, 0.0)).collect()
        }
        _ => {
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
            if req.diversity == Diversity::None {
                order.truncate(count);
                return order.into_iter().map(|i| (i, scores[i])).collect();
            }
            order.truncate((CANDIDATES * count).min(n));
            let rows: Vec<f32> = order
                .iter()
                .flat_map(|&i| feats[i * dim..(i + 1) * dim].to_vec())
                .collect();
            let group = spread::kmeans(&Points { data: &rows, dim }, count, req.seed);
            let cand_scores: Vec<f32> = order.iter().map(|&i| scores[i]).collect();
            let mut picks: Vec<usize> = spread::best_of_each(&group, &cand_scores)
                .into_iter()
                .map(|c| order[c])
                .collect();
            fill(&mut picks, &order, count);
            picks.into_iter().map(|i| (i, scores[i])).collect()
        }
    }
}

/// Tops `picks` up to `count` from `order` (best first), skipping those already picked: a
/// k-means group can end up empty.
fn fill(picks: &mut Vec<usize>, order: &[usize], count: usize) {
    let taken: HashSet<usize> = picks.iter().copied().collect();
    let missing = count.saturating_sub(picks.len());
    picks.extend(
        order
            .iter()
            .copied()
            .filter(|i| !taken.contains(i))
            .take(missing),
    );
    picks.truncate(count);
}

/// A file name for the copy of a pick: its rank, then its own name.
/// The longest pool file name a copy keeps whole (the rank, an index and `.png` fit beside it in
/// 255 bytes).
const MAX_NAME: usize = 200;

fn copy_name(rank: usize, origin: &Origin) -> String {
    // File systems take names of up to 255 bytes: the rank and suffix are added to a name cut to
    // fit, keeping its extension.
    let base = |p: &Path| {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        let ext = p
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .filter(|e| e.len() <= 16)
            .unwrap_or_default();
        if name.len() <= MAX_NAME {
            return name;
        }
        let mut stem = name[..name.len() - ext.len()].to_string();
        while stem.len() + ext.len() > MAX_NAME {
            stem.pop();
        }
        stem + &ext
    };
    match origin {
        Origin::File(p) => format!("{rank:04}-{}", base(p)),
        Origin::Entry { file, index } => {
            let stem = base(file).trim_end_matches(".gz").replace('.', "-");
            format!("{rank:04}-{stem}-{index}.png")
        }
    }
}

fn check_out(out: &Path, overwrite: bool) -> Result<()> {
    let found: Vec<&str> = FILES
        .iter()
        .copied()
        .filter(|f| out.join(f).exists())
        .collect();
    if found.is_empty() || overwrite {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "{} holds an earlier suggestion ({}): label those first, or pass --overwrite to replace it, or choose another --out",
        out.display(),
        found.join(", ")
    )))
}

/// Refuses inputs inside `OUT/to-label`, which a suggestion replaces: re-suggesting from the
/// previous picks (`--unlabeled OUT/to-label`) would delete the pool before reading it.
fn check_inputs_outside(req: &SuggestRequest) -> Result<()> {
    let to_label = req.out.join("to-label");
    let inputs = [
        ("--unlabeled", Some(&req.unlabeled)),
        ("--model", Some(&req.model)),
        ("--labelled", req.labelled.as_ref()),
    ];
    for (flag, path) in inputs {
        if let Some(p) = path
            && to_label.exists()
            && fsutil::within(p, &to_label)
        {
            return Err(Error::invalid(format!(
                "{flag} {} is inside {}, which this suggestion replaces: move those images \
                 elsewhere first (or label them), or choose another --out",
                p.display(),
                to_label.display()
            )));
        }
    }
    Ok(())
}

/// Ranks the pool and writes the picks.
pub fn run(req: &SuggestRequest, progress: &mut dyn Progress) -> Result<Suggestion> {
    if req.count == 0 {
        return Err(Error::invalid("--count must be at least 1"));
    }
    check_inputs_outside(req)?;
    let _lock = fsutil::lock_dir(&req.out)?;
    check_out(&req.out, req.overwrite)?;
    let rt = &req.runtime;
    let dev = device::make(rt.device, req.seed)?;
    // A first round's `--model runs/pretrain` before any pretraining: the bundled one.
    let mut model_path = req.model.clone();
    if let crate::plan::InitRequest::From(default) = crate::plan::defaults(Stage::Train).init
        && req.model == default
        && let Some((bundled, note)) = crate::plan::bundled_instead_of(&default)?
    {
        progress.event(Event::Info(note));
        model_path = bundled;
    }
    let (model, meta) = checkpoint::load(&model_path, &dev)?;
    let model = model.with_precision(device::resolve_precision(rt.precision, rt.device)?);
    let classes = meta.classes.clone();
    let (invert, fit) = (meta.input.invert, meta.input.fit);
    let mut pool = pool::load(&req.unlabeled, invert, fit)?;
    for w in std::mem::take(&mut pool.warnings) {
        progress.event(Event::Warning(w));
    }
    let mut keep = unlabelled(&pool, req.labelled.as_deref(), (invert, fit))?;
    if keep.is_empty() {
        return Err(Error::format(
            &req.unlabeled,
            "every image of the pool is already labelled: nothing left to suggest",
        ));
    }
    let already_labelled = pool.len() - keep.len();
    // Copies of one image are one image to label: suggesting two would ask for it twice.
    let mut seen = HashSet::new();
    keep.retain(|&i| seen.insert(pool.image(i)));
    let copies = pool.len() - already_labelled - keep.len();
    progress.event(Event::Info(format!(
        "Suggest: {} of {} pool images unlabelled{}; {} by {}{}",
        keep.len() + copies,
        pool.len(),
        if copies > 0 {
            format!(" ({copies} identical copies of others counted once)")
        } else {
            String::new()
        },
        req.count.min(keep.len()),
        req.strategy.name(),
        match (req.strategy, req.diversity) {
            (Strategy::Random | Strategy::Typical, _) | (_, Diversity::None) => "",
            (_, Diversity::Clusters) => ", spread over kinds of image",
        }
    )));
    let scored = score_pool(&model, &pool, &keep, (req.strategy, req.seed), &dev)?;
    let (probs, c) = (&scored.probs, classes.len());
    let chosen = choose(req, &scored);
    let dir = req.out.join("to-label");
    // The copies are made in a folder of their own and put in place once all are made: a copy
    // that fails leaves the earlier suggestion as it was, never half of a new one.
    create_dir(&req.out)?;
    let staging = tempfile::Builder::new()
        .prefix(".to-label.")
        .tempdir_in(&req.out)
        .map_err(|e| Error::write(&req.out, e))?;
    let mut picks = Vec::with_capacity(chosen.len());
    for (r, &(k, score)) in chosen.iter().enumerate() {
        let i = keep[k];
        let p = &probs[k * c..(k + 1) * c];
        let guess = crate::eval::argmax(p) as u32;
        let origin = pool.origin(i);
        let name = copy_name(r + 1, &origin);
        let staged = staging.path().join(&name);
        match &origin {
            Origin::File(f) => {
                let bytes = std::fs::read(f).map_err(|e| Error::io(f, e))?;
                write_atomic(&staged, &bytes)?;
            }
            Origin::Entry { .. } => write_atomic(&staged, &png_bytes(pool.image(i))?)?,
        }
        let copy = dir.join(name);
        picks.push(Pick {
            image: i,
            origin,
            guess,
            guess_probability: p[guess as usize],
            score,
            copy,
        });
    }
    // A new suggestion never mixes with the files of an earlier one.
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    std::fs::rename(staging.path(), &dir).map_err(|e| Error::write(&dir, e))?;
    write_csv(&req.out.join("suggested.csv"), &picks, &classes)?;
    Ok(Suggestion {
        classes,
        considered: keep.len(),
        already_labelled,
        picks,
        out: req.out.clone(),
    })
}

fn write_csv(path: &Path, picks: &[Pick], classes: &[String]) -> Result<()> {
    let header = [
        "rank",
        "file",
        "index",
        "guess",
        "guess_probability",
        "score",
        "copy",
    ];
    let rows = picks.iter().enumerate().map(|(r, p)| {
        vec![
            (r + 1).to_string(),
            p.origin.file().display().to_string(),
            p.origin.index().map_or(String::new(), |i| i.to_string()),
            classes[p.guess as usize].clone(),
            format!("{:.4}", p.guess_probability),
            format!("{:.4}", p.score),
            p.copy.display().to_string(),
        ]
    });
    write_atomic(path, &fsutil::csv_bytes(&header.map(String::from), rows)?)
}
