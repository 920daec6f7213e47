//! JWKS fetched from a URL (`jwt: { jwks: { url } }`): a task per auth name fetches it at
//! start (and after each reload that keeps the name), again every [`REFRESH`], and again
//! when a token names a key it does not hold (an identity provider that rotated its
//! keys), at most once per [`POKE_GAP`] for that reason, so tokens with made-up `kid`s
//! cannot make connres hammer the provider. Until the first fetch lands, tokens are
//! refused (`unknown_key`). A failed fetch keeps the keys there were.
//!
//! The HTTP is a GET with `Connection: close` over tokio (and rustls with the system's
//! roots for https), its response head parsed by `httparse`: a body of at most
//! [`MAX_BODY`], plain or chunked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::auth::jwt::Verifier;
use crate::auth::url::HttpUrl;
use crate::config::Config;

/// How often a JWKS is fetched again anyway.
pub(super) const REFRESH: Duration = Duration::from_secs(10 * 60);
/// The least time between two fetches made for unknown `kid`s.
pub(super) const POKE_GAP: Duration = Duration::from_secs(30);
/// After a failed fetch, the next one.
const RETRY: Duration = Duration::from_secs(5);
/// How long a fetch may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest JWKS accepted.
const MAX_BODY: usize = 1024 * 1024;

/// The fetching tasks of the config in force, by auth name.
#[derive(Default)]
pub(super) struct Jwks {
    tasks: HashMap<String, Fetcher>,
}

struct Fetcher {
    url: String,
    poke: Arc<Notify>,
    /// The text last fetched, for a reloaded config's verifier of the same URL.
    last: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Jwks {
    /// Starts (or keeps) a fetcher per auth name of `config` with a JWKS URL; the
    /// verifiers of a reloaded config get the keys last fetched for the same URL at once.
    pub(super) fn follow(&mut self, config: &Config) {
        let mut next = HashMap::new();
        for entry in &config.auth.names {
            let Some(jwt) = &entry.jwt else { continue };
            let Some(url) = &jwt.jwks_url else { continue };
            let last = match self.tasks.remove(&entry.name) {
                Some(old) if &old.url == url => {
                    old.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
                }
                _ => None,
            };
            if let Some(text) = &last {
                let _ = jwt.verifier.set_jwks(text);
            }
            let fetcher = spawn(entry.name.clone(), url.clone(), jwt.verifier.clone(), last);
            next.insert(entry.name.clone(), fetcher);
        }
        // Those left over end here (dropped: aborted).
        self.tasks = next;
    }

    /// Asks for a fetch of `name`'s JWKS when tokens named keys it does not hold.
    pub(super) fn unknown_kid(&self, config: &Config, name: &str) {
        let Some(jwt) = config.auth.get(name).and_then(|e| e.jwt.as_ref()) else {
            return;
        };
        if jwt.verifier.take_unknown_kids() > 0 {
            if let Some(f) = self.tasks.get(name) {
                f.poke.notify_one();
            }
        }
    }
}

fn spawn(name: String, url: String, verifier: Arc<Verifier>, last: Option<String>) -> Fetcher {
    let poke = Arc::new(Notify::new());
    let last = Arc::new(Mutex::new(last));
    let task = tokio::spawn(run(name, url.clone(), verifier, poke.clone(), last.clone()));
    Fetcher {
        url,
        poke,
        last,
        task,
    }
}

async fn run(
    name: String,
    url: String,
    verifier: Arc<Verifier>,
    poke: Arc<Notify>,
    last: Arc<Mutex<Option<String>>>,
) {
    let mut poked_at: Option<Instant> = None;
    loop {
        let outcome = match fetch(&url).await {
            Ok(text) => match verifier.set_jwks(&text) {
                Ok(kids) => {
                    tracing::info!(auth = name, url, ?kids, "fetched the JWKS");
                    *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(text);
                    Fetched::Keys
                }
                Err(e) => {
                    tracing::warn!(auth = name, url, error = %e, "the fetched JWKS was refused; the keys stay as they were");
                    Fetched::Refused
                }
            },
            Err(e) => {
                tracing::warn!(auth = name, url, error = %e, "could not fetch the JWKS; the keys stay as they were");
                Fetched::Failed
            }
        };
        let wait = next_fetch(outcome);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = poke.notified() => {
                let hold = hold_after_poke(poked_at, Instant::now());
                if !hold.is_zero() {
                    tokio::time::sleep(hold).await;
                }
                poked_at = Some(Instant::now());
            }
        }
    }
}

/// How a fetch went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fetched {
    /// New keys in force.
    Keys,
    /// A document that is not a usable JWKS.
    Refused,
    /// No document (no connection, an HTTP error, too large, too slow).
    Failed,
}

