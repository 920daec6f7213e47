//! The `connres` binary: `check` and `serve`.

mod common;

use std::path::PathBuf;

use common::process::*;
use common::*;
use serde_json::json;

/// `file:line:col: message` with a numeric line and column.
fn located<'a>(line: &'a str, file: &str) -> Option<(u32, u32, &'a str)> {
    let rest = line.strip_prefix(file)?.strip_prefix(':')?;
    let (l, rest) = rest.split_once(':')?;
    let (c, message) = rest.split_once(": ")?;
    Some((l.parse().ok()?, c.parse().ok()?, message))
}

const INVALID: &str = "version: 1
resources:
  session.x.{cid}:
    fields:
      a: { tpye: integer }
      b: { type: integer, default: 2.5 }
    access:
      get: cid ==
";

fn invalid_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resources.yaml");
    std::fs::write(&path, INVALID).unwrap();
    (dir, path)
}

#[tokio::test]
async fn check_accepts_the_project_file_and_prints_a_summary() {
    let file = project_file("resources.yaml");
    let out = Proc::spawn(connres().arg("check").arg(&file))
        .output()
        .await;
    let stdout = out.stdout.clone();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        out.stderr.clone()
    );
    assert_eq!(out.status.code(), Some(0));
    for needle in [
        "session.user.{cid}",
        "session.prefs.{cid}",
        "session.status.{cid}",
        "get.session.user.*",
        "call.session.prefs.*.*",
        "theme:string (writable)",
        "id:integer (from)",
        "resource(s); also conn.*.token, connres.set.>, connres.reset.>, connres.add.>, connres.remove.>",
        "state: idle_ttl 1day, max_entries 1000000, max_bytes 1073741824, store memory",
        ": ok",
    ] {
        assert!(
            stdout.contains(needle),
            "summary lacks {needle:?}:\n{stdout}"
        );
    }
}

#[tokio::test]
async fn check_reports_every_error_with_its_location_and_exits_1() {
    let (_dir, path) = invalid_file();
    let out = Proc::spawn(connres().arg("check").arg(&path))
        .output()
        .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = out.stderr.clone();
    let file = path.display().to_string();
    let errors: Vec<(u32, u32, &str)> = stderr.lines().filter_map(|l| located(l, &file)).collect();
    assert!(errors.len() >= 3, "located errors on stderr:\n{stderr}");
    let has = |line: u32, needle: &str| {
        errors
            .iter()
            .any(|(l, _, m)| *l == line && m.contains(needle))
    };
    assert!(
        has(5, "`tpye`") && has(5, "did you mean `type`"),
        "{stderr}"
    );
    assert!(has(6, "default 2.5 is not an integer"), "{stderr}");
    assert!(has(8, "access.get"), "{stderr}");
    // Nothing that looks like a location is malformed.
    for line in stderr.lines() {
        let after = line.strip_prefix(&format!("{file}:")).unwrap_or("");
        if after.starts_with(|c: char| c.is_ascii_digit()) {
            assert!(located(line, &file).is_some(), "malformed {line:?}");
        }
    }
    assert!(out.stdout.clone().is_empty());
}

#[tokio::test]
async fn check_of_a_missing_file_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.yaml");
    let out = Proc::spawn(connres().arg("check").arg(&path))
        .output()
        .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = out.stderr.clone();
    let file = path.display().to_string();
    assert!(
        stderr.lines().any(|l| located(l, &file).is_some()),
        "{stderr}"
    );
}

#[tokio::test]
async fn serve_refuses_an_invalid_config_without_starting() {
    let server = NatsServer::start();
    let mut gw = Gateway::connect(&server).await;
    let (_dir, path) = invalid_file();
    let out = Proc::spawn(
        connres()
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .arg("--nats")
            .arg(&server.url),
    )
    .output()
    .await;
    assert!(!out.status.success());
    let stderr = out.stderr.clone();
    let file = path.display().to_string();
    assert!(
        stderr.lines().any(|l| located(l, &file).is_some()),
        "{stderr}"
    );
    assert!(stderr.contains("not starting"), "{stderr}");
    // It never announced itself: a round trip to the server after its exit shows no
    // system message.
    gw.client.flush().await.unwrap();
    assert!(gw.pending_system().is_empty());
    assert!(nobody_serves_connres_subjects(&gw).await);
}

