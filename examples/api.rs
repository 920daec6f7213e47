//! The backend write API from the command line: what a trusted service sends to connres
//! to set values that no token carries (a cart count, a notice), or to reset a model.
//!
//! ```text
//! cargo run --example api -- set session.status.<cid> '{"cartItems":3}'
//! cargo run --example api -- reset session.status.<cid>
//! cargo run --example api -- --nats nats://backend:change-me-backend@127.0.0.1:4222 \
//!     --prefix connres set session.status.<cid> '{"notice":"Your order has shipped"}'
//! ```
//!
//! This is all there is to the API, and any NATS client does the same:
//!
//! - `set <rid> <values>` sends a request on `<prefix>.set.<rid>` with the payload
//!   `{"values": <values>}`; `<values>` is a JSON object of field names and RES values.
//! - `reset <rid>` sends a request on `<prefix>.reset.<rid>` with an empty payload: every
//!   written field of the model returns to its default (the API has no per-field reset;
//!   setting a field to `null` clears it to null).
//!
//! `<prefix>` is the config's `api.prefix`: `connres` unless `--prefix` says otherwise.
//! The server is `--nats URL`, else `$NATS_URL`, else `nats://127.0.0.1:4222`; several
//! URLs may be given comma-separated. A user and password (`nats://user:password@host`)
//! or a token (`nats://token@host`) in the URL are sent as credentials, percent-decoded,
//! and never printed.
//!
//! The reply is printed on stdout as connres sent it (`{"result":null}`, or
//! `{"error":{"code":...,"message":...}}`). The exit code is 0 for a result, 1 for an
//! error reply (with the code and message on stderr too), and 2 when there is no reply
//! at all: a usage error, no NATS connection, nobody serving the subject, a server that
//! refused the request (permissions), or no answer in time.

use std::io::Write;
use std::time::Duration;

use serde_json::Value;

/// How long to wait for the connection, and then for the reply.
const TIMEOUT: Duration = Duration::from_secs(5);

const DEFAULT_URL: &str = "nats://127.0.0.1:4222";
const DEFAULT_PREFIX: &str = "connres";

const SYNOPSIS: &str = "\
usage: api [--nats URL] [--prefix PREFIX] set <rid> '<values as a JSON object>'
       api [--nats URL] [--prefix PREFIX] reset <rid>";

const OPTIONS: &str = "\
  --nats URL        NATS server(s), comma-separated; may carry user:password@ or token@
                    (default: $NATS_URL, then nats://127.0.0.1:4222)
  --prefix PREFIX   the config's api.prefix (default: connres)

examples:
  api set session.status.c1 '{\"cartItems\":3}'
  api reset session.status.c1

exit: 0 a result, 1 an error reply, 2 no reply (usage, connection, nobody serving, timeout)";

/// Exit codes.
const OK: u8 = 0;
const ERROR_REPLY: u8 = 1;
const NO_REPLY: u8 = 2;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = run(
        &args,
        std::env::var("NATS_URL").ok(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    )
    .await;
    std::process::ExitCode::from(code)
}

/// What the command line asks for.
#[derive(Debug)]
struct Request {
    urls: String,
    subject: String,
    payload: Vec<u8>,
    /// `set` or `reset`, and the resource name, for messages.
    what: &'static str,
    rid: String,
}

/// Runs the command: `args` without the program name, `env_url` the value of
/// `$NATS_URL`. Returns the exit code.
pub async fn run(
    args: &[String],
    env_url: Option<String>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let request = match parse_args(args, env_url) {
        Ok(Some(r)) => r,
        Ok(None) => {
            let _ = writeln!(out, "{SYNOPSIS}\n\n{OPTIONS}");
            return OK;
        }
        Err(message) => {
            let _ = writeln!(err, "api: {message}\n{SYNOPSIS}");
            return NO_REPLY;
        }
    };
    match send(&request).await {
        Ok(reply) => report(&request, &reply, out, err),
        Err(message) => {
            let _ = writeln!(err, "api: {message}");
            NO_REPLY
        }
    }
}

fn parse_args(args: &[String], env_url: Option<String>) -> Result<Option<Request>, String> {
    let mut url = None;
    let mut prefix = DEFAULT_PREFIX.to_string();
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--nats" => url = Some(value("--nats")?),
            "--prefix" => prefix = value("--prefix")?,
            s if s.starts_with("--nats=") => url = Some(s["--nats=".len()..].to_string()),
            s if s.starts_with("--prefix=") => prefix = s["--prefix=".len()..].to_string(),
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            _ => positional.push(arg.as_str()),
        }
    }
    let urls = url.or(env_url).unwrap_or_else(|| DEFAULT_URL.to_string());
    let (what, rid, payload) = match positional.as_slice() {
        ["set", rid, values] => {
            let parsed: Value = serde_json::from_str(values)
                .map_err(|e| format!("the values are not JSON ({e}): {values}"))?;
            if !parsed.is_object() {
                return Err(format!(
                    "the values must be a JSON object of field names and values, such as '{{\"cartItems\":3}}', not {parsed}"
                ));
            }
            let payload = serde_json::json!({ "values": parsed }).to_string();
            ("set", *rid, payload.into_bytes())
        }
        ["set", _] | ["set"] => return Err("set needs a resource name and its values".into()),
        ["reset", rid] => ("reset", *rid, Vec::new()),
        ["reset", ..] => {
            return Err(
                "reset takes only a resource name: it returns every written field to its default"
                    .into(),
            )
        }
        [] => return Err("say set or reset".into()),
        [other, ..] => return Err(format!("unknown command {other:?}: say set or reset")),
    };
    Ok(Some(Request {
        urls,
        subject: format!("{prefix}.{what}.{rid}"),
        payload,
        what,
        rid: rid.to_string(),
    }))
}