/// When the next fetch goes, unasked: every [`REFRESH`] after one that brought keys;
/// soon after one that brought nothing ([`RETRY`]); not before [`POKE_GAP`] after a
/// document that was not a JWKS (the provider is up, and fetching again at once brings
/// the same).
fn next_fetch(outcome: Fetched) -> Duration {
    match outcome {
        Fetched::Keys => REFRESH,
        Fetched::Refused => RETRY.max(POKE_GAP),
        Fetched::Failed => RETRY,
    }
}

/// How long a fetch asked for by an unknown `kid` waits: none for the first, then
/// until [`POKE_GAP`] after the last such fetch.
fn hold_after_poke(last: Option<Instant>, now: Instant) -> Duration {
    last.map_or(Duration::ZERO, |at| {
        POKE_GAP.saturating_sub(now.saturating_duration_since(at))
    })
}

/// GETs `url`'s body as text.
pub(super) async fn fetch(url: &str) -> Result<String, String> {
    let url = HttpUrl::parse(url)?;
    tokio::time::timeout(TIMEOUT, get(&url))
        .await
        .map_err(|_| format!("no answer within {}s", TIMEOUT.as_secs()))?
}

async fn get(url: &HttpUrl) -> Result<String, String> {
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    if url.tls {
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(url.host.clone())
            .map_err(|e| format!("host name: {e}"))?;
        let tls = tls_connector()?
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        exchange(tls, url).await
    } else {
        exchange(tcp, url).await
    }
}

fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    use tokio_rustls::rustls;
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    });
    config.clone().map(tokio_rustls::TlsConnector::from)
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    url: &HttpUrl,
) -> Result<String, String> {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nConnection: close\r\nUser-Agent: connres\r\n\r\n",
        url.path,
        url.host_header()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    (&mut stream)
        .take((MAX_BODY + 64 * 1024) as u64)
        .read_to_end(&mut raw)
        .await
        .map_err(|e| format!("receive: {e}"))?;
    parse_response(&raw)
}

/// The body of a complete `200` response: plain (to `Content-Length` or the end) or
/// chunked.
fn parse_response(raw: &[u8]) -> Result<String, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err("the response ended early".into()),
        Err(e) => return Err(format!("not an HTTP response: {e}")),
    };
    if response.code != Some(200) {
        return Err(format!("HTTP status {}", response.code.unwrap_or(0)));
    }
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let body = &raw[head..];
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        dechunk(body)?
    } else if let Some(len) = header("content-length") {
        let len: usize = len.parse().map_err(|_| "a bad Content-Length")?;
        body.get(..len).ok_or("the body ended early")?.to_vec()
    } else {
        body.to_vec()
    };
    if body.len() > MAX_BODY {
        return Err(format!("larger than {} KiB", MAX_BODY / 1024));
    }
    String::from_utf8(body).map_err(|_| "the body is not UTF-8".to_string())
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let (start, size) = match httparse::parse_chunk_size(body) {
            Ok(httparse::Status::Complete(v)) => v,
            _ => return Err("a bad chunk".into()),
        };
        let size = usize::try_from(size).map_err(|_| "a bad chunk")?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = body.get(start..start + size).ok_or("a chunk ended early")?;
        if out.len() + size > MAX_BODY {
            return Err(format!("larger than {} KiB", MAX_BODY / 1024));
        }
        out.extend_from_slice(chunk);
        body = body
            .get(start + size..)
            .and_then(|b| b.strip_prefix(b"\r\n"))
            .ok_or("a chunk without its CRLF")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_fetch_follows_how_the_last_went() {
        assert_eq!(next_fetch(Fetched::Keys), Duration::from_secs(600));
        assert_eq!(next_fetch(Fetched::Failed), Duration::from_secs(5));
        assert_eq!(next_fetch(Fetched::Refused), POKE_GAP);
    }

    #[test]
    fn fetches_for_unknown_kids_are_at_least_the_gap_apart() {
        let t0 = Instant::now();
        assert_eq!(hold_after_poke(None, t0), Duration::ZERO);
        assert_eq!(hold_after_poke(Some(t0), t0), POKE_GAP);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            hold_after_poke(Some(t0), later),
            POKE_GAP - Duration::from_secs(10)
        );
        assert_eq!(hold_after_poke(Some(t0), t0 + POKE_GAP * 2), Duration::ZERO);
    }

    #[test]
    fn responses_plain_sized_and_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"keys\":[]}";
        assert_eq!(parse_response(plain).unwrap(), "{\"keys\":[]}");
        let sized = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcdEXTRA";
        assert_eq!(parse_response(sized).unwrap(), "abcd");
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"k\r\n5\r\neys\":\r\n3\r\n[]}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), "{\"keys\":[]}");
        for bad in [
            &b"HTTP/1.1 404 Not Found\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200",
            b"nonsense\r\n\r\n",
        ] {
            assert!(
                parse_response(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
