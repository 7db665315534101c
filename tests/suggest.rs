//! `warmstart suggest`: the picks are copied to label (original files, or the pool's own pixels
//! as PNG), listed in order of the strategy's score, already-labelled images are left out, an
//! earlier suggestion is not replaced silently, and bad input is refused by name.

mod common;

use common::*;
use std::path::Path;
use warmstart::data::idx;

#[test]
fn picks_are_copied_ranked_and_never_already_labelled() {
    let tmp = tempfile::tempdir().unwrap();
    let pre = tmp.path().join("pre");
    quick_pretrain(&pre, "2000", "10");
    let d = mnist_test_digits();
    // A folder pool of 60 digits; 10 of them also sit in the labelled folder.
    let pool = tmp.path().join("pool");
    let labelled = tmp.path().join("labelled");
    std::fs::create_dir_all(pool.join("batch-a")).unwrap();
    for i in 0..60 {
        let img = image::GrayImage::from_raw(28, 28, d.image(i).to_vec()).unwrap();
        img.save(pool.join("batch-a").join(format!("d{i:02}.png")))
            .unwrap();
        if i < 10 {
            let dir = labelled.join(d.label(i).to_string());
            std::fs::create_dir_all(&dir).unwrap();
            img.save(dir.join(format!("l{i:02}.png"))).unwrap();
        }
    }
    // Labelled folders need every class: the other classes get one digit each.
    for c in 0..10u32 {
        let dir = labelled.join(c.to_string());
        if !dir.exists() {
            let j = (100..d.len()).find(|&j| d.label(j) == c).unwrap();
            std::fs::create_dir_all(&dir).unwrap();
            image::GrayImage::from_raw(28, 28, d.image(j).to_vec())
                .unwrap()
                .save(dir.join("x.png"))
                .unwrap();
        }
    }
    let out = tmp.path().join("suggest");
    let args = [
        "suggest",
        "--model",
        s(&pre),
        "--unlabeled",
        s(&pool),
        "--count",
        "8",
        "--diversity",
        "none",
        "--labelled",
        s(&labelled),
        "--out",
        s(&out),
    ];
    let said = ok(&args);
    assert!(
        said.contains("10 pool images are already labelled"),
        "{said}"
    );
    let picks = csv_rows(&out.join("suggested.csv"));
    assert_eq!(picks.len(), 8);
    let mut last = f64::INFINITY;
    for (r, p) in picks.iter().enumerate() {
        assert_eq!(p["rank"], (r + 1).to_string());
        let file = Path::new(&p["file"]);
        let n: usize = file.file_stem().unwrap().to_str().unwrap()[1..]
            .parse()
            .unwrap();
        assert!(n >= 10, "{file:?} is already labelled");
        // The copy is the original file, named after its rank.
        let copy = Path::new(&p["copy"]);
        assert!(copy.starts_with(out.join("to-label")));
        assert!(
            copy.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(&format!("{:04}-d", r + 1))
        );
        assert_eq!(std::fs::read(copy).unwrap(), std::fs::read(file).unwrap());
        let score: f64 = p["score"].parse().unwrap();
        assert!(score <= last, "not in score order: {picks:?}");
        last = score;
    }
    assert_eq!(std::fs::read_dir(out.join("to-label")).unwrap().count(), 8);

    // Again: refused without --overwrite; with it, the spread batch replaces the old one whole.
    let err = fails(&args);
    assert!(
        err.contains("earlier suggestion") && err.contains("--overwrite"),
        "{err}"
    );
    let mut again: Vec<&str> = args.to_vec();
    again[8] = "clusters";
    again.push("--overwrite");
    ok(&again);
    assert_eq!(csv_rows(&out.join("suggested.csv")).len(), 8);
    assert_eq!(std::fs::read_dir(out.join("to-label")).unwrap().count(), 8);

    // A second round from the previous picks into the same --out would delete its own pool
    // before reading it: refused, naming both, and the picks stay.
    let to_label = out.join("to-label");
    let mut round2: Vec<&str> = again.clone();
    round2[4] = s(&to_label);
    let err = fails(&round2);
    assert!(
        err.contains("--unlabeled") && err.contains("is inside") && err.contains("to-label"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&to_label).unwrap().count(), 8);
    // Written the other way round, through `..`, it is the same folder.
    let roundabout = out.join("to-label/../to-label");
    round2[4] = s(&roundabout);
    assert!(fails(&round2).contains("is inside"));
    assert_eq!(std::fs::read_dir(&to_label).unwrap().count(), 8);
}

