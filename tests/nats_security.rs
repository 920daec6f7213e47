//! Every way connres authenticates to NATS, against a real nats-server configured for
//! it: user and password, token, NKey, a `.creds` file (operator, account and user JWTs
//! made here with the `nkeys`/`nats-jwt` crates), TLS with a CA and client certificates
//! made here with `rcgen`; and that a wrong credential is refused with a clear error that
//! never shows the secret. The `nats:` block is in the file; flags and the environment
//! are covered by `cli.rs`.

mod common;

use std::path::{Path, PathBuf};

use async_nats::ConnectOptions;
use common::process::project_file;
use common::*;
use connres::config::{Config, NatsOverrides};
use connres::service::Service;
use serde_json::{json, Value};

/// The shipped file with a `nats:` block (indented two spaces per line).
fn shipped_with(nats: &str) -> String {
    let shipped = std::fs::read_to_string(project_file("resources.yaml")).unwrap();
    shipped.replacen("version: 1\n", &format!("version: 1\nnats:\n{nats}\n"), 1)
}

/// connres connected with `nats` (no overrides) and a gateway connected with `options`.
async fn serve(server: &NatsServer, options: ConnectOptions, nats: &str) -> (Connres, Gateway) {
    let gateway = Gateway::connect_with(server, options).await;
    let nats = format!("  url: {}\n{nats}", server.url);
    start_connected(&NatsOverrides::default(), gateway, &shipped_with(&nats)).await
}

/// The seed scenario's first steps: a get, a login by token event, its change event.
async fn seed_scenario(mut gw: Gateway) {
    let model = gw.subscribe("session.user.c1", "c1", Value::Null).await;
    assert_eq!(model["name"], json!(null));
    gw.token("c1", json!({"userId": 7, "name": "Ann"})).await;
    let (subject, payload) = gw.next_event().await;
    assert_eq!(subject, "event.session.user.c1.change");
    assert_eq!(payload["values"]["name"], json!("Ann"));
}

/// connres with `nats` must not start; returns the error as printed.
async fn refused(server: &NatsServer, nats: &str) -> String {
    let nats = format!("  url: {}\n{nats}", server.url);
    let config = Config::parse("test.yaml", &shipped_with(&nats)).unwrap();
    let Err(e) = Service::connect(config, &NatsOverrides::default()).await else {
        panic!("connres started with {nats}");
    };
    format!(
        "{}\n{}",
        connres::logs::error_chain(&e),
        e.hint().unwrap_or("")
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn user_and_password() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write(
        dir.path(),
        "nats.conf",
        r#"authorization { users = [
            { user: connres, password: "pw-of-connres" },
            { user: resgate, password: "pw-of-resgate" } ] }"#,
    );
    let server = NatsServer::start_with_config(&conf);
    let resgate = ConnectOptions::with_user_and_password("resgate".into(), "pw-of-resgate".into());
    let (connres, gw) = serve(
        &server,
        resgate,
        "  user: connres\n  password: pw-of-connres",
    )
    .await;
    seed_scenario(gw).await;
    connres.stop().await;

    let e = refused(&server, "  user: connres\n  password: not-the-password").await;
    assert!(e.contains("authorization violation"), "{e}");
    assert!(e.contains("refused connres's credentials"), "{e}");
    assert!(!e.contains("not-the-password"), "{e}");
}

#[tokio::test]
async fn token() {
    let server = NatsServer::start_with_args(&["--auth", "the-token"]);
    let resgate = ConnectOptions::with_token("the-token".into());
    let (connres, gw) = serve(&server, resgate, "  token: the-token").await;
    seed_scenario(gw).await;
    connres.stop().await;
    let e = refused(&server, "  token: a-wrong-token").await;
    assert!(e.contains("authorization violation"), "{e}");
    assert!(!e.contains("a-wrong-token"), "{e}");
}

