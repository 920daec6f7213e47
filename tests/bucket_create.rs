//! Starting on the shared store against one `nats-server -js`, as docs/scaling.md tells
//! a newcomer to: its getting-started example serves as written, and a bucket asking
//! for more copies than the server can keep stops connres with the real cause.

mod common;

use common::process::{project_file, serve};
use common::NatsServer;

/// The first ```` ```yaml ```` block of docs/scaling.md: the getting-started example.
fn scaling_example() -> String {
    let doc = std::fs::read_to_string(project_file("docs/scaling.md")).unwrap();
    let start = doc
        .find("```yaml\n")
        .expect("docs/scaling.md shows a config")
        + 8;
    let len = doc[start..].find("```").expect("the block ends");
    doc[start..start + len].to_string()
}

#[tokio::test]
async fn the_getting_started_example_serves_on_a_single_jetstream_server() {
    let server = NatsServer::start_jetstream();
    let example = scaling_example();
    assert!(example.contains("store: nats"), "{example}");
    let (_dir, mut proc) = serve(&server.url, &example);
    proc.wait_for_log("connres is serving");
    proc.terminate();
    let out = proc.output().await;
    assert!(out.status.success(), "{}", out.stderr);
}

#[tokio::test]
async fn replicas_a_single_server_cannot_keep_are_named_as_the_cause() {
    let server = NatsServer::start_jetstream();
    let example = scaling_example();
    let line = example
        .lines()
        .find(|l| l.trim_start().starts_with("replicas:"))
        .expect("the example sets state.replicas");
    let yaml = example.replace(line, "  replicas: 3");
    let (_dir, proc) = serve(&server.url, &yaml);
    let out = proc.output().await;
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let said = out.stderr;
    for expected in [
        "key-value bucket `connres`: cannot create it",
        "replicas > 1 not supported in non-clustered mode",
        "`state.replicas` is 3, but this nats-server is not in a JetStream cluster",
        "JetStream storage directory (`-sd`",
        "Set `state.replicas: 1`",
    ] {
        assert!(said.contains(expected), "no {expected:?} in:\n{said}");
    }
    assert!(!said.contains("may this user use it"), "{said}");
}

#[tokio::test]
async fn a_server_without_jetstream_is_named_as_the_cause() {
    let server = NatsServer::start();
    let (_dir, proc) = serve(&server.url, &scaling_example());
    let out = proc.output().await;
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("is JetStream enabled on the server (`nats-server -js`)"),
        "{}",
        out.stderr
    );
}
