//! The quick-start demo driver: plays Resgate (and an auth service, and a backend
//! service) against a running connres serving the shipped `resources.yaml`, prints every
//! request, reply and event, and checks each one. It exits non-zero as soon as anything
//! unexpected happens, so `scripts/demo.sh` doubles as a smoke test.
//!
//! ```text
//! cargo run --example demo -- nats://127.0.0.1:4222     # or NATS_URL=...
//! ```

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use async_nats::{Client, Subscriber};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use serde_json::{json, Value};

/// How long an expected reply or event may take before the demo calls it a failure.
const WAIT: Duration = Duration::from_secs(5);
/// How long to keep retrying the first request while connres comes up.
const READY: Duration = Duration::from_secs(20);

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => {
            println!("\ndemo OK: every reply and event was as expected");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\ndemo FAILED: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("NATS_URL").ok())
        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_string());
    let client = async_nats::ConnectOptions::new()
        .name("connres-demo")
        .request_timeout(Some(WAIT))
        .connect(&url)
        .await
        .with_context(|| format!("cannot connect to NATS at {url}"))?;
    // Like Resgate: listen to every event before asking anything.
    let events = client.subscribe("event.>").await?;
    client.flush().await?;
    let mut gw = Gateway {
        client,
        events,
        early: Vec::new(),
    };

    // A made-up connection ID, as Resgate would generate one per WebSocket.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let cid = format!("demo{:08x}", nanos ^ std::process::id());
    let user = format!("session.user.{cid}");
    let prefs = format!("session.prefs.{cid}");
    let status = format!("session.status.{cid}");
    let ann = json!({"userId": 42, "name": "Ann", "role": "admin"});
    println!("connres demo on {url}, playing Resgate for connection `{cid}`");

    step("1. A client opens the connection and asks for session.user.{cid}: access first (no token yet)");
    let reply = gw.access_until_ready(&user, &cid).await?;
    expect_eq(&reply, &json!({"result": {"get": true}}), "access reply")?;

    step("   ... then get: nobody is logged in, so every field is null");
    let model = gw.get(&user).await?;
    expect_eq(
        &model,
        &json!({"id": null, "name": null, "role": null, "user": null}),
        "logged-out user model",
    )?;

    step("2. The client also subscribes session.prefs.{cid} and session.status.{cid}");
    let reply = gw.access(&prefs, &cid, None).await?;
    // `set` needs a token, so only `reset` is callable while logged out.
    expect_eq(
        &reply,
        &json!({"result": {"get": true, "call": "reset"}}),
        "prefs access without a token",
    )?;
    let model = gw.get(&prefs).await?;
    expect_eq(
        &model,
        &json!({"theme": "light", "fontSize": 14}),
        "default prefs",
    )?;
    gw.access(&status, &cid, None).await?;
    let model = gw.get(&status).await?;
    expect_eq(
        &model,
        &json!({"cartItems": 0, "notice": null}),
        "default status",
    )?;

    step("3. Login: an auth service publishes conn.{cid}.token");
    gw.token(&cid, &ann).await?;
    gw.expect_events(vec![
        (
            format!("event.{user}.change"),
            Some(json!({"values": {
                "id": 42, "name": "Ann", "role": "admin", "user": {"rid": "users.user.42"}
            }})),
        ),
        // prefs' call rule reads `token`: the access Resgate cached while logged out is void.
        (format!("event.{prefs}.reaccess"), None),
    ])
    .await?;
    let model = gw.get(&user).await?;
    expect_eq(
        &model,
        &json!({"id": 42, "name": "Ann", "role": "admin", "user": {"rid": "users.user.42"}}),
        "logged-in user model",
    )?;
    step(
        "   ... Resgate re-asks access on session.prefs.{cid} with the token: now `set` is granted",
    );
    let reply = gw.access(&prefs, &cid, Some(&ann)).await?;
    expect_eq(
        &reply,
        &json!({"result": {"get": true, "call": "set,reset"}}),
        "prefs access with a token",
    )?;

    step("4. A claim changes: the auth service publishes a new token with name `Ann Lee`");
    let ann = json!({"userId": 42, "name": "Ann Lee", "role": "admin"});
    gw.token(&cid, &ann).await?;
    gw.expect_events(vec![(
        format!("event.{user}.change"),
        Some(json!({"values": {"name": "Ann Lee"}})),
    )])
    .await?;
    let model = gw.get(&user).await?;
    expect_eq(&model["name"], &json!("Ann Lee"), "renamed user")?;

    step("5. The client sets its theme: call.session.prefs.{cid}.set {\"theme\":\"dark\"}");
    let reply = gw
        .call(&prefs, "set", &cid, &ann, json!({"theme": "dark"}))
        .await?;
    gw.expect_events_before_reply(vec![(
        format!("event.{prefs}.change"),
        Some(json!({"values": {"theme": "dark"}})),
    )])?;
    expect_eq(&reply, &json!({"result": null}), "set reply")?;
    step("   ... a value out of its enum is refused, with no event");
    let reply = gw
        .call(&prefs, "set", &cid, &ann, json!({"theme": "purple"}))
        .await?;
    expect_eq(
        &reply["error"]["code"],
        &json!("system.invalidParams"),
        "invalid set",
    )?;
    gw.expect_events_before_reply(vec![])?;

    step("6. A backend service sets session.status.{cid}: connres.set.session.status.{cid}");
    let reply = gw
        .request(
            &format!("connres.set.{status}"),
            json!({"values": {"cartItems": 3}}),
        )
        .await?;
    gw.expect_events_before_reply(vec![(
        format!("event.{status}.change"),
        Some(json!({"values": {"cartItems": 3}})),
    )])?;
    expect_eq(&reply, &json!({"result": null}), "service set reply")?;

    step("7. Logout: the auth service publishes a null token");
    gw.token(&cid, &Value::Null).await?;
    gw.expect_events(vec![
        (
            format!("event.{user}.change"),
            Some(json!({"values": {"id": null, "name": null, "role": null, "user": null}})),
        ),
        // session.status resets on logout (the default); session.prefs keeps its theme.
        (
            format!("event.{status}.change"),
            Some(json!({"values": {"cartItems": 0}})),
        ),
    ])
    .await?;
    let model = gw.get(&user).await?;
    expect_eq(
        &model,
        &json!({"id": null, "name": null, "role": null, "user": null}),
        "user model after logout",
    )?;
    let model = gw.get(&prefs).await?;
    expect_eq(
        &model,
        &json!({"theme": "dark", "fontSize": 14}),
        "prefs kept across logout (reset.on_logout: false)",
    )?;
    // Nothing else may have been published.
    gw.expect_quiet()
}

