//! `warmstart serve`: the JSON API (200, 400, 404, 405, 413, concurrent clients, Ctrl-C) and the
//! page in a real headless Chromium (drawing strokes on the canvas, uploading an MNIST test image).

mod common;

use common::server::Server;
use common::*;
use headless_chrome::protocol::cdp::Input;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use warmstart::data::{LoadOptions, load};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// Status and body text of a request.
fn get(url: &str) -> (u16, String) {
    let mut r = agent().get(url).call().unwrap();
    let body = r.body_mut().read_to_string().unwrap();
    (r.status().as_u16(), body)
}

fn post(url: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let mut r = agent()
        .post(url)
        .header("Content-Type", "application/octet-stream")
        .send(body)
        .unwrap();
    let text = r.body_mut().read_to_string().unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (r.status().as_u16(), json)
}

/// MNIST test images `range` written as PNG files (light on dark, as MNIST stores them).
fn mnist_pngs(dir: &Path, range: std::ops::Range<usize>) -> Vec<(PathBuf, u32)> {
    let mnist = load(&warmstart::bundled::dir("mnist"), &LoadOptions::default()).unwrap();
    let test = mnist.test.unwrap();
    range
        .map(|i| {
            let p = dir.join(format!("mnist-{i}.png"));
            image::GrayImage::from_raw(28, 28, test.image(i).to_vec())
                .unwrap()
                .save(&p)
                .unwrap();
            (p, test.label(i))
        })
        .collect()
}

/// The class `warmstart predict` gives a file.
fn predicted_class(model: &Path, file: &Path) -> String {
    let out = ok(&["predict", "--model", s(model), s(file)]);
    let rest = out.rsplit_once(": ").unwrap().1;
    rest.split(" (").next().unwrap().to_string()
}

fn model(tmp: &Path) -> PathBuf {
    let run = tmp.join("run");
    quick_pretrain(&run, "2000", "200");
    run
}

#[test]
fn the_api_answers_and_refuses_as_documented() {
    let tmp = tempfile::tempdir().unwrap();
    let run = model(tmp.path());
    let pngs = mnist_pngs(tmp.path(), 0..3);
    let mut server = Server::start(&run, &["--workers", "4"]);
    let u = |p: &str| format!("{}{p}", server.url);

    let (status, page) = get(&u("/"));
    assert_eq!(status, 200);
    assert!(page.contains("<canvas id=\"pad\"") && page.contains("test accuracy"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "the page must work offline"
    );

    let (status, m) = get(&u("/api/model"));
    assert_eq!(status, 200);
    let m: serde_json::Value = serde_json::from_str(&m).unwrap();
    assert_eq!(m["classes"].as_array().unwrap().len(), 10);
    assert_eq!(
        m["input"]["fit"], "mnist",
        "pretraining records MNIST's fit"
    );

    for (png, _) in &pngs {
        let (status, p) = post(&u("/api/predict"), &std::fs::read(png).unwrap());
        assert_eq!(status, 200, "{p}");
        assert_eq!(p["class"].as_str().unwrap(), predicted_class(&run, png));
        let total: f64 = p["probabilities"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!((total - 1.0).abs() < 1e-4, "{total}");
        assert_eq!(p["image"].as_array().unwrap().len(), 784);
    }

    let (status, e) = post(&u("/api/predict"), b"GIF89a but not really");
    assert_eq!(status, 400);
    assert!(e["error"].as_str().unwrap().contains("upload"), "{e}");
    let (status, e) = post(&u("/api/predict"), b"");
    assert_eq!(status, 400, "{e}");
    let (status, e) = post(
        &u("/api/predict?fit=circle"),
        &std::fs::read(&pngs[0].0).unwrap(),
    );
    assert_eq!(status, 400);
    assert!(e["error"].as_str().unwrap().contains("circle"), "{e}");
    // Over 8 MiB: refused from the declared length, before the body is sent (the server does
    // not read it, so a client still sending would see the connection reset).
    let (status, e) = server.raw(
        format!(
            "POST /api/predict HTTP/1.1\r\nHost: {}\r\nContent-Type: image/png\r\n\
             Content-Length: {}\r\n\r\n",
            server.addr,
            9 << 20
        )
        .as_bytes(),
    );
    assert_eq!(status, 413, "{e}");
    assert!(e.contains("larger than 8 MiB"), "{e}");
    // Chunked, with no length declared: refused as soon as it passes the limit.
    let mut c = server.connect();
    let head = format!(
        "POST /api/predict HTTP/1.1\r\nHost: {}\r\nContent-Type: image/png\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
        server.addr
    );
    c.write_all(head.as_bytes()).unwrap();
    let chunk = [
        format!("{:x}\r\n", 1 << 20).into_bytes(),
        vec![0u8; 1 << 20],
        b"\r\n".to_vec(),
    ]
    .concat();
    let mut sent = 0;
    while sent < 9 && c.write_all(&chunk).is_ok() {
        sent += 1;
    }
    let (status, e) = common::server::read_answer(&mut c);
    assert!(status == 413 || status == 0, "{status}: {e}");
    let (status, _) = get(&u("/no/such/page"));
    assert_eq!(status, 404);
    let (status, _) = get(&u("/api/predict"));
    assert_eq!(status, 405);

    // Eight clients at once, all answered, all the same for the same image.
    let body = std::fs::read(&pngs[1].0).unwrap();
    let expected = predicted_class(&run, &pngs[1].0);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..10 {
                    let (status, p) = post(&u("/api/predict"), &body);
                    assert_eq!(status, 200);
                    assert_eq!(p["class"].as_str().unwrap(), expected);
                }
            });
        }
    });

    let (ok, _, _) = server.stop_with("INT");
    assert!(ok, "Ctrl-C should stop serve cleanly");
    let mut rest = String::new();
    server.stdout.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("stopped"), "{rest:?}");
}

