//! The routes and what each answers: the page, the model's description, predictions. Every
//! request passes the [`Guard`] first; a prediction then reads its body within a size and time
//! limit, reserves the memory its decode needs and a copy of the network, and runs on the
//! thread that took the request.

use super::api;
use super::guard::Guard;
use super::limits::{BODY_BUDGET, BODY_TIMEOUT, MAX_BODY, QUEUE_WAIT};
use crate::checkpoint::Meta;
use crate::data::{decode, memory::Reservation};
use crate::model::Net;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use burn::prelude::Device;
use http_body_util::{BodyExt, Limited};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// What every request handler shares.
pub struct App {
    pub meta: Meta,
    pub name: String,
    pub page: String,
    pub guard: Guard,
    /// Copies of the network; `slots` has one permit per copy.
    nets: Mutex<Vec<Net>>,
    slots: Semaphore,
    /// Memory for request bodies, one permit per KiB of [`BODY_BUDGET`].
    bodies: Semaphore,
    /// Where the networks compute (made once: making one per request cost a tenth of it).
    device: Device,
}

impl App {
    pub fn new(meta: Meta, name: String, page: String, guard: Guard, nets: Vec<Net>) -> App {
        App {
            meta,
            name,
            page,
            guard,
            slots: Semaphore::new(nets.len()),
            bodies: Semaphore::new(BODY_BUDGET >> 10),
            nets: Mutex::new(nets),
            device: Device::flex(),
        }
    }
}

/// The routes, behind the Host/Origin guard. `GET` routes answer `HEAD` too.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/model", get(model))
        .route("/api/predict", post(predict))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), local_only))
        .with_state(app)
}

async fn local_only(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let refusal = {
        let text = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
        app.guard.refusal(text(header::HOST), text(header::ORIGIN))
    };
    match refusal {
        Some(why) => Reply::error(StatusCode::FORBIDDEN, &why).into_response(),
        None => next.run(req).await,
    }
}

async fn page(State(app): State<Arc<App>>) -> Reply {
    Reply {
        status: StatusCode::OK,
        content_type: "text/html; charset=utf-8",
        body: app.page.clone().into_bytes(),
    }
}

async fn model(State(app): State<Arc<App>>) -> Reply {
    Reply::json(&api::describe(&app.name, &app.meta))
}

async fn not_found(uri: Uri) -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        &format!("no such page: {}", uri.path()),
    )
}

async fn method_not_allowed() -> Reply {
    Reply::error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
}

async fn predict(State(app): State<Arc<App>>, uri: Uri, headers: HeaderMap, body: Body) -> Reply {
    match predict_inner(&app, uri.query().unwrap_or(""), &headers, body).await {
        Ok(reply) | Err(reply) => reply,
    }
}

