//! What connres connects to NATS with: the server URLs (several, comma-separated, for a
//! cluster) and the credentials a URL may carry. The NATS client ignores credentials in
//! URLs, so they are taken out here and passed as options: `nats://user:password@host`
//! is a user and password, `nats://token@host` a token (both percent-decoded).

use async_nats::ConnectOptions;

/// Server URLs without credentials, and the credentials they carried.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Servers {
    pub(super) urls: Vec<String>,
    auth: Option<Auth>,
}

#[derive(PartialEq, Eq)]
enum Auth {
    UserPassword(String, String),
    Token(String),
}

impl std::fmt::Debug for Auth {
    /// Never the secret itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::UserPassword(user, _) => write!(f, "UserPassword({user:?}, ***)"),
            Auth::Token(_) => write!(f, "Token(***)"),
        }
    }
}

impl Servers {
    /// Splits `urls` (comma-separated) and takes the credentials out. Every URL that
    /// carries credentials must carry the same ones: the client has one set.
    pub(super) fn parse(urls: &str) -> Result<Servers, String> {
        let mut out = Servers {
            urls: Vec::new(),
            auth: None,
        };
        for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            let (scheme, rest) = match url.split_once("://") {
                Some((s, r)) => (Some(s), r),
                None => (None, url),
            };
            let (userinfo, host) = match rest.rsplit_once('@') {
                Some((u, h)) => (Some(u), h),
                None => (None, rest),
            };
            out.urls.push(match scheme {
                Some(s) => format!("{s}://{host}"),
                None => host.to_string(),
            });
            let Some(userinfo) = userinfo else { continue };
            let auth = match userinfo.split_once(':') {
                Some((user, password)) => Auth::UserPassword(decode(user), decode(password)),
                None => Auth::Token(decode(userinfo)),
            };
            match &out.auth {
                Some(a) if *a != auth => {
                    return Err(
                        "the NATS URLs carry different credentials; give every server the same"
                            .into(),
                    )
                }
                _ => out.auth = Some(auth),
            }
        }
        if out.urls.is_empty() {
            return Err("no NATS server URL given".into());
        }
        Ok(out)
    }

    /// The options with the credentials applied.
    pub(super) fn authenticate(&self, options: ConnectOptions) -> ConnectOptions {
        match &self.auth {
            Some(Auth::UserPassword(user, password)) => {
                options.user_and_password(user.clone(), password.clone())
            }
            Some(Auth::Token(token)) => options.token(token.clone()),
            None => options,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_out_of_the_urls() {
        let s = Servers::parse("nats://connres:p%40ss@127.0.0.1:4222").unwrap();
        assert_eq!(s.urls, ["nats://127.0.0.1:4222"]);
        assert_eq!(
            s.auth,
            Some(Auth::UserPassword("connres".into(), "p@ss".into()))
        );
        let s = Servers::parse("tls://s3cret@a:4222, tls://s3cret@b:4222").unwrap();
        assert_eq!(s.urls, ["tls://a:4222", "tls://b:4222"]);
        assert_eq!(s.auth, Some(Auth::Token("s3cret".into())));
        assert!(!format!("{s:?}").contains("s3cret"));
        let s = Servers::parse("127.0.0.1:4222").unwrap();
        assert_eq!((s.urls.len(), s.auth), (1, None));
        assert!(Servers::parse("nats://a@x:1,nats://b@y:1").is_err());
        assert!(Servers::parse(" , ").is_err());
    }
}