/// Server addresses without credentials, and the credentials the URLs carried.
struct Servers {
    addrs: Vec<String>,
    user_password: Option<(String, String)>,
    token: Option<String>,
}

/// Takes credentials out of the URLs: the NATS client does not read them there.
fn servers(urls: &str) -> Result<Servers, String> {
    let mut s = Servers {
        addrs: Vec::new(),
        user_password: None,
        token: None,
    };
    for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let (scheme, rest) = url.split_once("://").unwrap_or(("nats", url));
        let host = match rest.rsplit_once('@') {
            None => rest,
            Some((userinfo, host)) => {
                match userinfo.split_once(':') {
                    Some((user, password)) => {
                        s.user_password = Some((percent_decode(user), percent_decode(password)))
                    }
                    None => s.token = Some(percent_decode(userinfo)),
                }
                host
            }
        };
        s.addrs.push(format!("{scheme}://{host}"));
    }
    if s.addrs.is_empty() {
        return Err("no NATS server URL given".into());
    }
    Ok(s)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
        match (bytes[i], hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, ..) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Connects, sends the request and returns the reply's payload.
async fn send(request: &Request) -> Result<Vec<u8>, String> {
    let servers = servers(&request.urls)?;
    let shown = servers.addrs.join(",");
    let options = match (&servers.user_password, &servers.token) {
        (Some((user, password)), _) => {
            async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
        }
        (None, Some(token)) => async_nats::ConnectOptions::with_token(token.clone()),
        (None, None) => async_nats::ConnectOptions::new(),
    };
    // A request the server refuses (no permission to publish on the subject) gets no
    // reply; the server says why in an error of its own, which ends the wait.
    let (refusals, mut refused) = tokio::sync::mpsc::unbounded_channel::<String>();
    let client = options
        .name("connres-example-api")
        .connection_timeout(TIMEOUT)
        .request_timeout(Some(TIMEOUT))
        .event_callback(move |event| {
            let refusals = refusals.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = refusals.send(e.to_string());
                }
            }
        })
        .connect(servers.addrs.as_slice())
        .await
        .map_err(|e| format!("cannot connect to NATS at {shown}: {e}"))?;
    let subject = &request.subject;
    let reply = client.request(subject.clone(), request.payload.clone().into());
    let result = tokio::select! {
        result = reply => result,
        Some(refusal) = refused.recv() => {
            return Err(format!("the NATS server at {shown} refused the request on {subject}: {refusal}"));
        }
    };
    use async_nats::client::RequestErrorKind as Kind;
    match result {
        Ok(message) => Ok(message.payload.to_vec()),
        Err(e) => Err(match e.kind() {
            Kind::NoResponders => format!(
                "nobody answers on {subject} at {shown}: is connres running there, and is its api.prefix the one given (--prefix)?"
            ),
            Kind::TimedOut => format!("no reply on {subject} within {}s", TIMEOUT.as_secs()),
            _ => format!("the request on {subject} failed: {e}"),
        }),
    }
}

/// Prints the reply and returns the exit code it calls for.
fn report(request: &Request, reply: &[u8], out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let text = String::from_utf8_lossy(reply);
    let _ = writeln!(out, "{text}");
    let parsed: Value = serde_json::from_slice(reply).unwrap_or(Value::Null);
    if parsed.get("result").is_some() {
        return OK;
    }
    match parsed.get("error") {
        Some(error) => {
            let code = error["code"].as_str().unwrap_or("(no code)");
            let message = error["message"].as_str().unwrap_or("(no message)");
            let _ = writeln!(
                err,
                "api: connres refused the {} of {}: {code}: {message}",
                request.what, request.rid
            );
            ERROR_REPLY
        }
        None => {
            let _ = writeln!(err, "api: the reply is not a RES reply: {text}");
            NO_REPLY
        }
    }
}
