//! Rechecks at the connection's owner: the JWT a login kept is verified again on the
//! engine's clock; refused, the connection is logged out; a connection without a kept
//! JWT is left alone.

use super::*;
use crate::clock::MANUAL_EPOCH_SECS;
use jsonwebtoken::{EncodingKey, Header};

const SECRET: &[u8] = b"an engine test secret of thirty-two bytes or more";

/// The test config with an auth entry `s` whose logins keep their JWT for `recheck`,
/// and whose tokens stay past the JWT's `exp` (`expire: never`).
fn with_auth(dir: &tempfile::TempDir) -> T {
    T::with_state(&auth_state(dir, "{{claims.name}}"))
}

/// The auth block, its token's `name` rendered by `name`.
fn auth_state(dir: &tempfile::TempDir, name: &str) -> String {
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    format!(
        "auth:\n  s:\n    jwt: {{ algorithms: [HS256], secret: {{ file: {} }} }}\n    token: {{ userId: \"{{{{claims.sub}}}}\", name: \"{name}\", role: \"{{{{claims.role}}}}\" }}\n    expire: never\n    methods:\n      login: {{ jwt: params.token }}\n      recheck: {{ recheck: true }}\n",
        secret.display()
    )
}

fn ann_jwt(exp: u64) -> String {
    let claims = json!({"sub": 42, "name": "Ann", "role": "admin", "exp": exp});
    let key = EncodingKey::from_secret(SECRET).unwrap();
    jsonwebtoken::encode(&Header::default(), &claims, &key).unwrap()
}

impl T {
    fn auth(&mut self, method: &str, payload: Value) -> Outcome {
        let payload = payload.to_string();
        self.handle(Request::Auth {
            name: "s",
            method,
            payload: payload.as_bytes(),
        })
    }

    fn recheck(&mut self, cid: &str) -> Outcome {
        self.handle(Request::Recheck { name: "s", cid })
    }
}

#[test]
fn a_recheck_logs_out_a_connection_whose_kept_jwt_has_expired_since() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = with_auth(&dir);
    let jwt = ann_jwt(MANUAL_EPOCH_SECS + 60);
    let login = t.auth("login", json!({"cid": "c1", "params": {"token": jwt}}));
    let [(subject, event)] = &events(&login)[..] else {
        panic!("one token event: {:?}", events(&login));
    };
    assert_eq!(subject, "conn.c1.token");
    assert_eq!(event["jwt"], json!(jwt), "the login keeps its JWT");
    // The token event, applied as it comes back.
    t.token("c1", &event.to_string());
    assert_eq!(t.get("session.user.c1"), ann_user());
    // Still valid: nothing to publish.
    let out = t.recheck("c1");
    assert_eq!(reply(&out), json!({"result": null}));
    assert!(out.events.is_empty(), "{:?}", events(&out));

    t.clock.advance(std::time::Duration::from_secs(61));
    let out = t.recheck("c1");
    assert_eq!(error_code(&out), "connres.invalidToken");
    assert_eq!(reply(&out)["error"]["data"]["reason"], json!("expired"));
    assert_eq!(
        events(&out),
        vec![
            change(
                "session.user.c1",
                json!({"id": null, "name": null, "role": null, "user": null})
            ),
            ("conn.c1.token".into(), json!({"token": null})),
        ]
    );
    assert_eq!(t.get("session.user.c1"), null_user());
    // Logged out: nothing kept, nothing to check.
    let out = t.recheck("c1");
    assert_eq!(reply(&out), json!({"result": null}));
    assert!(out.events.is_empty());
}

#[test]
fn a_recheck_leaves_a_connection_without_a_kept_jwt_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = with_auth(&dir);
    // Another auth service's login: no JWT.
    t.token("c2", ANN);
    t.clock.advance(std::time::Duration::from_secs(3600));
    for cid in ["c2", "unseen"] {
        let out = t.recheck(cid);
        assert_eq!(reply(&out), json!({"result": null}), "{cid}");
        assert!(out.events.is_empty(), "{cid}");
    }
    assert_eq!(t.get("session.user.c2"), ann_user());
    assert_eq!(error_code(&t.recheck("a.b")), "system.invalidParams");
    // A name the config does not declare: not answered (another service's).
    let out = t.handle(Request::Recheck {
        name: "other",
        cid: "c2",
    });
    assert!(out.reply.is_none());
}

#[test]
fn an_accepted_recheck_publishes_the_token_again_only_when_it_changed() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = with_auth(&dir);
    let jwt = ann_jwt(MANUAL_EPOCH_SECS + 600);
    let login = t.auth("login", json!({"cid": "c1", "params": {"token": jwt}}));
    let (_, event) = events(&login).remove(0);
    t.token("c1", &event.to_string());
    // The token's template changed (a reload): the recheck publishes the new token,
    // with the JWT still kept.
    let yaml = format!("{}{YAML}", auth_state(&dir, "{{claims.name}} (rechecked)"));
    t.config = Config::parse("t.yaml", &yaml).unwrap_or_else(|e| panic!("{e}"));
    let out = t.recheck("c1");
    assert_eq!(reply(&out), json!({"result": null}));
    let [(subject, event)] = &events(&out)[..] else {
        panic!("one token event: {:?}", events(&out));
    };
    assert_eq!(subject, "conn.c1.token");
    assert_eq!(event["token"]["name"], json!("Ann (rechecked)"));
    assert_eq!(event["jwt"], json!(jwt));
}
