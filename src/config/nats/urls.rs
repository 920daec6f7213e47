//! Server URLs: checked, and the credentials they may carry taken out.

use super::{NatsAuth, Secret, SCHEMES};

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
