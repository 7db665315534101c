//! `warmstart label`: real key presses in Chromium file images into class folders and undo takes
//! an answer back; another site's requests and a foreign Host move nothing; Ctrl-C stops it with
//! every answer on disk.

mod common;

use common::*;
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A pool of `n` MNIST test digits as PNG files.
fn pool(dir: &Path, n: usize) -> Vec<PathBuf> {
    let d = mnist_test_digits();
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let p = dir.join(format!("{i:02}.png"));
            image::GrayImage::from_raw(28, 28, d.image(i).to_vec())
                .unwrap()
                .save(&p)
                .unwrap();
            p
        })
        .collect()
}

/// Starts `warmstart label ARGS --port 0`; its URL from the first line it prints.
fn start(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_warmstart"))
        .arg("label")
        .args(args)
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let url = url_in_first_line(&mut BufReader::new(child.stdout.take().unwrap()));
    (child, url)
}

/// Sends a raw HTTP request; the status code.
fn status(url: &str, request: &str) -> u16 {
    exchange(url, request).0
}

/// Sends a raw HTTP request; the status code and the whole answer.
fn exchange(url: &str, request: &str) -> (u16, String) {
    let addr = url.trim_start_matches("http://");
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(request.as_bytes()).unwrap();
    let mut bytes = Vec::new();
    c.read_to_end(&mut bytes).unwrap();
    let answer = String::from_utf8_lossy(&bytes).into_owned();
    let code = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"));
    (code, answer)
}

