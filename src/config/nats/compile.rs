//! Compiling the `nats:` block, every error with its position.

use std::path::PathBuf;
use std::time::Duration;

use super::auth::Given;
use super::{
    split_urls, NatsSettings, ReconnectSettings, Secret, TlsSettings, NATS_KEYS, RECONNECT_KEYS,
    TLS_KEYS,
};
use crate::config::compile::{is_subject_token, Compiler};
use crate::config::yaml::{Kind, Pos, Yaml};

impl Compiler {
    /// Compiles `nats:`. Relative file paths are relative to the config file's directory.
    pub(in crate::config) fn nats(&mut self, node: &Yaml) -> NatsSettings {
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