#[tokio::test]
async fn nkey_seed_file() {
    let dir = tempfile::tempdir().unwrap();
    let connres_key = nkeys::KeyPair::new_user();
    let resgate_key = nkeys::KeyPair::new_user();
    let conf = write(
        dir.path(),
        "nats.conf",
        &format!(
            "authorization {{ users = [ {{ nkey: {} }}, {{ nkey: {} }} ] }}",
            connres_key.public_key(),
            resgate_key.public_key()
        ),
    );
    let seed = write(dir.path(), "connres.nk", &connres_key.seed().unwrap());
    let server = NatsServer::start_with_config(&conf);
    let resgate = ConnectOptions::with_nkey(resgate_key.seed().unwrap());
    let (connres, gw) = serve(&server, resgate, &format!("  nkey: {}", seed.display())).await;
    seed_scenario(gw).await;
    connres.stop().await;

    // A seed the server does not know.
    let stranger = write(
        dir.path(),
        "stranger.nk",
        &nkeys::KeyPair::new_user().seed().unwrap(),
    );
    let e = refused(&server, &format!("  nkey: {}", stranger.display())).await;
    assert!(e.contains("authorization violation"), "{e}");
    assert!(!e.contains("SU"), "no seed in errors: {e}");
    // A file that is not a seed is named before any connection attempt.
    let e = refused(&server, &format!("  nkey: {}", conf.display())).await;
    assert!(
        e.contains("holds no user seed") && e.contains("nats.conf"),
        "{e}"
    );
}

/// A `.creds` file as `nsc` writes it.
fn creds(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )
}

#[tokio::test]
async fn credentials_file() {
    use nats_jwt::{KeyPair, Token};
    let dir = tempfile::tempdir().unwrap();
    // Decentralised auth: an operator trusted by the server, an account it signed (held
    // in the server's memory resolver), users the account signed.
    let operator = KeyPair::new_operator();
    let account = KeyPair::new_account();
    let account_jwt = Token::new_account(account.public_key())
        .name("APP")
        .sign(&operator);
    let user = |name: &str| {
        let key = KeyPair::new_user();
        let jwt = Token::new_user(account.public_key(), key.public_key())
            .name(name)
            .sign(&account);
        creds(&jwt, &key.seed().unwrap())
    };
    let conf = write(
        dir.path(),
        "nats.conf",
        &format!(
            "trusted_keys: [\"{}\"]\nresolver: MEMORY\nresolver_preload: {{ {}: \"{account_jwt}\" }}\n",
            operator.public_key(),
            account.public_key()
        ),
    );
    let connres_creds = write(dir.path(), "connres.creds", &user("connres"));
    let server = NatsServer::start_with_config(&conf);
    let resgate = ConnectOptions::with_credentials(&user("resgate")).unwrap();
    let (connres, gw) = serve(
        &server,
        resgate,
        &format!("  creds: {}", connres_creds.display()),
    )
    .await;
    seed_scenario(gw).await;
    connres.stop().await;

    // A user of an account the server does not know.
    let other = KeyPair::new_account();
    let key = KeyPair::new_user();
    let jwt = Token::new_user(other.public_key(), key.public_key()).sign(&other);
    let stranger = write(
        dir.path(),
        "stranger.creds",
        &creds(&jwt, &key.seed().unwrap()),
    );
    let e = refused(&server, &format!("  creds: {}", stranger.display())).await;
    assert!(e.contains("authorization violation"), "{e}");
    let missing = dir.path().join("missing.creds");
    let e = refused(&server, &format!("  creds: {}", missing.display())).await;
    assert!(
        e.contains("cannot read NATS credentials file") && e.contains("missing.creds"),
        "{e}"
    );
}

/// A CA, a certificate for the server on 127.0.0.1 and a client certificate, as PEM
/// files in `dir`.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    other_client_cert: PathBuf,
    other_client_key: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca = Issuer::new(ca_params, ca_key);
    let leaf = |names: &[&str], issuer: &Issuer<'_, KeyPair>| {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(&["127.0.0.1", "localhost"], &ca);
    let (client_cert, client_key) = leaf(&["connres"], &ca);
    // A client certificate from a CA the server does not trust.
    let other_key = KeyPair::generate().unwrap();
    let mut other_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    other_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let other = Issuer::new(other_params, other_key);
    let (other_cert, other_client_key) = leaf(&["intruder"], &other);
    Pki {
        ca: write(dir, "ca.pem", &ca_cert.pem()),
        server_cert: write(dir, "server.pem", &server_cert),
        server_key: write(dir, "server-key.pem", &server_key),
        client_cert: write(dir, "client.pem", &client_cert),
        client_key: write(dir, "client-key.pem", &client_key),
        other_client_cert: write(dir, "other.pem", &other_cert),
        other_client_key: write(dir, "other-key.pem", &other_client_key),
    }
}