/// Every file under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < Duration::from_secs(20), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn foreign_sites_and_hosts_move_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("pool");
    pool(&p, 2);
    let into = tmp.path().join("data");
    let (mut child, url) = start(&["--pool", s(&p), "--into", s(&into), "--classes", "a,b"]);
    let host = url.trim_start_matches("http://");
    let body = r#"{"id":0,"class":1}"#;
    let post = |extra: &str, ct: &str| {
        format!(
            "POST /api/label HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    // Another web site's page (a form, or a script) and DNS rebinding (a foreign Host).
    assert_eq!(
        status(
            &url,
            &post("Origin: http://evil.example\r\n", "application/json")
        ),
        403
    );
    assert_eq!(
        status(&url, &post("Origin: http://evil.example\r\n", "text/plain")),
        403
    );
    let rebinding = format!(
        "POST /api/label HTTP/1.1\r\nHost: evil.example:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        host.rsplit(':').next().unwrap(),
        body.len()
    );
    assert_eq!(status(&url, &rebinding), 403);
    // A same-site form can only send simple types: not JSON.
    assert_eq!(status(&url, &post("", "text/plain")), 415);
    // An <img> or fetch of another site (even another port of this machine) says so.
    for (site, want) in [
        ("cross-site", 403),
        ("same-site", 403),
        ("same-origin", 200),
        ("none", 200),
    ] {
        for path in ["/api/image/0", "/api/state"] {
            let get = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nSec-Fetch-Site: {site}\r\nConnection: close\r\n\r\n"
            );
            assert_eq!(status(&url, &get), want, "{site} {path}");
        }
    }
    // An answer that declares more than it sends is cut off, not waited for.
    let t0 = Instant::now();
    let slow = format!(
        "POST /api/label HTTP/1.1\r\nHost: {host}\r\nOrigin: {url}\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{"
    );
    assert_eq!(status(&url, &slow), 408);
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    assert_eq!(files(&p), ["00.png", "01.png"]);
    assert!(!into.exists() || files(&into).is_empty());
    // The page's own request does move the file.
    assert_eq!(
        status(
            &url,
            &post(&format!("Origin: {url}\r\n"), "application/json")
        ),
        200
    );
    assert_eq!(files(&into), ["b/00.png"]);
    // Two tabs: an answer or an undo from a page that has not seen the last answer changes
    // nothing and gets the current state back.
    let send = |path: &str, body: &str| {
        exchange(
            &url,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: {host}\r\nOrigin: {url}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    let (code, answer) = send("/api/label", r#"{"id":1,"class":0,"version":0}"#);
    assert_eq!(code, 409, "{answer}");
    assert!(
        answer.contains("another tab") && answer.contains(r#""version":1"#),
        "{answer}"
    );
    let (code, _) = send("/api/undo", r#"{"version":0}"#);
    assert_eq!(code, 409);
    assert_eq!(files(&into), ["b/00.png"]);
    assert_eq!(files(&p), ["01.png"]);
    let (code, answer) = send("/api/label", r#"{"id":1,"class":0,"version":1}"#);
    assert_eq!(code, 200, "{answer}");
    assert_eq!(files(&into), ["a/01.png", "b/00.png"]);
    let (code, answer) = send("/api/undo", r#"{"version":2}"#);
    assert_eq!(code, 200, "{answer}");
    assert_eq!(files(&into), ["b/00.png"]);
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
}

#[test]
fn key_presses_in_chromium_file_images_and_undo_takes_one_back() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("to-label");
    let originals: Vec<Vec<u8>> = pool(&p, 4)
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    let into = tmp.path().join("data");
    for c in ["zero", "one", "two"] {
        std::fs::create_dir_all(into.join(c)).unwrap();
    }
    let (mut child, url) = start(&["--pool", s(&p), "--into", s(&into)]);
    let Some(chromium) = browser_for_test() else {
        let _ = child.kill();
        return;
    };
    let browser = launch_browser(chromium);
    let tab = browser.new_tab().unwrap();
    tab.navigate_to(&format!("{url}/"))
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    let done = || -> String {
        let v = tab
            .evaluate("document.getElementById('progress').dataset.done", false)
            .unwrap()
            .value;
        match v {
            Some(serde_json::Value::String(s)) => s,
            other => format!("{other:?}"),
        }
    };
    wait_until("the page shows the first image", || {
        tab.evaluate("document.getElementById('current').dataset.id", false)
            .unwrap()
            .value
            == Some(serde_json::Value::String("0".into()))
    });
    // Class keys follow the folders' (sorted) order: 1 = one, 2 = two, 3 = zero.
    for (key, want) in [("2", "1"), ("3", "2"), ("1", "3")] {
        tab.press_key(key).unwrap();
        wait_until(&format!("answer {want} saved"), || done() == want);
    }
    assert_eq!(files(&into), ["one/02.png", "two/00.png", "zero/01.png"]);
    assert_eq!(files(&p), ["03.png"]);
    // Undo: 02.png goes back to the pool; then it is filed under another key.
    tab.press_key("z").unwrap();
    wait_until("undo saved", || done() == "2");
    assert_eq!(files(&p), ["02.png", "03.png"]);
    tab.press_key("3").unwrap();
    wait_until("relabelled", || done() == "3");
    assert_eq!(files(&into), ["two/00.png", "zero/01.png", "zero/02.png"]);
    // The files are the originals, moved whole.
    assert_eq!(
        std::fs::read(into.join("zero/02.png")).unwrap(),
        originals[2]
    );
    // Ctrl-C: the server stops; every answer is on disk, nothing lost.
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    assert_eq!(files(&p).len() + files(&into).len(), 4);
}

#[test]
fn bad_label_input_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let into = tmp.path().join("data");
    let err = fails(&[
        "label",
        "--pool",
        s(&empty),
        "--into",
        s(&into),
        "--classes",
        "a,b",
        "--port",
        "0",
    ]);
    assert!(
        err.contains(s(&empty)) && err.contains("no image files"),
        "{err}"
    );
    let p = tmp.path().join("pool");
    pool(&p, 1);
    let err = fails(&["label", "--pool", s(&p), "--into", s(&into), "--port", "0"]);
    assert!(err.contains("--classes"), "{err}");
    let err = fails(&[
        "label",
        "--pool",
        s(&p),
        "--into",
        s(&into),
        "--classes",
        "a,a",
        "--port",
        "0",
    ]);
    assert!(err.contains("twice"), "{err}");
    let err = fails(&[
        "label",
        "--pool",
        "/no/pool",
        "--into",
        s(&into),
        "--classes",
        "a,b",
        "--port",
        "0",
    ]);
    assert!(err.contains("/no/pool"), "{err}");
}

#[test]
fn an_audits_flagged_labels_are_checked_and_moved_to_the_right_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let d = mnist_test_digits();
    // Zeros and ones in class folders, three of them in the wrong one.
    let data = tmp.path().join("digits");
    let mut n = 0;
    for i in 0..400 {
        let l = d.label(i);
        if l > 1 || n >= 120 {
            continue;
        }
        let folder = if n % 40 == 7 { 1 - l } else { l };
        let dir = data.join(["zero", "one"][folder as usize]);
        std::fs::create_dir_all(&dir).unwrap();
        image::GrayImage::from_raw(28, 28, d.image(i).to_vec())
            .unwrap()
            .save(dir.join(format!("{i:03}.png")))
            .unwrap();
        n += 1;
    }
    let audit = tmp.path().join("audit");
    ok(&[
        "audit",
        "--data",
        s(&data),
        "--init",
        "random",
        "--epochs",
        "3",
        "--folds",
        "2",
        "--batch-size",
        "16",
        "--out",
        s(&audit),
    ]);
    let issues = csv::Reader::from_path(audit.join("label_issues.csv"))
        .unwrap()
        .records()
        .map(|r| r.unwrap())
        .collect::<Vec<_>>();
    assert!(!issues.is_empty(), "the audit flagged nothing");
    let first = PathBuf::from(&issues[0][1]);
    let suggested = issues[0][4].to_string();
    let (mut child, url) = start(&["--audit", s(&audit)]);
    let host = url.trim_start_matches("http://");
    let answer = |class: usize| {
        let body = format!(r#"{{"id":0,"class":{class}}}"#);
        format!(
            "POST /api/label HTTP/1.1\r\nHost: {host}\r\nOrigin: {url}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    // Classes in classes.csv order: one, zero. The answer moves the file to the sibling folder.
    let k = ["one", "zero"]
        .iter()
        .position(|c| *c == suggested)
        .unwrap();
    assert_eq!(status(&url, &answer(k)), 200);
    let moved = data.join(&suggested).join(first.file_name().unwrap());
    assert!(moved.is_file() && !first.exists(), "{moved:?}");
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    // An IDX audit cannot be checked on the page: refused by name.
    let idx_audit = tmp.path().join("idx-audit");
    std::fs::create_dir_all(&idx_audit).unwrap();
    std::fs::write(idx_audit.join("classes.csv"), "class,images\n0,1\n1,1\n").unwrap();
    std::fs::write(
        idx_audit.join("label_issues.csv"),
        "rank,file,index,given,suggested,given_probability,suggested_probability\n1,/x/train-images-idx3-ubyte.gz,4,0,1,0.1,0.9\n",
    )
    .unwrap();
    let err = fails(&["label", "--audit", s(&idx_audit), "--port", "0"]);
    assert!(err.contains("IDX or CSV"), "{err}");
}

#[test]
#[cfg(unix)]
fn files_outside_the_pool_or_the_audited_data_are_never_moved() {
    use std::os::unix::fs::symlink;
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let into = t.join("data");
    pool(&into.join("zero"), 2);
    pool(&into.join("one"), 2);
    let before = files(&into);
    // A pool that is the labelled data under another spelling.
    let dodge = t.join("x/../data");
    std::fs::create_dir_all(t.join("x")).unwrap();
    let err = fails(&[
        "label",
        "--pool",
        s(&dodge),
        "--into",
        s(&into),
        "--port",
        "0",
    ]);
    assert!(err.contains("is inside --into"), "{err}");
    // The {train,val,test}/<class> layout: answers go into a split's class folders (train unless
    // --split says otherwise), never beside them; --split without the layout is refused.
    let split = t.join("split");
    pool(&split.join("train/zero"), 1);
    pool(&split.join("test/zero"), 1);
    let p = t.join("pool");
    pool(&p, 2);
    let err = fails(&[
        "label",
        "--pool",
        s(&p),
        "--into",
        s(&into),
        "--split",
        "val",
        "--port",
        "0",
    ]);
    assert!(
        err.contains("--split val") && err.contains("no train/"),
        "{err}"
    );
    let err = fails(&[
        "label",
        "--pool",
        s(&split.join("test")),
        "--into",
        s(&split),
        "--port",
        "0",
    ]);
    assert!(err.contains("is inside --into"), "{err}");
    let (mut child, url) = start(&["--pool", s(&p), "--into", s(&split)]);
    let host = url.trim_start_matches("http://");
    let body = r#"{"id":0,"class":0}"#;
    let answer = format!(
        "POST /api/label HTTP/1.1\r\nHost: {host}\r\nOrigin: {url}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(status(&url, &answer), 200);
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    assert_eq!(
        files(&split),
        [
            "test/zero/00.png",
            "train/zero/00-1.png",
            "train/zero/00.png"
        ]
    );
    pool(&p, 2);
    let idx = t.join("idx");
    std::fs::create_dir_all(&idx).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/fashion-1k/train-images-idx3-ubyte.gz"),
        idx.join("train-images-idx3-ubyte.gz"),
    )
    .unwrap();
    let err = fails(&[
        "label",
        "--pool",
        s(&p),
        "--into",
        s(&idx),
        "--classes",
        "a,b",
        "--port",
        "0",
    ]);
    assert!(err.contains("IDX files"), "{err}");
    assert_eq!(files(&idx), ["train-images-idx3-ubyte.gz"]);
    // A pool with a link out of it and a link to itself: neither is offered, and it starts.
    let outside = t.join("outside");
    pool(&outside, 3);
    symlink(&outside, p.join("elsewhere")).unwrap();
    symlink(".", p.join("self")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_warmstart"))
        .args(["label", "--pool", s(&p), "--into", s(&into), "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.starts_with("Labelling 2 images"), "{first}");
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("2 symbolic link(s)") && err.contains("left out"),
        "{err}"
    );
    assert_eq!(files(&outside).len(), 3);
    // `train --unlabeled` reads through the outward link and skips the loop, saying so.
    let out = run(&[
        "train",
        "--data",
        "data/fashion-1k",
        "--init",
        "random",
        "--limit",
        "50",
        "--test-limit",
        "20",
        "--epochs",
        "1",
        "--unlabeled",
        s(&p),
        "--out",
        s(&t.join("run")),
        "--threads",
        "1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("(a loop): skipped"),
        "{err}"
    );
    // An audit's list naming files outside its data, or outside the folder of their label.
    let audit = t.join("audit");
    std::fs::create_dir_all(&audit).unwrap();
    std::fs::write(audit.join("classes.csv"), "class,images\nzero,2\none,2\n").unwrap();
    let header = "rank,file,index,given,suggested,given_probability,suggested_probability\n";
    let row =
        |r: usize, f: &Path, given: &str| format!("{r},{},,{given},one,0.1,0.9\n", f.display());
    let secret = outside.join("00.png");
    let cases = [
        (
            row(1, &into.join("zero/00.png"), "zero") + &row(2, &secret, "zero"),
            "not in a folder of that name",
        ),
        (
            row(1, &into.join("zero/00.png"), "zero")
                + &row(2, &t.join("x/../outside/01.png"), "zero"),
            "not in a folder of that name",
        ),
        (
            row(1, &into.join("zero/00.png"), "zero")
                + &{
                    pool(&t.join("other/zero"), 1);
                    row(2, &t.join("other/zero/00.png"), "zero")
                },
            "outside the audited data",
        ),
    ];
    for (rows, why) in cases {
        std::fs::write(audit.join("label_issues.csv"), format!("{header}{rows}")).unwrap();
        let err = fails(&["label", "--audit", s(&audit), "--port", "0"]);
        assert!(err.contains(why), "{why}: {err}");
    }
    assert_eq!(files(&into), before);
    assert_eq!(files(&outside).len(), 3);
}
