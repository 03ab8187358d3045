//! `[http]`: the technicians' status page, `/api/status`, `/metrics` and `/healthz`.
//!
//! | path | what |
//! |---|---|
//! | `/` (`/page.js`, `/page.css`) | the page: no resource from outside the agent |
//! | `/api/status` | the status snapshot ([`crate::status::Status`]) as JSON |
//! | `/api/status.schema.json` | its JSON Schema |
//! | `/api/page` | what the page may do: refresh interval, acknowledging, the user |
//! | `POST /api/alerts/ack` | `{"alert_id": "..."}`: acknowledge, as the signed-in user |
//! | `/metrics` | OpenMetrics text ([`metrics`]) |
//! | `/healthz` | `ok` while the agent runs; no credentials needed |
//!
//! Invariants: with `users_file` every path but `/healthz` needs credentials; without it nothing
//! changes state (acknowledging is refused). Everything is served from the one status snapshot.
//! The server serves at most [`MAX_CONNECTIONS`] connections at once and holds at most
//! [`MAX_CLIENTS`], gives a client [`HEADER_TIMEOUT`] to send its request head (a silent one
//! holds no slot meanwhile), and reads at most [`MAX_BODY`] of a body.

pub mod auth;
pub mod metrics;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::control::AgentCommands;
use crate::uplink::CommandHandler;
use firmware_config::{Http, Users};

/// Connections served at once; more wait for a slot.
pub const MAX_CONNECTIONS: usize = 32;
/// Connections held at all (served, waiting for a slot, or not yet asking); more are closed.
pub const MAX_CLIENTS: usize = 256;
/// Time a client has to send a request's head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request body read (an acknowledgement is a few dozen bytes).
pub const MAX_BODY: usize = 4 * 1024;
/// The pause before a refusal: guessing credentials over the network is slow.
const REFUSAL_PAUSE: Duration = Duration::from_millis(300);

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");
const SCHEMA: &str = include_str!("status.schema.json");

/// Nothing on the page comes from anywhere but the agent, and nothing may frame it.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// Every path served (`/healthz` aside).
const PATHS: [&str; 9] = [
    "/",
    "/index.html",
    "/page.js",
    "/page.css",
    "/api/status",
    "/api/status.schema.json",
    "/api/page",
    "/api/alerts/ack",
    "/metrics",
];

/// What the server answers from.
pub struct Site {
    pub commands: Arc<AgentCommands>,
    pub users: Option<Users>,
    pub refresh: Duration,
    pub counts: metrics::ServerCounts,
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    response
}

fn text(status: StatusCode, body: impl Into<String>) -> Reply {
    reply(status, "text/plain; charset=utf-8", body.into() + "\n")
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Reply {
    match serde_json::to_vec(value) {
        Ok(body) => reply(status, "application/json", body),
        Err(error) => text(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}

fn page(content_type: &'static str, body: &'static str) -> Reply {
    let mut response = reply(StatusCode::OK, content_type, body);
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    response
}

fn refused() -> Reply {
    let mut response = text(StatusCode::UNAUTHORIZED, "credentials needed");
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"millwright\", charset=\"UTF-8\""),
    );
    response
}

/// Who made the request: `Ok(None)` when no credentials are configured, `Err` when they are and
/// the request does not carry valid ones.
fn who(site: &Site, request: &Request<Incoming>) -> Result<Option<String>, ()> {
    let Some(users) = &site.users else {
        return Ok(None);
    };
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    auth::user(users, header).map(Some).ok_or(())
}

/// Answers one request.
pub async fn handle(
    site: Arc<Site>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Reply, Infallible> {
    site.counts.requests.fetch_add(1, Relaxed);
    let path = request.uri().path().to_string();
    if path == "/healthz" {
        return Ok(text(StatusCode::OK, "ok"));
    }
    let user = match who(&site, &request) {
        Ok(user) => user,
        Err(()) => {
            site.counts.refused.fetch_add(1, Relaxed);
            if request.headers().contains_key(header::AUTHORIZATION) {
                warn!(%peer, %path, "status page: wrong credentials");
            }
            tokio::time::sleep(REFUSAL_PAUSE).await;
            return Ok(refused());
        }
    };
    let (allowed, allow) = if path == "/api/alerts/ack" {
        (request.method() == Method::POST, "POST")
    } else {
        let method = request.method();
        (method == Method::GET || method == Method::HEAD, "GET, HEAD")
    };
    if !allowed && PATHS.contains(&path.as_str()) {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
        return Ok(response);
    }
    Ok(match path.as_str() {
        "/" | "/index.html" => page("text/html; charset=utf-8", PAGE),
        "/page.js" => page("text/javascript; charset=utf-8", SCRIPT),
        "/page.css" => page("text/css; charset=utf-8", STYLE),
        "/api/status" => json(StatusCode::OK, &site.commands.status()),
        "/api/status.schema.json" => reply(StatusCode::OK, "application/schema+json", SCHEMA),
        "/api/page" => json(
            StatusCode::OK,
            &serde_json::json!({
                "refresh_ms": site.refresh.as_millis() as u64,
                "can_acknowledge": user.is_some(),
                "user": user,
            }),
        ),
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics::render(&site.commands.status(), &site.counts),
        ),
        "/api/alerts/ack" => acknowledge(&site, user, request).await,
        _ => text(StatusCode::NOT_FOUND, "not found"),
    })
}

/// `POST /api/alerts/ack`: only for a signed-in user, only as JSON from this page's own origin
/// (a form on another site can send neither).
async fn acknowledge(site: &Site, user: Option<String>, request: Request<Incoming>) -> Reply {
    let Some(user) = user else {
        return text(
            StatusCode::FORBIDDEN,
            "the page is read-only: acknowledging needs [http] users_file",
        );
    };
    let headers = request.headers();
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let foreign = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|origin| {
            let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
            Some(origin_host) != host
        });
    if !is_json || foreign {
        return text(
            StatusCode::FORBIDDEN,
            "acknowledge from the status page (JSON, same origin)",
        );
    }
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "request too large"),
    };
    let Ok(args) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return text(StatusCode::BAD_REQUEST, "expected {\"alert_id\": \"...\"}");
    };
    let args = serde_json::json!({ "alert_id": args.get("alert_id"), "by": user });
    match site.commands.handle("ack-alert", &args).await {
        Ok(answer) => {
            info!(%user, alert_id = %args["alert_id"], "alert acknowledged from the status page");
            json(StatusCode::OK, &answer)
        }
        Err(error) => text(StatusCode::CONFLICT, error.to_string()),
    }
}

