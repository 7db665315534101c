//! Resumable training state: the model (with its parameter ids, which the optimizer state is keyed
//! by), the Adam state and the loop's position and history, in one file written atomically at every
//! epoch end and on interrupt.
//!
//! The file is a small container of four length-prefixed sections (JSON state, burnpack model
//! record, safetensors weights, burnpack optimizer record) and a SHA-256 of all of them.
//! Hand-written because the parts must be replaced together (one rename), and no crate bundles
//! burn's records with our state. Both model forms are needed: the record keeps the parameter ids
//! the optimizer state refers to, and only the safetensors form carries BatchNorm running statistics.

use super::state::LoopState;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 12] = b"WARMSTART-R2";
const PARTS: usize = 4;
/// The resume file's name in a run directory.
pub const FILE: &str = "resume.ckpt";

/// A saved state: the loop position plus the serialised model and optimizer.
pub struct Saved {
    /// Where the loop stands.
    pub state: LoopState,
    /// burn's module record (parameter ids and values).
    pub model: Vec<u8>,
    /// safetensors of the same model (with BatchNorm running statistics).
    pub weights: Vec<u8>,
    /// burn's optimizer record (Adam's moments, keyed by parameter id).
    pub optim: Vec<u8>,
}

/// The resume file of run directory `dir`.
fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Writes `saved` into run directory `dir`, atomically.
pub fn save(dir: &Path, saved: &Saved) -> Result<()> {
    let json = serde_json::to_vec(&saved.state).map_err(|e| Error::invalid(e.to_string()))?;
    let mut out = Vec::with_capacity(json.len() + saved.model.len() + saved.optim.len() + 64);
    out.extend_from_slice(MAGIC);
    for part in [&json[..], &saved.model, &saved.weights, &saved.optim] {
        out.extend_from_slice(&(part.len() as u64).to_le_bytes());
        out.extend_from_slice(part);
    }
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    write_atomic(&path(dir), &out)
}

/// Whether run directory `dir` holds a resume file.
pub fn exists(dir: &Path) -> bool {
    path(dir).is_file()
}

/// Removes run directory `dir`'s resume file, if any: a finished run has nothing to resume
/// (~19 MB), and a new run must not be confused with an older one.
pub fn remove(dir: &Path) -> Result<()> {
    let p = path(dir);
    match std::fs::remove_file(&p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&p, e)),
        _ => Ok(()),
    }
}

/// What a missing resume file means to the user.
const NOTHING: &str =
    "nothing to resume here (no resumable state has been saved in this directory)";

/// Checks that run directory `dir` holds a resume file, without reading it.
pub fn check_exists(dir: &Path) -> Result<()> {
    let p = path(dir);
    if p.is_file() {
        Ok(())
    } else {
        Err(Error::format(&p, NOTHING))
    }
}

/// Reads the resume file of run directory `dir`.
pub fn load(dir: &Path) -> Result<Saved> {
    let p = path(dir);
    let bytes = crate::fsutil::read(&p, NOTHING)?;
    parse(&p, &bytes)
}

/// Parses a resume file's bytes; `p` is only used in errors.
pub fn parse(p: &Path, bytes: &[u8]) -> Result<Saved> {
    let corrupt = |why: &str| Error::format(p, format!("corrupt resume state: {why}"));
    if bytes.len() < MAGIC.len() + 32 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt("not a warmstart resume file"));
    }
    let (body, digest) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != digest {
        return Err(corrupt("checksum mismatch"));
    }
    let mut rest = &body[MAGIC.len()..];
    let mut parts = Vec::new();
    for _ in 0..PARTS {
        if rest.len() < 8 {
            return Err(corrupt("truncated"));
        }
        let n = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes")) as usize;
        rest = &rest[8..];
        if rest.len() < n {
            return Err(corrupt("truncated"));
        }
        parts.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    if !rest.is_empty() {
        return Err(corrupt("unexpected trailing data"));
    }
    let optim = parts.pop().expect("four parts");
    let weights = parts.pop().expect("four parts");
    let model = parts.pop().expect("four parts");
    let state: LoopState =
        serde_json::from_slice(&parts[0]).map_err(|e| corrupt(&e.to_string()))?;
    Ok(Saved {
        state,
        model,
        weights,
        optim,
    })
}
