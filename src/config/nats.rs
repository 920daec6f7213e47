//! The `nats:` block: which servers connres connects to and how it proves who it is.
//! Read at start (a reload keeps the running settings). Flags and the environment
//! override the file ([`NatsOverrides`]); credentials are replaced as a whole, so a
//! password in the environment never mixes with a credentials file named in the file.
//! Secrets are [`Secret`]s, which never print.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::compile::{is_subject_token, Compiler};
use super::yaml::{Kind, Pos, Yaml};

/// Where connres connects when neither a flag, the environment nor the file names a server.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// The connection name nats-server shows (`nats server report connections`, monitoring).
pub const DEFAULT_CONNECTION_NAME: &str = "connres";
/// How long one connection attempt may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait between two reconnect attempts (the waits double up to it).
pub const DEFAULT_RECONNECT_MAX_DELAY: Duration = Duration::from_secs(4);
/// Default queue group for request subscriptions.
pub const DEFAULT_QUEUE_GROUP: &str = "connres";

const NATS_KEYS: &[&str] = &[
    "url",
    "queue_group",
    "name",
    "creds",
    "nkey",
    "user",
    "password",
    "token",
    "tls",
    "reconnect",
    "connect_timeout",
];
const TLS_KEYS: &[&str] = &["ca", "cert", "key", "first"];
const RECONNECT_KEYS: &[&str] = &["max_attempts", "max_delay"];
const SCHEMES: &[&str] = &["nats", "tls", "ws", "wss"];

/// A password or token: compared and cloned like a string, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the NATS client only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How connres authenticates to NATS: one way at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsAuth {
    /// A `.creds` file: the user JWT and its NKey seed (decentralised auth, `nsc`).
    Creds(PathBuf),
    /// A file holding an NKey user seed (`SU...`).
    NKey(PathBuf),
    UserPassword {
        user: String,
        password: Secret,
    },
    Token(Secret),
}

impl fmt::Display for NatsAuth {
    /// What an operator may see: file paths and the user name, never a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatsAuth::Creds(p) => write!(f, "credentials file {}", p.display()),
            NatsAuth::NKey(p) => write!(f, "NKey seed file {}", p.display()),
            NatsAuth::UserPassword { user, .. } => write!(f, "user `{user}` with a password"),
            NatsAuth::Token(_) => f.write_str("a token"),
        }
    }
}

/// TLS to the server (`nats.tls`). Any of it makes TLS required, as does a `tls://` URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file of the CA(s) that signed the server's certificate; the system's roots
    /// when not given.
    pub ca: Option<PathBuf>,
    /// PEM client certificate and key, for servers that verify clients (`verify: true`).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// TLS handshake before the server's INFO (nats-server `handshake_first`).
    pub first: bool,
}

impl TlsSettings {
    pub fn required(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.first
    }
}

/// What connres does when the connection drops (`nats.reconnect`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconnectSettings {
    /// Give up (and exit with an error) after this many failed attempts in a row;
    /// `None`, the default, tries forever.
    pub max_attempts: Option<usize>,
    /// The longest wait between attempts.
    pub max_delay: Duration,
}

impl Default for ReconnectSettings {
    fn default() -> Self {
        ReconnectSettings {
            max_attempts: None,
            max_delay: DEFAULT_RECONNECT_MAX_DELAY,
        }
    }
}

/// How connres connects to NATS (`nats:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSettings {
    /// Server URLs without credentials; empty means [`DEFAULT_NATS_URL`].
    pub urls: Vec<String>,
    pub queue_group: String,
    /// The connection name the server shows.
    pub name: String,
    pub auth: Option<NatsAuth>,
    pub tls: TlsSettings,
    pub reconnect: ReconnectSettings,
    pub connect_timeout: Duration,
}

