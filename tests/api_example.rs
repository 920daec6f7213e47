//! `examples/api.rs`, the backend write API from the command line, against a real
//! nats-server and connres. The example's file is compiled into this test (`#[path]`)
//! and its `run` called with the arguments a person would type: what `cargo run
//! --example api` runs is exactly this code, output and exit code included, with no
//! cargo or example binary needed at test time (a test run may build no examples:
//! `cargo test --test api_example`).

mod common;

#[path = "../examples/api.rs"]
#[allow(dead_code)]
mod api;

use common::process::project_file;
use common::*;
use serde_json::{json, Value};

/// What one run of the example gave.
struct Run {
    code: u8,
    stdout: String,
    stderr: String,
}

async fn api(args: &[&str]) -> Run {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    // No `$NATS_URL`: every run names its server.
    let code = api::run(&args, None, &mut out, &mut err).await;
    Run {
        code,
        stdout: String::from_utf8(out).unwrap(),
        stderr: String::from_utf8(err).unwrap(),
    }
}

fn shipped() -> String {
    std::fs::read_to_string(project_file("resources.yaml")).unwrap()
}

#[tokio::test]
async fn set_and_reset_change_the_model_and_print_the_reply() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, &shipped()).await;
    let rid = "session.status.c1";

    let r = api(&["--nats", &server.url, "set", rid, r#"{"cartItems":3}"#]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "{\"result\":null}\n");
    assert_eq!(r.stderr, "");
    assert_eq!(
        gw.next_event().await,
        (
            format!("event.{rid}.change"),
            json!({"values": {"cartItems": 3}})
        )
    );
    assert_eq!(gw.get(rid).await, json!({"cartItems": 3, "notice": null}));

    let r = api(&["--nats", &server.url, "reset", rid]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "{\"result\":null}\n");
    assert_eq!(
        gw.next_event().await,
        (
            format!("event.{rid}.change"),
            json!({"values": {"cartItems": 0}})
        )
    );
    assert_eq!(gw.get(rid).await, json!({"cartItems": 0, "notice": null}));
    connres.stop().await;
}

#[tokio::test]
async fn an_error_reply_is_printed_and_exits_1() {
    let server = NatsServer::start();
    let (connres, gw) = start(&server, &shipped()).await;
    let url = server.url.as_str();

    let r = api(&[
        "--nats",
        url,
        "set",
        "session.status.c1",
        r#"{"cartItems":-1}"#,
    ])
    .await;
    assert_eq!(r.code, 1);
    let reply: Value = serde_json::from_str(&r.stdout).expect("the reply, as sent");
    assert_eq!(reply["error"]["code"], "system.invalidParams");
    assert_eq!(
        r.stderr,
        "api: connres refused the set of session.status.c1: system.invalidParams: field `cartItems`: -1 is below min 0\n"
    );

    // Derived fields follow the token; names no pattern matches are not found.
    let r = api(&["--nats", url, "set", "session.user.c1", r#"{"name":"x"}"#]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("is derived"), "{}", r.stderr);
    let r = api(&["--nats", url, "reset", "nothing.here"]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("system.notFound"), "{}", r.stderr);

    // Nothing was written.
    assert_eq!(
        gw.get("session.status.c1").await,
        json!({"cartItems": 0, "notice": null})
    );
    connres.stop().await;
}

#[tokio::test]
async fn the_prefix_is_the_configs_api_prefix() {
    let server = NatsServer::start();
    let yaml = shipped().replacen(
        "version: 1\n",
        "version: 1\napi:\n  prefix: internal.connres\n",
        1,
    );
    let (connres, gw) = start(&server, &yaml).await;
    let url = server.url.as_str();
    let rid = "session.status.c1";

    let r = api(&[
        "--nats",
        url,
        "--prefix",
        "internal.connres",
        "set",
        rid,
        r#"{"notice":"shipped"}"#,
    ])
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(gw.get(rid).await["notice"], "shipped");

    // The default prefix has no responder here: no reply, exit 2, and why.
    let r = api(&["--nats", url, "reset", rid]).await;
    assert_eq!(r.code, 2);
    assert_eq!(r.stdout, "");
    assert!(
        r.stderr
            .contains("nobody answers on connres.reset.session.status.c1"),
        "{}",
        r.stderr
    );
    connres.stop().await;
}

#[tokio::test]
async fn credentials_in_the_url_are_used_and_never_printed() {
    // The least-privilege users of deploy/nats-server.conf: the backend may use the API,
    // the gateway's user may not.
    let conf = project_file("deploy/nats-server.conf");
    let server = NatsServer::start_with_config(&conf);
    let resgate = Gateway::connect_as(&server, "resgate", "change-me-resgate").await;
    let connres_url = server.url_as("connres", "change-me-connres");
    let (connres, gw) = start_as(&connres_url, resgate, &shipped()).await;
    let rid = "session.status.c1";

    let backend = server.url_as("backend", "change-me-backend");
    let r = api(&["--nats", &backend, "set", rid, r#"{"cartItems":2}"#]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(gw.get(rid).await["cartItems"], 2);

    // Refused by the server's permissions: said at once, not after a timeout.
    let gateway = server.url_as("resgate", "change-me-resgate");
    let started = std::time::Instant::now();
    let r = api(&["--nats", &gateway, "reset", rid]).await;
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("Permissions Violation"), "{}", r.stderr);
    assert!(started.elapsed() < std::time::Duration::from_secs(4));

    // A wrong password: the connection fails, and the password is not shown.
    let wrong = server.url_as("backend", "s3cret-but-wrong");
    let r = api(&["--nats", &wrong, "reset", rid]).await;
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("authorization violation"), "{}", r.stderr);
    assert!(!r.stderr.contains("s3cret"), "{}", r.stderr);
    assert_eq!(gw.get(rid).await["cartItems"], 2);
    connres.stop().await;
}

#[tokio::test]
async fn a_token_in_the_url_is_sent_percent_decoded() {
    let server = NatsServer::start_with_args(&["--auth", "to/ken"]);
    let gateway = Gateway::connect_with_token(&server, "to/ken").await;
    let connres_url = format!("nats://to%2Fken@127.0.0.1:{}", server.port);
    let (connres, gw) = start_as(&connres_url, gateway, &shipped()).await;
    let r = api(&[
        "--nats",
        &connres_url,
        "set",
        "session.status.c1",
        r#"{"cartItems":5}"#,
    ])
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(gw.get("session.status.c1").await["cartItems"], 5);
    connres.stop().await;
}

#[tokio::test]
async fn usage_errors_send_nothing_and_exit_2() {
    // No server at all: each is refused before connecting.
    let url = "nats://127.0.0.1:1";
    for (args, needle) in [
        (
            vec!["set", "session.status.c1"],
            "set needs a resource name and its values",
        ),
        (
            vec!["set", "session.status.c1", "cartItems: 3"],
            "the values are not JSON",
        ),
        (
            vec!["set", "session.status.c1", "[1]"],
            "must be a JSON object",
        ),
        (
            vec!["reset", "session.status.c1", "cartItems"],
            "reset takes only a resource name",
        ),
        (
            vec!["delete", "session.status.c1"],
            "unknown command \"delete\"",
        ),
        (vec![], "say set or reset"),
        (vec!["--colour", "reset", "x"], "unknown option --colour"),
    ] {
        let mut all = vec!["--nats", url];
        all.extend(args);
        let r = api(&all).await;
        assert_eq!(r.code, 2, "{all:?}");
        assert!(r.stderr.contains(needle), "{all:?}: {}", r.stderr);
        assert!(r.stderr.contains("usage: api"), "{}", r.stderr);
    }
    let r = api(&["--help"]).await;
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("--prefix PREFIX"), "{}", r.stdout);

    // A server that is not there: exit 2, saying where.
    let r = api(&["--nats", url, "reset", "session.status.c1"]).await;
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .starts_with("api: cannot connect to NATS at nats://127.0.0.1:1"),
        "{}",
        r.stderr
    );
}
