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
    // The longest-idle connections give way once they have had a second to send a request
    // (before, it waited for them to time out: 10 s).
    assert_eq!(server.model_status(), 200);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let (status, text) = read_answer(&mut stalled);
    assert_eq!(status, 408, "{text}");
    assert!(text.contains("did not arrive"), "{text}");
}

/// A slowloris client: sends a request head a header line at a time, a line every 200 ms, and
/// opens a new connection as soon as the server closes its own, until `stop`.
fn slowloris(server: &Server, stop: &std::sync::atomic::AtomicBool) -> usize {
    use std::io::Read;
    use std::sync::atomic::Ordering;
    let mut connections = 0;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut c) = TcpStream::connect(server.addr) else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        connections += 1;
        let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
        let head = format!("GET /api/model HTTP/1.1\r\nHost: {}\r\n", server.addr);
        if c.write_all(head.as_bytes()).is_err() {
            continue;
        }
        let mut buf = [0u8; 64];
        while !stop.load(Ordering::Relaxed) {
            // Closed by the server (0 bytes or an error other than the timeout): reconnect.
            match c.read(&mut buf) {
                Ok(_) => break,
                Err(e)
                    if e.kind() != std::io::ErrorKind::WouldBlock
                        && e.kind() != std::io::ErrorKind::TimedOut =>
                {
                    break;
                }
                Err(_) => {}
            }
            if c.write_all(b"X-Slow: 1\r\n").is_err() {
                break;
            }
        }
    }
    connections
}

#[test]
fn two_hundred_reconnecting_slow_clients_keep_no_request_waiting() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&model(tmp.path()), &["--workers", "2"]);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let attackers: Vec<_> = (0..200)
            .map(|_| scope.spawn(|| slowloris(&server, &stop)))
            .collect();
        // Every slot taken and the kernel's queue full of reconnecting clients.
        std::thread::sleep(Duration::from_secs(3));
        let mut took = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let (status, text) = post_image(&server, &drawing(), "");
            took.push(t.elapsed());
            assert_eq!(status, 200, "{text}");
        }
        stop.store(true, Ordering::Relaxed);
        let connections: usize = attackers.into_iter().map(|a| a.join().unwrap()).sum();
        eprintln!("with 200 reconnecting slow clients ({connections} connections): {took:?}");
        assert!(
            connections > 200,
            "the clients were never cut: {connections}"
        );
        assert!(
            took.iter().all(|t| *t < Duration::from_secs(10)),
            "a request waited: {took:?}"
        );
    });
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

/// A lossless WebP of `side` pixels a side in RGB (no alpha: its decoder holds a 4-byte frame
/// beside the 3-byte output), a bar on black.
fn webp_bomb(side: u32) -> Vec<u8> {
    let (a, b) = (side * 3 / 8, side * 5 / 8);
    let img = image::RgbImage::from_fn(side, side, |x, y| {
        image::Rgb(if (a..b).contains(&x) && (a..b).contains(&y) {
            [255; 3]
        } else {
            [0; 3]
        })
    });
    let mut out = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut out),
        image::ImageFormat::WebP,
    )
    .unwrap();
    out
}

/// `image` followed by zeros up to the largest body accepted (decoders stop at the image's end).
fn padded(mut image: Vec<u8>) -> Vec<u8> {
    image.resize(8 << 20, 0);
    image
}

#[test]
#[cfg(target_os = "linux")]
fn sixty_four_concurrent_bombs_stay_under_a_gigabyte() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(&model(tmp.path()), &["--workers", "8"]);
    // The largest images accepted, each padded to the largest body: a 16,384-pixel square PNG
    // (8-bit, 256 MiB decoded, asking to be turned) and a 6,800-pixel square lossless WebP (the
    // decoder's frame beside the output: 309 MiB); and two refused from their headers: the PNG
    // in 16 bits, the WebP at 9,400 pixels.
    let bombs = [
        padded(bomb_png(16_384, false)),
        padded(webp_bomb(6_800)),
        padded(bomb_png(16_384, true)),
        padded(webp_bomb(9_400)),
    ];
    std::thread::scope(|scope| {
        let mut answers = Vec::new();
        for i in 0..64 {
            let body = &bombs[i % 4];
            let server = &server;
            answers.push(scope.spawn(move || post_image(server, body, "")));
        }
        for (i, a) in answers.into_iter().enumerate() {
            let (status, text) = a.join().unwrap();
            if i % 4 < 2 {
                // Decoded (the square is the "ink"), or told to come back when busy.
                assert!(status == 200 || status == 503, "{i}: {status}: {text}");
            } else {
                assert_eq!(status, 400, "{text}");
                assert!(text.contains("over the limit"), "{text}");
            }
        }
    });
    assert_eq!(server.model_status(), 200);
    let (ok, _, peak) = server.stop_with("INT");
    assert!(ok);
    eprintln!("serve under 64 concurrent bomb uploads: peak {peak:.0} MiB");
    // 1 GB.
    assert!(peak < 1e9 / 1048576.0, "peak {peak:.0} MiB");
}
