//! The labelling page's routes: the page, the queue's state, each image (as the 28x28 PNG the
//! model sees, enlarged by the page), and the two answers that move files — behind the
//! Host/Origin guard, and taking JSON only (a type another site's form cannot send without a
//! preflight, which this server never grants).

use super::keys;
use super::queue::Queue;
use crate::data::decode;
use crate::data::prepare::{self, Fit, Invert};
use crate::error::{Error, Result};
use crate::serve::guard::Guard;
use crate::serve::limits::BODY_TIMEOUT;
use crate::serve::routes::{Reply, reserve_decode};
use askama::Template;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State as Extract};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, Limited};
use std::sync::{Arc, Mutex};

/// What the handlers share.
pub struct State {
    /// The images and the answers so far.
    pub queue: Mutex<Queue>,
    /// The page.
    pub page: String,
}

/// Largest answer body: `{"id": N, "class": K}` with room to spare.
const MAX_ANSWER: usize = 4 << 10;

#[derive(Template)]
#[template(path = "label.html")]
struct Page;

/// The page, rendered once.
pub fn page() -> Result<String> {
    Page.render()
        .map_err(|e| Error::invalid(format!("cannot render the labelling page: {e}")))
}

/// The routes, behind the guard.
pub fn router(state: Arc<State>, guard: Guard) -> Router {
    let guard = Arc::new(guard);
    Router::new()
        .route("/", get(show_page))
        .route("/api/state", get(state_json))
        .route("/api/image/{id}", get(image))
        .route("/api/label", post(label))
        .route("/api/undo", post(undo))
        .fallback(|| async { Reply::error(StatusCode::NOT_FOUND, "no such page") })
        .method_not_allowed_fallback(|| async {
            Reply::error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
        })
        .layer(middleware::from_fn_with_state(guard, local_json_only))
        .with_state(state)
}

/// Host and Origin must be this server's; a POST must be JSON.
async fn local_json_only(
    Extract(guard): Extract<Arc<Guard>>,
    req: Request,
    next: Next,
) -> Response {
    // In a block: a borrow of the request must not live across the await below.
    let refusal = {
        let text = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
        let json = text(header::CONTENT_TYPE)
            .and_then(|t| t.split(';').next())
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
        // A browser says where a request comes from: only this page's own requests (and the
        // address typed or bookmarked) may read images or the queue, or move files.
        let site = text(HeaderName::from_static("sec-fetch-site"));
        match guard.refusal(text(header::HOST), text(header::ORIGIN)) {
            Some(why) => Some((StatusCode::FORBIDDEN, why)),
            None if site.is_some_and(|s| s != "same-origin" && s != "none") => Some((
                StatusCode::FORBIDDEN,
                format!(
                    "requests from another site ({}) are refused",
                    site.unwrap_or_default()
                ),
            )),
            None if req.method() == axum::http::Method::POST && !json => Some((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "answers are sent as application/json".to_string(),
            )),
            None => None,
        }
    };
    match refusal {
        Some((status, why)) => Reply::error(status, &why).into_response(),
        None => next.run(req).await,
    }
}

async fn show_page(Extract(s): Extract<Arc<State>>) -> Response {
    let mut r = s.page.clone().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// The queue as the page needs it.
fn describe(q: &Queue) -> serde_json::Value {
    let keys = keys(q.classes());
    let classes: Vec<serde_json::Value> = q
        .classes()
        .iter()
        .zip(keys)
        .map(|(name, key)| serde_json::json!({ "name": name, "key": key.map(String::from) }))
        .collect();
    serde_json::json!({
        "classes": classes,
        "items": q.items(),
        "next": q.next(),
        "done": q.done(),
        "total": q.items().len(),
        "can_undo": q.can_undo(),
        "version": q.version(),
    })
}

fn locked(s: &State) -> std::sync::MutexGuard<'_, Queue> {
    // A panic while holding the lock leaves the queue as consistent as the files: go on.
    s.queue.lock().unwrap_or_else(|e| e.into_inner())
}