/// Serves HTTP/1.1 on `stream` until it closes or `stop` (then finishes the request in hand).
async fn connection<I>(io: I, site: Arc<Site>, peer: SocketAddr, stop: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |request| handle(Arc::clone(&site), peer, request));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024);
    let served = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(served);
    tokio::select! {
        result = served.as_mut() => {
            if let Err(error) = result {
                debug!(%peer, %error, "status page connection ended");
            }
        }
        () = stop.cancelled() => {
            served.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), served).await;
        }
    }
}

/// Serves `listener` until `stop`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    site: Arc<Site>,
    stop: CancellationToken,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, mostly: wait rather than spin.
                    warn!(%error, "status page: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
        };
        if connections.len() >= MAX_CLIENTS {
            debug!(%peer, "status page: too many clients; connection closed");
            continue;
        }
        let (site, stop, tls, slots) = (
            Arc::clone(&site),
            stop.clone(),
            tls.clone(),
            Arc::clone(&slots),
        );
        connections.spawn(async move {
            // A client takes a slot once it has asked something: one that connects and stays
            // silent (hyper's header timeout starts at the first byte) holds none.
            match tls {
                None => {
                    let asked =
                        tokio::time::timeout(HEADER_TIMEOUT, stream.peek(&mut [0u8; 1])).await;
                    if !matches!(asked, Ok(Ok(n)) if n > 0) {
                        debug!(%peer, "status page: nothing asked within the header timeout");
                        return;
                    }
                    let Ok(_slot) = slots.acquire_owned().await else {
                        return;
                    };
                    connection(stream, site, peer, stop).await;
                }
                Some(acceptor) => {
                    match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let Ok(_slot) = slots.acquire_owned().await else {
                                return;
                            };
                            connection(stream, site, peer, stop).await;
                        }
                        Ok(Err(error)) => {
                            debug!(%peer, %error, "status page: TLS handshake failed")
                        }
                        Err(_) => debug!(%peer, "status page: TLS handshake timed out"),
                    }
                }
            }
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

/// Why the page cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("HTTPS: {0}")]
    Tls(#[from] crate::uplink::tls::TlsError),
}

/// Binds `[http] listen` and loads the certificate.
pub async fn bind(
    http: &Http,
) -> Result<(TcpListener, Option<tokio_rustls::TlsAcceptor>), StartError> {
    let tls = match &http.tls {
        Some((cert, key)) => Some(tokio_rustls::TlsAcceptor::from(
            crate::uplink::tls::server_config(cert, key)?,
        )),
        None => None,
    };
    let listener = TcpListener::bind(http.listen)
        .await
        .map_err(|error| StartError::Bind {
            addr: http.listen,
            error,
        })?;
    Ok((listener, tls))
}

/// How long to wait before trying to bind again.
const REBIND: Duration = Duration::from_secs(10);

/// Runs the status server of `http` until `stop`: a port in use (or a certificate missing) is
/// logged and tried again every 10 s; acquisition never waits for it.
pub async fn run(http: Http, commands: Arc<AgentCommands>, stop: CancellationToken) {
    let site = Arc::new(Site {
        commands,
        users: http.users.clone(),
        refresh: http.refresh,
        counts: metrics::ServerCounts::default(),
    });
    let mut said = None;
    let (listener, tls) = loop {
        match bind(&http).await {
            Ok(bound) => break bound,
            Err(problem) => {
                let text = problem.to_string();
                if said.as_ref() != Some(&text) {
                    error!(error = %text, "the status page is not served; trying again every 10 s");
                    said = Some(text);
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(REBIND) => {}
        }
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let address = listener.local_addr().map_or(http.listen, |a| a);
    info!(
        url = %format!("{scheme}://{address}/"),
        credentials = site.users.is_some(),
        "status page served"
    );
    serve(listener, tls, site, stop).await;
}
