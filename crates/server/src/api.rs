//! The agent API (HTTP + WebSocket, axum): agent login/logout/pause/ready/wrap-up, agent and
//! queue status, and the live event stream.
//!
//! Every request needs an API key: `Authorization: Bearer KEY` or `X-API-Key: KEY` (browsers
//! cannot set headers on a WebSocket, so `/api/v1/events` also takes `?api_key=KEY`). Keys are
//! compared in constant time. Handlers never touch call or queue state themselves: they send
//! a [`DeskRequest`] to the SIP task, which owns the [`crate::desk::Desk`], and wait for its
//! answer (bounded by a timeout).
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/api/v1/agents` | | `[AgentView]` |
//! | POST | `/api/v1/agents/{id}/login` | | `AgentView` |
//! | POST | `/api/v1/agents/{id}/logout` | | `AgentView` |
//! | POST | `/api/v1/agents/{id}/pause` | `{"code": N}` (optional, default 0) | `AgentView` |
//! | POST | `/api/v1/agents/{id}/ready` | | `AgentView` |
//! | POST | `/api/v1/agents/{id}/wrapup` | `{"code": N, "end": bool}` | `AgentView` |
//! | GET | `/api/v1/queues` | | `[QueueView]` |
//! | GET | `/api/v1/events` | WebSocket | one text message per event (same JSON as `--events`) |
//! | GET | `/api/v1/callbacks` | | pending callbacks in line order (`[Callback]`) |
//! | GET | `/api/v1/callbacks/{id}` | | one callback with its `attempt_log` |
//! | DELETE | `/api/v1/callbacks/{id}` | | cancel a waiting callback (it leaves the queue) |
//! | POST | `/api/v1/callbacks/{id}/reschedule` | `{"not_before": RFC 3339 or null}` | the callback |
//!
//! Errors are `{"error": "..."}` with 400 (bad body), 401 (key), 404 (unknown agent), 409
//! (transition refused), 503 (ACD not running).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::calls::callbacks::{ApiError as CbError, ApiRequest as CbRequest};
use crate::desk::{AgentOp, DeskError, DeskRequest};

/// How long a handler waits for the SIP task.
const DESK_TIMEOUT: Duration = Duration::from_secs(5);

/// Shared by the handlers.
#[derive(Debug, Clone)]
pub struct ApiState {
    keys: Arc<[String]>,
    desk: mpsc::Sender<DeskRequest>,
    events: broadcast::Sender<Arc<str>>,
}

impl ApiState {
    /// `keys`: accepted API keys (none configured = every request refused). `desk`: the SIP
    /// task's request channel. `events`: the event stream's live feed.
    pub fn new(
        keys: Vec<String>,
        desk: mpsc::Sender<DeskRequest>,
        events: broadcast::Sender<Arc<str>>,
    ) -> Self {
        ApiState {
            keys: keys.into(),
            desk,
            events,
        }
    }
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/agents", get(agents))
        .route("/api/v1/agents/{id}/{op}", post(agent_op))
        .route("/api/v1/queues", get(queues))
        .route("/api/v1/events", get(events))
        .route("/api/v1/callbacks", get(callbacks_list))
        .route(
            "/api/v1/callbacks/{id}",
            get(callback_get).delete(callback_cancel),
        )
        .route(
            "/api/v1/callbacks/{id}/reschedule",
            post(callback_reschedule),
        )
        .layer(middleware::from_fn_with_state(state.clone(), require_key))
        .with_state(state)
}

/// Binds `addr` and serves until the task is dropped.
pub async fn serve(addr: SocketAddr, state: ApiState) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(state)).await {
            tracing::error!(error = %e, "agent API stopped");
        }
    });
    Ok(local)
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": msg.into() }))).into_response()
}

fn key_matches(keys: &[String], given: &str) -> bool {
    let given = given.as_bytes();
    keys.iter().fold(false, |found, k| {
        let k = k.as_bytes();
        let same_len = k.len() == given.len();
        // Compare every byte of equal-length candidates; no early exit.
        let diff = k
            .iter()
            .zip(given.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        found | (same_len && diff == 0 && !k.is_empty())
    })
}

#[derive(Debug, Deserialize)]
struct KeyQuery {
    api_key: Option<String>,
}

async fn require_key(
    State(state): State<ApiState>,
    Query(q): Query<KeyQuery>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let given = header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| header("x-api-key"))
        .map(str::to_owned)
        .or(q.api_key);
    match given {
        Some(k) if key_matches(&state.keys, k.trim()) => next.run(req).await,
        _ => error(StatusCode::UNAUTHORIZED, "missing or wrong API key"),
    }
}

async fn ask<T>(
    state: &ApiState,
    make: impl FnOnce(oneshot::Sender<T>) -> DeskRequest,
) -> Result<T, Response> {
    let (tx, rx) = oneshot::channel();
    let unavailable = || {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            DeskError::Unavailable.to_string(),
        )
    };
    state
        .desk
        .send_timeout(make(tx), DESK_TIMEOUT)
        .await
        .map_err(|_| unavailable())?;
    match tokio::time::timeout(DESK_TIMEOUT, rx).await {
        Ok(Ok(v)) => Ok(v),
        _ => Err(unavailable()),
    }
}

async fn agents(State(state): State<ApiState>) -> Response {
    match ask(&state, DeskRequest::Agents).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

async fn queues(State(state): State<ApiState>) -> Response {
    match ask(&state, DeskRequest::Queues).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpBody {
    code: Option<u32>,
    #[serde(default)]
    end: bool,
}

async fn agent_op(
    State(state): State<ApiState>,
    Path((id, op)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let body: OpBody = if body.iter().all(u8::is_ascii_whitespace) {
        OpBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
        }
    };
    let op = match op.as_str() {
        "login" => AgentOp::Login,
        "logout" => AgentOp::Logout,
        "pause" => AgentOp::Pause(body.code.unwrap_or(0)),
        "ready" => AgentOp::Ready,
        "wrapup" => AgentOp::WrapUp {
            code: body.code,
            end: body.end,
        },
        other => return error(StatusCode::NOT_FOUND, format!("no operation {other:?}")),
    };
    match ask(&state, |reply| DeskRequest::Agent {
        name: id,
        op,
        reply,
    })
    .await
    {
        Ok(Ok(view)) => Json(view).into_response(),
        Ok(Err(e @ DeskError::UnknownAgent(_))) => error(StatusCode::NOT_FOUND, e.to_string()),
        Ok(Err(e @ DeskError::Refused(_))) => error(StatusCode::CONFLICT, e.to_string()),
        Ok(Err(e @ DeskError::Unavailable)) => {
            error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        Err(r) => r,
    }
}

async fn callbacks_list(State(state): State<ApiState>) -> Response {
    match ask(&state, |r| DeskRequest::Callbacks(CbRequest::List(r))).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(r) => r,
    }
}

async fn callback_get(State(state): State<ApiState>, Path(id): Path<i64>) -> Response {
    match ask(&state, |reply| {
        DeskRequest::Callbacks(CbRequest::Get { id, reply })
    })
    .await
    {
        Ok(Ok(Some(v))) => Json(v).into_response(),
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, format!("no callback {id}")),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(r) => r,
    }
}

fn callback_answer(
    r: Result<Result<frontdoor_store::callbacks::Callback, CbError>, Response>,
) -> Response {
    match r {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e @ CbError::Unknown(_))) => error(StatusCode::NOT_FOUND, e.to_string()),
        Ok(Err(e @ CbError::Conflict(_))) => error(StatusCode::CONFLICT, e.to_string()),
        Ok(Err(e @ CbError::Store(_))) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(r) => r,
    }
}

async fn callback_cancel(State(state): State<ApiState>, Path(id): Path<i64>) -> Response {
    callback_answer(
        ask(&state, |reply| {
            DeskRequest::Callbacks(CbRequest::Cancel { id, reply })
        })
        .await,
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RescheduleBody {
    not_before: Option<chrono::DateTime<chrono::Utc>>,
}

async fn callback_reschedule(
    State(state): State<ApiState>,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Response {
    let body: RescheduleBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    callback_answer(
        ask(&state, |reply| {
            DeskRequest::Callbacks(CbRequest::Reschedule {
                id,
                not_before: body.not_before,
                reply,
            })
        })
        .await,
    )
}

async fn events(State(state): State<ApiState>, ws: WebSocketUpgrade) -> Response {
    let rx = state.events.subscribe();
    ws.on_upgrade(move |socket| feed(socket, rx))
}

/// Forwards every event line to the socket; a client too slow to keep up is told how many
/// events it missed (`{"type":"events.lagged","missed":N}`) and stays connected.
async fn feed(mut socket: WebSocket, mut rx: broadcast::Receiver<Arc<str>>) {
    loop {
        tokio::select! {
            ev = rx.recv() => {
                let text = match ev {
                    Ok(line) => line.to_string(),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        format!("{{\"type\":\"events.lagged\",\"missed\":{n}}}")
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_exactly() {
        let keys = vec!["secret-1".to_string(), "other".to_string()];
        assert!(key_matches(&keys, "secret-1"));
        assert!(key_matches(&keys, "other"));
        assert!(!key_matches(&keys, "secret-"));
        assert!(!key_matches(&keys, "secret-12"));
        assert!(!key_matches(&keys, ""));
        assert!(!key_matches(&[String::new()], ""));
    }
}