fn tls_block(ca: &Path, cert: &Path, key: &Path) -> String {
    format!(
        "  tls:\n    ca: {}\n    cert: {}\n    key: {}",
        ca.display(),
        cert.display(),
        key.display()
    )
}

/// A nats-server with TLS on the PKI's server certificate, and `more` TLS options.
fn tls_server(dir: &Path, pki: &Pki, more: &str) -> NatsServer {
    let tls = format!(
        "tls {{ cert_file: \"{}\", key_file: \"{}\", {more} }}",
        pki.server_cert.display(),
        pki.server_key.display(),
    );
    NatsServer::start_with_config(&write(dir, "nats.conf", &tls))
}

#[tokio::test]
async fn tls_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let verify = format!("ca_file: \"{}\", verify: true", pki.ca.display());
    let server = tls_server(dir.path(), &pki, &verify);
    let resgate = || {
        ConnectOptions::new()
            .add_root_certificates(pki.ca.clone())
            .add_client_certificate(pki.client_cert.clone(), pki.client_key.clone())
    };
    let block = tls_block(&pki.ca, &pki.client_cert, &pki.client_key);
    let (connres, gw) = serve(&server, resgate(), &block).await;
    seed_scenario(gw).await;
    connres.stop().await;

    // The same with a tls:// URL, given as an override the way --nats gives it.
    let gateway = Gateway::connect_with(&server, resgate()).await;
    let overrides = NatsOverrides {
        url: Some(format!("tls://127.0.0.1:{}", server.port)),
        ..NatsOverrides::default()
    };
    let (connres, gw) = start_connected(&overrides, gateway, &shipped_with(&block)).await;
    seed_scenario(gw).await;
    connres.stop().await;

    // A client certificate the server's CA did not sign, and none at all: refused.
    let e = refused(
        &server,
        &tls_block(&pki.ca, &pki.other_client_cert, &pki.other_client_key),
    )
    .await;
    assert!(e.contains("cannot connect to NATS"), "{e}");
    let e = refused(&server, &format!("  tls: {{ ca: {} }}", pki.ca.display())).await;
    assert!(e.contains("cannot connect to NATS"), "{e}");
    // Without the CA, the server's certificate is not trusted.
    let e = refused(
        &server,
        &format!(
            "  tls: {{ cert: {}, key: {} }}",
            pki.client_cert.display(),
            pki.client_key.display()
        ),
    )
    .await;
    assert!(e.contains("invalid peer certificate"), "{e}");
    assert!(e.contains("check the server's TLS certificate"), "{e}");
}

#[tokio::test]
async fn tls_handshake_first() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let server = tls_server(dir.path(), &pki, "handshake_first: true");
    let resgate = ConnectOptions::new()
        .add_root_certificates(pki.ca.clone())
        .tls_first();
    let block = format!("  tls: {{ ca: {}, first: true }}", pki.ca.display());
    let (connres, gw) = serve(&server, resgate, &block).await;
    seed_scenario(gw).await;
    connres.stop().await;
}

#[tokio::test]
async fn several_servers_and_a_connection_name() {
    let server = NatsServer::start_monitored();
    let down = NatsServer::start();
    let down_url = down.url.clone();
    drop(down);
    // The first URL is not listening; connres connects to one that is.
    let urls = format!("  url: [{down_url}, {}]\n  name: connres-eu-1", server.url);
    let config = Config::parse("test.yaml", &shipped_with(&urls)).unwrap();
    let mut gateway = Gateway::connect(&server).await;
    let service = Service::connect(config, &NatsOverrides::default())
        .await
        .expect("connres connects to the live server");
    let running = tokio::spawn(service.run(std::future::pending()));
    assert_eq!(gateway.next_system().await.0, "system.reset");
    let names: Vec<Value> = server.connz()["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert!(names.contains(&json!("connres-eu-1")), "{names:?}");
    running.abort();
}

#[tokio::test]
async fn gives_up_after_max_reconnect_attempts() {
    let server = NatsServer::start();
    let nats = "  reconnect: { max_attempts: 2, max_delay: 10ms }";
    let (connres, _gw) = serve(&server, ConnectOptions::new(), nats).await;
    drop(server);
    let e = connres.ended().await.expect_err("connres gives up");
    assert!(e.to_string().contains("gave up reconnecting"), "{e}");
}

// The binary: credentials from the environment and flags, and where secrets could show.

use common::process::{connres, Proc};

fn users_conf(dir: &Path) -> PathBuf {
    write(
        dir,
        "nats.conf",
        r#"authorization { users = [
            { user: connres, password: "pw-in-the-env" },
            { user: resgate, password: "pw-of-resgate" } ] }"#,
    )
}

