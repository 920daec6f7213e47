//! A small auth service for the web example (`examples/web/`): a RES service that logs a
//! connection in and out by setting its token, which connres turns into the live
//! `session.user.{cid}` model.
//!
//! ```text
//! cargo run --example auth -- --nats nats://127.0.0.1:4222     # or NATS_URL=...
//! ```
//!
//! It answers two auth requests, which Resgate sends when a client calls
//! `client.authenticate('session', 'login', {name, password})` (ResClient):
//!
//! - `auth.session.login` with params `{"name": ..., "password": ...}`: checks them
//!   against the demo table below, publishes `conn.<cid>.token` with
//!   `{"token": {"userId", "name", "role"}}` and then replies `{"result": null}`. A wrong
//!   name or password is the error `auth.invalidCredentials`; missing or mistyped params
//!   are `system.invalidParams`. A failed login leaves the token as it was.
//! - `auth.session.logout`: publishes `conn.<cid>.token` with `{"token": null}`, then
//!   replies `{"result": null}`.
//!
//! The token event is published before the reply, as the RES service protocol requires,
//! and as a request: connres answers it once it has published the events the token
//! causes, and only then does this service answer the login. So by the time the
//! client's `authenticate` resolves, Resgate has the new token, the model's change event
//! and the reaccess event that lets it grant what needs a token (`set` on
//! `session.prefs.{cid}`).
//!
//! It also serves `users.user.<id>`, the public profile the `user` field of
//! `session.user.{cid}` refers to (`{"rid": "users.user.42"}`): without a service for it,
//! Resgate would answer that reference with an error.
//!
//! Demo only: a real service checks a password hash (argon2, bcrypt) from its user store,
//! rate-limits attempts, and puts whatever its access rules need in the token.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::{Client, Message};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};

/// How long to wait for connres to acknowledge a token event.
const TOKEN_ACK_WAIT: Duration = Duration::from_secs(2);

/// The auth resource: clients call `authenticate('session', 'login', ...)`.
const AUTH_RESOURCE: &str = "session";

/// One demo account.
struct Account {
    name: &'static str,
    password: &'static str,
    user_id: u64,
    display_name: &'static str,
    role: &'static str,
}

/// The demo table. Roles are those `session.user.{cid}` in `resources.yaml` allows.
const ACCOUNTS: &[Account] = &[
    Account {
        name: "ann",
        password: "ann-pass",
        user_id: 42,
        display_name: "Ann",
        role: "admin",
    },
    Account {
        name: "bob",
        password: "bob-pass",
        user_id: 43,
        display_name: "Bob",
        role: "user",
    },
    Account {
        name: "cat",
        password: "cat-pass",
        user_id: 44,
        display_name: "Cat",
        role: "guest",
    },
];

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("auth: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `--nats URL`, then `$NATS_URL`, then the local default.
fn nats_url() -> anyhow::Result<String> {
    let mut args = std::env::args().skip(1);
    let mut url = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--nats" => url = Some(args.next().context("--nats needs a URL")?),
            s if s.starts_with("--nats=") => url = Some(s["--nats=".len()..].to_string()),
            "-h" | "--help" => {
                println!("usage: auth [--nats nats://127.0.0.1:4222]   (or NATS_URL)");
                std::process::exit(0);
            }
            other => anyhow::bail!("unexpected argument {other:?} (usage: auth [--nats URL])"),
        }
    }
    Ok(url
        .or_else(|| std::env::var("NATS_URL").ok())
        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_string()))
}

async fn run() -> anyhow::Result<()> {
    let url = nats_url()?;
    let client = async_nats::ConnectOptions::new()
        .name("connres-example-auth")
        .connection_timeout(Duration::from_secs(5))
        .connect(&url)
        .await
        .with_context(|| format!("cannot connect to NATS at {url}; is nats-server running?"))?;
    // A queue group, so several instances share the work.
    let auth = client
        .queue_subscribe(format!("auth.{AUTH_RESOURCE}.*"), "auth".into())
        .await?;
    let users = client
        .queue_subscribe("get.users.user.*".to_string(), "auth".into())
        .await?;
    // Subscriptions are live once the server has seen them.
    client.flush().await?;
    eprintln!(
        "auth service ready on {url}: auth.{AUTH_RESOURCE}.login, auth.{AUTH_RESOURCE}.logout, get.users.user.*"
    );
    let mut messages = futures::stream::select(auth, users);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let msg = tokio::select! {
            msg = messages.next() => match msg {
                Some(msg) => msg,
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        };
        // One message at a time, to the end: the token event, then the reply.
        if let Err(e) = handle(&client, msg).await {
            eprintln!("auth: {e:#}");
        }
    }
    client.drain().await.ok();
    Ok(())
}

