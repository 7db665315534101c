//! `warmstart serve`: one self-contained page to draw or drop an image and see what the model
//! says, and the JSON API behind it.
//!
//! - `GET /`: the page (`templates/serve.html`, no external resources);
//! - `GET /api/model`: name, classes, test accuracy, input convention;
//! - `POST /api/predict[?fit=box|mnist&invert=auto|yes|no]`: the body is an image file
//!   (`Content-Type: image/...` or `application/octet-stream`); the answer is the class, every
//!   class's probability and the 28x28 image the model saw.
//!
//! hyper serves each connection on tokio (HTTP/1.1, with the head size and time limits of
//! [`limits`]), axum routes the requests (`routes`), and [`guard`] refuses requests that are not
//! from this server's own page. Predictions run on the thread that took the request
//! (`block_in_place`), each with its own copy of the network, so requests are answered
//! concurrently with no lock around inference. Ctrl-C or
//! SIGTERM stops accepting at once, gives answers under way [`limits::GRACE`], then closes
//! everything: a slow or silent client cannot hold the server up.

pub mod api;
pub mod fair;
pub mod guard;
pub mod label;
pub mod limits;
mod routes;

use crate::checkpoint;
use crate::error::{Error, Result};
use askama::Template;
use burn::prelude::Device;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use limits::{
    GIVE_WAY_AFTER, GRACE, HEADER_TIMEOUT, MAX_CONNECTIONS, MAX_HEADER_BYTES, MAX_HEADERS,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// `warmstart serve`'s flags, resolved by [`ServeArgs::resolve`].
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Checkpoint: a .safetensors file or a run directory (uses its best.safetensors).
    #[arg(long, default_value = "runs/train")]
    pub model: PathBuf,
    /// Address to listen on; anything but 127.0.0.1 (this machine only) opens the page to others.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Request workers, each with its own copy of the network [default: the number of cores].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Where and with what arithmetic it computes.
    #[command(flatten)]
    pub runtime: crate::options::RuntimeArgs,
}

impl ServeArgs {
    /// The request: one worker per core unless `--workers` says otherwise, on the CPU only (its
    /// workers hold copies of the network, which a GPU would serialise anyway). With it, a
    /// warning when the address is reachable from other machines.
    pub fn resolve(&self) -> Result<(ServeRequest, Option<String>)> {
        if self.runtime.device != crate::device::DeviceKind::Cpu {
            return Err(Error::invalid("serve runs on the CPU only"));
        }
        let workers = self
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        if workers == 0 {
            return Err(Error::invalid("--workers must be at least 1"));
        }
        let loopback = self.host == "localhost"
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let warning = (!loopback).then(|| {
            format!(
                "listening on {} opens the page and its API to other machines on the network; \
                 --host 127.0.0.1 keeps it on this one",
                self.host
            )
        });
        let req = ServeRequest {
            model: self.model.clone(),
            host: self.host.clone(),
            port: self.port,
            workers,
            precision: crate::device::resolve_precision(
                self.runtime.precision,
                self.runtime.device,
            )?,
        };
        Ok((req, warning))
    }
}

/// What `serve` was asked for.
#[derive(Debug, Clone)]
pub struct ServeRequest {
    /// Checkpoint file or run directory.
    pub model: PathBuf,
    /// Address to bind (127.0.0.1 unless the user says otherwise).
    pub host: String,
    /// Port (0: any free one).
    pub port: u16,
    /// Predictions computed at once (each holds a copy of the network).
    pub workers: usize,
    /// The arithmetic of the network's multiplies.
    pub precision: crate::device::Precision,
}

#[derive(Template)]
#[template(path = "serve.html")]
struct Page<'a> {
    name: &'a str,
    classes: &'a [String],
    accuracy: String,
}

/// Serves until Ctrl-C (or SIGTERM); `on_ready` gets the bound address once requests are taken.
pub fn serve(req: &ServeRequest, on_ready: impl FnOnce(SocketAddr)) -> Result<()> {
    let device = Device::flex();
    let (net, meta) = checkpoint::load(&req.model, &device)?;
    let name = model_name(&req.model);
    let page = Page {
        name: &name,
        classes: &meta.classes,
        accuracy: meta
            .metrics
            .test_acc
            .map_or_else(|| "not measured".into(), |a| format!("{:.2}%", a * 100.0)),
    }
    .render()
    .map_err(|e| Error::invalid(format!("cannot render the page: {e}")))?;
    let precision = req.precision;
    let workers = req.workers.max(1);
    run(&req.host, req.port, on_ready, move |addr| {
        let nets = vec![net.with_precision(precision); workers];
        routes::router(Arc::new(routes::App::new(
            meta,
            name,
            page,
            guard::Guard::new(addr),
            nets,
        )))
    })
}

