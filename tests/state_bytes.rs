//! Bytes of state through NATS: `state.max_value_bytes` refuses a value too large to
//! keep, from clients and the backend alike; `state.max_bytes` bounds the memory of the
//! `connres` binary when tokens of a megabyte arrive back to back.

mod common;

use bytes::Bytes;
use common::process::*;
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

/// Profiles (a free-text field clients write), a per-connection list, and the seed's
/// user model (its values follow the token).
const PROFILES: &str = r#"version: 1
resources:
  session.user.{cid}:
    fields:
      id: { type: integer, from: "{{token.userId}}" }
    access:
      get: cid == params.cid
  session.profile.{cid}:
    fields:
      bio: { type: string, writable: true }
    access:
      get: cid == params.cid
      call: cid == params.cid
  session.recent.{cid}:
    collection:
      item: { type: string }
      writable: true
    access:
      get: cid == params.cid
      call: cid == params.cid
"#;

/// A JSON string of exactly `len` bytes of JSON (its quotes counted).
fn text(len: usize) -> Value {
    json!("x".repeat(len - 2))
}

#[tokio::test]
async fn a_value_over_max_value_bytes_is_refused_from_clients_and_the_backend_and_nothing_is_stored(
) {
    let server = NatsServer::start();
    let yaml = format!("state: {{ max_value_bytes: 1000 }}\n{PROFILES}");
    let (_connres, mut gw) = start(&server, &yaml).await;
    let profile = "session.profile.c1";
    let recent = "session.recent.c1";

    // The client's set and the backend's set of a field.
    let r = gw
        .call(
            profile,
            "set",
            "c1",
            Value::Null,
            json!({"bio": text(1001)}),
        )
        .await;
    assert_eq!(
        Gateway::expect_error(&r, "system.invalidParams"),
        "the value of `bio` is 1001 bytes of JSON, over state.max_value_bytes (1000)"
    );
    let r = gw
        .request(
            &format!("connres.set.{profile}"),
            json!({"values": {"bio": text(70_000)}}),
        )
        .await;
    assert_eq!(
        Gateway::expect_error(&r, "system.invalidParams"),
        "the value of `bio` is 70000 bytes of JSON, over state.max_value_bytes (1000)"
    );
    // The client's add and the backend's add of an item.
    let r = gw
        .call(
            recent,
            "add",
            "c1",
            Value::Null,
            json!({"value": text(1001)}),
        )
        .await;
    assert_eq!(
        Gateway::expect_error(&r, "system.invalidParams"),
        "the item is 1001 bytes of JSON, over state.max_value_bytes (1000)"
    );
    let r = gw
        .request(
            &format!("connres.add.{recent}"),
            json!({"value": text(5000)}),
        )
        .await;
    assert_eq!(
        Gateway::expect_error(&r, "system.invalidParams"),
        "the item is 5000 bytes of JSON, over state.max_value_bytes (1000)"
    );

    // Nothing stored, nothing announced.
    assert_eq!(gw.get(profile).await, json!({"bio": null}));
    let items = gw.request(&format!("get.{recent}"), Value::Null).await;
    assert_eq!(items["result"]["collection"], json!([]));
    assert_eq!(gw.pending_events(), Vec::new());

    // At the limit, both are kept and announced.
    let r = gw
        .call(
            profile,
            "set",
            "c1",
            Value::Null,
            json!({"bio": text(1000)}),
        )
        .await;
    assert_eq!(r, json!({"result": null}));
    let r = gw
        .request(
            &format!("connres.add.{recent}"),
            json!({"value": text(1000)}),
        )
        .await;
    assert_eq!(r, json!({"result": null}));
    let subjects: Vec<String> = gw.pending_events().into_iter().map(|(s, _)| s).collect();
    assert_eq!(
        subjects,
        [
            format!("event.{profile}.change"),
            format!("event.{recent}.add")
        ]
    );
    assert_eq!(gw.get(profile).await, json!({"bio": text(1000)}));
}

/// A process's resident and peak resident bytes (`/proc/<pid>/status`).
fn rss_of(pid: u32) -> (usize, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("Linux /proc");
    let kb = |key: &str| -> usize {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{key} in /proc/{pid}/status"))
    };
    (kb("VmRSS") * 1024, kb("VmHWM") * 1024)
}

/// The text `/metrics` serves at `addr`.
async fn metrics(addr: std::net::SocketAddr) -> String {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap()
}

/// A gauge's or counter's value in the metrics text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in\n{text}"))
}

/// How far the binary's RSS may grow past `max_bytes` once the burst is handled: the
/// heap's small blocks and the NATS client's buffers (measured: about 1 MB;
/// docs/performance.md).
const SLACK: usize = 8 << 20;

