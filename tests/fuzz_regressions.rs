//! Replays every input the fuzzers found crashing (kept in `fuzz/regressions/<target>/`) and each
//! fuzz corpus through the same entry points: none may panic. Known-bad inputs must be refused
//! with an error, and known-good ones accepted.

use std::path::Path;
use warmstart::Result;

/// The files of `dir` (none when it does not exist: `fuzz/regressions/<target>` starts empty).
fn inputs(dir: &str) -> Vec<Vec<u8>> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let Ok(entries) = std::fs::read_dir(&d) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read(p).expect("readable input"))
        .collect()
}

/// A fuzz target's name, its entry point, and the fewest corpus inputs it must replay (the
/// corpora are committed: fewer means they went missing and the test would prove nothing).
type Target = (&'static str, EntryPoint, usize);

/// A fuzzing entry point: bytes in, accepted or refused out.
type EntryPoint = fn(&[u8]) -> Result<()>;

#[test]
fn fuzz_findings_and_corpora_do_not_panic() {
    let targets: [Target; 4] = [
        ("idx", warmstart::fuzzing::idx, 500),
        ("csv", warmstart::fuzzing::csv, 180),
        ("image", warmstart::fuzzing::image, 2500),
        ("checkpoint", warmstart::fuzzing::checkpoint, 2600),
    ];
    for (name, f, min) in targets {
        let regressions = inputs(&format!("fuzz/regressions/{name}"));
        let corpus = inputs(&format!("fuzz/corpus/{name}"));
        assert!(
            corpus.len() >= min,
            "fuzz/corpus/{name} holds {} inputs, expected at least {min}",
            corpus.len()
        );
        let (mut ok, mut err) = (0, 0);
        for input in regressions.iter().chain(&corpus) {
            match f(input) {
                Ok(()) => ok += 1,
                Err(_) => err += 1,
            }
        }
        eprintln!(
            "{name}: replayed {} inputs ({} regressions): {ok} accepted, {err} refused",
            ok + err,
            regressions.len()
        );
        // A corpus grows from valid seeds and their mutations: both outcomes must occur, or the
        // entry point is not exercising the loader.
        assert!(ok > 0 && err > 0, "{name}: {ok} accepted, {err} refused");
    }
}

#[test]
fn known_bad_inputs_are_errors_not_panics() {
    use warmstart::fuzzing::{checkpoint, csv, idx, image};
    // Hand-made seeds of the crash classes the loaders guard against.
    let bad: [(&str, EntryPoint, &[u8]); 8] = [
        (
            "IDX header declaring 2^32-1 of each dimension",
            idx,
            &[
                0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
        ),
        ("truncated gzip", idx, &[0x1f, 0x8b, 8, 0, 0, 0]),
        (
            "CSV whose header is not label,pixel0..",
            csv,
            b"label,a\n1,2\n",
        ),
        (
            "PNG declaring 4G x 4G pixels",
            image,
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\xff\xff\xff\xff\xff\xff\xff\xff\x08\0\0\0\0",
        ),
        (
            "safetensors header length near 2^63",
            checkpoint,
            b"\x01\xff\xff\xff\xff\xff\xff\xff\x7f{}",
        ),
        (
            "resume file with a huge section length",
            checkpoint,
            b"\x02WARMSTART-R2\xff\xff\xff\xff\xff\xff\xff\xff",
        ),
        ("sidecar that is not JSON", checkpoint, b"\x00{not json"),
        ("empty input", checkpoint, b""),
    ];
    for (what, f, input) in bad {
        assert!(f(input).is_err(), "{what}: accepted");
    }
    // And the loaders do accept well-formed input through the same entry points.
    let mut csv_ok = String::from("label");
    for i in 0..784 {
        csv_ok.push_str(&format!(",pixel{i}"));
    }
    csv_ok.push_str("\n3");
    csv_ok.push_str(&",0".repeat(784));
    csv_ok.push('\n');
    csv(csv_ok.as_bytes()).expect("a one-row CSV");
    let mut idx_ok = vec![0u8, 0, 8, 1, 0, 0, 0, 2];
    idx_ok.extend_from_slice(&[4, 7]);
    idx(&idx_ok).expect("a two-label IDX file");
}