/// Listens on `host:port`, builds the routes for the bound address (`routes`), calls
/// `on_ready` and serves until Ctrl-C or SIGTERM: the connection handling every page of
/// warmstart shares.
pub(crate) fn run(
    host: &str,
    port: u16,
    on_ready: impl FnOnce(SocketAddr),
    routes: impl FnOnce(SocketAddr) -> axum::Router,
) -> Result<()> {
    let cannot_listen =
        |e: std::io::Error| Error::invalid(format!("cannot listen on {host}:{port}: {e}"));
    let listener = std::net::TcpListener::bind((host, port)).map_err(cannot_listen)?;
    listener.set_nonblocking(true).map_err(cannot_listen)?;
    let addr = listener.local_addr().map_err(cannot_listen)?;
    let router = routes(addr);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("serve")
        .enable_all()
        .build()
        .map_err(|e| Error::invalid(format!("cannot start the server's threads: {e}")))?;
    let served = runtime.block_on(async {
        let listener = TcpListener::from_std(listener).map_err(cannot_listen)?;
        on_ready(addr);
        accept_until_stopped(listener, router).await;
        Ok(())
    });
    // Work still under way is not waited for: its answers have nowhere to go.
    runtime.shutdown_timeout(Duration::from_millis(100));
    served
}

/// Accepts connections (at most [`MAX_CONNECTIONS`] at once: when all are taken, the one idle
/// the longest gives way after [`GIVE_WAY_AFTER`], [`fair`]) until a stop is asked for, then lets each finish the answer
/// it is writing for [`GRACE`] and closes the rest.
async fn accept_until_stopped(listener: TcpListener, router: axum::Router) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let open = Arc::new(fair::Connections::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = stopped() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            // Out of file descriptors, or a connection reset before it was accepted: wait a
            // little and go on accepting — never give up listening.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Full: make room by closing the longest-idle connection once it has had its time to
        // start a request, or, when every one is answering a request, wait for one to end.
        let slot = loop {
            if let Ok(slot) = Arc::clone(&slots).try_acquire_owned() {
                break Some(slot);
            }
            let wait = match open.make_room(GIVE_WAY_AFTER) {
                fair::Room::After(d) => d,
                fair::Room::Made | fair::Room::Busy => GIVE_WAY_AFTER,
            };
            tokio::select! {
                () = stopped() => break None,
                slot = Arc::clone(&slots).acquire_owned() => break slot.ok(),
                () = tokio::time::sleep(wait) => {}
            }
        };
        let Some(slot) = slot else { break };
        let _ = stream.set_nodelay(true);
        let (handle, close) = open.open();
        let handle = Arc::new(handle);
        let inner = TowerToHyperService::new(router.clone());
        let service = hyper::service::service_fn(move |req| {
            let busy = handle.busy();
            let answer = hyper::service::Service::call(&inner, req);
            async move {
                let answer = answer.await;
                drop(busy);
                answer
            }
        });
        let mut stop = stop_rx.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES)
                .max_headers(MAX_HEADERS);
            let conn = http.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(GRACE, conn).await;
                }
                // Given way to a new connection ([`fair`]): it has no request under way, so it is
                // closed at once.
                Ok(()) = close => {}
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drain = async { while connections.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(GRACE + Duration::from_millis(100), drain).await;
    connections.abort_all();
}

/// Resolves once Ctrl-C or SIGTERM has asked the process to stop ([`crate::cancel`]).
async fn stopped() {
    while !crate::cancel::stop_requested() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The run directory's name (or the file's stem) shown on the page.
fn model_name(model: &std::path::Path) -> String {
    let p = std::path::absolute(model).unwrap_or_else(|_| model.to_path_buf());
    let p = if p.is_file() {
        p.parent().map(|d| d.to_path_buf()).unwrap_or(p)
    } else {
        p
    };
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