/// Nobody answers requests on connres's subjects.
async fn nobody_serves_connres_subjects(gw: &Gateway) -> bool {
    let r = tokio::time::timeout(
        WAIT,
        gw.client
            .request("get.session.user.c1", bytes::Bytes::new()),
    )
    .await
    .expect("answered or refused in time");
    matches!(r, Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders)
}

/// Runs `connres serve` on a copy of the project's resources.yaml, so that the reload
/// watcher watches a private directory.
fn serve_project_file(server: &NatsServer) -> (tempfile::TempDir, Proc) {
    let yaml = std::fs::read_to_string(project_file("resources.yaml")).unwrap();
    serve(&server.url, &yaml)
}

#[tokio::test]
async fn serve_announces_serves_and_exits_0_on_sigterm() {
    let server = NatsServer::start();
    let mut gw = Gateway::connect(&server).await;
    let (dir, proc) = serve_project_file(&server);
    let path = dir.path().join("resources.yaml");

    let (subject, reset) = gw.next_system().await;
    assert_eq!(subject, "system.reset");
    let config = connres::config::Config::load(&path).expect("the project file is valid");
    let mut declared: Vec<String> = config
        .resources
        .iter()
        .map(|r| r.pattern.wildcard())
        .collect();
    declared.sort_unstable();
    assert!(declared.contains(&"session.user.*".to_string()));
    for key in ["resources", "access"] {
        let mut patterns: Vec<String> = reset[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} in {reset}"))
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
        patterns.sort_unstable();
        assert_eq!(patterns, declared, "system.reset {key}");
    }

    assert_eq!(
        gw.get("session.user.c1").await,
        json!({"id": null, "name": null, "role": null, "user": null})
    );
    assert_eq!(
        gw.access("session.user.c1", "c1", json!(null)).await,
        json!({"result": {"get": true}})
    );
    let r = gw
        .request(
            "connres.set.session.status.c1",
            json!({"values": {"cartItems": 2}}),
        )
        .await;
    assert_eq!(r, json!({"result": null}));
    assert_eq!(
        gw.next_event().await,
        (
            "event.session.status.c1.change".to_string(),
            json!({"values": {"cartItems": 2}})
        )
    );

    proc.terminate();
    let out = proc.output().await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr:\n{}",
        out.stderr.clone()
    );
}