#[test]
fn serve_refuses_a_missing_model_and_a_busy_port() {
    let tmp = tempfile::tempdir().unwrap();
    let err = fails(&[
        "serve",
        "--model",
        s(&tmp.path().join("absent")),
        "--port",
        "0",
    ]);
    assert!(err.contains("absent"), "{err}");
    tiny_pretrain(&tmp.path().join("run"));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let err = fails(&[
        "serve",
        "--model",
        s(&tmp.path().join("run")),
        "--port",
        &port,
    ]);
    assert!(err.contains(&port), "{err}");
}

/// Presses, drags through `points` and releases the left button, as a mouse user drawing would.
fn drag(tab: &headless_chrome::Tab, points: &[(f64, f64)]) {
    let event = |kind, (x, y): (f64, f64), buttons| Input::DispatchMouseEvent {
        Type: kind,
        x,
        y,
        modifiers: None,
        timestamp: None,
        button: Some(Input::MouseButton::Left),
        buttons: Some(buttons),
        click_count: Some(1),
        force: None,
        tangential_pressure: None,
        tilt_x: None,
        tilt_y: None,
        twist: None,
        delta_x: None,
        delta_y: None,
        pointer_Type: None,
    };
    use Input::DispatchMouseEventTypeOption::{MouseMoved, MousePressed, MouseReleased};
    tab.call_method(event(MousePressed, points[0], 1)).unwrap();
    for &p in &points[1..] {
        tab.call_method(event(MouseMoved, p, 1)).unwrap();
    }
    tab.call_method(event(MouseReleased, points[points.len() - 1], 0))
        .unwrap();
}

/// Waits until `js` evaluates to a non-empty string, and returns it.
fn wait_for(tab: &headless_chrome::Tab, js: &str) -> String {
    let start = Instant::now();
    loop {
        let v = tab.evaluate(js, false).unwrap().value;
        if let Some(serde_json::Value::String(s)) = v
            && !s.is_empty()
        {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {js}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_page_recognises_drawings_and_uploads_in_chromium() {
    let Some(chromium) = browser_for_test() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let run = model(tmp.path());
    let pngs = mnist_pngs(tmp.path(), 0..1);
    let server = Server::start(&run, &["--workers", "4"]);
    let browser = launch_browser(chromium);
    let tab = browser.new_tab().unwrap();
    tab.navigate_to(&format!("{}/", server.url))
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    let answer = "document.getElementById('answer').dataset.class || ''";
    let bars = "String(document.querySelectorAll('#bars .bar').length || '')";
    // An empty canvas shows no prediction.
    assert_eq!(
        tab.evaluate(answer, false).unwrap().value,
        Some(serde_json::Value::String(String::new()))
    );

    // Draw a "1": a vertical stroke through the middle of the canvas.
    let pad = tab.wait_for_element("#pad").unwrap();
    let b = pad.get_box_model().unwrap();
    let (x0, y0) = (b.content.top_left.x, b.content.top_left.y);
    let stroke: Vec<(f64, f64)> = (0..=20)
        .map(|i| (x0 + 140.0, y0 + 50.0 + 9.0 * f64::from(i)))
        .collect();
    drag(&tab, &stroke);
    let drawn = wait_for(&tab, answer);
    assert_eq!(wait_for(&tab, bars), "10", "one bar per class");
    let seen_ink = wait_for(
        &tab,
        "String(Array.from(document.getElementById('seen').getContext('2d')\
         .getImageData(0,0,28,28).data).filter((v,i)=>i%4==0&&v>128).length||'')",
    );
    assert!(
        seen_ink.parse::<usize>().unwrap() > 10,
        "the 28x28 view shows the stroke"
    );
    eprintln!("the drawn stroke was read as {drawn}");

    // Clear: no prediction again.
    tab.wait_for_element("#clear").unwrap().click().unwrap();
    assert_eq!(
        tab.evaluate(answer, false).unwrap().value,
        Some(serde_json::Value::String(String::new()))
    );

    // Upload an MNIST test image through the file picker.
    let (png, _) = &pngs[0];
    tab.wait_for_element("#file")
        .unwrap()
        .set_input_files(&[s(png)])
        .unwrap();
    let uploaded = wait_for(&tab, answer);
    assert_eq!(uploaded, predicted_class(&run, png));
    assert_eq!(wait_for(&tab, bars), "10");
}
