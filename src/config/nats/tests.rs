use super::*;
use crate::config::Config;
use std::path::Path;

fn nats(yaml: &str) -> Result<NatsSettings, Vec<String>> {
    let source = format!("version: 1\nnats:\n{yaml}\nresources: {{}}\n");
    Config::parse("/etc/connres/resources.yaml", &source)
        .map(|c| c.nats)
        .map_err(|e| e.lines())
}

#[test]
fn credentials_come_out_of_the_urls() {
    let (urls, auth) = split_urls(["nats://connres:p%40ss@127.0.0.1:4222"]).unwrap();
    assert_eq!(urls, ["nats://127.0.0.1:4222"]);
    assert_eq!(
        auth,
        Some(NatsAuth::UserPassword {
            user: "connres".into(),
            password: Secret::new("p@ss")
        })
    );
    let (urls, auth) = split_urls("tls://s3cret@a:4222, tls://s3cret@b:4222".split(',')).unwrap();
    assert_eq!(urls, ["tls://a:4222", "tls://b:4222"]);
    assert_eq!(auth, Some(NatsAuth::Token(Secret::new("s3cret"))));
    assert!(!format!("{auth:?}").contains("s3cret"));
    let (urls, auth) = split_urls(["127.0.0.1:4222"]).unwrap();
    assert_eq!((urls.len(), auth), (1, None));
    assert!(split_urls(["nats://a@x:1", "nats://b@y:1"]).is_err());
    assert!(split_urls([" ", ""]).is_err());
    assert!(split_urls(["http://x:1"]).unwrap_err().contains("http://"));
    assert!(split_urls(["nats://:4222"]).is_err());
}

#[test]
fn the_file_names_every_option_and_paths_are_relative_to_it() {
    let n = nats(
        "  url: [tls://127.0.0.1:4222, tls://127.0.0.1:4223]\n  name: connres-eu-1\n  creds: connres.creds\n  tls: { ca: /etc/ssl/nats-ca.pem, cert: client.pem, key: client-key.pem }\n  reconnect: { max_attempts: 10, max_delay: 2s }\n  connect_timeout: 3s",
    )
    .unwrap();
    assert_eq!(n.urls, ["tls://127.0.0.1:4222", "tls://127.0.0.1:4223"]);
    assert_eq!(n.name, "connres-eu-1");
    assert_eq!(
        n.auth,
        Some(NatsAuth::Creds("/etc/connres/connres.creds".into()))
    );
    assert_eq!(n.tls.ca.as_deref(), Some(Path::new("/etc/ssl/nats-ca.pem")));
    assert_eq!(
        n.tls.cert.as_deref(),
        Some(Path::new("/etc/connres/client.pem"))
    );
    assert!(n.tls.required());
    assert_eq!(n.reconnect.max_attempts, Some(10));
    assert_eq!(n.reconnect.max_delay, Duration::from_secs(2));
    assert_eq!(n.connect_timeout, Duration::from_secs(3));
    let d = n.describe();
    assert!(
        d.contains("credentials file /etc/connres/connres.creds"),
        "{d}"
    );
    assert!(
        d.contains("client certificate /etc/connres/client.pem"),
        "{d}"
    );
}

#[test]
fn secrets_never_print() {
    let n = nats("  user: connres\n  password: hunter2-very-secret").unwrap();
    assert!(!format!("{n:?}").contains("hunter2"));
    assert!(!n.describe().contains("hunter2"));
    assert!(n.describe().contains("user `connres` with a password"));
    let n = nats("  token: tok-very-secret").unwrap();
    assert!(!format!("{n:?}{}", n.describe()).contains("tok-very"));
}

#[test]
fn one_way_to_authenticate_and_each_part_complete() {
    let e = nats("  creds: a.creds\n  token: t").unwrap_err();
    assert_eq!(
        e,
        ["/etc/connres/resources.yaml:4:3: give one way to authenticate to NATS, not both `nats.creds` and `nats.token`"]
    );
    let e = nats("  user: connres").unwrap_err();
    assert_eq!(
        e,
        ["/etc/connres/resources.yaml:3:3: `nats.user` needs a password"]
    );
    let e = nats("  url: nats://u:p@127.0.0.1:4222\n  nkey: x.nk").unwrap_err();
    assert!(
        e[0].contains("not both `nats.nkey` and credentials in `nats.url`"),
        "{e:?}"
    );
    let e = nats("  tls: { cert: c.pem }").unwrap_err();
    assert!(e[0].contains("needs both `cert` and `key`"), "{e:?}");
    let e = nats("  reconnect: { max_attempts: 0, max_dealy: 1s }").unwrap_err();
    assert_eq!(e.len(), 2, "{e:?}");
    let e = nats("  url: ftp://x").unwrap_err();
    assert!(e[0].contains("`ftp://` is not one of"), "{e:?}");
}

#[test]
fn flags_and_environment_win_and_replace_credentials_whole() {
    let file =
        nats("  url: nats://127.0.0.1:4222\n  creds: a.creds\n  tls: { ca: ca.pem }").unwrap();
    let o = NatsOverrides {
        user: Some("connres".into()),
        password: Some(Secret::new("pw")),
        ..NatsOverrides::default()
    };
    let n = file.with_overrides(&o).unwrap();
    assert!(matches!(n.auth, Some(NatsAuth::UserPassword { .. })));
    assert_eq!(n.urls, file.urls);
    assert_eq!(n.tls.ca, file.tls.ca);
    let o = NatsOverrides {
        url: Some("nats://tok@127.0.0.1:4333,nats://tok@127.0.0.1:4334".into()),
        name: Some("edge".into()),
        max_reconnects: Some(3),
        ..NatsOverrides::default()
    };
    let n = file.with_overrides(&o).unwrap();
    assert_eq!(n.urls.len(), 2);
    assert_eq!(n.auth, Some(NatsAuth::Token(Secret::new("tok"))));
    assert_eq!(
        (n.name.as_str(), n.reconnect.max_attempts),
        ("edge", Some(3))
    );
    // Nothing given: the file's settings stand.
    assert_eq!(
        file.with_overrides(&NatsOverrides::default()).unwrap(),
        file
    );
    let two = NatsOverrides {
        token: Some(Secret::new("t")),
        nkey: Some("x.nk".into()),
        ..NatsOverrides::default()
    };
    let e = file.with_overrides(&two).unwrap_err();
    assert_eq!(
        e,
        "give one way to authenticate to NATS, not both --nats-nkey and --nats-token"
    );
    let half = NatsOverrides {
        cert: Some("c.pem".into()),
        ..NatsOverrides::default()
    };
    assert!(file.with_overrides(&half).is_err());
}
