//! Helpers of the `auth:` block's tests: configs with an auth entry verifying HS256
//! JWTs, signing, and reading token events as a gateway does.

use std::time::{SystemTime, UNIX_EPOCH};

use async_nats::Subscriber;
use futures::{FutureExt, StreamExt};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{json, Value};

use super::*;

pub const SECRET: &[u8] = b"a test secret of at least thirty-two bytes";

/// The seed's resources behind an `auth:` block verifying HS256 tokens with a secret
/// read from a file in `dir`.
pub fn config(dir: &tempfile::TempDir) -> String {
    config_with(dir, "", "")
}

/// [`config`] with more lines in the auth entry (`entry`, such as `    resume: ...`)
/// and its methods (`methods`, such as `      resume: { resume: true }`).
pub fn config_with(dir: &tempfile::TempDir, entry: &str, methods: &str) -> String {
    let secret = dir.path().join("jwt.secret");
    std::fs::write(&secret, SECRET).unwrap();
    let resources = SEED.split_once("resources:").unwrap().1;
    format!(
        r#"version: 1
auth:
  session:
    jwt:
      algorithms: [HS256]
      secret: {{ file: {} }}
      issuer: https://id.example.test
    token:
      userId: "{{{{claims.sub}}}}"
      name: "{{{{claims.name}}}}"
      role: "{{{{claims.role}}}}"
    tid: "user-{{{{claims.sub}}}}"
{entry}    methods:
      login: {{ jwt: params.token }}
      header: {{ jwt: [header.Authorization, cookie.session] }}
      logout: {{ logout: true }}
{methods}resources:{resources}"#,
        secret.display()
    )
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn sign(claims: Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret).unwrap(),
    )
    .unwrap()
}

/// A valid token for user 42, Ann.
pub fn ann_jwt() -> String {
    sign(
        json!({"sub": 42, "name": "Ann", "role": "admin", "iss": "https://id.example.test", "exp": now() + 600}),
        SECRET,
    )
}

pub async fn token_events(gw: &Gateway) -> Subscriber {
    let sub = gw.client.subscribe("conn.*.token").await.unwrap();
    gw.client.flush().await.unwrap();
    sub
}

/// The token event already received, if any.
pub fn received(sub: &mut Subscriber) -> Option<(String, Value)> {
    let msg = sub.next().now_or_never()??;
    Some((msg.subject.to_string(), parse_or_null(&msg.payload)))
}

pub fn applied(report: connres::reload::ReloadReport) -> connres::config::ConfigDiff {
    match report {
        connres::reload::ReloadReport::Applied { diff, .. } => diff,
        other => panic!("the reload applies: {other:?}"),
    }
}

pub async fn auth(gw: &Gateway, method: &str, payload: Value) -> Value {
    gw.request(&format!("auth.session.{method}"), payload).await
}

/// The seed's resources on the shared store (bucket `bucket`) with the `auth:` block of
/// `auth_yaml` (a whole config from [`config_with`]).
pub fn shared_auth_yaml(bucket: &str, auth_yaml: &str) -> String {
    let seed = shared_seed(bucket);
    let (state, resources) = seed.split_once("resources:").unwrap();
    let auth_block = auth_yaml
        .split_once("auth:")
        .unwrap()
        .1
        .split_once("resources:")
        .unwrap()
        .0;
    format!("{state}auth:{auth_block}resources:{resources}")
}

/// Waits until every partition has one of these instances as its owner, each some.
pub async fn settle(all: &[&std::sync::Arc<connres::service::ClusterMetrics>]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !(all.iter().all(|m| m.served() > 0)
        && all.iter().map(|m| m.served()).sum::<i64>() == i64::from(PARTITIONS))
    {
        assert!(tokio::time::Instant::now() < deadline, "partitions settle");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Three instances on the shared store, serving the seed's resources and the `auth:`
/// block of `auth_yaml`, once every partition has its owner.
pub async fn three_instances(
    server: &NatsServer,
    bucket: &str,
    auth_yaml: &str,
) -> (Vec<Connres>, Gateway) {
    let yaml = shared_auth_yaml(bucket, auth_yaml);
    let (a, gw, ma) = start_shared(server, &yaml).await;
    let (b, _, mb) = start_shared(server, &yaml).await;
    let (c, _, mc) = start_shared(server, &yaml).await;
    settle(&[&ma, &mb, &mc]).await;
    (vec![a, b, c], gw)
}

/// The next token event on the subscription, awaited.
pub async fn received_next(sub: &mut Subscriber) -> (String, Value) {
    let msg = tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("a token event arrives")
        .unwrap();
    (msg.subject.to_string(), parse_or_null(&msg.payload))
}
