//! Connecting: [`NatsSettings`] turned into the NATS client's options (credentials read
//! from their files, TLS files checked, reconnect pacing), errors that say what to fix,
//! and the rate-limited report of failed reconnect attempts.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::{ConnectError, ConnectErrorKind, ConnectOptions};

use super::ServiceError;
use crate::config::{NatsAuth, NatsSettings};

/// The client options for `settings`, without the callbacks. Every file named is read
/// or checked here, so a missing or unreadable one is an error naming it, before any
/// connection attempt.
pub(super) async fn options(settings: &NatsSettings) -> Result<ConnectOptions, ServiceError> {
    let mut options = ConnectOptions::new()
        .name(&settings.name)
        .connection_timeout(settings.connect_timeout)
        .max_reconnects(settings.reconnect.max_attempts)
        .reconnect_delay_callback({
            let max = settings.reconnect.max_delay;
            move |attempts| reconnect_delay(attempts, max)
        });
    options = match &settings.auth {
        None => options,
        Some(NatsAuth::UserPassword { user, password }) => {
            options.user_and_password(user.clone(), password.expose().to_string())
        }
        Some(NatsAuth::Token(token)) => options.token(token.expose().to_string()),
        Some(NatsAuth::NKey(path)) => options.nkey(read_seed(path)?),
        Some(NatsAuth::Creds(path)) => {
            let text = read("credentials file", path)?;
            options.credentials(&text).map_err(|e| {
                ServiceError::Settings(format!(
                    "NATS credentials file {} is not a .creds file (a user JWT and its NKey seed): {e}",
                    path.display()
                ))
            })?
        }
    };
    let tls = &settings.tls;
    if let Some(ca) = &tls.ca {
        read("TLS CA file", ca)?;
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        read("TLS client certificate", cert)?;
        read("TLS client key", key)?;
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if tls.required() {
        options = options.require_tls(true);
    }
    if tls.first {
        options = options.tls_first();
    }
    Ok(options)
}

/// The wait before reconnect attempt `attempts` (1 is the first): none, then doubling
/// from 2 ms up to `max`, as the client's default does with its fixed 4 s.
fn reconnect_delay(attempts: usize, max: Duration) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exp = u32::try_from(attempts - 1).unwrap_or(u32::MAX).min(32);
    Duration::from_millis(2u64.saturating_pow(exp)).min(max)
}

/// The most a credentials, seed, certificate or key file may hold: a certificate chain
/// of a few dozen certificates fits many times over.
const MAX_CREDENTIAL_BYTES: u64 = 1 << 20;

/// Reads a file the NATS settings name, as config files are read: a regular file (a
/// FIFO is not waited on, a device not read without end) of at most
/// [`MAX_CREDENTIAL_BYTES`].
fn read(what: &str, path: &Path) -> Result<String, ServiceError> {
    crate::config::read_named(
        path,
        MAX_CREDENTIAL_BYTES,
        &format!("{} {what}", if what.starts_with('N') { "an" } else { "a" }),
    )
    .map_err(|e| ServiceError::Settings(format!("cannot read NATS {what} {}: {e}", path.display())))
}

/// The user seed in an NKey seed file (what `nk -gen user` writes: the seed alone).
fn read_seed(path: &Path) -> Result<String, ServiceError> {
    let text = read("NKey seed file", path)?;
    let seed = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("SU"))
        .ok_or_else(|| {
            ServiceError::Settings(format!(
                "NATS NKey seed file {} holds no user seed (a line starting with SU)",
                path.display()
            ))
        })?;
    nkeys::KeyPair::from_seed(seed).map_err(|e| {
        ServiceError::Settings(format!(
            "NATS NKey seed file {} holds an invalid seed: {e}",
            path.display()
        ))
    })?;
    Ok(seed.to_string())
}

