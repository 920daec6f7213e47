//! The URL of a JWKS: `https://host[:port]/path`, or `http://` to a loopback host only
//! (keys fetched in the clear from elsewhere could be anyone's). Pure.

/// A JWKS URL, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub tls: bool,
    /// The host as written (an IPv6 address without its brackets).
    pub host: String,
    pub port: u16,
    /// The path and query, `/` at least.
    pub path: String,
}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("`{url}` is not an https:// URL"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err("a JWKS URL carries no credentials".into());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("an IPv6 host needs its `]`")?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(format!("`{url}` has no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| format!("`{p}` is not a port"))?,
            None if tls => 443,
            None => 80,
        };
        if !tls && !is_loopback(host) {
            return Err(format!(
                "`{url}`: keys over plain http only from a loopback host; use https://"
            ));
        }
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("`{url}` has spaces in its path"));
        }
        Ok(HttpUrl {
            tls,
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// The `Host` header's value.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.tls, self.port) {
            (true, 443) | (false, 80) => host,
            (_, port) => format!("{host}:{port}"),
        }
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_http_on_loopback_only() {
        let u = HttpUrl::parse("https://id.example.test/.well-known/jwks.json").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port),
            (true, "id.example.test", 443)
        );
        assert_eq!(u.path, "/.well-known/jwks.json");
        assert_eq!(u.host_header(), "id.example.test");
        let u = HttpUrl::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((u.tls, u.port, u.path.as_str()), (false, 8080, "/"));
        assert_eq!(u.host_header(), "127.0.0.1:8080");
        let u = HttpUrl::parse("http://[::1]:9/k?x=1").unwrap();
        assert_eq!((u.host.as_str(), u.path.as_str()), ("::1", "/k?x=1"));
        assert_eq!(u.host_header(), "[::1]:9");
        for bad in [
            "http://id.example.test/jwks",
            "ftp://127.0.0.1/",
            "https://",
            "https://u:p@id.example.test/",
            "https://id.example.test:99999/",
            "https://id.example.test/a b",
            "id.example.test/jwks",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
