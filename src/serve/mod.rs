//! `warmstart serve`: one self-contained page to draw or drop an image and see what the model
//! says, and the JSON API behind it.
//!
//! - `GET /`: the page (`templates/serve.html`, no external resources);
//! - `GET /api/model`: name, classes, test accuracy, input convention;
//! - `POST /api/predict[?fit=box|mnist&invert=auto|yes|no]`: the body is an image file; the
//!   answer is the class, every class's probability and the 28x28 image the model saw.
//!
//! tiny_http accepts connections on its own thread; a few workers take requests from it, each
//! with its own copy of the network, so requests are answered concurrently with no lock around
//! inference. Workers poll the cancellation flag, so Ctrl-C stops the server cleanly.

pub mod api;

use crate::checkpoint::{self, Meta};
use crate::error::{Error, Result};
use crate::model::Net;
use askama::Template;
use burn::prelude::Device;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tiny_http::{Method, Request, Server};

/// What `serve` was asked for.
#[derive(Debug, Clone)]
pub struct ServeRequest {
    /// Checkpoint file or run directory.
    pub model: PathBuf,
    /// Address to bind (127.0.0.1 unless the user says otherwise).
    pub host: String,
    /// Port (0: any free one).
    pub port: u16,
    /// Request workers (each holds a copy of the network).
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

struct Shared {
    meta: Meta,
    name: String,
    page: String,
}

/// Serves until Ctrl-C (or SIGTERM); `on_ready` gets the bound address once requests are taken.
pub fn serve(req: &ServeRequest, on_ready: impl FnOnce(SocketAddr)) -> Result<()> {
    let device = Device::flex();
    let (net, meta) = checkpoint::load(&req.model, &device)?;
    let net = net.with_precision(req.precision);
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
    let server = Server::http((req.host.as_str(), req.port))
        .map_err(|e| Error::invalid(format!("cannot listen on {}:{}: {e}", req.host, req.port)))?;
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| Error::invalid("the server is not on an IP address"))?;
    let server = Arc::new(server);
    let shared = Arc::new(Shared { meta, name, page });
    let workers: Vec<_> = (0..req.workers.max(1))
        .map(|i| {
            let (server, shared, net) = (server.clone(), shared.clone(), net.clone());
            std::thread::Builder::new()
                .name(format!("serve-{i}"))
                .spawn(move || work(&server, &shared, &net))
                .map_err(|e| Error::invalid(format!("cannot start a worker thread: {e}")))
        })
        .collect::<Result<_>>()?;
    on_ready(addr);
    for w in workers {
        let _ = w.join();
    }
    Ok(())
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

fn work(server: &Server, shared: &Shared, net: &Net) {
    let device = Device::flex();
    while !crate::cancel::stop_requested() {
        match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(request)) => answer(request, shared, net, &device),
            Ok(None) => {}
            Err(e) => {
                eprintln!("warning: a request could not be read: {e}");
            }
        }
    }
}

fn answer(mut request: Request, shared: &Shared, net: &Net, device: &Device) {
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let method = request.method().clone();
    let reply = match (path, &method) {
        ("/", Method::Get) => Reply::html(shared.page.clone()),
        ("/api/model", Method::Get) => Reply::json(200, &api::describe(&shared.name, &shared.meta)),
        ("/api/predict", Method::Post) => predict(&mut request, query, shared, net, device),
        ("/" | "/api/model" | "/api/predict", _) => Reply::error(405, "method not allowed here"),
        _ => Reply::error(404, &format!("no such page: {path}")),
    };
    // A client that went away is not the server's problem.
    let _ = reply.send(request);
}

fn predict(
    request: &mut Request,
    query: &str,
    shared: &Shared,
    net: &Net,
    device: &Device,
) -> Reply {
    let prep = match api::Prep::from_query(&shared.meta, query) {
        Ok(p) => p,
        Err(e) => return Reply::error(400, &e),
    };
    let too_large = || {
        Reply::error(
            413,
            &format!("the image is larger than {} MiB", api::MAX_BODY >> 20),
        )
    };
    if request.body_length().is_some_and(|n| n > api::MAX_BODY) {
        return too_large();
    }
    let mut body = Vec::new();
    let read = request
        .as_reader()
        .take(api::MAX_BODY as u64 + 1)
        .read_to_end(&mut body);
    if let Err(e) = read {
        return Reply::error(400, &format!("the request body could not be read: {e}"));
    }
    if body.len() > api::MAX_BODY {
        return too_large();
    }
    match api::predict(net, &shared.meta, device, &body, prep) {
        Ok(p) => Reply::json(200, &p),
        Err(e) => Reply::error(400, &e),
    }
}

struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Reply {
    fn html(page: String) -> Reply {
        Reply {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: page.into_bytes(),
        }
    }

    fn json(status: u16, value: &impl serde::Serialize) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => Reply {
                status,
                content_type: "application/json",
                body,
            },
            Err(e) => Reply::error(500, &format!("cannot encode the answer: {e}")),
        }
    }

    fn error(status: u16, message: &str) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: serde_json::json!({ "error": message })
                .to_string()
                .into_bytes(),
        }
    }

    /// Writes the whole response with one write. tiny_http's own `respond` sends the headers and
    /// a body over 1 KiB in separate segments, and on a kept-alive connection Nagle's algorithm
    /// then holds the body until the client's delayed ACK: 40 ms for every prediction.
    fn send(self, request: Request) -> std::io::Result<()> {
        let reason = tiny_http::StatusCode(self.status).default_reason_phrase();
        let mut bytes = format!(
            "HTTP/1.1 {} {reason}\r\nServer: warmstart\r\nContent-Type: {}\r\n\
             Content-Length: {}\r\nCache-Control: no-store\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        bytes.extend_from_slice(&self.body);
        let mut writer = request.into_writer();
        writer.write_all(&bytes)?;
        writer.flush()
    }
}
