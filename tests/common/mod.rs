//! The shared integration-test harness: a real `nats-server` on a free loopback port,
//! connres running in-process against it, and a client that plays the gateway.
#![allow(dead_code)]

pub mod auth;
pub mod leases;
pub mod logs;
pub mod process;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::{Client, Subscriber};
use bytes::Bytes;
use connres::config::Config;
use connres::service::Service;
use futures::{FutureExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::coop::unconstrained;
use tokio::task::JoinHandle;

/// How long to wait for something that must happen before calling the test failed.
pub const WAIT: Duration = Duration::from_secs(10);

/// A `nats-server` process on a free loopback port, killed on drop.
pub struct NatsServer {
    child: Child,
    pub url: String,
    pub port: u16,
    /// The HTTP monitoring address, when started with one.
    monitor: Option<String>,
    /// JetStream's storage directory, when started with JetStream.
    store_dir: Option<tempfile::TempDir>,
}

/// The nats-server binary: `$NATS_SERVER`, the project's `.tools/bin`, or `PATH`.
pub fn nats_server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("NATS_SERVER") {
        return PathBuf::from(p);
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/nats-server");
    if local.exists() {
        return local;
    }
    PathBuf::from("nats-server")
}

impl NatsServer {
    /// Starts a server on a port it picks itself (`-p -1`), so concurrent test runs never
    /// race for a port.
    pub fn start() -> NatsServer {
        NatsServer::spawn("-1", false)
    }

    /// Starts a server on a given port (to restart one at the same address).
    pub fn start_on(port: u16) -> NatsServer {
        NatsServer::spawn(&port.to_string(), false)
    }

    /// Starts a server with HTTP monitoring on a port it picks, for [`NatsServer::connz`].
    pub fn start_monitored() -> NatsServer {
        NatsServer::spawn("-1", true)
    }

    /// Starts a server with JetStream (the shared store), storing in a directory of its
    /// own, on a free port.
    pub fn start_jetstream() -> NatsServer {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().display().to_string();
        let mut server = NatsServer::spawn_with("-1", false, None, &["-js", "-sd", &path]);
        server.store_dir = Some(dir);
        server
    }

    /// Starts a server with JetStream, monitoring and a configuration file (subject
    /// mappings), on free ports.
    pub fn start_jetstream_with_config(path: &std::path::Path) -> NatsServer {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = dir.path().display().to_string();
        let mut server = NatsServer::spawn_with("-1", true, Some(path), &["-js", "-sd", &store]);
        server.store_dir = Some(dir);
        server
    }

    /// Starts a server with a configuration file (users, permissions), on a free port.
    pub fn start_with_config(path: &std::path::Path) -> NatsServer {
        NatsServer::spawn_with("-1", false, Some(path), &[])
    }

    /// Starts a server with a configuration file and more command-line options.
    pub fn start_with_config_and_args(path: &std::path::Path, args: &[&str]) -> NatsServer {
        NatsServer::spawn_with("-1", false, Some(path), args)
    }

    /// Starts a server with more command-line options (e.g. `--auth TOKEN`).
    pub fn start_with_args(args: &[&str]) -> NatsServer {
        NatsServer::spawn_with("-1", false, None, args)
    }

    /// The server's URL with a user's credentials in it.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!("nats://{user}:{password}@127.0.0.1:{}", self.port)
    }

    fn spawn(port: &str, monitored: bool) -> NatsServer {
        NatsServer::spawn_with(port, monitored, None, &[])
    }

    /// Spawns nats-server and reads its log until it says where it listens: readiness
    /// by the server's own word, not by polling.
    fn spawn_with(
        port: &str,
        monitored: bool,
        config: Option<&std::path::Path>,
        extra: &[&str],
    ) -> NatsServer {
        let config = config.map(|p| p.display().to_string());
        let mut args = vec!["-a", "127.0.0.1", "-p", port];
        args.extend(extra);
        if monitored {
            args.extend(["-m", "-1"]);
        }
        if let Some(c) = &config {
            args.extend(["-c", c.as_str()]);
        }
        let mut child = Command::new(nats_server_bin())
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nats-server must be installed: run scripts/install-nats-server.sh");
        let mut log = BufReader::new(child.stderr.take().expect("piped"));
        let mut line = String::new();
        let mut monitor = None;
        let port = loop {
            line.clear();
            if log.read_line(&mut line).unwrap_or(0) == 0 {
                let _ = child.kill();
                panic!("nats-server exited before listening (port {port})");
            }
            if let Some(addr) = line.split("Starting http monitor on ").nth(1) {
                monitor = Some(addr.trim().to_string());
            }
            if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
                let port = addr.trim().rsplit(':').next().and_then(|p| p.parse().ok());
                break port.expect("a port in nats-server's listening line");
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
        NatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            port,
            monitor,
            store_dir: None,
        }
    }

    /// The server's view of its client connections (`/connz`), from its monitoring port.
    pub fn connz(&self) -> Value {
        self.monitor_get("/connz")
    }

    /// A page of the server's monitoring port, as JSON.
    pub fn monitor_get(&self, path: &str) -> Value {
        use std::io::{Read, Write};
        let addr = self.monitor.as_ref().expect("started with monitoring");
        let mut stream = std::net::TcpStream::connect(addr).expect("monitor port");
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let body = response.split("\r\n\r\n").nth(1).expect("an HTTP body");
        serde_json::from_str(body).expect("connz is JSON")
    }

    /// How many messages the server has sent to the connection named `name`, once
    /// everything it queued for it is written to the socket (`out_msgs` with no
    /// `pending_bytes`). Asks until that holds: the server writes asynchronously.
    pub async fn delivered_to(&self, name: &str) -> u64 {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let connz = self.connz();
            let conn = connz["connections"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["name"] == name))
                .cloned()
                .unwrap_or_else(|| panic!("no connection named {name}: {connz}"));
            if conn["pending_bytes"] == 0 {
                return conn["out_msgs"].as_u64().expect("out_msgs");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "still pending: {conn}"
            );
            tokio::task::yield_now().await;
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// connres running in-process.
pub struct Connres {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), connres::service::ServiceError>>>,
}

