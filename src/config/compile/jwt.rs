//! Compiling an `auth:` entry's `jwt:` block: the algorithms, the key (from the
//! environment, a file, or for a JWKS a URL the service fetches), issuer, audience and
//! leeway, into a [`Verifier`] built once.

use std::sync::Arc;
use std::time::Duration;

use super::Compiler;
use crate::auth::jwt::{Algorithm, KeyMaterial, Verifier};
use crate::config::auth::{Jwt, JWT_KEYS, KEY_SOURCE_KEYS};
use crate::config::yaml::{Kind, Pos, Yaml};

/// Bytes of a key read from the environment or a file, and where from; or a JWKS's URL
/// (fetched by the service).
struct KeyText {
    bytes: Vec<u8>,
    from: String,
    url: Option<String>,
}

impl Compiler {
    pub(super) fn jwt(&mut self, what: &str, node: &Yaml) -> Option<Jwt> {
        let what = format!("{what}: `jwt`");
        let entries = self.mapping(node, &what, JWT_KEYS)?;
        let mut algorithms: Vec<(Algorithm, Pos)> = Vec::new();
        let mut algorithms_given = false;
        let mut key: Option<(&str, KeyText, Pos)> = None;
        let (mut issuer, mut audience, mut leeway) = (None, None, Duration::ZERO);
        let mut failed = false;
        for (k, v) in entries {
            match k.name.as_str() {
                "algorithms" => {
                    algorithms_given = true;
                    let items: Vec<&Yaml> = match &v.kind {
                        Kind::Seq(items) => items.iter().collect(),
                        _ => vec![v],
                    };
                    for item in items {
                        let Some(text) = self.string(item, &format!("{what}: `algorithms`")) else {
                            failed = true;
                            continue;
                        };
                        match text.parse::<Algorithm>() {
                            Ok(a) => algorithms.push((a, item.pos)),
                            Err(_) => {
                                failed = true;
                                self.error(
                                    item.pos,
                                    format!(
                                        "{what}: algorithm `{text}` is not supported; use {}",
                                        Algorithm::ALL.map(|a| a.name()).join(", ")
                                    ),
                                );
                            }
                        }
                    }
                }
                name @ ("secret" | "public_key" | "jwks") => {
                    if let Some((other, _, _)) = &key {
                        self.error(
                            k.pos,
                            format!("{what}: give one key: `{other}` is already given, so `{name}` cannot be"),
                        );
                        failed = true;
                        continue;
                    }
                    match self.key_text(&format!("{what}: `{name}`"), v) {
                        Some(text) => key = Some((name, text, v.pos)),
                        None => failed = true,
                    }
                }
                "issuer" => {
                    issuer = self
                        .string(v, &format!("{what}: `issuer`"))
                        .map(String::from)
                }
                "audience" => {
                    audience = self
                        .string(v, &format!("{what}: `audience`"))
                        .map(String::from)
                }
                _ => {
                    if let Some(d) = self.duration(v, &format!("{what}: `leeway`"), Duration::ZERO)
                    {
                        leeway = d;
                    }
                }
            }
        }
        if !algorithms_given {
            self.error(
                node.pos,
                format!("{what} needs `algorithms` (e.g. `[HS256]`): the algorithms a token may be signed with"),
            );
            return None;
        }
        let Some((kind, text, key_pos)) = key else {
            if !failed {
                self.error(
                    node.pos,
                    format!("{what} needs a key: `secret`, `public_key` or `jwks`"),
                );
            }
            return None;
        };
        if failed {
            return None;
        }
        let algs: Vec<Algorithm> = algorithms.iter().map(|(a, _)| *a).collect();
        let material = match kind {
            _ if text.url.is_some() => KeyMaterial::JwksLater,
            "secret" => KeyMaterial::Secret(&text.bytes),
            other => {
                let Ok(s) = std::str::from_utf8(&text.bytes) else {
                    self.error(
                        key_pos,
                        format!("{what}: `{other}` ({}) is not UTF-8 text", text.from),
                    );
                    return None;
                };
                if other == "public_key" {
                    KeyMaterial::PublicKeyPem(s)
                } else {
                    KeyMaterial::Jwks(s)
                }
            }
        };
        let verifier = match Verifier::new(&algs, material) {
            Ok(v) => v,
            Err(e) => {
                self.error(key_pos, format!("{what}: `{kind}` ({}): {e}", text.from));
                return None;
            }
        };
        let mut verifier = verifier.leeway(leeway);
        if let Some(i) = issuer {
            verifier = verifier.issuer(i);
        }
        if let Some(a) = audience {
            verifier = verifier.audience(a);
        }
        let key_from = match kind {
            "secret" => format!("secret <secret> from {}", text.from),
            "public_key" => format!("public key from {}", text.from),
            _ => format!("JWKS from {}", text.from),
        };
        Some(Jwt {
            verifier: Arc::new(verifier),
            key_from,
            jwks_url: text.url,
        })
    }

    /// A key's text from `{ env: NAME }` or `{ file: path }` (relative to the config's
    /// directory). A trailing newline of a file or variable is not part of the key.
    fn key_text(&mut self, what: &str, node: &Yaml) -> Option<KeyText> {
        if let Kind::Str(_) = node.kind {
            self.error(
                node.pos,
                format!("{what} is read from the environment or a file, never written in the config: write `{{ env: NAME }}` or `{{ file: path }}`"),
            );
            return None;
        }
        let entries = self.mapping(node, what, KEY_SOURCE_KEYS)?;
        let [(k, v)] = entries.as_slice() else {
            self.error(
                node.pos,
                format!("{what} needs exactly one of `env`, `file` or (a JWKS) `url`"),
            );
            return None;
        };
        let source = self.string(v, &format!("{what}: `{}`", k.name))?;
        if k.name == "url" {
            if !what.ends_with("`jwks`") {
                self.error(
                    k.pos,
                    format!("{what}: only a JWKS is fetched from a URL; give `env` or `file`"),
                );
                return None;
            }
            if let Err(e) = crate::auth::url::HttpUrl::parse(source) {
                self.error(v.pos, format!("{what}: {e}"));
                return None;
            }
            return Some(KeyText {
                bytes: Vec::new(),
                from: format!("URL {source}"),
                url: Some(source.to_string()),
            });
        }
        let (bytes, from) = if k.name == "env" {
            match std::env::var_os(source) {
                Some(value) => (
                    value.into_encoded_bytes(),
                    format!("environment variable {source}"),
                ),
                None => {
                    self.error(
                        v.pos,
                        format!("{what}: environment variable `{source}` is not set"),
                    );
                    return None;
                }
            }
        } else {
            let path = self.base.join(source);
            match read_key_file(&path) {
                Ok(bytes) => (bytes, format!("file {}", path.display())),
                Err(e) => {
                    self.error(
                        v.pos,
                        format!("{what}: cannot read `{}`: {e}", path.display()),
                    );
                    return None;
                }
            }
        };
        let mut bytes = bytes;
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        if bytes.is_empty() {
            self.error(v.pos, format!("{what}: {from} is empty"));
            return None;
        }
        Some(KeyText {
            bytes,
            from,
            url: None,
        })
    }
}

/// The most a key file may hold: a JWKS of many keys is a few tens of kilobytes.
const MAX_KEY_FILE: u64 = 1024 * 1024;

/// Reads a key file: a regular file of at most [`MAX_KEY_FILE`] bytes.
fn read_key_file(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(std::io::Error::other(format!(
            "larger than {} KiB",
            MAX_KEY_FILE / 1024
        )));
    }
    Ok(bytes)
}
