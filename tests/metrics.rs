//! The metrics listener: counter values after known traffic, health, and readiness
//! through a NATS outage.

mod common;

use std::net::SocketAddr;

use common::*;
use connres::clock::Clock;
use connres::metrics::{CALLS_OK, NO_RESOURCE, NO_RESOURCE_SERIES, RESOURCE_SERIES};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GET over HTTP/1.0: the status code and the body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// Serves the metrics of a running service on a free loopback port.
async fn listen(metrics: std::sync::Arc<connres::metrics::Metrics>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(connres::admin::serve(listener, metrics));
    addr
}

fn has(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "no line {line:?} in:\n{text}"
    );
}

#[tokio::test]
async fn counters_show_the_traffic_that_was_sent() {
    let server = NatsServer::start();
    let (connres, mut gw, metrics) = start_clocked(&server, SEED, Clock::manual()).await;
    let addr = listen(metrics).await;

    // Access: granted to the owner, denied to another connection (both results).
    gw.access("session.user.c1", "c1", Value::Null).await;
    gw.access("session.user.c1", "c2", Value::Null).await;
    for _ in 0..3 {
        gw.get("session.user.c1").await;
    }
    // A set without a token is denied; after a login event it is applied.
    let prefs = "session.prefs.c1";
    let theme = json!({"theme": "dark"});
    let r = gw
        .call(prefs, "set", "c1", Value::Null, theme.clone())
        .await;
    assert_eq!(r["error"]["code"], json!("system.accessDenied"));
    gw.token("c1", json!({"userId": 1})).await;
    gw.client
        .publish("conn.c1.token", "{\"tid\":\"t\"}".into())
        .await
        .unwrap();
    // The barrier: one more get and token event, after every token event above.
    gw.token_barrier().await;
    let r = gw
        .call(prefs, "set", "c1", json!({"userId": 1}), theme)
        .await;
    assert_eq!(r, json!({"result": null}));
    let r = gw
        .request("connres.set.nothing.here", json!({"values": {}}))
        .await;
    assert_eq!(r["error"]["code"], json!("system.notFound"));

    let (status, text) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    has(
        &text,
        r#"connres_requests_total{kind="access",outcome="ok",resource="session.user.{cid}"} 2"#,
    );
    has(
        &text,
        r#"connres_requests_total{kind="get",outcome="ok",resource="session.user.{cid}"} 4"#,
    );
    has(
        &text,
        r#"connres_requests_total{kind="call",outcome="access_denied",resource="session.prefs.{cid}"} 1"#,
    );
    has(
        &text,
        r#"connres_requests_total{kind="call",outcome="ok",resource="session.prefs.{cid}"} 1"#,
    );
    has(
        &text,
        r#"connres_requests_total{kind="token",outcome="ok",resource="-"} 2"#,
    );
    has(
        &text,
        r#"connres_requests_total{kind="token",outcome="ignored",resource="-"} 1"#,
    );
    has(
        &text,
        r#"connres_requests_total{kind="api",outcome="not_found",resource="-"} 1"#,
    );
    has(
        &text,
        r#"connres_request_duration_seconds_count{kind="get"} 4"#,
    );
    // Logins of c1 and the barrier's connection, and the set.
    has(&text, r#"connres_events_total{kind="change"} 3"#);
    has(&text, r#"connres_events_total{kind="system_reset"} 1"#);
    has(&text, "connres_config_generation 1");
    let hash = connres::config::Config::parse("x", SEED).unwrap();
    has(
        &text,
        &format!(r#"connres_config_info{{hash="{}"}} 1"#, hash.content_hash()),
    );
    has(&text, "connres_nats_connected 1");
    assert!(text.ends_with("# EOF\n"), "{text}");
    connres.stop().await;
}

/// Only series that can count something are listed, each labelled with the pattern
/// its requests' names matched (`-`: none), from zero before any traffic.
#[tokio::test]
async fn only_series_that_can_count_are_listed_by_resource() {
    let server = NatsServer::start();
    let (connres, _gw, metrics) = start_clocked(&server, SEED, Clock::manual()).await;
    let addr = listen(metrics).await;
    let (_, text) = http_get(addr, "/metrics").await;
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("connres_requests_total{"))
        .collect();
    lines.sort();
    let mut expected: Vec<String> = Vec::new();
    let series = |kind: &str, outcome: &str, resource: &str| {
        format!(
            r#"connres_requests_total{{kind="{kind}",outcome="{outcome}",resource="{resource}"}} 0"#
        )
    };
    for resource in ["session.user.{cid}", "session.prefs.{cid}"] {
        for (kind, outcome) in RESOURCE_SERIES {
            expected.push(series(kind, outcome, resource));
        }
    }
    // session.user has no call rule: no call on it can succeed.
    let (kind, outcome) = CALLS_OK;
    expected.push(series(kind, outcome, "session.prefs.{cid}"));
    for (kind, outcome) in NO_RESOURCE_SERIES {
        expected.push(series(kind, outcome, NO_RESOURCE));
    }
    expected.sort();
    assert_eq!(lines, expected);
    assert!(!text.contains(r#"kind="token",outcome="method_not_found""#));
    connres.stop().await;
}

/// A reload removes the series of the pattern it removes, adds those of the one it
/// adds, and the others keep counting.
#[tokio::test]
async fn a_reload_removes_and_adds_series_by_pattern() {
    let server = NatsServer::start();
    let dir = ConfigDir::new(SEED);
    let (connres, gw, mut reports) = start_watched(&server, &dir.path()).await;
    let metrics = last_shared_metrics();
    gw.get("session.user.c1").await;
    gw.get("session.prefs.c1").await;
    let user = SEED.split("  session.prefs.{cid}:").next().unwrap();
    let board = "  board.{id}:\n    fields:\n      title: { type: string }\n    access:\n      get: \"true\"\n";
    write_by_rename(&dir.path(), &format!("{user}{board}"));
    next_reload(&mut reports).await;
    let text = metrics.encode();
    has(
        &text,
        r#"connres_requests_total{kind="get",outcome="ok",resource="session.user.{cid}"} 1"#,
    );
    has(
        &text,
        r#"connres_requests_total{kind="get",outcome="ok",resource="board.{id}"} 0"#,
    );
    assert!(!text.contains("session.prefs"), "{text}");
    connres.stop().await;
}

#[tokio::test]
async fn readiness_follows_the_nats_connection() {
    let server = NatsServer::start();
    let port = server.port;
    let (connres, gw, metrics) = start_clocked(&server, SEED, Clock::manual()).await;
    let addr = listen(metrics).await;
    assert_eq!(http_get(addr, "/healthz").await, (200, "ok\n".to_string()));
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    assert_eq!(http_get(addr, "/nothing").await.0, 404);

    drop(server);
    // Asked until it flips (connres notices the outage by itself); bounded by WAIT.
    let deadline = tokio::time::Instant::now() + WAIT;
    while http_get(addr, "/readyz").await.0 != 503 {
        assert!(tokio::time::Instant::now() < deadline, "readyz still 200");
        tokio::task::yield_now().await;
    }
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    let (_, text) = http_get(addr, "/metrics").await;
    has(&text, "connres_nats_connected 0");

    let _server = NatsServer::start_on(port);
    gw.wait_until_served("session.user.c9").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while http_get(addr, "/readyz").await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "readyz still 503");
        tokio::task::yield_now().await;
    }
    let (_, text) = http_get(addr, "/metrics").await;
    has(&text, "connres_nats_reconnects_total 1");
    connres.stop().await;
}

/// State dropped by the size bound while a message is handled (not only by the sweep)
/// counts in `connres_expired_total`, as docs/behaviour.md says.
#[tokio::test]
async fn evictions_by_the_bound_while_handling_are_counted() {
    let server = NatsServer::start();
    let yaml = format!(
        "version: 1\nstate:\n  max_entries: 10\n{}",
        SEED.split_once("version: 1\n").unwrap().1
    );
    let (connres, mut gw, metrics) = start_clocked(&server, &yaml, Clock::manual()).await;
    for i in 0..50 {
        gw.token(&format!("e{i}"), json!({"userId": i})).await;
    }
    // The barrier's own connection is one more record.
    gw.token_barrier().await;
    assert_eq!(metrics.expired_total(), 41, "51 records, 10 kept");
    connres.stop().await;
}