impl Connres {
    /// Stops the service gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("connres stops")
                .expect("task joins")
                .expect("clean exit");
        }
    }

    /// Waits for the service to end by itself, and returns how it ended.
    pub async fn ended(mut self) -> Result<(), connres::service::ServiceError> {
        let task = self.task.take().expect("running");
        tokio::time::timeout(WAIT, task)
            .await
            .expect("connres ends")
            .expect("task joins")
    }
}

impl Drop for Connres {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The test's side of the wire: requests like Resgate sends them, and every event and
/// system message connres publishes.
pub struct Gateway {
    pub client: Client,
    pub events: Subscriber,
    pub system: Subscriber,
}

/// Starts connres on `yaml` against `server`, with a gateway already listening, and
/// returns once connres has announced itself with `system.reset`.
pub async fn start(server: &NatsServer, yaml: &str) -> (Connres, Gateway) {
    let (connres, gateway, _) = start_with_reset(server, yaml).await;
    (connres, gateway)
}

/// Starts connres on `yaml` connecting with `connres_url` (which may carry credentials),
/// with a gateway already connected.
pub async fn start_as(connres_url: &str, gateway: Gateway, yaml: &str) -> (Connres, Gateway) {
    let overrides = connres::config::NatsOverrides {
        url: Some(connres_url.into()),
        ..Default::default()
    };
    start_connected(&overrides, gateway, yaml).await
}

/// Starts connres on `yaml` connecting with its `nats:` block under `overrides` (what
/// flags and the environment give), with a gateway already connected.
pub async fn start_connected(
    overrides: &connres::config::NatsOverrides,
    mut gateway: Gateway,
    yaml: &str,
) -> (Connres, Gateway) {
    let config = Config::parse("test.yaml", yaml).unwrap_or_else(|e| panic!("{e}"));
    let service = Service::connect(config, overrides)
        .await
        .unwrap_or_else(|e| panic!("connres starts: {}", connres::logs::error_chain(&e)));
    let (connres, _) = launch(service, &mut gateway).await;
    (connres, gateway)
}

/// Like [`start`], with a clock the test moves; also returns the service's metrics.
pub async fn start_clocked(
    server: &NatsServer,
    yaml: &str,
    clock: connres::clock::Clock,
) -> (Connres, Gateway, std::sync::Arc<connres::metrics::Metrics>) {
    let config = Config::parse("test.yaml", yaml).unwrap_or_else(|e| panic!("{e}"));
    let mut gateway = Gateway::connect(server).await;
    let service = Service::start(config, &server.url)
        .await
        .expect("connres starts")
        .with_clock(clock);
    let stats = service.metrics();
    let (connres, _) = launch(service, &mut gateway).await;
    (connres, gateway, stats)
}

/// Like [`start`], and also returns the payload of the `system.reset` connres announced
/// itself with.
pub async fn start_with_reset(server: &NatsServer, yaml: &str) -> (Connres, Gateway, Value) {
    let config = Config::parse("test.yaml", yaml).unwrap_or_else(|e| panic!("{e}"));
    let mut gateway = Gateway::connect(server).await;
    let service = Service::start(config, &server.url)
        .await
        .expect("connres starts");
    let (connres, reset) = launch(service, &mut gateway).await;
    (connres, gateway, reset)
}

/// Like [`start`] on a config with `state.store: nats`; also returns the shared
/// store's figures (which partitions the instance serves).
pub async fn start_shared(
    server: &NatsServer,
    yaml: &str,
) -> (
    Connres,
    Gateway,
    std::sync::Arc<connres::service::ClusterMetrics>,
) {
    let config = Config::parse("test.yaml", yaml).unwrap_or_else(|e| panic!("{e}"));
    let gateway = Gateway::connect(server).await;
    let service = Service::start(config, &server.url)
        .await
        .expect("connres starts");
    let cluster = service.cluster_metrics().expect("a shared store");
    let metrics = service.metrics();
    SHARED_METRICS.with(|m| *m.borrow_mut() = Some(metrics));
    // Only an instance that finds no other one running announces itself with a
    // `system.reset`: each waits until it has seen the cluster instead.
    let mut serving = service.serving();
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(service.run(async {
        let _ = stopped.await;
    }));
    tokio::time::timeout(WAIT, serving.wait_for(|s| *s))
        .await
        .expect("the instance serves in time")
        .expect("the instance runs");
    let connres = Connres {
        stop: Some(stop),
        task: Some(task),
    };
    (connres, gateway, cluster)
}

/// Starts an instance on a config with `state.store: nats` and returns at once, with
/// the shared store's figures: unlike [`start_shared`] it does not wait for a
/// `system.reset`, since an instance joining others that already serve need not
/// announce itself with one. It serves once it holds partitions
/// ([`connres::service::ClusterMetrics::served`]).
pub async fn start_member(
    server: &NatsServer,
    yaml: &str,
) -> (Connres, std::sync::Arc<connres::service::ClusterMetrics>) {
    let config = Config::parse("test.yaml", yaml).unwrap_or_else(|e| panic!("{e}"));
    let service = Service::start(config, &server.url)
        .await
        .expect("connres starts");
    let cluster = service.cluster_metrics().expect("a shared store");
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(service.run(async {
        let _ = stopped.await;
    }));
    let connres = Connres {
        stop: Some(stop),
        task: Some(task),
    };
    (connres, cluster)
}

thread_local! {
    /// The service metrics of the last instance [`start_shared`] or [`start_watched`]
    /// started on this thread.
    static SHARED_METRICS: std::cell::RefCell<Option<std::sync::Arc<connres::metrics::Metrics>>> =
        const { std::cell::RefCell::new(None) };
}

/// The service metrics of the last instance [`start_shared`] or [`start_watched`]
/// started on this thread.
pub fn last_shared_metrics() -> std::sync::Arc<connres::metrics::Metrics> {
    SHARED_METRICS.with(|m| m.borrow().clone().expect("an instance was started"))
}

/// Runs a started service and waits for its `system.reset` announcement.
/// With the shared store only an instance that finds no other one running announces
/// itself: each is waited for until it has seen the cluster instead (the payload is
/// then null).
async fn launch(service: Service, gateway: &mut Gateway) -> (Connres, Value) {
    let shared = service.cluster_metrics().is_some();
    let mut serving = service.serving();
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(service.run(async {
        let _ = stopped.await;
    }));
    let payload = if shared {
        tokio::time::timeout(WAIT, serving.wait_for(|s| *s))
            .await
            .expect("the instance serves in time")
            .expect("the instance runs");
        Value::Null
    } else {
        let (subject, payload) = gateway.next_system().await;
        assert_eq!(subject, "system.reset");
        payload
    };
    let connres = Connres {
        stop: Some(stop),
        task: Some(task),
    };
    (connres, payload)
}

impl Gateway {
    pub async fn connect(server: &NatsServer) -> Gateway {
        Gateway::connect_with(server, async_nats::ConnectOptions::new()).await
    }

