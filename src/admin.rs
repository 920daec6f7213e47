//! The metrics listener (`serve --metrics-addr`): Prometheus text at `/metrics`,
//! `/healthz` (the process is up) and `/readyz` (subscribed, announced and connected to
//! NATS). HTTP/1.1 by `hyper`; nothing else is served.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves the listener until the process ends.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener: accept failed");
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = respond(&req, &metrics);
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "metrics listener: connection ended");
            }
        });
    }
}

fn respond(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, kind: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", kind)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    let text = "text/plain; charset=utf-8";
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => reply(StatusCode::OK, OPENMETRICS, metrics.encode()),
        (&Method::GET, "/healthz") => reply(StatusCode::OK, text, "ok\n".into()),
        (&Method::GET, "/readyz") if metrics.ready() => {
            reply(StatusCode::OK, text, "ready\n".into())
        }
        (&Method::GET, "/readyz") => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            text,
            "not ready: not yet serving, or NATS is unreachable\n".into(),
        ),
        (&Method::GET, _) => reply(
            StatusCode::NOT_FOUND,
            text,
            "not found: /metrics, /healthz and /readyz are served\n".into(),
        ),
        _ => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            text,
            "only GET is served\n".into(),
        ),
    }
}