async fn predict_inner(
    app: &Arc<App>,
    query: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Reply, Reply> {
    // A cross-site form can send text/plain, multipart or urlencoded bodies without asking; any
    // other type needs the browser's preflight, which this server never grants.
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if !(mime == "application/octet-stream" || mime.starts_with("image/")) {
        return Err(Reply::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!(
                "send the image file with Content-Type image/... or application/octet-stream, \
                 not {ct:?}"
            ),
        ));
    }
    let prep = api::Prep::from_query(&app.meta, query)
        .map_err(|e| Reply::error(StatusCode::BAD_REQUEST, &e))?;
    let too_large = || {
        Reply::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the image is larger than {} MiB", MAX_BODY >> 20),
        )
    };
    // A declared length over the limit is refused before reading a byte of the body.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    // The body's memory (its declared length, or the limit when it declares none) is reserved
    // before it is read; then a network and the decode's memory, all within QUEUE_WAIT.
    let deadline = tokio::time::Instant::now() + QUEUE_WAIT;
    let kib = declared.unwrap_or(MAX_BODY as u64).div_ceil(1 << 10).max(1) as u32;
    let _body_memory = tokio::time::timeout_at(deadline, app.bodies.acquire_many(kib))
        .await
        .map_err(|_| busy())?
        .map_err(|_| busy())?;
    let read = tokio::time::timeout(BODY_TIMEOUT, read_body(body, declared)).await;
    let bytes = match read {
        Err(_) => {
            return Err(Reply::error(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "the image did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            ));
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Ok(Err(e)) => {
            return Err(Reply::error(
                StatusCode::BAD_REQUEST,
                &format!("the request body could not be read: {e}"),
            ));
        }
        Ok(Ok(bytes)) => bytes,
    };
    // Reserve the decode's memory (read from the image's header) and a network; a request that
    // cannot have both within QUEUE_WAIT is told to come back.
    // An image over the limits is refused from its header at once. Then a network, then the
    // decode's memory (else 503): waiting for memory blocks a thread, so only requests holding a
    // network (one per worker) wait for it.
    let path = std::path::Path::new("upload");
    let needed = decode::memory_needed(path, &bytes)
        .map_err(|e| Reply::error(StatusCode::BAD_REQUEST, &e.to_string()))?;
    let slot = tokio::time::timeout_at(deadline, app.slots.acquire())
        .await
        .map_err(|_| busy())?
        .map_err(|_| busy())?;
    // On this thread (tokio hands its other tasks to another): a handoff to the blocking pool
    // cost a fifth of the throughput.
    let answer = tokio::task::block_in_place(|| {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let memory = Reservation::take(needed, Some(left)).ok_or_else(busy)?;
        with_net(app, |net| {
            api::predict(net, &app.meta, &app.device, &bytes, prep, &memory)
                .map_err(|e| Reply::error(StatusCode::BAD_REQUEST, &e))
        })?
    });
    drop(slot);
    answer.map(|p| Reply::json(&p))
}

/// The body, read into one buffer of its declared length: collecting its chunks and joining
/// them held it twice, 1 GiB with 64 uploads of 8 MiB.
async fn read_body(
    body: Body,
    declared: Option<u64>,
) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
    let mut body = Limited::new(body, MAX_BODY);
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0).min(MAX_BODY as u64) as usize);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

fn busy() -> Reply {
    Reply::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the server is busy with other images: try again in a moment",
    )
}

/// The memory decoding `bytes` needs, from the process's one decode budget
/// ([`crate::data::memory`]): a 400 naming `path` for an image over the limits, a 503 when the
/// memory is not free within [`QUEUE_WAIT`]. The wait blocks this thread (tokio hands its other
/// tasks to another); `label`'s image requests use it (one person's page), `serve`'s uploads
/// wait for a network first so that at most one thread per worker waits for memory.
pub(crate) fn reserve_decode(path: &std::path::Path, bytes: &[u8]) -> Result<Reservation, Reply> {
    match tokio::task::block_in_place(|| decode::reserve(path, bytes, Some(QUEUE_WAIT))) {
        Ok(Some(held)) => Ok(held),
        Ok(None) => Err(busy()),
        Err(e) => Err(Reply::error(StatusCode::BAD_REQUEST, &e.to_string())),
    }
}

/// Runs `f` with a network taken from the pool, and puts it back afterwards, even when `f`
/// panics (the panic becomes a 500).
fn with_net<T>(app: &App, f: impl FnOnce(&Net) -> T) -> Result<T, Reply> {
    let pool = || app.nets.lock().unwrap_or_else(|p| p.into_inner());
    let net = pool()
        .pop()
        .ok_or_else(|| Reply::error(StatusCode::INTERNAL_SERVER_ERROR, "no network is free"))?;
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&net)));
    pool().push(net);
    out.map_err(|_| Reply::error(StatusCode::INTERNAL_SERVER_ERROR, "the prediction failed"))
}

/// A complete answer: status, type and body (JSON unless it is the page).
pub(crate) struct Reply {
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Reply {
    pub(crate) fn json(value: &impl serde::Serialize) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => Reply {
                status: StatusCode::OK,
                content_type: "application/json",
                body,
            },
            Err(e) => Reply::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot encode the answer: {e}"),
            ),
        }
    }

    /// The same answer with another status.
    pub(crate) fn with_status(self, status: StatusCode) -> Reply {
        Reply { status, ..self }
    }

    pub(crate) fn error(status: StatusCode, message: &str) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: serde_json::json!({ "error": message })
                .to_string()
                .into_bytes(),
        }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut r = (self.status, self.body).into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}