fn step(text: &str) {
    println!("\n{text}");
}

fn expect_eq(got: &Value, want: &Value, what: &str) -> anyhow::Result<()> {
    if got != want {
        bail!("{what}: expected {want}, got {got}");
    }
    Ok(())
}

/// The demo's side of the wire: one NATS connection that sends requests like Resgate
/// and receives every event.
struct Gateway {
    client: Client,
    events: Subscriber,
    /// Events delivered before the last reply, not yet checked.
    early: Vec<(String, Value)>,
}

impl Gateway {
    /// Sends a request and returns its reply. Events that arrived before the reply (connres
    /// publishes a change's event before the reply to the request that caused it) are
    /// printed first, in arrival order, and kept for [`Gateway::expect_events_before_reply`].
    async fn request(&mut self, subject: &str, payload: Value) -> anyhow::Result<Value> {
        if let Some((s, v)) = self.early.first() {
            bail!("unexpected event {s} {v}");
        }
        let body = if payload.is_null() {
            Bytes::new()
        } else {
            Bytes::from(payload.to_string())
        };
        if body.is_empty() {
            println!("  -> {subject}");
        } else {
            println!("  -> {subject}\n     {payload}");
        }
        let reply = self
            .client
            .request(subject.to_string(), body)
            .await
            .with_context(|| format!("no reply to {subject}"))?;
        let value: Value = serde_json::from_slice(&reply.payload)
            .with_context(|| format!("the reply to {subject} is not JSON"))?;
        // Already delivered: the client routes messages in the order the server sent them.
        while let Some(Some(msg)) =
            tokio::task::coop::unconstrained(self.events.next()).now_or_never()
        {
            let event = parse_event(&msg.subject, &msg.payload)?;
            print_event(&event.0, &event.1);
            self.early.push(event);
        }
        println!("  <- reply {value}");
        Ok(value)
    }

    /// The first request: connres may still be starting, so retry until it answers.
    async fn access_until_ready(&mut self, rid: &str, cid: &str) -> anyhow::Result<Value> {
        let subject = format!("access.{rid}");
        let body = Bytes::from(json!({"cid": cid, "isHttp": false}).to_string());
        let started = Instant::now();
        loop {
            let attempt = tokio::time::timeout(
                Duration::from_millis(250),
                self.client.request(subject.clone(), body.clone()),
            )
            .await;
            match attempt {
                Ok(Ok(_)) => break,
                // No responders yet, or no answer in time: connres is not up yet.
                Ok(Err(_)) | Err(_) if started.elapsed() < READY => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Ok(Err(e)) => bail!("connres never answered {subject}: {e}"),
                Err(_) => bail!("connres never answered {subject} within {READY:?}"),
            }
        }
        // connres is up: now the real, printed request (access is idempotent).
        self.access(rid, cid, None).await
    }