#[tokio::test]
async fn sigterm_while_nats_is_gone_still_exits_0() {
    let server = NatsServer::start();
    let mut gw = Gateway::connect(&server).await;
    let (_dir, proc) = serve_project_file(&server);
    assert_eq!(gw.next_system().await.0, "system.reset");
    drop(gw);
    drop(server);
    proc.terminate();
    // Bounded by the drain timeout, well inside the harness's failure guard.
    let out = proc.output().await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr:\n{}",
        out.stderr.clone()
    );
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let server = NatsServer::start();
    let mut gw = Gateway::connect(&server).await;
    let yaml = std::fs::read_to_string(project_file("resources.yaml")).unwrap();
    let (dir, mut proc) = serve_with(&server.url, &yaml, &["--log-format", "json"]);
    let path = dir.path().join("resources.yaml");
    assert_eq!(gw.next_system().await.0, "system.reset");
    proc.wait_for_log(r#""message":"connres is serving""#);
    // A reload error is logged as JSON too.
    std::fs::write(&path, "version: 1\nresources: [\n").unwrap();
    proc.wait_for_log("config reload rejected");
    proc.terminate();
    let out = proc.output().await;
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(lines.len() >= 3, "{}", out.stderr);
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(v[key].is_string(), "{key} in {line}");
        }
    }
    assert!(out.stderr.contains(r#""level":"ERROR""#), "{}", out.stderr);
}

#[tokio::test]
async fn text_logs_have_no_colour_codes_when_not_on_a_terminal() {
    let server = NatsServer::start();
    let mut gw = Gateway::connect(&server).await;
    let (_dir, mut proc) = serve_project_file(&server);
    assert_eq!(gw.next_system().await.0, "system.reset");
    proc.wait_for_log("connres is serving");
    proc.terminate();
    let out = proc.output().await;
    assert!(!out.stderr.contains('\u{1b}'), "{}", out.stderr);
}

#[tokio::test]
async fn without_nats_serve_says_where_why_and_how_without_secrets() {
    // Port 1 on loopback: nothing listens there.
    let url = "nats://connres:s3cret@127.0.0.1:1";
    for format in ["text", "json"] {
        let out = Proc::spawn(
            connres()
                .args(["serve", "--log-format", format, "--config"])
                .arg(project_file("resources.yaml"))
                .args(["--nats", url]),
        )
        .output()
        .await;
        assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
        let e = &out.stderr;
        assert!(e.contains("nats://127.0.0.1:1"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        assert_eq!(e.matches("Connection refused").count(), 1, "{e}");
        assert!(e.contains("--nats") && e.contains("NATS_URL"), "{e}");
    }
}

#[tokio::test]
async fn an_outage_is_reported_with_its_cause_and_without_client_noise() {
    let server = NatsServer::start();
    let mut gw = Gateway::connect(&server).await;
    let (_dir, mut proc) = serve_project_file(&server);
    assert_eq!(gw.next_system().await.0, "system.reset");
    drop(gw);
    drop(server);
    // The cause as the OS gave it (refused, or reset while the server went away).
    let line = proc.wait_for_log("cannot reach NATS; still trying");
    assert!(
        line.contains("last: IO error: ") && line.contains("os error"),
        "{line}"
    );
    proc.terminate();
    let out = proc.output().await;
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(!out.stderr.contains("client error"), "{}", out.stderr);
    assert_eq!(
        out.stderr.matches("cannot reach NATS").count(),
        1,
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn serve_exposes_metrics_and_health_on_the_given_address() {
    let server = NatsServer::start();
    let mut gw = Gateway::connect(&server).await;
    let yaml = std::fs::read_to_string(project_file("resources.yaml")).unwrap();
    let (_dir, mut proc) = serve_with(&server.url, &yaml, &["--metrics-addr", "127.0.0.1:0"]);
    assert_eq!(gw.next_system().await.0, "system.reset");
    let line = proc.wait_for_log("serving /metrics, /healthz and /readyz");
    let addr: std::net::SocketAddr = line
        .split("addr=")
        .nth(1)
        .and_then(|a| a.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("an address in {line:?}"));
    gw.get("session.user.c1").await;
    let body = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(
        body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"),
        "{body}"
    );
    assert!(
        body.contains(
            r#"connres_requests_total{kind="get",outcome="ok",resource="session.user.{cid}"} 1"#
        ),
        "{body}"
    );
    proc.terminate();
    assert_eq!(proc.output().await.status.code(), Some(0));
}

#[tokio::test]
async fn mapping_prints_the_block_for_a_shared_store_and_refuses_memory() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared.yaml");
    std::fs::write(&shared, shared_seed("cli")).unwrap();
    let out = Proc::spawn(connres().arg("mapping").arg("--config").arg(&shared))
        .output()
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let n = PARTITIONS;
    for line in [
        "mappings = {".to_string(),
        format!("\"get.session.user.*\": \"_CONNRES.cli.p.{{{{partition({n},1)}}}}.get.session.user.{{{{wildcard(1)}}}}\""),
        format!("\"access.session.prefs.*\": \"_CONNRES.cli.p.{{{{partition({n},1)}}}}.access.session.prefs.{{{{wildcard(1)}}}}\""),
    ] {
        assert!(out.stdout.contains(&line), "{line} not in\n{}", out.stdout);
    }
    // The memory store: nothing to map, and said so.
    let out = Proc::spawn(
        connres()
            .arg("mapping")
            .arg("--config")
            .arg(project_file("tests/config/valid/seed.yaml")),
    )
    .output()
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("`state.store` is memory"),
        "{}",
        out.stderr
    );
}