/// What to do about a failed first connection, by its kind (the client reports some
/// TLS failures, such as an untrusted server certificate, as I/O errors).
pub(super) fn hint(error: &ConnectError) -> &'static str {
    let text = error.to_string().to_lowercase();
    let tls = text.contains("certificate") || text.contains("tls");
    match error.kind() {
        ConnectErrorKind::Io if tls => hint(&ConnectError::new(ConnectErrorKind::Tls)),
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
            "the server refused connres's credentials: check --nats-creds, --nats-nkey, --nats-user/--nats-password or --nats-token (NATS_CREDS, NATS_NKEY, NATS_USER/NATS_PASSWORD, NATS_TOKEN) or the `nats:` block in the config"
        }
        ConnectErrorKind::Tls => {
            "check the server's TLS certificate and --nats-ca, --nats-cert, --nats-key (NATS_CA, NATS_CERT, NATS_KEY) or `nats.tls` in the config"
        }
        _ => {
            "is nats-server running there? Point connres at another server with --nats URL, NATS_URL or `nats: { url: ... }` in the config"
        }
    }
}

/// Reports failed connection attempts, with their causes, at most once per
/// [`ReconnectLog::EVERY`]: an outage gives a line now and then, not several a second.
#[derive(Default, Clone)]
pub(super) struct ReconnectLog {
    last: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl ReconnectLog {
    const EVERY: Duration = Duration::from_secs(10);

    pub(super) fn attempt(&self, servers: &[async_nats::Server]) {
        let failing: Vec<String> = servers
            .iter()
            .filter(|s| s.failed_attempts > 0)
            .map(|s| {
                format!(
                    "{}:{} ({} failed attempts, last: {})",
                    s.addr.host(),
                    s.addr.port(),
                    s.failed_attempts,
                    s.last_error.as_deref().unwrap_or("unknown")
                )
            })
            .collect();
        if failing.is_empty() {
            return;
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| at.elapsed() < Self::EVERY) {
            return;
        }
        *last = Some(Instant::now());
        tracing::warn!(
            servers = failing.join(", "),
            "cannot reach NATS; still trying (reported at most every {}s)",
            Self::EVERY.as_secs()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_waits_double_up_to_the_cap() {
        let max = Duration::from_secs(2);
        let waits: Vec<u128> = (1..=14)
            .map(|n| reconnect_delay(n, max).as_millis())
            .collect();
        assert_eq!(
            waits,
            [0, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2000, 2000, 2000]
        );
        assert_eq!(reconnect_delay(usize::MAX, max), max);
    }

    #[test]
    fn unreadable_or_wrong_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.nk");
        let e = read_seed(&missing).unwrap_err().to_string();
        assert!(
            e.contains("cannot read NATS NKey seed file") && e.contains("nope.nk"),
            "{e}"
        );
        let wrong = dir.path().join("wrong.nk");
        std::fs::write(&wrong, "not a seed\n").unwrap();
        let e = read_seed(&wrong).unwrap_err().to_string();
        assert!(e.contains("holds no user seed"), "{e}");
        let good = dir.path().join("good.nk");
        let seed = nkeys::KeyPair::new_user().seed().unwrap();
        std::fs::write(&good, format!("{seed}\n")).unwrap();
        assert_eq!(read_seed(&good).unwrap(), seed);
    }

    #[test]
    fn credential_files_are_read_as_config_files_are() {
        // A FIFO is refused without waiting for a writer, a device without reading it.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.creds");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path; mkfifo only creates the node.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read("credentials file", &fifo).unwrap_err().to_string();
        assert!(
            e.contains("a FIFO (named pipe), and a credentials file must be a regular file"),
            "{e}"
        );
        let e = read_seed(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.contains("a character device"), "{e}");
        // A file past the limit is not read.
        let big = dir.path().join("big.nk");
        std::fs::write(&big, vec![b'S'; MAX_CREDENTIAL_BYTES as usize + 1]).unwrap();
        let e = read_seed(&big).unwrap_err().to_string();
        assert!(
            e.contains("larger than 1 MiB, the most an NKey seed file"),
            "{e}"
        );
    }
}
