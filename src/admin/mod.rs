//! The admin listener: the REST API under `/api/v1` (and its OpenAPI document) and the web
//! console at `/`, on its own address apart from the registry port, for admin tokens only.

pub mod api;
pub mod audit;
pub mod console;
pub mod direktiv;
pub mod tokens;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

use self::api::{AdminState, Answer};

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::convert::Infallible>;

/// The OpenAPI 3.1 document of `/api/v1`.
pub const OPENAPI: &str = include_str!("openapi.json");
/// Largest request body the API reads.
const MAX_BODY: usize = 64 * 1024;
/// Failed token attempts from one address before it must wait.
const FREE_FAILURES: u32 = 30;
const FAILURE_WINDOW: Duration = Duration::from_secs(300);

/// Serves the admin API on `listener` until the process ends.
pub async fn serve(
    state: Arc<AdminState>,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let failures = Arc::new(failure_limit());
    // Over TLS the console's cookies are `Secure`.
    let console = Arc::new(console::Console::new(tls.is_some()));
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        let failures = failures.clone();
        let console = console.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                let failures = failures.clone();
                let console = console.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(
                        handle(state, failures, console, req, peer.ip()).await,
                    )
                }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            match tls {
                None => {
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
                Some(acceptor) => {
                    // A handshake that does not finish in 10 s holds nothing.
                    let Ok(Ok(s)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                            .await
                    else {
                        return;
                    };
                    let _ = builder.serve_connection(TokioIo::new(s), service).await;
                }
            }
        });
    }
}

async fn handle(
    state: Arc<AdminState>,
    failures: Arc<Failures>,
    console: Arc<console::Console>,
    req: Request<hyper::body::Incoming>,
    peer: IpAddr,
) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if console::owns(&path) {
        let out = console.handle(state, req, failures.backoff(&peer)).await;
        if out.failed_sign_in {
            failures.fail(peer);
        }
        return out.response.map(BodyExt::boxed_unsync);
    }
    let query = req.uri().query().map(str::to_string);
    if path == "/api/v1/openapi.json" && method == http::Method::GET {
        return respond_raw(
            StatusCode::OK,
            "application/json",
            Bytes::from_static(OPENAPI.as_bytes()),
        );
    }
    if !path.starts_with("/api/v1/") && !path.starts_with("/api/functions/registries") {
        return respond(Answer::error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "no such path",
        ));
    }
    if let Some(wait) = failures.backoff(&peer) {
        let mut r = respond(Answer::error(
            StatusCode::TOO_MANY_REQUESTS,
            "TOOMANYREQUESTS",
            "too many failed token attempts; retry later",
        ));
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(wait.as_secs().max(1)),
        );
        return r;
    }
    let token = bearer(req.headers());
    let presented = token.is_some();
    let who = match token {
        Some(t) => {
            let store = state.store.clone();
            tokio::task::spawn_blocking(move || tokens::verify(store.as_ref(), &t))
                .await
                .ok()
                .flatten()
        }
        None => None,
    };
    let Some(who) = who else {
        // Only a presented token that is wrong counts towards the limit.
        if presented {
            failures.fail(peer);
        }
        tracing::warn!(%peer, %path, "admin request without a valid token");
        let mut r = respond(Answer::error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "an admin token is required (Authorization: Bearer …)",
        ));
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"pullsecret-admin\""),
        );
        return r;
    };
    let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return respond(Answer::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BODY_TOO_LARGE",
                format!("request bodies are limited to {MAX_BODY} bytes"),
            ))
        }
    };
    if path == "/api/v1/pulls/events" && method == http::Method::GET {
        return pull_events(&state, who.namespace.clone());
    }
    if path.starts_with("/api/functions/registries") {
        return respond(direktiv::handle(state, who, &method, &path, body).await);
    }
    let answer =
        Answer::blocking(move || api::route(&state, &who, &method, &path, query.as_deref(), &body))
            .await;
    respond(answer)
}

/// Recent pulls as Server-Sent Events, live (`data: {json}` per pull; a comment every 15 s
/// keeps idle connections open); only the token's namespace for a namespace token.
fn pull_events(state: &AdminState, namespace: Option<String>) -> Response<Body> {
    use futures_util::StreamExt;
    let rx = state.proxy.recent.subscribe();
    let events = futures_util::stream::unfold(rx, move |mut rx| {
        let namespace = namespace.clone();
        async move {
            loop {
                let next = tokio::time::timeout(Duration::from_secs(15), rx.recv()).await;
                let chunk = match next {
                    Err(_) => Bytes::from_static(b": keep-alive\n\n"),
                    Ok(Ok(r)) => {
                        if namespace.as_deref().is_some_and(|ns| ns != r.namespace) {
                            continue;
                        }
                        let json = serde_json::to_string(&r).unwrap_or_default();
                        Bytes::from(format!("event: pull\ndata: {json}\n\n"))
                    }
                    // A slow reader missed some; it goes on with the next.
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                    Ok(Err(_)) => return None,
                };
                return Some((
                    Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(chunk)),
                    rx,
                ));
            }
        }
    })
    .boxed();
    let mut r = Response::new(BodyExt::boxed_unsync(http_body_util::StreamBody::new(
        events,
    )));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// `Authorization: Bearer T`, or Direktiv's `direktiv-token` / `apikey` headers.
fn bearer(headers: &http::HeaderMap) -> Option<zeroize::Zeroizing<String>> {
    let from = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    from(header::AUTHORIZATION.as_str())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| from("direktiv-token"))
        .or_else(|| from("apikey"))
        .map(|t| zeroize::Zeroizing::new(t.trim().to_string()))
}

fn respond(a: Answer) -> Response<Body> {
    match a.body {
        Some(v) => respond_raw(a.status, "application/json", Bytes::from(v.to_string())),
        None => respond_raw(a.status, "application/json", Bytes::new()),
    }
}

fn respond_raw(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut r = Response::new(BodyExt::boxed_unsync(Full::new(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// Failed token attempts per address.
type Failures = crate::proxy::failure_limit::FailureLimit<IpAddr>;

fn failure_limit() -> Failures {
    // 2^8 s: the longest wait a guessing address earns.
    Failures::new(FREE_FAILURES, FAILURE_WINDOW, Duration::from_secs(256))
}