    /// Connects with a token to a server that requires one.
    pub async fn connect_with_token(server: &NatsServer, token: &str) -> Gateway {
        let options = async_nats::ConnectOptions::with_token(token.into());
        Gateway::connect_with(server, options).await
    }

    /// Connects as a user of a server configured with users.
    pub async fn connect_as(server: &NatsServer, user: &str, password: &str) -> Gateway {
        let options =
            async_nats::ConnectOptions::with_user_and_password(user.into(), password.into());
        Gateway::connect_with(server, options).await
    }

    /// Connects with any client options (TLS, NKeys, credentials).
    pub async fn connect_with(server: &NatsServer, options: async_nats::ConnectOptions) -> Gateway {
        let client = options
            .connect(&server.url)
            .await
            .expect("gateway connects");
        let events = client.subscribe("event.>").await.unwrap();
        let system = client.subscribe("system.>").await.unwrap();
        client.flush().await.unwrap();
        Gateway {
            client,
            events,
            system,
        }
    }

    /// Sends a request and returns the parsed reply.
    pub async fn request(&self, subject: &str, payload: Value) -> Value {
        let body = if payload.is_null() {
            Bytes::new()
        } else {
            Bytes::from(payload.to_string())
        };
        self.request_raw(subject, body).await
    }

    pub async fn request_raw(&self, subject: &str, payload: Bytes) -> Value {
        let reply = tokio::time::timeout(WAIT, self.client.request(subject.to_string(), payload))
            .await
            .unwrap_or_else(|_| panic!("no reply to {subject}"))
            .unwrap_or_else(|e| panic!("request {subject}: {e}"));
        serde_json::from_slice(&reply.payload).expect("reply is JSON")
    }

