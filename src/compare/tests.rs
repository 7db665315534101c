//! Seeds, names, the table, merging variants and reading back earlier layouts.

use super::runs::changed;
use super::*;

#[test]
fn seeds_are_a_list_or_a_count() {
    assert_eq!(parse_seeds("1,2,3").unwrap(), vec![1, 2, 3]);
    assert_eq!(parse_seeds("5").unwrap(), vec![1, 2, 3, 4, 5]);
    assert_eq!(parse_seeds("7, 9").unwrap(), vec![7, 9]);
    for bad in ["", "0", "a", "1,,2", "1,1", "-3"] {
        assert!(parse_seeds(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn variant_names_must_be_directory_names() {
    for ok in ["lr3", "pretrained+aug", "a.b_c-d"] {
        check_name(ok).unwrap();
    }
    for bad in ["", ".", "..", "a/b", "-x", "a b", "ü", &"x".repeat(65)] {
        assert!(check_name(bad).is_err(), "{bad:?}");
    }
}

fn result(variant: &str, seed: u64, accuracy: f64) -> RunResult {
    RunResult {
        variant: variant.into(),
        seed,
        settings: Value::Null,
        accuracy,
        correct: 0,
        total: 0,
        scored_on: "test".into(),
        best_epoch: 3,
        seconds: 1.0,
        dir: PathBuf::new(),
    }
}

#[test]
fn one_seed_gives_a_table_without_intervals_that_says_why() {
    let req = CompareRequest {
        common: TrainRequest::default(),
        variants: default_variants()[..2].to_vec(),
        seeds: vec![4],
        out: PathBuf::new(),
    };
    let c = summarise(
        &req,
        vec![
            result("pretrained+aug", 4, 0.8),
            result("pretrained", 4, 0.83),
        ],
    );
    let t = table(&c);
    assert!(t.contains("80.00%") && !t.contains('±'), "{t}");
    assert!(t.contains("+3.00 points (one seed: no interval)"), "{t}");
    assert!(
        t.contains("one seed: no standard deviations or intervals"),
        "{t}"
    );
}

/// What warmstart 0.1 wrote for `compare --data data/fashion-1k --init random --epochs 1
/// --limit 100 --seeds 1 --variant a=''`, run `a/seed-1`.
const SETTINGS_0_1: &str = include_str!("../../tests/fixtures/compare-settings-0.1.txt");

#[test]
fn a_run_of_the_0_1_layout_is_recognised_by_its_settings_text() {
    let common = TrainRequest {
        options: TrainOptions {
            data: Some("data/fashion-1k".into()),
            init: Some(InitRequest::Random),
            epochs: Some(1),
            limit: Some(100),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut r = merged(&common, &TrainRequest::default());
    r.options.seed = Some(1);
    assert_eq!(legacy::settings_text(&r), SETTINGS_0_1);
    r.options.seed = Some(2);
    assert_ne!(legacy::settings_text(&r), SETTINGS_0_1);
}

#[test]
fn a_variant_overrides_the_common_flags() {
    let common = TrainRequest {
        options: TrainOptions {
            epochs: Some(5),
            lr: Some(0.01),
            ..Default::default()
        },
        runtime: RuntimeArgs {
            precision: PrecisionRequest::Bf16,
            ..Default::default()
        },
    };
    let v = TrainRequest {
        options: TrainOptions {
            lr: Some(0.003),
            init: Some(InitRequest::Random),
            ..Default::default()
        },
        ..Default::default()
    };
    let m = merged(&common, &v);
    assert_eq!((m.options.epochs, m.options.lr), (Some(5), Some(0.003)));
    assert_eq!(m.options.init, Some(InitRequest::Random));
    assert_eq!(m.runtime.precision, PrecisionRequest::Bf16);
    let s = settings(&m);
    assert_eq!(s["options"]["lr"], 0.003);
    assert_eq!(s["precision"], "bf16");
    let mut other = m.clone();
    other.options.lr = Some(0.01);
    other.options.patience = Some(3);
    assert_eq!(
        changed(&s, &settings(&other)),
        "--lr was 0.003, is 0.01; --patience was (not given), is 3"
    );
    let names: Vec<String> = default_variants().into_iter().map(|v| v.name).collect();
    assert_eq!(
        names,
        ["pretrained+aug", "pretrained", "random+aug", "random"]
    );
}

/// What warmstart 0.5 wrote before the pool's flags became one group, for `compare --data
/// data/fashion-1k --init random --epochs 1 --limit 60 --test-limit 50 --seeds 1 --variant
/// "semi=--unlabeled data/fashion-pool --thresholds fixed --unlabeled-ratio 1 --align none
/// --threshold 0.9"`, run `semi/seed-1`.
const SETTINGS_0_5_POOL: &str = include_str!("../../tests/fixtures/compare-settings-0.5-pool.json");

#[test]
fn a_pool_variant_saved_before_the_pool_group_reads_back_unchanged() {
    let common = TrainRequest {
        options: TrainOptions {
            data: Some("data/fashion-1k".into()),
            init: Some(InitRequest::Random),
            epochs: Some(1),
            limit: Some(60),
            test_limit: Some(50),
            ..Default::default()
        },
        ..Default::default()
    };
    let saved: Value = serde_json::from_str(SETTINGS_0_5_POOL).unwrap();
    for rule in ["--thresholds", "--threshold-rule"] {
        let v = super::variant::parse(&format!(
            "semi=--unlabeled data/fashion-pool {rule} fixed --unlabeled-ratio 1 --align none \
             --threshold 0.9"
        ))
        .unwrap();
        let mut r = merged(&common, &v.request);
        r.options.seed = Some(1);
        assert_eq!(settings(&r), saved, "{rule}");
        // A changed pool setting is told by its flag's current name.
        r.options.pool.threshold_rule = Some(crate::unlabeled::ThresholdRule::PerClass);
        assert_eq!(
            changed(&saved, &settings(&r)),
            "--threshold-rule was fixed, is per-class"
        );
    }
}