    async fn access(
        &mut self,
        rid: &str,
        cid: &str,
        token: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut payload = json!({"cid": cid, "isHttp": false});
        if let Some(t) = token {
            payload["token"] = t.clone();
        }
        self.request(&format!("access.{rid}"), payload).await
    }

    async fn get(&mut self, rid: &str) -> anyhow::Result<Value> {
        let reply = self.request(&format!("get.{rid}"), Value::Null).await?;
        let model = reply["result"]["model"].clone();
        if !model.is_object() {
            bail!("get.{rid}: expected a model, got {reply}");
        }
        Ok(model)
    }

    async fn call(
        &mut self,
        rid: &str,
        method: &str,
        cid: &str,
        token: &Value,
        params: Value,
    ) -> anyhow::Result<Value> {
        let payload = json!({"cid": cid, "token": token, "params": params, "isHttp": false});
        self.request(&format!("call.{rid}.{method}"), payload).await
    }

    /// Publishes `conn.<cid>.token`, as an auth service does (null logs out).
    async fn token(&self, cid: &str, token: &Value) -> anyhow::Result<()> {
        let subject = format!("conn.{cid}.token");
        let body = json!({ "token": token });
        println!("  -> publish {subject}\n     {body}");
        self.client
            .publish(subject, Bytes::from(body.to_string()))
            .await?;
        self.client.flush().await?;
        Ok(())
    }

    /// Waits for exactly these events (subject, and payload when given; in any order
    /// among themselves) and fails on any other event or when one is late.
    async fn expect_events(
        &mut self,
        mut want: Vec<(String, Option<Value>)>,
    ) -> anyhow::Result<()> {
        for (subject, value) in std::mem::take(&mut self.early) {
            take_expected(&mut want, &subject, &value)?;
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        while !want.is_empty() {
            let msg = tokio::time::timeout_at(deadline, self.events.next())
                .await
                .map_err(|_| {
                    let missing: Vec<&str> = want.iter().map(|(s, _)| s.as_str()).collect();
                    anyhow!("expected events did not arrive within {WAIT:?}: {missing:?}")
                })?
                .ok_or_else(|| anyhow!("the event subscription closed"))?;
            let (subject, value) = parse_event(&msg.subject, &msg.payload)?;
            print_event(&subject, &value);
            take_expected(&mut want, &subject, &value)?;
        }
        Ok(())
    }

    /// Checks that exactly these events arrived before the last reply.
    fn expect_events_before_reply(
        &mut self,
        mut want: Vec<(String, Option<Value>)>,
    ) -> anyhow::Result<()> {
        for (subject, value) in std::mem::take(&mut self.early) {
            take_expected(&mut want, &subject, &value)?;
        }
        if !want.is_empty() {
            let missing: Vec<&str> = want.iter().map(|(s, _)| s.as_str()).collect();
            bail!("events missing before the reply: {missing:?}");
        }
        Ok(())
    }

    /// At the end: nothing else arrived before the last reply, which connres sent after
    /// every event of the earlier steps.
    fn expect_quiet(&mut self) -> anyhow::Result<()> {
        self.expect_events_before_reply(vec![])
    }
}

fn parse_event(subject: &str, payload: &[u8]) -> anyhow::Result<(String, Value)> {
    let value = if payload.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(payload)
            .with_context(|| format!("event {subject}: payload is not JSON"))?
    };
    Ok((subject.to_string(), value))
}

fn print_event(subject: &str, value: &Value) {
    if value.is_null() {
        println!("  <- event {subject}");
    } else {
        println!("  <- event {subject} {value}");
    }
}

/// Removes the expectation this event meets, or fails: an event with no payload meets an
/// expectation without one.
fn take_expected(
    want: &mut Vec<(String, Option<Value>)>,
    subject: &str,
    value: &Value,
) -> anyhow::Result<()> {
    let pos = want.iter().position(|(s, p)| {
        s == subject
            && match p {
                Some(p) => p == value,
                None => value.is_null(),
            }
    });
    match pos {
        Some(i) => {
            want.remove(i);
            Ok(())
        }
        None => bail!("unexpected event {subject} {value}"),
    }
}