    /// `get.<rid>`: the model.
    pub async fn get(&self, rid: &str) -> Value {
        let reply = self.request(&format!("get.{rid}"), Value::Null).await;
        reply["result"]["model"].clone()
    }

    /// What Resgate does when connection `cid` subscribes `rid`: asks access (which must
    /// grant `get`), then gets the model, which it returns.
    pub async fn subscribe(&self, rid: &str, cid: &str, token: Value) -> Value {
        let access = self.access(rid, cid, token).await;
        assert_eq!(
            access["result"]["get"],
            json!(true),
            "access to {rid}: {access}"
        );
        self.get(rid).await
    }

    /// Waits until connres answers on `rid` again after a NATS outage: bounded retries,
    /// each ending with a reply, with "no responders" while connres is not subscribed
    /// yet, or after a short wait while the gateway's own connection is still down.
    pub async fn wait_until_served(&self, rid: &str) {
        for _ in 0..200 {
            let request = self.client.request(format!("get.{rid}"), Bytes::new());
            match tokio::time::timeout(Duration::from_millis(200), request).await {
                Ok(Ok(_)) => return,
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(_) => {}
            }
        }
        panic!("connres does not serve {rid} again");
    }

    /// `access.<rid>` as connection `cid` with `token`: the whole reply.
    pub async fn access(&self, rid: &str, cid: &str, token: Value) -> Value {
        let mut payload = json!({"cid": cid, "isHttp": false});
        if !token.is_null() {
            payload["token"] = token;
        }
        self.request(&format!("access.{rid}"), payload).await
    }

    /// `call.<rid>.<method>` as connection `cid` with `token` and `params`.
    pub async fn call(
        &self,
        rid: &str,
        method: &str,
        cid: &str,
        token: Value,
        params: Value,
    ) -> Value {
        let mut payload = json!({"cid": cid, "isHttp": false});
        if !token.is_null() {
            payload["token"] = token;
        }
        if !params.is_null() {
            payload["params"] = params;
        }
        self.request(&format!("call.{rid}.{method}"), payload).await
    }

    /// Publishes `conn.<cid>.token` (a null token is a logout).
    pub async fn token(&self, cid: &str, token: Value) {
        let body = json!({ "token": token }).to_string();
        self.client
            .publish(format!("conn.{cid}.token"), Bytes::from(body))
            .await
            .unwrap();
        self.client.flush().await.unwrap();
    }

    /// The next event connres published: its subject and payload (null when empty).
    pub async fn next_event(&mut self) -> (String, Value) {
        let msg = tokio::time::timeout(WAIT, self.events.next())
            .await
            .expect("an event arrives")
            .expect("event subscription open");
        (msg.subject.to_string(), parse_or_null(&msg.payload))
    }

    /// The next `system.*` message.
    pub async fn next_system(&mut self) -> (String, Value) {
        let msg = tokio::time::timeout(WAIT, self.system.next())
            .await
            .expect("a system message arrives")
            .expect("system subscription open");
        (msg.subject.to_string(), parse_or_null(&msg.payload))
    }

    /// Events already delivered to this client, without waiting. Call it after a reply
    /// that connres sent after the events in question: connres publishes in order on
    /// one connection, so those events are here by then.
    pub fn pending_events(&mut self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        while let Some(Some(msg)) = unconstrained(self.events.next()).now_or_never() {
            out.push((msg.subject.to_string(), parse_or_null(&msg.payload)));
        }
        out
    }

