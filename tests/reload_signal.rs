//! SIGHUP forces a reload of the running binary, even when no file event was seen.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;
use serde_json::json;

#[tokio::test]
async fn sighup_reloads_the_binary() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resources.yaml");
    std::fs::write(&path, "version: 1\nresources:\n  a.{cid}:\n    fields:\n      x: { type: integer, default: 1 }\n    access:\n      get: 'true'\n").unwrap();
    let mut gw = Gateway::connect(&server).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_connres"))
        .args([
            "serve",
            "--config",
            path.to_str().unwrap(),
            "--nats",
            &server.url,
        ])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (_, reset) = gw.next_system().await;
    assert_eq!(reset, json!({"resources": ["a.*"], "access": ["a.*"]}));

    // SIGHUP reloads whatever the file holds, even unchanged.
    let pid = child.id().to_string();
    let stderr = child.stderr.take().unwrap();
    let (seen, reloaded) = tokio::sync::oneshot::channel();
    let reader = tokio::task::spawn_blocking(move || {
        let mut seen = Some(seen);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("config reloaded") {
                if let Some(s) = seen.take() {
                    let _ = s.send(());
                }
            }
        }
    });
    let status = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(status.success());
    tokio::time::timeout(WAIT, reloaded)
        .await
        .expect("SIGHUP leads to a reload")
        .unwrap();
    // A forced reload of an unchanged file changes nothing: no reset, same model.
    assert_eq!(gw.get("a.c1").await, json!({"x": 1}));
    assert!(gw.pending_system().is_empty());
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let exit = child.wait().unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    reader.await.unwrap();
}
