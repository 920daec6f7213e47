//! The `nats:` block: which servers connres connects to and how it proves who it is.
//! Read at start (a reload keeps the running settings). Flags and the environment
//! override the file ([`NatsOverrides`]); credentials are replaced as a whole, so a
//! password in the environment never mixes with a credentials file named in the file.
//! Secrets are [`Secret`]s, which never print.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

mod auth;
mod compile;
#[cfg(test)]
mod tests;
mod urls;

pub use urls::split_urls;

use auth::Given;

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

pub(crate) const NATS_KEYS: &[&str] = &[
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
pub(crate) const TLS_KEYS: &[&str] = &["ca", "cert", "key", "first"];
pub(crate) const RECONNECT_KEYS: &[&str] = &["max_attempts", "max_delay"];
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