async fn state_json(Extract(s): Extract<Arc<State>>) -> Reply {
    Reply::json(&describe(&locked(&s)))
}

async fn image(Extract(s): Extract<Arc<State>>, Path(id): Path<usize>) -> Response {
    let path = locked(&s).items().get(id).map(|i| i.path.clone());
    let Some(path) = path else {
        return Reply::error(StatusCode::NOT_FOUND, "no such image").into_response();
    };
    let bytes = match tokio::task::block_in_place(|| std::fs::read(&path)) {
        Ok(b) => b,
        Err(e) => {
            let e = Error::io(&path, e);
            return Reply::error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()).into_response();
        }
    };
    let memory = match reserve_decode(&path, &bytes) {
        Ok(m) => m,
        Err(refused) => return refused.into_response(),
    };
    let png = tokio::task::block_in_place(|| -> Result<Vec<u8>> {
        let img = decode::decode_reserved(&path, &bytes, &memory)?;
        prepare::png_bytes(&prepare::prepare(&img, Invert::Auto, Fit::Box))
    });
    drop(memory);
    match png {
        Ok(png) => {
            let mut r = png.into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
            r
        }
        Err(e) => Reply::error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()).into_response(),
    }
}

#[derive(serde::Deserialize)]
struct Answer {
    id: usize,
    class: usize,
    /// The queue's version the page showed (absent from older pages and scripts: not checked).
    version: Option<u64>,
}

#[derive(serde::Deserialize, Default)]
struct Undo {
    version: Option<u64>,
}

/// 409 with the current state when the page answered from an older one (another tab answered
/// meanwhile): the page shows the current state instead of acting on a stale one.
fn stale(q: &Queue, version: Option<u64>) -> Option<Reply> {
    version.filter(|&v| v != q.version()).map(|_| {
        let mut state = describe(q);
        state["error"] = serde_json::json!(
            "another tab answered meanwhile: this page now shows where the labelling stands"
        );
        Reply::json(&state).with_status(StatusCode::CONFLICT)
    })
}

/// The body of an answer, within [`MAX_ANSWER`] bytes and [`BODY_TIMEOUT`] (a client that
/// declares more than it sends is cut off, not waited for).
async fn answer_body(body: Body) -> std::result::Result<Bytes, Reply> {
    match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_ANSWER).collect()).await {
        Err(_) => Err(Reply::error(
            StatusCode::REQUEST_TIMEOUT,
            &format!(
                "the answer did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        )),
        Ok(Err(e)) => Err(Reply::error(
            StatusCode::BAD_REQUEST,
            &format!("the answer could not be read: {e}"),
        )),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

async fn label(Extract(s): Extract<Arc<State>>, body: Body) -> Reply {
    let body = match answer_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let a: Answer = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            return Reply::error(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"id\": N, \"class\": K}}: {e}"),
            );
        }
    };
    let mut q = locked(&s);
    if let Some(r) = stale(&q, a.version) {
        return r;
    }
    match tokio::task::block_in_place(|| q.label(a.id, a.class)) {
        Ok(()) => Reply::json(&describe(&q)),
        Err(e) => Reply::error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

async fn undo(Extract(s): Extract<Arc<State>>, body: Body) -> Reply {
    let body = match answer_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let u: Undo = if body.iter().all(u8::is_ascii_whitespace) {
        Undo::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(u) => u,
            Err(e) => {
                return Reply::error(
                    StatusCode::BAD_REQUEST,
                    &format!("expected {{\"version\": N}} or nothing: {e}"),
                );
            }
        }
    };
    let mut q = locked(&s);
    if let Some(r) = stale(&q, u.version) {
        return r;
    }
    match tokio::task::block_in_place(|| q.undo()) {
        Ok(_) => Reply::json(&describe(&q)),
        Err(e) => Reply::error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