    /// System messages already delivered, without waiting.
    pub fn pending_system(&mut self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        while let Some(Some(msg)) = unconstrained(self.system.next()).now_or_never() {
            out.push((msg.subject.to_string(), parse_or_null(&msg.payload)));
        }
        out
    }
}

pub fn parse_or_null(payload: &[u8]) -> Value {
    if payload.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(payload).expect("event payload is JSON")
    }
}

/// The seed config: the user on the connection and its preferences.
pub const SEED: &str = include_str!("../config/valid/seed.yaml");

/// Partitions in the shared-store tests' buckets.
pub const PARTITIONS: u32 = 32;

/// The seed resources on the shared store (`state.store: nats`) in `bucket`, with
/// [`PARTITIONS`] partitions and a two-second lease (long enough that a test machine
/// under load does not starve an instance into giving its partitions up).
pub fn shared_seed(bucket: &str) -> String {
    let body = SEED
        .split_once("resources:")
        .map(|(_, rest)| rest)
        .expect("the seed config declares resources");
    format!(
        "version: 1\nstate:\n  store: nats\n  bucket: {bucket}\n  partitions: {PARTITIONS}\n  lease: 2s\nresources:{body}"
    )
}

/// A config file, `resources.yaml`, in a temporary directory of its own.
pub struct ConfigDir {
    /// The directory, for files beside the config.
    pub dir: tempfile::TempDir,
}

impl ConfigDir {
    pub fn new(text: &str) -> ConfigDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("resources.yaml"), text).unwrap();
        ConfigDir { dir }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("resources.yaml")
    }
}

pub fn write_in_place(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Saves like an editor: write a temporary file, then rename it over the original.
pub fn write_by_rename(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Starts connres on the config file at `path`, watching it for reloads; returns the
/// reload reports from then on as well.
pub async fn start_watched(
    server: &NatsServer,
    path: &std::path::Path,
) -> (
    Connres,
    Gateway,
    tokio::sync::broadcast::Receiver<connres::reload::ReloadReport>,
) {
    let config = Config::load(path).unwrap_or_else(|e| panic!("{e}"));
    let mut gateway = Gateway::connect(server).await;
    let service = Service::start(config, &server.url)
        .await
        .expect("connres starts")
        .watch(path)
        .expect("watch starts");
    let reports = service.reload_reports();
    let metrics = service.metrics();
    SHARED_METRICS.with(|m| *m.borrow_mut() = Some(metrics));
    let (connres, _) = launch(service, &mut gateway).await;
    (connres, gateway, reports)
}

/// The next reload report that is an outcome other than `Unchanged`.
pub async fn next_reload(
    reports: &mut tokio::sync::broadcast::Receiver<connres::reload::ReloadReport>,
) -> connres::reload::ReloadReport {
    loop {
        let report = tokio::time::timeout(WAIT, reports.recv())
            .await
            .expect("a reload happens")
            .expect("reports open");
        use connres::reload::ReloadReport::{Compiling, Unchanged};
        if !matches!(report, Unchanged { .. } | Compiling) {
            return report;
        }
    }
}

static BARRIERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Gateway {
    /// Waits until connres has handled every `conn.*.token` event published before, and
    /// returns the events it published before this barrier's own (so a test can assert
    /// that an earlier token event published nothing). The config must declare the
    /// seed's `session.user.{cid}` with `id` from `token.userId`.
    ///
    /// How: a fresh marker connection gets its `session.user` model known by a get, then
    /// logs in by a token event. Token events arrive on one subscription and are handled
    /// in order, and connres publishes in order, so every event of an earlier token event
    /// arrives before the marker's change event.
    pub async fn token_barrier(&mut self) -> Vec<(String, Value)> {
        let n = BARRIERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cid = format!("barrier{n}");
        let rid = format!("session.user.{cid}");
        assert_eq!(self.get(&rid).await["id"], Value::Null, "barrier model");
        self.token(&cid, json!({ "userId": 1 })).await;
        let marker = format!("event.{rid}.change");
        let mut before = Vec::new();
        loop {
            let (subject, payload) = self.next_event().await;
            if subject == marker {
                return before;
            }
            before.push((subject, payload));
        }
    }

    /// Asserts a reply is a RES error with `code`, and returns its message.
    pub fn expect_error(reply: &Value, code: &str) -> String {
        assert_eq!(reply["error"]["code"], json!(code), "reply {reply}");
        assert!(reply.get("result").is_none(), "reply {reply}");
        reply["error"]["message"]
            .as_str()
            .expect("an error message")
            .to_string()
    }
}
