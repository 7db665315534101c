//! Replays every input the fuzzers found crashing (kept in `fuzz/regressions/<target>/`) and a
//! sample of each fuzz corpus through the same entry points: none may panic.

use std::path::Path;

fn replay(dir: &str, f: fn(&[u8])) -> usize {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let Ok(entries) = std::fs::read_dir(&d) else {
        return 0;
    };
    let mut n = 0;
    for e in entries {
        let p = e.unwrap().path();
        if p.is_file() {
            f(&std::fs::read(&p).unwrap());
            n += 1;
        }
    }
    n
}

/// A fuzz target's name and its entry point.
type Target = (&'static str, fn(&[u8]));

#[test]
fn fuzz_findings_and_corpora_do_not_panic() {
    let targets: [Target; 4] = [
        ("idx", warmstart::fuzzing::idx),
        ("csv", warmstart::fuzzing::csv),
        ("image", warmstart::fuzzing::image),
        ("checkpoint", warmstart::fuzzing::checkpoint),
    ];
    let mut total = 0;
    for (name, f) in targets {
        total += replay(&format!("fuzz/regressions/{name}"), f);
        total += replay(&format!("fuzz/corpus/{name}"), f);
    }
    eprintln!("replayed {total} inputs");
}

#[test]
fn known_bad_inputs_are_errors_not_panics() {
    // Hand-made seeds of the crash classes the loaders guard against.
    warmstart::fuzzing::idx(&[
        0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ]);
    warmstart::fuzzing::idx(&[0x1f, 0x8b, 8, 0, 0, 0]);
    warmstart::fuzzing::csv(b"label,a\n1,2\n");
    warmstart::fuzzing::image(
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\xff\xff\xff\xff\xff\xff\xff\xff\x08\0\0\0\0",
    );
    warmstart::fuzzing::checkpoint(b"\x01\xff\xff\xff\xff\xff\xff\xff\x7f{}");
    warmstart::fuzzing::checkpoint(b"\x02WARMSTART-R2\xff\xff\xff\xff\xff\xff\xff\xff");
}
