//! `warmstart serve` under attack: malformed, huge, slow and idle clients, foreign web pages and
//! decompression bombs. Each test ends by checking that a normal request is still answered.

mod common;

use common::server::{Server, bomb_png, read_answer};
use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn model(tmp: &Path) -> PathBuf {
    let run = tmp.join("run");
    tiny_pretrain(&run);
    run
}

/// A small PNG with a bar drawn on it: an image the model can classify.
fn drawing() -> Vec<u8> {
    let img = image::GrayImage::from_fn(56, 56, |x, y| {
        image::Luma([if (20..36).contains(&x) && y > 8 {
            255
        } else {
            0
        }])
    });
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    png
}

fn post_image(server: &Server, body: &[u8], extra_headers: &str) -> (u16, String) {
    let mut c = server.connect();
    let head = format!(
        "POST /api/predict HTTP/1.1\r\nHost: {}\r\nContent-Type: image/png\r\n\
         Content-Length: {}\r\nConnection: close\r\n{extra_headers}\r\n",
        server.addr,
        body.len()
    );
    c.write_all(head.as_bytes()).unwrap();
    // The server may answer (and close) before the whole body is sent.
    let _ = c.write_all(body);
    read_answer(&mut c)
}

/// Open descriptors of the server process.
fn open_files(server: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.child.id()))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn six_hundred_http2_request_lines_leak_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&model(tmp.path()), &[]);
    let before = open_files(&server);
    for _ in 0..600 {
        let (status, text) = server.raw(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n");
        assert!(status == 0 || status >= 400, "{text}");
    }
    assert_eq!(server.model_status(), 200);
    let after = open_files(&server);
    assert!(
        after <= before + 4,
        "descriptors grew from {before} to {after}"
    );
}

/// Clients that start a request and never finish it: a body announced and not sent, a head
/// without its end, a chunked body without chunks.
fn slow_clients(server: &Server, n: usize) -> Vec<TcpStream> {
    let host = server.addr;
    (0..n)
        .map(|i| {
            let mut c = server.connect();
            let start = match i % 3 {
                0 => format!(
                    "POST /api/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/png\r\n\
                     Content-Length: 2000\r\n\r\n"
                ),
                1 => format!("GET /api/model HTTP/1.1\r\nHost: {host}\r\nX-Slow: "),
                _ => format!(
                    "POST /api/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/png\r\n\
                     Transfer-Encoding: chunked\r\n\r\n"
                ),
            };
            c.write_all(start.as_bytes()).unwrap();
            c
        })
        .collect()
}

#[test]
fn slow_clients_hold_nothing_up_and_a_signal_stops_the_server_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let run = model(tmp.path());
    for signal in ["INT", "TERM"] {
        let mut server = Server::start(&run, &["--workers", "2"]);
        let _slow = slow_clients(&server, 20);
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        assert_eq!(server.model_status(), 200);
        let (status, text) = post_image(&server, &drawing(), "");
        assert_eq!(status, 200, "{text}");
        let took = t.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "answered in {took:?} with 20 slow clients"
        );
        let (ok, took, _) = server.stop_with(signal);
        assert!(ok, "SIG{signal} should stop serve cleanly");
        assert!(
            took < Duration::from_secs(2),
            "SIG{signal} with 20 slow clients connected took {took:?}"
        );
    }
}

#[test]
fn idle_and_stalled_connections_are_closed_in_time() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&model(tmp.path()), &[]);
    // More idle connections than the server serves at once (64), and one body that stalls.
    let _idle: Vec<_> = (0..80).map(|_| server.connect()).collect();
    let mut stalled = slow_clients(&server, 1).remove(0);
    let t = Instant::now();
    // Waits in the queue until the idle ones time out (10 s), then is answered.
    assert_eq!(server.model_status(), 200);
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    let (status, text) = read_answer(&mut stalled);
    assert_eq!(status, 408, "{text}");
    assert!(text.contains("did not arrive"), "{text}");
}