impl Default for NatsSettings {
    fn default() -> Self {
        NatsSettings {
            urls: Vec::new(),
            queue_group: DEFAULT_QUEUE_GROUP.into(),
            name: DEFAULT_CONNECTION_NAME.into(),
            auth: None,
            tls: TlsSettings::default(),
            reconnect: ReconnectSettings::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

/// Settings from flags and the environment; each one given wins over the file.
#[derive(Debug, Default, Clone)]
pub struct NatsOverrides {
    /// Server URLs, comma-separated; may carry credentials.
    pub url: Option<String>,
    pub name: Option<String>,
    pub creds: Option<PathBuf>,
    pub nkey: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub tls_first: bool,
    pub max_reconnects: Option<usize>,
    pub reconnect_max_delay: Option<Duration>,
    pub connect_timeout: Option<Duration>,
}

impl NatsSettings {
    /// The settings to connect with: each override given replaces the file's value;
    /// credentials given by flags or the environment (or in their URL) replace the
    /// file's credentials as a whole.
    pub fn with_overrides(&self, o: &NatsOverrides) -> Result<NatsSettings, String> {
        let mut out = self.clone();
        let mut url_auth = None;
        if let Some(url) = &o.url {
            let (urls, auth) = split_urls(url.split(','))?;
            out.urls = urls;
            url_auth = auth;
        }
        let given = Given {
            creds: o.creds.clone().map(|p| ("--nats-creds", p)),
            nkey: o.nkey.clone().map(|p| ("--nats-nkey", p)),
            user: o.user.clone().map(|u| ("--nats-user", u)),
            password: o.password.clone().map(|p| ("--nats-password", p)),
            token: o.token.clone().map(|t| ("--nats-token", t)),
            url: url_auth.map(|a| ("credentials in --nats", a)),
        };
        if let Some(auth) = given.choose_flags()? {
            out.auth = Some(auth);
        }
        if let Some(name) = &o.name {
            out.name = name.clone();
        }
        for (to, from) in [
            (&mut out.tls.ca, &o.ca),
            (&mut out.tls.cert, &o.cert),
            (&mut out.tls.key, &o.key),
        ] {
            if from.is_some() {
                *to = from.clone();
            }
        }
        out.tls.first |= o.tls_first;
        if out.tls.cert.is_some() != out.tls.key.is_some() {
            return Err("a TLS client certificate needs its key, and a key its certificate (--nats-cert with --nats-key)".into());
        }
        if let Some(n) = o.max_reconnects {
            out.reconnect.max_attempts = Some(n);
        }
        if let Some(d) = o.reconnect_max_delay {
            out.reconnect.max_delay = d;
        }
        if let Some(d) = o.connect_timeout {
            out.connect_timeout = d;
        }
        Ok(out)
    }

    /// The server URLs to connect to.
    pub fn urls_or_default(&self) -> Vec<String> {
        if self.urls.is_empty() {
            vec![DEFAULT_NATS_URL.to_string()]
        } else {
            self.urls.clone()
        }
    }

    /// One line for `check` and logs: servers, how connres authenticates and TLS; no
    /// secret.
    pub fn describe(&self) -> String {
        let mut s = self.urls_or_default().join(", ");
        match &self.auth {
            Some(auth) => s.push_str(&format!("; auth: {auth}")),
            None => s.push_str("; no auth"),
        }
        if self.tls.required() || self.urls.iter().any(|u| u.starts_with("tls://")) {
            s.push_str("; TLS");
            if let Some(ca) = &self.tls.ca {
                s.push_str(&format!(", CA {}", ca.display()));
            }
            if let Some(cert) = &self.tls.cert {
                s.push_str(&format!(", client certificate {}", cert.display()));
            }
            if self.tls.first {
                s.push_str(", handshake first");
            }
        }
        s.push_str(&format!("; name {}", self.name));
        s
    }
}

/// The credentials given in one place, each with what to call it in an error.
#[derive(Default)]
struct Given<L> {
    creds: Option<(L, PathBuf)>,
    nkey: Option<(L, PathBuf)>,
    user: Option<(L, String)>,
    password: Option<(L, Secret)>,
    token: Option<(L, Secret)>,
    url: Option<(L, NatsAuth)>,
}

impl<L: fmt::Display + Clone> Given<L> {
    /// The one way to authenticate that was given, if any; more than one is an error
    /// naming two of them, blamed on the second.
    fn choose(self) -> Result<Option<NatsAuth>, (L, String)> {
        let mut ways: Vec<(L, NatsAuth)> = Vec::new();
        if let Some((l, p)) = self.creds {
            ways.push((l, NatsAuth::Creds(p)));
        }
        if let Some((l, p)) = self.nkey {
            ways.push((l, NatsAuth::NKey(p)));
        }
        match (self.user, self.password) {
            (Some((l, user)), Some((_, password))) => {
                ways.push((l, NatsAuth::UserPassword { user, password }))
            }
            (Some((l, _)), None) => return Err((l.clone(), format!("{l} needs a password"))),
            (None, Some((l, _))) => return Err((l.clone(), format!("{l} needs a user"))),
            (None, None) => {}
        }
        if let Some((l, t)) = self.token {
            ways.push((l, NatsAuth::Token(t)));
        }
        if let Some(w) = self.url {
            ways.push(w);
        }
        let mut ways = ways.into_iter();
        let first = ways.next();
        match (first, ways.next()) {
            (Some((a, _)), Some((b, _))) => Err((
                b.clone(),
                format!("give one way to authenticate to NATS, not both {a} and {b}"),
            )),
            (first, None) => Ok(first.map(|(_, auth)| auth)),
            (None, Some(_)) => unreachable!("an iterator yields after None"),
        }
    }
}

impl Given<&'static str> {
    fn choose_flags(self) -> Result<Option<NatsAuth>, String> {
        self.choose().map_err(|(_, message)| message)
    }
}

/// Splits server URLs and takes credentials out of them: the NATS client ignores them
/// in URLs. `nats://user:password@host` is a user and password, `nats://token@host` a
/// token (both percent-decoded). Every URL that carries credentials must carry the same.
pub fn split_urls<'a>(
    urls: impl IntoIterator<Item = &'a str>,
) -> Result<(Vec<String>, Option<NatsAuth>), String> {
    let mut out = Vec::new();
    let mut auth: Option<NatsAuth> = None;
    for url in urls.into_iter().map(str::trim).filter(|u| !u.is_empty()) {
        let (scheme, rest) = match url.split_once("://") {
            Some((s, r)) => (Some(s), r),
            None => (None, url),
        };
        if let Some(s) = scheme.filter(|s| !SCHEMES.contains(s)) {
            return Err(format!(
                "NATS URL scheme `{s}://` is not one of nats://, tls://, ws://, wss://"
            ));
        }
        let (userinfo, host) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        if host.is_empty() || host.starts_with(':') || host.starts_with('/') {
            return Err("a NATS URL has no host (write e.g. nats://127.0.0.1:4222)".into());
        }
        out.push(match scheme {
            Some(s) => format!("{s}://{host}"),
            None => host.to_string(),
        });
        let Some(userinfo) = userinfo else { continue };
        let this = match userinfo.split_once(':') {
            Some((user, password)) => NatsAuth::UserPassword {
                user: decode(user),
                password: Secret(decode(password)),
            },
            None => NatsAuth::Token(Secret(decode(userinfo))),
        };
        match &auth {
            Some(a) if *a != this => {
                return Err(
                    "the NATS URLs carry different credentials; give every server the same".into(),
                )
            }
            _ => auth = Some(this),
        }
    }
    if out.is_empty() {
        return Err("no NATS server URL given".into());
    }
    Ok((out, auth))
}

/// Percent-decoding, as URLs write reserved characters in user names and passwords.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Compiler {
    /// Compiles `nats:`. Relative file paths are relative to the config file's directory.
    pub(super) fn nats(&mut self, node: &Yaml) -> NatsSettings {
        let mut out = NatsSettings::default();
        let mut given: Given<Pos> = Given::default();
        let base = self.base.clone();
        let path = |s: &str| base.join(s);
        for (key, value) in self.mapping(node, "`nats`", NATS_KEYS).unwrap_or_default() {
            let what = format!("`nats.{}`", key.name);
            match key.name.as_str() {
                "url" => {
                    let items: Vec<(&str, Pos)> = match &value.kind {
                        Kind::Seq(items) => items
                            .iter()
                            .filter_map(|i| Some((self.string(i, "a `nats.url` entry")?, i.pos)))
                            .collect(),
                        _ => self
                            .string(value, &what)
                            .map(|u| (u, value.pos))
                            .into_iter()
                            .collect(),
                    };
                    let mut valid = true;
                    for (url, pos) in &items {
                        if let Err(e) = split_urls(url.split(',')) {
                            self.error(*pos, format!("{what}: {e}"));
                            valid = false;
                        }
                    }
                    let all = items.iter().flat_map(|(u, _)| u.split(','));
                    match split_urls(all) {
                        Ok((urls, auth)) => {
                            out.urls = urls;
                            given.url = auth.map(|a| (key.pos, a));
                        }
                        Err(e) if valid => self.error(value.pos, format!("{what}: {e}")),
                        Err(_) => {}
                    }
                }
                "tls" => out.tls = self.tls(value, &path),
                "reconnect" => out.reconnect = self.reconnect(value),
                "connect_timeout" => {
                    if let Some(d) = self.duration(value, &what, Duration::from_millis(1)) {
                        out.connect_timeout = d;
                    }
                }
                name => {
                    let Some(s) = self.string(value, &what) else {
                        continue;
                    };
                    let at = key.pos;
                    match name {
                        "queue_group" if is_subject_token(s) => out.queue_group = s.into(),
                        "queue_group" => self.error(value.pos, "`nats.queue_group` must be one NATS subject token (no spaces, dots or wildcards)"),
                        "name" => out.name = s.into(),
                        "creds" => given.creds = Some((at, path(s))),
                        "nkey" => given.nkey = Some((at, path(s))),
                        "user" => given.user = Some((at, s.into())),
                        "password" => given.password = Some((at, Secret::new(s))),
                        _ => given.token = Some((at, Secret::new(s))),
                    }
                }
            }
        }
        match given.choose_in_file() {
            Ok(auth) => out.auth = auth,
            Err((pos, message)) => self.error(pos, message),
        }
        out
    }