#[tokio::test]
async fn tokens_of_a_megabyte_back_to_back_stay_within_max_bytes() {
    const MAX_BYTES: usize = 32 << 20;
    const TOKENS: usize = 200;
    // The burst waits in the server while connres works through it (a debug build
    // takes tens of milliseconds per megabyte token event): under the server's default
    // `max_pending` (64 MB for a connection) connres lost its connection mid-burst.
    let conf = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(conf.path(), "max_pending: 536870912\n").unwrap();
    let server = NatsServer::start_with_config(conf.path());
    let mut gw = Gateway::connect(&server).await;
    let yaml = format!(
        "state:\n  max_token_bytes: 1048576\n  max_bytes: {MAX_BYTES}\n{}",
        PROFILES.trim_start_matches("version: 1\n")
    );
    let yaml = format!("version: 1\n{yaml}");
    let (_dir, mut proc) = serve_with(&server.url, &yaml, &["--metrics-addr", "127.0.0.1:0"]);
    assert_eq!(gw.next_system().await.0, "system.reset");
    let line = proc.wait_for_log("serving /metrics, /healthz and /readyz");
    let addr: std::net::SocketAddr = line
        .split("addr=")
        .nth(1)
        .and_then(|a| a.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("an address in {line:?}"));
    let pid = proc.pid();
    let (before, _) = rss_of(pid);

    // 200 token events of a megabyte each (one claim), for distinct connections, sent
    // back to back as requests: connres answers each once it is applied.
    let claim = "x".repeat(1_000_000);
    let inbox = gw.client.new_inbox();
    let mut replies = gw.client.subscribe(format!("{inbox}.>")).await.unwrap();
    for i in 0..TOKENS {
        let body = json!({"token": {"userId": i, "blob": claim}}).to_string();
        gw.client
            .publish_with_reply(
                format!("conn.big{i}.token"),
                format!("{inbox}.{i}"),
                Bytes::from(body),
            )
            .await
            .unwrap();
    }
    gw.client.flush().await.unwrap();
    for _ in 0..TOKENS {
        let reply = tokio::time::timeout(WAIT * 6, replies.next())
            .await
            .expect("every token event is answered")
            .unwrap();
        assert_eq!(
            parse_or_null(&reply.payload),
            json!({"result": null}),
            "{} {:?}",
            reply.subject,
            reply.status
        );
    }
    let (after, peak) = rss_of(pid);
    let text = metrics(addr).await;
    let held = metric(&text, "connres_state_bytes") as usize;
    let expired = metric(&text, "connres_expired_total") as usize;
    println!(
        "{TOKENS} tokens of 1 MB, max_bytes {MAX_BYTES}: RSS {before} -> {after} bytes \
         (growth {}, peak {peak}); state {held} bytes; {expired} connections dropped",
        after - before
    );
    assert!(held <= MAX_BYTES, "{held} bytes held");
    assert!(
        expired >= TOKENS - MAX_BYTES / 1_000_000,
        "{expired} dropped"
    );
    assert!(
        after - before <= MAX_BYTES + SLACK,
        "RSS grew by {} bytes, over max_bytes {MAX_BYTES} and {SLACK} of slack",
        after - before
    );

    // The first connections were dropped: logged out as far as connres knows; the
    // last ones are kept.
    assert_eq!(gw.get("session.user.big0").await, json!({"id": null}));
    assert_eq!(gw.get("session.user.big1").await, json!({"id": null}));
    for i in TOKENS - 5..TOKENS {
        assert_eq!(
            gw.get(&format!("session.user.big{i}")).await,
            json!({ "id": i })
        );
    }
    proc.terminate();
    assert_eq!(proc.output().await.status.code(), Some(0));
}

#[tokio::test]
async fn a_lower_max_bytes_after_a_reload_drops_the_coldest_at_the_next_message() {
    let server = NatsServer::start();
    let dir = ConfigDir::new(PROFILES);
    let (connres, gw, mut reports) = start_watched(&server, &dir.path()).await;
    let stats = last_shared_metrics();
    // Six connections with a 10 KB claim each; the get after them is handled after
    // them (one publisher's order).
    for i in 0..6 {
        let token = json!({"userId": i, "blob": "x".repeat(10_000)});
        gw.token(&format!("r{i}"), token).await;
    }
    assert_eq!(gw.get("session.user.r5").await, json!({"id": 5}));
    let unit = stats.state_bytes() / 6;
    assert!(unit > 10_000, "{unit} bytes a connection");
    assert_eq!(stats.expired_total(), 0);

    // Room for two and a half.
    let max = 2 * unit + unit / 2;
    let lower = PROFILES.replacen(
        "version: 1\n",
        &format!("version: 1\nstate:\n  max_bytes: {max}\n"),
        1,
    );
    write_in_place(&dir.path(), &lower);
    match next_reload(&mut reports).await {
        connres::reload::ReloadReport::Applied { .. } => {}
        other => panic!("expected an applied reload, got {other:?}"),
    }
    // The next message (or the sweep before it) leaves the two most recently touched.
    assert_eq!(gw.get("session.user.r5").await, json!({"id": 5}));
    assert!(
        stats.state_bytes() <= max,
        "{} > {max}",
        stats.state_bytes()
    );
    assert_eq!(stats.expired_total(), 4);
    assert_eq!(gw.get("session.user.r4").await, json!({"id": 4}));
    assert_eq!(gw.get("session.user.r0").await, json!({"id": null}));
    connres.stop().await;
}