async fn handle(client: &Client, msg: Message) -> anyhow::Result<()> {
    let Some(reply_to) = msg.reply.clone() else {
        return Ok(()); // not a request
    };
    let reply = if let Some(id) = msg.subject.strip_prefix("get.users.user.") {
        get_user(id)
    } else {
        let method = msg.subject.rsplit('.').next().unwrap_or_default();
        match auth(client, method, &msg.payload).await? {
            Ok(()) => json!({ "result": null }),
            Err(error) => json!({ "error": error }),
        }
    };
    client
        .publish(reply_to, Bytes::from(reply.to_string()))
        .await?;
    Ok(())
}

/// An auth request: `Ok(Err(error))` is an error reply, `Err` a NATS failure.
async fn auth(client: &Client, method: &str, payload: &[u8]) -> anyhow::Result<Result<(), Value>> {
    let request: Value = match serde_json::from_slice(payload) {
        Ok(v @ Value::Object(_)) => v,
        _ => return Ok(Err(invalid_params("the request is not a JSON object"))),
    };
    // The gateway's ID for the client's connection: the token is set on it.
    let Some(cid) = request["cid"].as_str().filter(|c| is_subject_token(c)) else {
        return Ok(Err(invalid_params("the request has no valid cid")));
    };
    let token = match method {
        "login" => {
            let params = &request["params"];
            let (Some(name), Some(password)) =
                (params["name"].as_str(), params["password"].as_str())
            else {
                return Ok(Err(invalid_params(
                    "login needs params {\"name\": string, \"password\": string}",
                )));
            };
            let Some(account) = ACCOUNTS
                .iter()
                .find(|a| a.name == name && same_secret(a.password, password))
            else {
                eprintln!("auth: failed login as {name:?}");
                return Ok(Err(json!({
                    "code": "auth.invalidCredentials",
                    "message": "Unknown user name or wrong password",
                })));
            };
            eprintln!("auth: {} logged in on connection {cid}", account.name);
            json!({
                "userId": account.user_id,
                "name": account.display_name,
                "role": account.role,
            })
        }
        "logout" => Value::Null,
        _ => {
            return Ok(Err(json!({
                "code": "system.methodNotFound",
                "message": "Method not found",
            })))
        }
    };
    set_token(client, cid, token).await?;
    Ok(Ok(()))
}

/// Publishes `conn.<cid>.token` before the auth reply (RES service protocol, auth
/// request), as a request: connres answers it once it has published the events the
/// token causes (the model's change, and the reaccess that lets Resgate grant what
/// needs a token). Answering the login after that means a client that writes as soon as
/// its login resolves finds the new access in place. Without connres, the event still
/// reaches Resgate; the wait just ends at the timeout.
async fn set_token(client: &Client, cid: &str, token: Value) -> anyhow::Result<()> {
    let subject = format!("conn.{cid}.token");
    let body = Bytes::from(json!({ "token": token }).to_string());
    match tokio::time::timeout(TOKEN_ACK_WAIT, client.request(subject, body)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => {
            // No connres running: published, nobody to answer.
        }
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => eprintln!(
            "auth: connres did not acknowledge conn.{cid}.token within {TOKEN_ACK_WAIT:?}; answering anyway"
        ),
    }
    Ok(())
}

/// `get.users.user.<id>`: a demo account's public profile.
fn get_user(id: &str) -> Value {
    match ACCOUNTS.iter().find(|a| a.user_id.to_string() == id) {
        Some(a) => json!({ "result": { "model": {
            "id": a.user_id,
            "name": a.display_name,
            "role": a.role,
        }}}),
        None => json!({ "error": { "code": "system.notFound", "message": "Not found" } }),
    }
}

fn invalid_params(message: &str) -> Value {
    json!({ "code": "system.invalidParams", "message": message })
}

/// A cid goes into a subject: one token, no wildcards or whitespace.
fn is_subject_token(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c == '.' || c == '*' || c == '>' || c.is_whitespace())
}

/// Compares without stopping at the first difference (timing tells nothing).
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0, |acc, (x, y)| acc | (x ^ y))
            == 0
}
