//! A running `warmstart serve` for the server tests, and raw TCP clients that misbehave.

use super::{bin, s};
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A running `warmstart serve` on a free port; killed when dropped.
pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub url: String,
    pub addr: SocketAddr,
    pub stdout: BufReader<std::process::ChildStdout>,
}

impl Server {
    /// Starts `serve --model MODEL --port 0` with `extra` arguments and waits until it listens.
    pub fn start(model: &Path, extra: &[&str]) -> Server {
        let mut child = bin()
            .args(["serve", "--model", s(model), "--port", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let url = super::url_in_first_line(&mut stdout);
        let addr = url.trim_start_matches("http://").parse().unwrap();
        Server {
            child,
            url,
            addr,
            stdout,
        }
    }

    /// Sends `signal` (`INT`, `TERM`) and returns whether the server exited with success, how
    /// long it took to exit (panics after 10 s) and its peak memory in MiB (from `wait4`).
    #[expect(
        unsafe_code,
        reason = "the child is reaped by `wait4`, which also reports its peak memory"
    )]
    pub fn stop_with(&mut self, signal: &str) -> (bool, Duration, f64) {
        let pid = self.child.id() as libc::pid_t;
        let start = Instant::now();
        std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap();
        loop {
            let mut status = 0;
            // SAFETY: zeroed is a valid `rusage`; `wait4` writes both out-parameters for our own
            // child.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            let waited = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
            assert!(waited >= 0, "wait4: {}", std::io::Error::last_os_error());
            if waited == pid {
                let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
                // Linux reports kibibytes.
                return (ok, start.elapsed(), usage.ru_maxrss as f64 / 1024.0);
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "serve did not stop on SIG{signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A raw connection to the server.
    pub fn connect(&self) -> TcpStream {
        let c = TcpStream::connect(self.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        c
    }

    /// Sends `request` on a new connection and returns the status code of the answer and the
    /// whole answer's text (the server closes or the read times out).
    pub fn raw(&self, request: &[u8]) -> (u16, String) {
        let mut c = self.connect();
        c.write_all(request).unwrap();
        read_answer(&mut c)
    }

    /// `GET /api/model` with proper headers: its status code.
    pub fn model_status(&self) -> u16 {
        let req = format!(
            "GET /api/model HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        self.raw(req.as_bytes()).0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads an HTTP answer until the server closes the connection (or 30 s pass); its status code
/// (0 when there was none) and text.
pub fn read_answer(c: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A PNG of `side` x `side` pixels (8- or 16-bit grey) that is black but for a bright square in
/// its middle, with an EXIF "rotate 90°" (orientation 6) chunk: a decompression bomb (hundreds
/// of MiB decoded from a few hundred KiB) that also asks to be turned.
pub fn bomb_png(side: u32, sixteen_bit: bool) -> Vec<u8> {
    let bytes_per_px = if sixteen_bit { 2 } else { 1 };
    let out = Shared::default();
    {
        let mut enc = png::Encoder::new(out.clone(), side, side);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(if sixteen_bit {
            png::BitDepth::Sixteen
        } else {
            png::BitDepth::Eight
        });
        let mut w = enc.write_header().unwrap().into_stream_writer().unwrap();
        let row_len = side as usize * bytes_per_px;
        let dark = vec![0u8; row_len];
        let mut lit = dark.clone();
        let (a, b) = (side as usize * 3 / 8, side as usize * 5 / 8);
        lit[a * bytes_per_px..b * bytes_per_px].fill(255);
        for y in 0..side as usize {
            let row = if (a..b).contains(&y) { &lit } else { &dark };
            w.write_all(row).unwrap();
        }
        w.finish().unwrap();
    }
    let mut png = std::mem::take(&mut *out.0.lock().unwrap());
    // Big-endian TIFF header, one IFD entry: tag 0x0112 (orientation), SHORT, 1, value 6.
    let exif: Vec<u8> = [
        &b"MM\0\x2a\0\0\0\x08"[..],
        &[0, 1],
        &[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0],
        &[0, 0, 0, 0],
    ]
    .concat();
    let mut chunk = (exif.len() as u32).to_be_bytes().to_vec();
    chunk.extend_from_slice(b"eXIf");
    chunk.extend_from_slice(&exif);
    let mut crc = flate2::Crc::new();
    crc.update(&chunk[4..]);
    chunk.extend_from_slice(&crc.sum().to_be_bytes());
    // After the signature (8 bytes) and the IHDR chunk (25 bytes).
    png.splice(33..33, chunk);
    png
}

/// A byte buffer the PNG stream writer (which wants to own its writer) can write into.
#[derive(Clone, Default)]
struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