#[tokio::test]
async fn credentials_from_the_environment_never_reach_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start_with_config(&users_conf(dir.path()));
    let mut gw = Gateway::connect_with(
        &server,
        ConnectOptions::with_user_and_password("resgate".into(), "pw-of-resgate".into()),
    )
    .await;
    let mut proc = Proc::spawn(
        connres()
            .args(["serve", "--log-format", "json", "--config"])
            .arg(project_file("resources.yaml"))
            .env("NATS_URL", &server.url)
            .env("NATS_USER", "connres")
            .env("NATS_PASSWORD", "pw-in-the-env"),
    );
    assert_eq!(gw.next_system().await.0, "system.reset");
    proc.wait_for_log("connres is serving");
    proc.terminate();
    let out = proc.output().await;
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(!out.stderr.contains("pw-in-the-env"), "{}", out.stderr);
    assert!(
        out.stderr.contains("auth: user `connres` with a password"),
        "{}",
        out.stderr
    );
    for line in out.stderr.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    }
}

#[tokio::test]
async fn flags_win_over_the_file() {
    let server = NatsServer::start_with_args(&["--auth", "the-right-token"]);
    let mut gw = Gateway::connect_with(
        &server,
        ConnectOptions::with_token("the-right-token".into()),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "resources.yaml",
        &shipped_with("  url: nats://127.0.0.1:1\n  token: an-old-token"),
    );
    let mut proc = Proc::spawn(connres().args(["serve", "--config"]).arg(&file).args([
        "--nats",
        &server.url,
        "--nats-token",
        "the-right-token",
    ]));
    assert_eq!(gw.next_system().await.0, "system.reset");
    proc.wait_for_log("connres is serving");
    proc.terminate();
    let out = proc.output().await;
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let e = out.stderr;
    assert!(e.contains("auth: a token"), "{e}");
    assert!(
        !e.contains("the-right-token") && !e.contains("an-old-token"),
        "{e}"
    );
}

#[tokio::test]
async fn check_and_help_never_show_secrets() {
    let dir = tempfile::tempdir().unwrap();
    for (block, shown) in [
        (
            "  user: connres\n  password: pw-in-the-file",
            "auth: user `connres` with a password",
        ),
        ("  token: tok-in-the-file", "auth: a token"),
    ] {
        let file = write(dir.path(), "resources.yaml", &shipped_with(block));
        let out = Proc::spawn(connres().arg("check").arg(&file))
            .output()
            .await;
        assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
        assert!(out.stdout.contains(shown), "{}", out.stdout);
        assert!(!out.stdout.contains("in-the-file"), "{}", out.stdout);
    }
    let out = Proc::spawn(
        connres()
            .args(["serve", "--help"])
            .env("NATS_PASSWORD", "pw-in-the-env")
            .env("NATS_TOKEN", "tok-in-the-env"),
    )
    .output()
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let help = out.stdout;
    assert!(
        help.contains("NATS connection") && help.contains("nats://127.0.0.1:4222"),
        "{help}"
    );
    for flag in [
        "--nats-creds",
        "--nats-nkey",
        "--nats-user",
        "--nats-ca",
        "--nats-cert",
        "--nats-max-reconnects",
    ] {
        assert!(help.contains(flag), "{flag}: {help}");
    }
    assert!(!help.contains("in-the-env"), "{help}");
}

#[tokio::test]
async fn a_wrong_credential_names_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start_with_config(&users_conf(dir.path()));
    let out = Proc::spawn(
        connres()
            .args(["serve", "--config"])
            .arg(project_file("resources.yaml"))
            .args(["--nats", &server.url, "--nats-user", "connres"])
            .env("NATS_PASSWORD", "a-wrong-password"),
    )
    .output()
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let e = out.stderr;
    assert!(e.contains("authorization violation"), "{e}");
    assert!(e.contains("--nats-user/--nats-password"), "{e}");
    assert!(!e.contains("a-wrong-password"), "{e}");
}
