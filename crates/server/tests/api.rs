//! The agent API over real HTTP and WebSocket on 127.0.0.1: a task owning the desk answers
//! the API's requests the way the SIP task does in the engine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use frontdoor::api::{ApiState, serve};
use frontdoor::desk::{Desk, DeskAgent, DeskRequest};
use frontdoor_acd::{AcdConfig, AgentProfile, QueueId};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc};

/// One HTTP/1.1 request; returns (status, body).
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let status: u16 = text[9..12].parse().unwrap();
    let (_, body) = text.split_once("\r\n\r\n").unwrap();
    let v = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    (status, v)
}

fn desk() -> Desk {
    let config: AcdConfig = toml::from_str(
        r#"
        [[queues]]
        id = 1
        name = "general"
        "#,
    )
    .unwrap();
    let agents = vec![DeskAgent {
        name: "alice".into(),
        profile: AgentProfile {
            queues: vec![QueueId(1)],
            ..AgentProfile::default()
        },
    }];
    Desk::new(&config, agents, Instant::now()).unwrap()
}

#[tokio::test]
async fn agents_log_in_pause_and_events_stream_over_websocket() {
    let (desk_tx, mut desk_rx) = mpsc::channel::<DeskRequest>(16);
    let (events_tx, _) = broadcast::channel::<Arc<str>>(64);
    let mut desk = desk();
    tokio::spawn(async move {
        while let Some(req) = desk_rx.recv().await {
            desk.serve(Instant::now(), req);
            while desk.poll_action().is_some() {}
        }
    });
    let state = ApiState::new(vec!["k-123".into()], desk_tx, events_tx.clone());
    let addr = serve("127.0.0.1:0".parse().unwrap(), state).await.unwrap();

    // No key, wrong key: 401.
    assert_eq!(http(addr, "GET", "/api/v1/agents", None, "").await.0, 401);
    assert_eq!(
        http(addr, "GET", "/api/v1/agents", Some("k-12"), "")
            .await
            .0,
        401
    );

    let (status, v) = http(addr, "GET", "/api/v1/agents", Some("k-123"), "").await;
    assert_eq!(status, 200);
    assert_eq!(v[0]["id"], "alice");
    assert_eq!(v[0]["state"], "logged_out");

    let (status, v) = http(
        addr,
        "POST",
        "/api/v1/agents/alice/login",
        Some("k-123"),
        "",
    )
    .await;
    assert_eq!((status, v["state"].as_str()), (200, Some("available")));
    let (status, v) = http(
        addr,
        "POST",
        "/api/v1/agents/alice/pause",
        Some("k-123"),
        r#"{"code": 4}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["state"], "paused");
    assert_eq!(v["reason"]["code"], 4);
    let (status, v) = http(addr, "GET", "/api/v1/queues", Some("k-123"), "").await;
    assert_eq!(status, 200);
    assert_eq!(v[0]["name"], "general");
    assert_eq!(v[0]["agents_logged_in"], 1);
    assert_eq!(v[0]["agents_available"], 0);

    // Errors: unknown agent 404, unknown operation 404, bad body 400, refused transition 409.
    assert_eq!(
        http(addr, "POST", "/api/v1/agents/zed/login", Some("k-123"), "")
            .await
            .0,
        404
    );
    assert_eq!(
        http(addr, "POST", "/api/v1/agents/alice/fly", Some("k-123"), "")
            .await
            .0,
        404
    );
    assert_eq!(
        http(
            addr,
            "POST",
            "/api/v1/agents/alice/pause",
            Some("k-123"),
            "{code"
        )
        .await
        .0,
        400
    );
    http(
        addr,
        "POST",
        "/api/v1/agents/alice/logout",
        Some("k-123"),
        "",
    )
    .await;
    let (status, v) = http(
        addr,
        "POST",
        "/api/v1/agents/alice/ready",
        Some("k-123"),
        "",
    )
    .await;
    assert_eq!(status, 409, "{v}");

    // WebSocket: key in the query; the same lines as the event stream.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/api/v1/events?api_key=k-123"))
            .await
            .unwrap();
    // Wait for the subscription to exist before publishing.
    for _ in 0..100 {
        if events_tx.receiver_count() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    events_tx
        .send(Arc::from(r#"{"seq":1,"type":"call.received"}"#))
        .unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
    assert_eq!(v["type"], "call.received");
    // Without a key the upgrade is refused.
    assert!(
        tokio_tungstenite::connect_async(format!("ws://{addr}/api/v1/events"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_stopped_desk_answers_503_not_a_hang() {
    let (desk_tx, desk_rx) = mpsc::channel::<DeskRequest>(1);
    drop(desk_rx);
    let (events_tx, _) = broadcast::channel::<Arc<str>>(4);
    let addr = serve(
        "127.0.0.1:0".parse().unwrap(),
        ApiState::new(vec!["k".into()], desk_tx, events_tx),
    )
    .await
    .unwrap();
    assert_eq!(
        http(addr, "GET", "/api/v1/agents", Some("k"), "").await.0,
        503
    );
}