#[test]
fn an_idx_pool_gives_its_own_pixels_as_png_and_each_strategy_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let pre = tmp.path().join("pre");
    tiny_pretrain(&pre);
    let d = mnist_test_digits();
    let pool = tmp.path().join("pool");
    std::fs::create_dir_all(&pool).unwrap();
    let px: Vec<u8> = (200..300).flat_map(|i| d.image(i).to_vec()).collect();
    std::fs::write(
        pool.join("train-images-idx3-ubyte.gz"),
        idx::gzip(&idx::encode(&[100, 28, 28], &px)),
    )
    .unwrap();
    // `suggest` of the pool into OUT: the CSV's rows.
    let suggest = |out: &str, flags: &[&str]| {
        let out = tmp.path().join(out);
        let mut args = vec!["suggest", "--model", s(&pre), "--unlabeled", s(&pool)];
        args.extend(flags);
        args.extend(["--out", s(&out)]);
        ok(&args);
        csv_rows(&out.join("suggested.csv"))
    };
    for strategy in [
        "margin",
        "entropy",
        "least-confidence",
        "bald",
        "random",
        "typical",
    ] {
        let picks = suggest(strategy, &["--count", "6", "--strategy", strategy]);
        assert_eq!(picks.len(), 6, "{strategy}");
        let mut seen = std::collections::HashSet::new();
        for p in &picks {
            let i: usize = p["index"].parse().unwrap();
            assert!(seen.insert(i), "{strategy} picked image {i} twice");
            let png = image::open(&p["copy"]).unwrap().to_luma8();
            assert_eq!(
                png.as_raw().as_slice(),
                d.image(200 + i),
                "{strategy}: image {i}"
            );
        }
    }
    // BALD's dropout passes come from the seed: the same seed, the same picks, best first.
    let bald = |out: &str| {
        let flags = [
            "--count",
            "10",
            "--strategy",
            "bald",
            "--diversity",
            "none",
            "--seed",
            "3",
        ];
        suggest(out, &flags)
            .iter()
            .map(|r| (r["index"].clone(), r["score"].parse::<f32>().unwrap()))
            .collect::<Vec<_>>()
    };
    let (first, again) = (bald("bald-a"), bald("bald-b"));
    assert_eq!(first, again);
    assert!(first.windows(2).all(|w| w[0].1 >= w[1].1), "{first:?}");
    assert!(first[0].1 > 0.0, "the passes never disagree: {first:?}");
}

#[test]
fn bad_suggest_input_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("s");
    let err = fails(&[
        "suggest",
        "--model",
        "/no/model",
        "--unlabeled",
        "data/fashion-pool",
        "--out",
        s(&out),
    ]);
    assert!(err.contains("/no/model"), "{err}");
    let pre = tmp.path().join("pre");
    tiny_pretrain(&pre);
    let err = fails(&[
        "suggest",
        "--model",
        s(&pre),
        "--unlabeled",
        "/no/pool",
        "--out",
        s(&out),
    ]);
    assert!(err.contains("/no/pool"), "{err}");
    let err = fails(&[
        "suggest",
        "--model",
        s(&pre),
        "--unlabeled",
        "data/fashion-pool",
        "--count",
        "0",
        "--out",
        s(&out),
    ]);
    assert!(err.contains("--count"), "{err}");
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = fails(&[
        "suggest",
        "--model",
        s(&pre),
        "--unlabeled",
        s(&empty),
        "--out",
        s(&out),
    ]);
    assert!(err.contains(s(&empty)), "{err}");
    assert!(!out.join("suggested.csv").exists());
}

/// Copies of one image are suggested once, and pool files with the longest names a file system
/// takes are copied whole (the copy's name cut to fit), the folder and CSV written together.
#[test]
fn identical_images_are_suggested_once_and_long_names_fit() {
    let tmp = tempfile::tempdir().unwrap();
    let pre = tmp.path().join("pre");
    quick_pretrain(&pre, "2000", "10");
    let d = mnist_test_digits();
    let pool = tmp.path().join("pool");
    std::fs::create_dir_all(&pool).unwrap();
    let save = |i: usize, name: &str| {
        image::GrayImage::from_raw(28, 28, d.image(i).to_vec())
            .unwrap()
            .save(pool.join(name))
            .unwrap();
    };
    // 30 copies of one digit and 3 other digits, one under a 255-byte name.
    for k in 0..30 {
        save(0, &format!("same-{k:02}.png"));
    }
    let long = format!("{}.png", "x".repeat(251));
    assert_eq!(long.len(), 255);
    save(1, &long);
    save(2, "two.png");
    save(3, "three.png");
    let out = tmp.path().join("suggest");
    let said = ok(&[
        "suggest",
        "--model",
        s(&pre),
        "--unlabeled",
        s(&pool),
        "--count",
        "10",
        "--out",
        s(&out),
    ]);
    assert!(
        said.contains("29 identical copies of others counted once"),
        "{said}"
    );
    let picks = csv_rows(&out.join("suggested.csv"));
    assert_eq!(picks.len(), 4, "{picks:?}");
    let same = picks.iter().filter(|p| p["file"].contains("same-")).count();
    assert_eq!(same, 1);
    let copies: Vec<_> = std::fs::read_dir(out.join("to-label"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(copies.len(), 4);
    for c in &copies {
        assert!(c.file_name().len() <= 255);
        assert!(
            c.path().extension().is_some_and(|e| e == "png"),
            "{:?}",
            c.path()
        );
    }
    // No staging folder is left beside the results.
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".to-label"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
