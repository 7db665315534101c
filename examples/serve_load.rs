//! A small load generator for `warmstart serve`: C concurrent clients send N prediction requests
//! in total (the same image file), then it prints requests/s, p50 and p99 latency and errors.
//!
//!     warmstart serve --model runs/pretrain --port 8080 &
//!     cargo run --release --example serve_load -- http://127.0.0.1:8080 digit.png [N] [C]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(file)) = (args.get(1), args.get(2)) else {
        anyhow::bail!("usage: serve_load URL IMAGE [REQUESTS] [CLIENTS]");
    };
    let total: usize = args.get(3).map_or(Ok(2000), |s| s.parse())?;
    let clients: usize = args.get(4).map_or(Ok(8), |s| s.parse())?;
    let body = std::fs::read(file)?;
    let endpoint = format!("{}/api/predict", url.trim_end_matches('/'));
    let next = AtomicUsize::new(0);
    let errors = AtomicUsize::new(0);
    let start = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(|| {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .build()
                        .into();
                    let mut mine = Vec::new();
                    while next.fetch_add(1, Ordering::Relaxed) < total {
                        let t = Instant::now();
                        let ok = agent
                            .post(&endpoint)
                            .header("Content-Type", "application/octet-stream")
                            .send(&body[..])
                            .is_ok_and(|mut r| {
                                r.status() == 200 && r.body_mut().read_to_string().is_ok()
                            });
                        mine.push(t.elapsed());
                        if !ok {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let wall = start.elapsed();
    latencies.sort();
    let q = |f: f64| latencies[((latencies.len() as f64 * f) as usize).min(latencies.len() - 1)];
    println!(
        "{} requests, {clients} clients, {:.1} s: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms, errors {}",
        latencies.len(),
        wall.as_secs_f64(),
        latencies.len() as f64 / wall.as_secs_f64(),
        q(0.50).as_secs_f64() * 1e3,
        q(0.99).as_secs_f64() * 1e3,
        errors.load(Ordering::Relaxed)
    );
    Ok(())
}