    fn tls(&mut self, node: &Yaml, path: &dyn Fn(&str) -> PathBuf) -> TlsSettings {
        let mut out = TlsSettings::default();
        let mut cert_at = None;
        for (key, value) in self
            .mapping(node, "`nats.tls`", TLS_KEYS)
            .unwrap_or_default()
        {
            let what = format!("`nats.tls.{}`", key.name);
            if key.name == "first" {
                out.first = self.boolean(value, &what).unwrap_or(false);
                continue;
            }
            let Some(s) = self.string(value, &what) else {
                continue;
            };
            match key.name.as_str() {
                "ca" => out.ca = Some(path(s)),
                "cert" => {
                    out.cert = Some(path(s));
                    cert_at = Some(key.pos);
                }
                _ => {
                    out.key = Some(path(s));
                    cert_at = cert_at.or(Some(key.pos));
                }
            }
        }
        if out.cert.is_some() != out.key.is_some() {
            self.error(
                cert_at.unwrap_or(node.pos),
                "`nats.tls` needs both `cert` and `key` for a client certificate",
            );
        }
        out
    }

    fn reconnect(&mut self, node: &Yaml) -> ReconnectSettings {
        let mut out = ReconnectSettings::default();
        for (key, value) in self
            .mapping(node, "`nats.reconnect`", RECONNECT_KEYS)
            .unwrap_or_default()
        {
            if key.name == "max_delay" {
                if let Some(d) = self.duration(
                    value,
                    "`nats.reconnect.max_delay`",
                    Duration::from_millis(1),
                ) {
                    out.max_delay = d;
                }
                continue;
            }
            match value.kind {
                Kind::Int(n) if n >= 1 => out.max_attempts = Some(n as usize),
                _ => self.error(
                    value.pos,
                    format!(
                        "`nats.reconnect.max_attempts` must be a whole number, 1 or more (leave it out to retry forever), not {}",
                        value.to_json()
                    ),
                ),
            }
        }
        out
    }
}

impl Given<Pos> {
    fn choose_in_file(self) -> Result<Option<NatsAuth>, (Pos, String)> {
        // Name the keys as the file writes them.
        let named = Given {
            creds: self.creds.map(|(p, v)| (Named(p, "`nats.creds`"), v)),
            nkey: self.nkey.map(|(p, v)| (Named(p, "`nats.nkey`"), v)),
            user: self.user.map(|(p, v)| (Named(p, "`nats.user`"), v)),
            password: self.password.map(|(p, v)| (Named(p, "`nats.password`"), v)),
            token: self.token.map(|(p, v)| (Named(p, "`nats.token`"), v)),
            url: self
                .url
                .map(|(p, v)| (Named(p, "credentials in `nats.url`"), v)),
        };
        named.choose().map_err(|(n, m)| (n.0, m))
    }
}

/// A key's position and how to call it.
#[derive(Clone, Copy)]
struct Named(Pos, &'static str);

impl fmt::Display for Named {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.1)
    }
}

#[cfg(test)]
mod tests {
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
        let (urls, auth) =
            split_urls("tls://s3cret@a:4222, tls://s3cret@b:4222".split(',')).unwrap();
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
}