/// Streams `total` bytes of header `line`s after a request line; returns how many bytes the
/// server took before it stopped reading, and its answer.
fn send_headers(server: &Server, line: &[u8], total: usize) -> (usize, u16) {
    let mut c = server.connect();
    c.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!("GET /api/model HTTP/1.1\r\nHost: {}\r\n", server.addr);
    c.write_all(head.as_bytes()).unwrap();
    let chunk: Vec<u8> = line.iter().copied().cycle().take(64 << 10).collect();
    let mut sent = 0;
    while sent < total {
        if c.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    (sent, read_answer(&mut c).0)
}

#[test]
fn huge_headers_are_refused_without_growing_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(&model(tmp.path()), &[]);
    // One 200 MiB header line, then 100 MiB of short headers.
    for (line, total) in [(&b"a"[..], 200 << 20), (&b"X-A: b\r\n"[..], 100 << 20)] {
        let (sent, status) = send_headers(&server, line, total);
        assert!(sent < total, "the server read all {total} bytes of headers");
        // The 431 may be lost to the connection's reset when the client is still sending.
        assert!(status == 431 || status == 0, "status {status}");
        assert_eq!(server.model_status(), 200);
    }
    let (ok, _, peak) = server.stop_with("INT");
    assert!(ok);
    assert!(peak < 200.0, "peak {peak:.0} MiB after huge headers");
}

#[test]
fn only_this_servers_own_page_may_use_it() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&model(tmp.path()), &[]);
    let addr = server.addr;
    let request = |head: String, body: &[u8]| {
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        server.raw(&bytes)
    };
    let png = drawing();
    // DNS rebinding: the attacker's name in Host.
    for path in ["/", "/api/model"] {
        let (status, text) = request(
            format!(
                "GET {path} HTTP/1.1\r\nHost: attacker.example:{}\r\nConnection: close\r\n\r\n",
                addr.port()
            ),
            b"",
        );
        assert_eq!(status, 403, "{text}");
        assert!(text.contains("attacker.example"), "{text}");
    }
    let post = |host: &str, origin: &str, ctype: &str| {
        request(
            format!(
                "POST /api/predict HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\n\
                 Content-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                png.len()
            ),
            &png,
        )
    };
    let own = format!("http://{addr}");
    let host = addr.to_string();
    // A cross-site form's POST: foreign Origin, a "simple" content type.
    let (status, text) = post(&host, "http://attacker.example", "text/plain");
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("cross-origin"), "{text}");
    let (status, text) = post(&host, "http://attacker.example", "image/png");
    assert_eq!(status, 403, "{text}");
    // From the page itself, a simple content type is still refused; an image type is answered.
    let (status, text) = post(&host, &own, "text/plain");
    assert_eq!(status, 415, "{text}");
    let (status, text) = post(&host, &own, "image/png");
    assert_eq!(status, 200, "{text}");
    let (status, text) = post(
        &format!("localhost:{}", addr.port()),
        &format!("http://localhost:{}", addr.port()),
        "application/octet-stream",
    );
    assert_eq!(status, 200, "{text}");
    // HEAD is GET without the body.
    let (status, text) = request(
        format!("HEAD / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        b"",
    );
    assert_eq!(status, 200, "{text}");
    assert!(!text.contains("<html"), "{text}");
}

#[test]
#[cfg(target_os = "linux")]
fn eight_concurrent_bombs_stay_under_a_gigabyte() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(&model(tmp.path()), &["--workers", "8"]);
    // The largest image accepted (16,384 pixels a side, 8-bit: 256 MiB decoded) and one twice
    // that (16-bit), each asking to be turned.
    let largest = bomb_png(16_384, false);
    let refused = bomb_png(16_384, true);
    std::thread::scope(|scope| {
        let mut answers = Vec::new();
        for i in 0..8 {
            let body = if i % 4 != 3 { &largest } else { &refused };
            let server = &server;
            answers.push(scope.spawn(move || post_image(server, body, "")));
        }
        for (i, a) in answers.into_iter().enumerate() {
            let (status, text) = a.join().unwrap();
            if i % 4 != 3 {
                // Decoded (the square is the "ink"), or told to come back when busy.
                assert!(status == 200 || status == 503, "{status}: {text}");
            } else {
                assert_eq!(status, 400, "{text}");
                assert!(text.contains("limit"), "{text}");
            }
        }
    });
    assert_eq!(server.model_status(), 200);
    let (ok, _, peak) = server.stop_with("INT");
    assert!(ok);
    eprintln!("serve under 8 concurrent bomb uploads: peak {peak:.0} MiB");
    assert!(peak < 1024.0, "peak {peak:.0} MiB");
}
