//! The web console at `/` of the admin listener: server-rendered pages over the admin API's own
//! routes (sign-in with an admin token; namespaces with their registry secrets and clients; the
//! cache and upstreams), sessions in memory, a CSRF token per session, strict headers.
//!
//! Nothing secret is ever rendered: the API's answers carry no values, the token lives only in
//! the sign-in request, and a password typed into a form is never written back into a page.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use super::api::{self, AdminState, Answer};
use super::tokens::{self, AdminIdentity};
use crate::proxy::client_auth::constant_time_eq;

const APP_JS: &str = include_str!("console/app.js");
const STYLE_CSS: &str = include_str!("console/style.css");

/// The session cookie, and the cookie that carries the sign-in form's CSRF token.
const SESSION_COOKIE: &str = "ps_session";
const SIGNIN_COOKIE: &str = "ps_signin";
/// A session ends after this long without a request, and after `SESSION_MAX` in any case.
const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
const SESSION_MAX: Duration = Duration::from_secs(8 * 60 * 60);
const MAX_SESSIONS: usize = 10_000;
/// Largest form body the console reads.
const MAX_FORM: usize = 16 * 1024;
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Minutes of cache samples the chart shows.
const CHART_MINUTES: u64 = 60;
/// Recent pulls on the pulls page.
const PULLS_SHOWN: usize = 50;

/// A console response body: a page, or the live pulls stream.
pub type ConsoleBody = UnsyncBoxBody<Bytes, Infallible>;

/// Whether `path` belongs to the console (everything else is the API's).
pub fn owns(path: &str) -> bool {
    path == "/" || path == "/console" || path.starts_with("/console/")
}

/// The console's sessions; one per admin listener.
pub struct Console {
    /// Cookies get `Secure` (the listener speaks TLS).
    secure: bool,
    sessions: Arc<Mutex<HashMap<String, Session>>>,
    /// Per-minute cache figures for the chart, sampled every minute once the console is used.
    chart: Arc<Mutex<Chart>>,
    sampling: AtomicBool,
}

struct Session {
    who: AdminIdentity,
    /// When the token was created: a token revoked and made again under its name is another.
    token_created: u64,
    csrf: String,
    started: Instant,
    seen: Instant,
}

/// What one console request came to: the response, and whether it was a failed sign-in (which
/// counts towards the listener's failed-attempt limit).
pub struct Outcome {
    pub response: Response<ConsoleBody>,
    pub failed_sign_in: bool,
}

impl From<Response<Full<Bytes>>> for Outcome {
    fn from(response: Response<Full<Bytes>>) -> Self {
        Self {
            response: response.map(BodyExt::boxed_unsync),
            failed_sign_in: false,
        }
    }
}

impl Console {
    pub fn new(secure: bool) -> Self {
        Self {
            secure,
            sessions: Arc::new(Mutex::new(HashMap::new())),
            chart: Arc::new(Mutex::new(Chart::default())),
            sampling: AtomicBool::new(false),
        }
    }

    /// Serves one console request; `backoff` is the wait the failed-attempt limit imposes on
    /// this address, if any (only a sign-in honours it).
    pub async fn handle(
        &self,
        state: Arc<AdminState>,
        req: Request<hyper::body::Incoming>,
        backoff: Option<Duration>,
    ) -> Outcome {
        self.start_sampling(&state);
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query = req.uri().query().map(parse_query).unwrap_or_default();
        let cookies = cookies(req.headers());
        match (&method, path.as_str()) {
            (&Method::GET, "/console/app.js") => {
                return asset("text/javascript; charset=utf-8", APP_JS).into()
            }
            (&Method::GET, "/console/style.css") => {
                return asset("text/css; charset=utf-8", STYLE_CSS).into()
            }
            (&Method::GET, "/console/signin") => return self.signin_page(None, StatusCode::OK),
            (&Method::POST, "/console/signin") => {
                let form = match read_form(req).await {
                    Ok(f) => f,
                    Err(r) => return r.into(),
                };
                return self.sign_in(&state, &cookies, &form, backoff).await;
            }
            _ => {}
        }
        let Some((sid, who, csrf)) = self.session(&state, &cookies).await else {
            return redirect("/console/signin", &[]).into();
        };
        if method == Method::GET && path == "/console/pulls/events" {
            return self.pull_events(&state, sid, who);
        }
        let form = if method == Method::POST {
            let form = match read_form(req).await {
                Ok(f) => f,
                Err(r) => return r.into(),
            };
            let given = field(&form, "csrf").unwrap_or_default();
            if !constant_time_eq(given.as_bytes(), csrf.as_bytes()) {
                tracing::warn!(%path, token = %who.name, "console form without a valid CSRF token");
                let body = layout(
                    "Refused",
                    Some(&csrf),
                    "<p class=\"error\">This form lacked its CSRF token; reload the page and \
                     try again.</p>",
                );
                return html(StatusCode::FORBIDDEN, body, &[]).into();
            }
            form
        } else {
            Vec::new()
        };
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let ctx = Ctx {
            state,
            who,
            csrf: &csrf,
            chart: &self.chart,
        };
        let response = match (&method, parts.as_slice()) {
            (&Method::GET, []) | (&Method::GET, ["console"]) => ctx.namespaces_page(None).await,
            (&Method::POST, ["console", "namespaces"]) => ctx.create_namespace(&form).await,
            (&Method::GET, ["console", "ns", ns]) => {
                let notice = field(&query, "rotated")
                    .map(|n| path_safe(&n))
                    .filter(|n| !n.is_empty())
                    .map(|n| format!("Rotated {n}: the new value is stored and never shown."));
                ctx.namespace_page(ns, None, None, notice).await
            }
            (&Method::POST, ["console", "ns", ns, "secrets"]) => ctx.add_secret(ns, &form).await,
            (&Method::POST, ["console", "ns", ns, "secrets", name, "delete"]) => {
                ctx.delete_secret(ns, name).await
            }
            (&Method::POST, ["console", "ns", ns, "secrets", name, "rotate"]) => {
                ctx.rotate_secret(ns, name, &form).await
            }
            (&Method::GET, ["console", "cache"]) => ctx.cache_page(None).await,
            (&Method::POST, ["console", "cache", action]) => ctx.cache_action(action, &form).await,
            (&Method::GET, ["console", "pulls"]) => ctx.pulls_page().await,
            (&Method::POST, ["console", "signout"]) => {
                self.lock().remove(&sid);
                redirect("/console/signin", &[self.cookie(SESSION_COOKIE, "", 0)])
            }
            _ => html(
                StatusCode::NOT_FOUND,
                layout("Not found", Some(&csrf), "<p>No such page.</p>"),
                &[],
            ),
        };
        response.into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A `Set-Cookie` value: `HttpOnly; SameSite=Strict`, `Secure` over TLS.
    fn cookie(&self, name: &str, value: &str, max_age: u64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
    }

    fn signin_page(&self, error: Option<&str>, status: StatusCode) -> Outcome {
        // The form's CSRF token is checked against a cookie of its own (no session exists yet).
        let Some(nonce) = random_id() else {
            return no_random().into();
        };
        let mut body = String::from("<h1>Sign in</h1>");
        if let Some(e) = error {
            let _ = write!(body, "<p class=\"error\" id=\"error\">{}</p>", esc(e));
        }
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/console/signin\" class=\"card\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <label>Admin token <input type=\"password\" name=\"token\" id=\"token\" \
             autocomplete=\"off\" required placeholder=\"psa_…\"></label>\
             <button type=\"submit\" id=\"signin\">Sign in</button></form>\
             <p class=\"hint\">Create one with <code>pullsecret admin token create NAME</code>.</p>",
            esc(&nonce)
        );
        let cookie = self.cookie(SIGNIN_COOKIE, &nonce, 600);
        html(status, layout("Sign in", None, &body), &[cookie]).into()
    }

    async fn sign_in(
        &self,
        state: &Arc<AdminState>,
        cookies: &HashMap<String, String>,
        form: &[(String, String)],
        backoff: Option<Duration>,
    ) -> Outcome {
        if let Some(wait) = backoff {
            let mut out = self.signin_page(
                Some("Too many failed sign-ins from this address; wait and try again."),
                StatusCode::TOO_MANY_REQUESTS,
            );
            out.response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(wait.as_secs().max(1)),
            );
            return out;
        }
        let given = field(form, "csrf").unwrap_or_default();
        let expected = cookies.get(SIGNIN_COOKIE).map(String::as_str).unwrap_or("");
        if expected.is_empty() || !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            return self.signin_page(
                Some("The sign-in form expired; try again."),
                StatusCode::FORBIDDEN,
            );
        }
        let token = zeroize::Zeroizing::new(field(form, "token").unwrap_or_default());
        let store = state.store.clone();
        let found = tokio::task::spawn_blocking(move || {
            let who = tokens::verify(store.as_ref(), token.trim())?;
            let created = tokens::list(store.as_ref())
                .ok()?
                .into_iter()
                .find(|t| t.name == who.name)?
                .created;
            Some((who, created))
        })
        .await
        .ok()
        .flatten();
        let Some((who, token_created)) = found else {
            tracing::warn!("console sign-in with a wrong admin token");
            let mut out = self.signin_page(
                Some("That is not a valid admin token."),
                StatusCode::UNAUTHORIZED,
            );
            out.failed_sign_in = true;
            return out;
        };
        tracing::info!(token = %who.name, "console sign-in");
        let (Some(sid), Some(csrf)) = (random_id(), random_id()) else {
            return no_random().into();
        };
        let now = Instant::now();
        {
            let mut sessions = self.lock();
            sessions.retain(|_, s| alive(s, now));
            if sessions.len() >= MAX_SESSIONS {
                let oldest = sessions
                    .iter()
                    .min_by_key(|(_, s)| s.seen)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    sessions.remove(&k);
                }
            }
            sessions.insert(
                sid.clone(),
                Session {
                    who,
                    token_created,
                    csrf,
                    started: now,
                    seen: now,
                },
            );
        }
        redirect(
            "/",
            &[
                self.cookie(SESSION_COOKIE, &sid, SESSION_MAX.as_secs()),
                self.cookie(SIGNIN_COOKIE, "", 0),
            ],
        )
        .into()
    }

    /// The live session the request's cookie names, whose token still exists: its id, identity
    /// and CSRF token.
    async fn session(
        &self,
        state: &Arc<AdminState>,
        cookies: &HashMap<String, String>,
    ) -> Option<(String, AdminIdentity, String)> {
        let sid = cookies.get(SESSION_COOKIE)?.clone();
        let (who, created, csrf) = {
            let mut sessions = self.lock();
            let now = Instant::now();
            let s = sessions.get_mut(&sid)?;
            if !alive(s, now) {
                sessions.remove(&sid);
                return None;
            }
            s.seen = now;
            (s.who.clone(), s.token_created, s.csrf.clone())
        };
        // A revoked token ends its sessions at once.
        if !token_current(state, &who, created).await {
            self.lock().remove(&sid);
            return None;
        }
        Some((sid, who, csrf))
    }

    /// Starts the chart's once-a-minute sampler with the first console request.
    fn start_sampling(&self, state: &Arc<AdminState>) {
        if self.sampling.swap(true, Ordering::SeqCst) {
            return;
        }
        let state = state.clone();
        let chart = self.chart.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                sample(&state, &chart).await;
            }
        });
    }

    /// The proxy's pulls as they happen, as Server-Sent Events (`event: pull`, one JSON record
    /// each; only the token's namespace for a namespace token). The stream ends when the
    /// session does (signed out, expired, or its token revoked).
    fn pull_events(&self, state: &Arc<AdminState>, sid: String, who: AdminIdentity) -> Outcome {
        use futures_util::StreamExt;
        let rx = state.proxy.recent.subscribe();
        let sessions = self.sessions.clone();
        let state = state.clone();
        let first = Bytes::from_static(b": live\n\n");
        let events = futures_util::stream::unfold((rx, Some(first)), move |(mut rx, first)| {
            let sessions = sessions.clone();
            let state = state.clone();
            let sid = sid.clone();
            let who = who.clone();
            async move {
                if let Some(chunk) = first {
                    return Some((Ok(hyper::body::Frame::data(chunk)), (rx, None)));
                }
                loop {
                    let created = {
                        let sessions = sessions.lock().unwrap_or_else(|p| p.into_inner());
                        match sessions.get(&sid) {
                            Some(s) if alive(s, Instant::now()) => s.token_created,
                            _ => return None,
                        }
                    };
                    let next = tokio::time::timeout(Duration::from_secs(15), rx.recv()).await;
                    let chunk = match next {
                        Err(_) => {
                            if !token_current(&state, &who, created).await {
                                return None;
                            }
                            Bytes::from_static(b": keep-alive\n\n")
                        }
                        Ok(Ok(r)) => {
                            if who.namespace.as_deref().is_some_and(|ns| ns != r.namespace) {
                                continue;
                            }
                            let json = serde_json::to_string(&r).unwrap_or_default();
                            Bytes::from(format!("event: pull\ndata: {json}\n\n"))
                        }
                        // A slow reader missed some; it goes on with the next.
                        Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                        Ok(Err(_)) => return None,
                    };
                    return Some((Ok(hyper::body::Frame::data(chunk)), (rx, None)));
                }
            }
        })
        .boxed();
        let body = BodyExt::boxed_unsync(http_body_util::StreamBody::new(events));
        // The page headers (CSP, no-store, nosniff) around the stream.
        let (parts, _) =
            with_headers(StatusCode::OK, "text/event-stream", Bytes::new()).into_parts();
        Outcome {
            response: Response::from_parts(parts, body),
            failed_sign_in: false,
        }
    }
}

/// Whether the token a session was opened with still exists (not revoked, not made again).
async fn token_current(state: &Arc<AdminState>, who: &AdminIdentity, created: u64) -> bool {
    let store = state.store.clone();
    let name = who.name.clone();
    let namespace = who.namespace.clone();
    tokio::task::spawn_blocking(move || tokens::list(store.as_ref()))
        .await
        .ok()
        .and_then(Result::ok)
        .is_some_and(|list| {
            list.iter()
                .any(|t| t.name == name && t.created == created && t.namespace == namespace)
        })
}

/// Cumulative cache figures at one moment.
#[derive(Clone, Copy, Default)]
struct Figures {
    hits: u64,
    misses: u64,
    from_cache: u64,
    fetched: u64,
}

/// The chart's data: the figures at the last sample, and what each minute added.
#[derive(Default)]
struct Chart {
    last: Option<Figures>,
    /// (Unix minute, what it added), oldest first; at most the last hour.
    minutes: VecDeque<(u64, Figures)>,
}

impl Chart {
    fn add(&mut self, minute: u64, now: Figures) {
        let Some(last) = self.last.replace(now) else {
            return;
        };
        let d = Figures {
            hits: now.hits.saturating_sub(last.hits),
            misses: now.misses.saturating_sub(last.misses),
            from_cache: now.from_cache.saturating_sub(last.from_cache),
            fetched: now.fetched.saturating_sub(last.fetched),
        };
        match self.minutes.back_mut() {
            Some((m, f)) if *m == minute => {
                f.hits += d.hits;
                f.misses += d.misses;
                f.from_cache += d.from_cache;
                f.fetched += d.fetched;
            }
            _ => self.minutes.push_back((minute, d)),
        }
        while self
            .minutes
            .front()
            .is_some_and(|(m, _)| m + CHART_MINUTES <= minute)
        {
            self.minutes.pop_front();
        }
    }
}

/// Reads the cache figures (as `/api/v1/cache` gives them) into the chart.
async fn sample(state: &Arc<AdminState>, chart: &Mutex<Chart>) {
    let st = state.clone();
    let who = AdminIdentity {
        name: "console".into(),
        namespace: None,
    };
    let a = Answer::blocking(move || {
        api::route(
            &st,
            &who,
            &Method::GET,
            "/api/v1/cache",
            None,
            &Bytes::new(),
        )
    })
    .await;
    let Some(v) = ok_body(&a).cloned() else {
        return;
    };
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let now = Figures {
        hits: n("hits"),
        misses: n("misses"),
        from_cache: n("bytes_from_cache"),
        fetched: n("bytes_fetched"),
    };
    chart
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .add(now_unix_minute(), now);
}

fn now_unix_minute() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 60)
        .unwrap_or(0)
}

/// The chart as inline SVG: per minute of the last hour, requests (hits over misses) and bytes
/// (from the cache over fetched upstream), each bar scaled to the hour's largest.
fn chart_svg(chart: &Chart) -> String {
    let now = now_unix_minute();
    let (w, h, bar) = (600u64, 90u64, 10u64);
    let mut out = String::new();
    for (id, label, pick) in [
        (
            "hit-chart",
            "Requests per minute: cache hits (dark) over misses",
            (|f: &Figures| (f.hits, f.misses)) as fn(&Figures) -> (u64, u64),
        ),
        (
            "bytes-chart",
            "Bytes per minute: served from the cache (dark) over fetched upstream",
            |f: &Figures| (f.from_cache, f.fetched),
        ),
    ] {
        let max = chart
            .minutes
            .iter()
            .map(|(_, f)| {
                let (a, b) = pick(f);
                a + b
            })
            .max()
            .unwrap_or(0)
            .max(1);
        let _ = write!(
            out,
            "<figure class=\"chart\"><svg id=\"{id}\" viewBox=\"0 0 {w} {h}\" \
             width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{l}\">\
             <title>{l}</title><line class=\"axis\" x1=\"0\" y1=\"{h}\" x2=\"{w}\" \
             y2=\"{h}\"></line>",
            l = esc(label)
        );
        for (minute, f) in &chart.minutes {
            let age = now.saturating_sub(*minute);
            if age >= CHART_MINUTES {
                continue;
            }
            let (good, bad) = pick(f);
            if good + bad == 0 {
                continue;
            }
            let x = w - (age + 1) * bar;
            let total_h = ((good + bad) * h).div_ceil(max);
            let good_h = good * h / max;
            let when = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + Duration::from_secs(minute * 60),
            );
            let _ = write!(
                out,
                "<g class=\"minute\"><title>{when}: {good} / {bad}</title>\
                 <rect class=\"bad\" x=\"{x}\" y=\"{y1}\" width=\"{bw}\" height=\"{bh}\"></rect>\
                 <rect class=\"good\" x=\"{x}\" y=\"{y2}\" width=\"{bw}\" height=\"{good_h}\">\
                 </rect></g>",
                y1 = h - total_h,
                bh = total_h - good_h,
                y2 = h - good_h,
                bw = bar - 2,
            );
        }
        let _ = write!(
            out,
            "</svg><figcaption>{} (last hour, newest right)</figcaption></figure>",
            esc(label)
        );
    }
    out
}

fn alive(s: &Session, now: Instant) -> bool {
    now.duration_since(s.seen) < SESSION_IDLE && now.duration_since(s.started) < SESSION_MAX
}

/// One signed-in request: the state, who is acting, and the session's CSRF token.
struct Ctx<'a> {
    state: Arc<AdminState>,
    who: AdminIdentity,
    csrf: &'a str,
    chart: &'a Mutex<Chart>,
}

impl Ctx<'_> {
    /// One admin API call as this session's token (the API checks namespaces and audits);
    /// `path` may carry a query.
    async fn api(&self, method: Method, path: String, body: Option<Value>) -> Answer {
        let state = self.state.clone();
        let who = self.who.clone();
        let body = Bytes::from(body.map(|b| b.to_string()).unwrap_or_default());
        Answer::blocking(move || {
            let (path, query) = match path.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (path.as_str(), None),
            };
            api::route(&state, &who, &method, path, query, &body)
        })
        .await
    }

    fn hidden_csrf(&self) -> String {
        format!(
            "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
            esc(self.csrf)
        )
    }

    fn page(&self, status: StatusCode, title: &str, body: &str) -> Response<Full<Bytes>> {
        html(status, layout(title, Some(self.csrf), body), &[])
    }

    async fn namespaces_page(&self, error: Option<&str>) -> Response<Full<Bytes>> {
        let a = self
            .api(Method::GET, "/api/v1/namespaces".into(), None)
            .await;
        let Some(v) = ok_body(&a) else {
            return self.error_page(&a);
        };
        let mut body = String::from("<h1>Namespaces</h1>");
        if let Some(e) = error {
            let _ = write!(body, "<p class=\"error\" id=\"error\">{}</p>", esc(e));
        }
        body.push_str(
            "<table id=\"namespaces\"><thead><tr><th>Namespace</th><th>Secrets</th></tr></thead>\
             <tbody>",
        );
        for n in v["namespaces"].as_array().into_iter().flatten() {
            let name = text(&n["name"]);
            let _ = write!(
                body,
                "<tr><td><a href=\"/console/ns/{0}\">{0}</a></td><td>{1}</td></tr>",
                esc(&name),
                esc(&text(&n["secrets"]))
            );
        }
        body.push_str("</tbody></table>");
        if self.who.namespace.is_none() {
            let _ = write!(
                body,
                "<h2>New namespace</h2><form method=\"post\" action=\"/console/namespaces\" \
                 class=\"card\">{}<label>Name <input name=\"name\" id=\"ns-name\" required \
                 pattern=\"[a-z0-9]([-a-z0-9]*[a-z0-9])?\"></label>\
                 <button type=\"submit\" id=\"ns-create\">Create</button></form>",
                self.hidden_csrf()
            );
        }
        self.page(StatusCode::OK, "Namespaces", &body)
    }

    async fn create_namespace(&self, form: &[(String, String)]) -> Response<Full<Bytes>> {
        let name = field(form, "name").unwrap_or_default();
        let a = self
            .api(
                Method::POST,
                "/api/v1/namespaces".into(),
                Some(json!({ "name": name })),
            )
            .await;
        if a.status.is_success() {
            return redirect(&format!("/console/ns/{}", path_safe(&name)), &[]);
        }
        self.namespaces_page(Some(&error_message(&a))).await
    }

    /// The namespace page; after a refused add, `error` and the fields to fill in again
    /// (never the password).
    async fn namespace_page(
        &self,
        ns: &str,
        error: Option<(StatusCode, String)>,
        refill: Option<&[(String, String)]>,
        notice: Option<String>,
    ) -> Response<Full<Bytes>> {
        let secrets = self
            .api(
                Method::GET,
                format!("/api/v1/namespaces/{ns}/secrets"),
                None,
            )
            .await;
        let Some(sv) = ok_body(&secrets) else {
            return self.error_page(&secrets);
        };
        let clients = self
            .api(
                Method::GET,
                format!("/api/v1/namespaces/{ns}/clients"),
                None,
            )
            .await;
        let Some(cv) = ok_body(&clients) else {
            return self.error_page(&clients);
        };
        let mut body = format!("<h1>Namespace <span id=\"ns\">{}</span></h1>", esc(ns));
        let status = match &error {
            Some((status, e)) => {
                let _ = write!(body, "<p class=\"error\" id=\"error\">{}</p>", esc(e));
                *status
            }
            None => StatusCode::OK,
        };
        if let Some(n) = notice {
            let _ = write!(body, "<p class=\"notice\" id=\"notice\">{}</p>", esc(&n));
        }
        body.push_str(
            "<h2>Registry secrets</h2><table id=\"secrets\"><thead><tr><th>Name</th>\
             <th>Type</th><th>Server</th><th>Username</th><th>Scope</th><th>Set</th>\
             <th>Rotate the value</th><th></th></tr></thead><tbody>",
        );
        let list = sv["secrets"].as_array().cloned().unwrap_or_default();
        if list.is_empty() {
            body.push_str("<tr><td colspan=\"8\" class=\"empty\">No secrets yet.</td></tr>");
        }
        for s in &list {
            let name = text(&s["name"]);
            // A generic secret names the key to rotate; docker-registry rotates its password,
            // tls its key.
            let keys = if s["type"] == "generic" {
                let mut opts = String::new();
                for k in s["keys"].as_array().into_iter().flatten() {
                    let _ = write!(opts, "<option>{}</option>", esc(&text(k)));
                }
                format!("<select name=\"key\" aria-label=\"key\">{opts}</select>")
            } else {
                String::new()
            };
            let _ = write!(
                body,
                "<tr data-secret=\"{n}\"><td>{n}</td><td>{t}</td><td>{srv}</td><td>{u}</td>\
                 <td>{sc}</td><td data-unix=\"{c}\" class=\"created\">{ct}</td><td>\
                 <form method=\"post\" action=\"/console/ns/{ns}/secrets/{pn}/rotate\" \
                 class=\"inline rotate\">{csrf}{keys}<input type=\"password\" name=\"value\" \
                 id=\"rotate-{n}\" required autocomplete=\"new-password\" \
                 placeholder=\"new value\" aria-label=\"new value\">\
                 <button type=\"submit\" id=\"rotate-btn-{n}\">Rotate</button></form></td>\
                 <td><form method=\"post\" \
                 action=\"/console/ns/{ns}/secrets/{pn}/delete\" class=\"inline\">{csrf}\
                 <button type=\"submit\" class=\"danger\" id=\"delete-{n}\">Delete</button>\
                 </form></td></tr>",
                n = esc(&name),
                t = esc(&text(&s["type"])),
                srv = esc(&text(&s["server"])),
                u = esc(&text(&s["username"])),
                sc = esc(&text(&s["scope"])),
                c = esc(&text(&s["created"])),
                ct = esc(&unix_time(&s["created"])),
                ns = esc(&path_safe(ns)),
                pn = esc(&path_safe(&name)),
                csrf = self.hidden_csrf(),
            );
        }
        body.push_str("</tbody></table>");
        let refill = |k: &str| esc(&refill.and_then(|f| field(f, k)).unwrap_or_default());
        let _ = write!(
            body,
            "<h2>Add a registry</h2><form method=\"post\" action=\"/console/ns/{ns}/secrets\" \
             class=\"card\" id=\"add-secret\">{csrf}\
             <label>Name <input name=\"name\" id=\"secret-name\" required value=\"{name}\"></label>\
             <label>Server <input name=\"server\" id=\"secret-server\" required \
             placeholder=\"ghcr.io\" value=\"{server}\"></label>\
             <label>Username <input name=\"username\" id=\"secret-username\" required \
             autocomplete=\"off\" value=\"{user}\"></label>\
             <label>Password or token <input type=\"password\" name=\"password\" \
             id=\"secret-password\" required autocomplete=\"new-password\"></label>\
             <button type=\"submit\" id=\"secret-add\">Add</button></form>\
             <p class=\"hint\">Values are stored and never shown again.</p>",
            ns = esc(&path_safe(ns)),
            csrf = self.hidden_csrf(),
            name = refill("name"),
            server = refill("server"),
            user = refill("username"),
        );
        body.push_str(
            "<h2>Proxy clients</h2><table id=\"clients\"><thead><tr><th>User</th>\
             <th>Created</th></tr></thead><tbody>",
        );
        let clients = cv["clients"].as_array().cloned().unwrap_or_default();
        if clients.is_empty() {
            body.push_str("<tr><td colspan=\"2\" class=\"empty\">No clients.</td></tr>");
        }
        for c in &clients {
            let _ = write!(
                body,
                "<tr><td>{}</td><td data-unix=\"{}\">{}</td></tr>",
                esc(&text(&c["user"])),
                esc(&text(&c["created"])),
                esc(&unix_time(&c["created"]))
            );
        }
        body.push_str(
            "</tbody></table><p class=\"hint\">Add one with <code>pullsecret proxy client add \
             USER -n NAMESPACE</code> or the API.</p>",
        );
        self.page(status, &format!("Namespace {ns}"), &body)
    }

    async fn add_secret(&self, ns: &str, form: &[(String, String)]) -> Response<Full<Bytes>> {
        let get = |k: &str| field(form, k).unwrap_or_default();
        let password = zeroize::Zeroizing::new(get("password"));
        let body = json!({
            "name": get("name").trim(),
            "type": "docker-registry",
            "server": get("server").trim(),
            "username": get("username").trim(),
            "password": password.as_str(),
        });
        let a = self
            .api(
                Method::POST,
                format!("/api/v1/namespaces/{ns}/secrets"),
                Some(body),
            )
            .await;
        if a.status.is_success() {
            return redirect(&format!("/console/ns/{}", path_safe(ns)), &[]);
        }
        if a.status == StatusCode::FORBIDDEN || a.status == StatusCode::BAD_REQUEST && !ns_ok(ns) {
            return self.error_page(&a);
        }
        self.namespace_page(ns, Some((a.status, error_message(&a))), Some(form), None)
            .await
    }

    async fn delete_secret(&self, ns: &str, name: &str) -> Response<Full<Bytes>> {
        let a = self
            .api(
                Method::DELETE,
                format!("/api/v1/namespaces/{ns}/secrets/{name}"),
                None,
            )
            .await;
        if a.status.is_success() {
            return redirect(&format!("/console/ns/{}", path_safe(ns)), &[]);
        }
        if a.status == StatusCode::FORBIDDEN || !ns_ok(ns) {
            return self.error_page(&a);
        }
        self.namespace_page(ns, Some((a.status, error_message(&a))), None, None)
            .await
    }

    /// A new value for a secret (a docker-registry password, a tls key, a generic secret's
    /// key); the value is never written back into a page.
    async fn rotate_secret(
        &self,
        ns: &str,
        name: &str,
        form: &[(String, String)],
    ) -> Response<Full<Bytes>> {
        let value = zeroize::Zeroizing::new(field(form, "value").unwrap_or_default());
        if value.is_empty() {
            return self
                .namespace_page(
                    ns,
                    Some((StatusCode::BAD_REQUEST, "The new value is empty.".into())),
                    None,
                    None,
                )
                .await;
        }
        let mut body = json!({ "value": value.as_str() });
        if let Some(k) = field(form, "key").filter(|k| !k.is_empty()) {
            body["key"] = json!(k);
        }
        let a = self
            .api(
                Method::PUT,
                format!("/api/v1/namespaces/{ns}/secrets/{name}/value"),
                Some(body),
            )
            .await;
        if a.status.is_success() {
            return redirect(
                &format!("/console/ns/{}?rotated={}", path_safe(ns), path_safe(name)),
                &[],
            );
        }
        if a.status == StatusCode::FORBIDDEN || !ns_ok(ns) {
            return self.error_page(&a);
        }
        self.namespace_page(ns, Some((a.status, error_message(&a))), None, None)
            .await
    }

    /// The last pulls (the data of `/api/v1/pulls`); `app.js` prepends new ones live from
    /// `/console/pulls/events`.
    async fn pulls_page(&self) -> Response<Full<Bytes>> {
        let a = self
            .api(Method::GET, format!("/api/v1/pulls?n={PULLS_SHOWN}"), None)
            .await;
        let Some(v) = ok_body(&a) else {
            return self.error_page(&a);
        };
        let mut body = String::from(
            "<h1>Recent pulls</h1><p class=\"hint\" id=\"live-state\">Newest first; new \
             pulls appear as they happen.</p><table id=\"pulls\"><thead><tr><th>Time</th>\
             <th>Namespace</th><th>Image</th><th>Reference</th><th>Kind</th><th>Status</th>\
             <th>Bytes</th><th>Cache</th><th>ms</th></tr></thead><tbody id=\"pulls-body\" \
             data-live=\"/console/pulls/events\">",
        );
        for p in v["pulls"].as_array().into_iter().flatten() {
            body.push_str(&pull_row(p));
        }
        body.push_str("</tbody></table>");
        self.page(StatusCode::OK, "Recent pulls", &body)
    }

    /// The cache: its figures and the last hour's chart, the images each namespace pulled,
    /// the cached tags with pin and purge (all-namespaces sessions), the upstreams' health.
    async fn cache_page(&self, error: Option<(StatusCode, String)>) -> Response<Full<Bytes>> {
        sample(&self.state, self.chart).await;
        let cache = self.api(Method::GET, "/api/v1/cache".into(), None).await;
        let Some(c) = ok_body(&cache) else {
            return self.error_page(&cache);
        };
        let ups = self
            .api(Method::GET, "/api/v1/upstreams".into(), None)
            .await;
        let Some(u) = ok_body(&ups) else {
            return self.error_page(&ups);
        };
        let ratio = c["hit_ratio"].as_f64().unwrap_or(0.0);
        let mut body = String::from("<h1>Cache</h1>");
        let status = match &error {
            Some((status, e)) => {
                let _ = write!(body, "<p class=\"error\" id=\"error\">{}</p>", esc(e));
                *status
            }
            None => StatusCode::OK,
        };
        body.push_str("<dl id=\"cache\" class=\"figures\">");
        let mut fig = |id: &str, label: &str, value: String, bytes: bool| {
            let attr = if bytes { " data-bytes" } else { "" };
            let _ = write!(
                body,
                "<div><dt>{}</dt><dd id=\"{}\"{attr}>{}</dd></div>",
                esc(label),
                esc(id),
                esc(&value)
            );
        };
        fig("cache-size", "Size", text(&c["size_bytes"]), true);
        fig("cache-blobs", "Blobs", text(&c["blobs"]), false);
        fig(
            "cache-hit-ratio",
            "Hit ratio",
            format!("{:.1} %", ratio * 100.0),
            false,
        );
        fig("cache-hits", "Hits", text(&c["hits"]), false);
        fig("cache-misses", "Misses", text(&c["misses"]), false);
        fig(
            "cache-from-cache",
            "Served from cache",
            text(&c["bytes_from_cache"]),
            true,
        );
        fig(
            "cache-fetched",
            "Fetched upstream",
            text(&c["bytes_fetched"]),
            true,
        );
        let _ = write!(
            body,
            "</dl><div class=\"bar\" title=\"hit ratio\"><meter id=\"hit-meter\" min=\"0\" \
             max=\"1\" value=\"{ratio:.3}\"></meter></div>"
        );
        body.push_str("<h2>The last hour</h2><div id=\"chart\" class=\"charts\">");
        body.push_str(&chart_svg(
            &self.chart.lock().unwrap_or_else(|p| p.into_inner()),
        ));
        body.push_str("</div>");
        self.pulled_images(&mut body).await;
        if self.who.namespace.is_none() {
            self.cached_tags(&mut body).await;
        }
        body.push_str(
            "<h2>Upstreams</h2><table id=\"upstreams\"><thead><tr><th>Name</th><th>URL</th>\
             <th>State</th><th>Last success</th><th>Last error</th><th>Requests</th>\
             <th>Errors</th><th>Fetched</th></tr></thead><tbody>",
        );
        for up in u["upstreams"].as_array().into_iter().flatten() {
            let state = text(&up["state"]);
            let _ = write!(
                body,
                "<tr data-upstream=\"{n}\"><td>{n}</td><td>{url}</td>\
                 <td><span class=\"state state-{sc}\">{st}</span></td>\
                 <td data-unix=\"{ls}\">{lst}</td><td><span data-unix=\"{le}\">{let_}</span> \
                 <span class=\"hint\">{lem}</span></td><td>{r}</td><td>{e}</td>\
                 <td data-bytes>{b}</td></tr>",
                n = esc(&text(&up["name"])),
                url = esc(&text(&up["url"])),
                sc = esc(&path_safe(&state)),
                st = esc(&state),
                ls = esc(&text(&up["last_success"])),
                lst = esc(&or_never(&up["last_success"])),
                le = esc(&text(&up["last_error"])),
                let_ = esc(&or_never(&up["last_error"])),
                lem = esc(&text(&up["last_error_message"])),
                r = esc(&text(&up["requests"])),
                e = esc(&text(&up["errors"])),
                b = esc(&text(&up["bytes"]))
            );
        }
        body.push_str("</tbody></table>");
        self.page(status, "Cache", &body)
    }

    /// The images each namespace this session may see pulled through the proxy.
    async fn pulled_images(&self, body: &mut String) {
        let namespaces: Vec<String> = match &self.who.namespace {
            Some(ns) => vec![ns.clone()],
            None => {
                let a = self
                    .api(Method::GET, "/api/v1/namespaces".into(), None)
                    .await;
                ok_body(&a)
                    .and_then(|v| v["namespaces"].as_array())
                    .into_iter()
                    .flatten()
                    .map(|n| text(&n["name"]))
                    .collect()
            }
        };
        body.push_str(
            "<h2>Images pulled</h2><table id=\"images\"><thead><tr><th>Namespace</th>\
             <th>Image</th><th>Manifest pulls</th><th>Last pulled</th></tr></thead><tbody>",
        );
        let mut any = false;
        for ns in namespaces {
            let a = self
                .api(
                    Method::GET,
                    format!("/api/v1/namespaces/{}/images", path_safe(&ns)),
                    None,
                )
                .await;
            for i in ok_body(&a)
                .and_then(|v| v["images"].as_array())
                .into_iter()
                .flatten()
            {
                any = true;
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&ns),
                    esc(&text(&i["image"])),
                    esc(&text(&i["pulls"])),
                    esc(&text(&i["last_pulled"]))
                );
            }
        }
        if !any {
            body.push_str(
                "<tr><td colspan=\"4\" class=\"empty\">Nothing pulled since the proxy \
                 started.</td></tr>",
            );
        }
        body.push_str("</tbody></table>");
    }

    /// The cached tags with their digests: pin or unpin the image, purge the tag.
    async fn cached_tags(&self, body: &mut String) {
        let store = self.state.clone();
        let (tags, pins) = tokio::task::spawn_blocking(move || {
            let tags = cached_tag_records(store.proxy.store.root());
            let pins: Vec<String> = store
                .proxy
                .store
                .pins()
                .into_iter()
                .map(|p| p.digest)
                .collect();
            (tags, pins)
        })
        .await
        .unwrap_or_default();
        body.push_str(
            "<h2>Cached tags</h2><table id=\"tags\"><thead><tr><th>Upstream</th>\
             <th>Repository</th><th>Tag</th><th>Digest</th><th>Pinned</th><th></th>\
             </tr></thead><tbody>",
        );
        if tags.is_empty() {
            body.push_str("<tr><td colspan=\"6\" class=\"empty\">No cached tags.</td></tr>");
        }
        for t in &tags {
            let pinned = pins.contains(&t.digest);
            let id = path_safe(&format!("{}-{}-{}", t.upstream, t.repository, t.tag));
            let pin_form = if pinned {
                format!(
                    "<form method=\"post\" action=\"/console/cache/unpin\" class=\"inline\">\
                     {csrf}<input type=\"hidden\" name=\"digest\" value=\"{d}\">\
                     <button type=\"submit\" id=\"unpin-{id}\">Unpin</button></form>",
                    csrf = self.hidden_csrf(),
                    d = esc(&t.digest),
                    id = esc(&id),
                )
            } else {
                format!(
                    "<form method=\"post\" action=\"/console/cache/pin\" class=\"inline\">\
                     {csrf}<input type=\"hidden\" name=\"upstream\" value=\"{u}\">\
                     <input type=\"hidden\" name=\"repository\" value=\"{r}\">\
                     <input type=\"hidden\" name=\"digest\" value=\"{d}\">\
                     <button type=\"submit\" id=\"pin-{id}\">Pin</button></form>",
                    csrf = self.hidden_csrf(),
                    u = esc(&t.upstream),
                    r = esc(&t.repository),
                    d = esc(&t.digest),
                    id = esc(&id),
                )
            };
            let _ = write!(
                body,
                "<tr data-tag=\"{id}\"><td>{u}</td><td>{r}</td><td>{t}</td>\
                 <td><code title=\"{d}\">{ds}</code></td><td>{p}</td><td>{pin_form} \
                 <form method=\"post\" action=\"/console/cache/purge\" class=\"inline\">{csrf}\
                 <input type=\"hidden\" name=\"upstream\" value=\"{u}\">\
                 <input type=\"hidden\" name=\"repository\" value=\"{r}\">\
                 <input type=\"hidden\" name=\"tag\" value=\"{t}\">\
                 <button type=\"submit\" class=\"danger\" id=\"purge-{id}\">Purge</button>\
                 </form></td></tr>",
                id = esc(&id),
                u = esc(&t.upstream),
                r = esc(&t.repository),
                t = esc(&t.tag),
                d = esc(&t.digest),
                ds = esc(t.digest.get(..19).unwrap_or(&t.digest)),
                p = if pinned { "yes" } else { "" },
                csrf = self.hidden_csrf(),
            );
        }
        body.push_str(
            "</tbody></table><p class=\"hint\">A pinned image is never evicted; a purged tag \
             is asked of the upstream again on its next pull.</p>",
        );
    }

    /// Pin, unpin or purge from the cache page (the API refuses namespace tokens).
    async fn cache_action(&self, action: &str, form: &[(String, String)]) -> Response<Full<Bytes>> {
        let get = |k: &str| field(form, k).unwrap_or_default();
        let a = match action {
            "pin" => {
                self.api(
                    Method::POST,
                    "/api/v1/cache/pins".into(),
                    Some(json!({
                        "upstream": get("upstream"),
                        "repository": get("repository"),
                        "digest": get("digest"),
                    })),
                )
                .await
            }
            "unpin" => {
                let d = get("digest");
                if !d.chars().all(|c| c.is_ascii_alphanumeric() || c == ':') {
                    return self
                        .cache_page(Some((StatusCode::BAD_REQUEST, "Not a digest.".into())))
                        .await;
                }
                self.api(Method::DELETE, format!("/api/v1/cache/pins/{d}"), None)
                    .await
            }
            "purge" => {
                let (u, r, t) = (get("upstream"), get("repository"), get("tag"));
                let ok = |s: &str, slash: bool| {
                    !s.is_empty()
                        && s.chars().all(|c| {
                            c.is_ascii_alphanumeric()
                                || matches!(c, '-' | '.' | '_')
                                || slash && c == '/'
                        })
                };
                if !ok(&u, false) || !ok(&r, true) || !(t.is_empty() || ok(&t, false)) {
                    return self
                        .cache_page(Some((
                            StatusCode::BAD_REQUEST,
                            "Not an upstream, repository and tag.".into(),
                        )))
                        .await;
                }
                let mut q = format!("upstream={u}&repository={}", r.replace('/', "%2F"));
                if !t.is_empty() {
                    let _ = write!(q, "&tag={t}");
                }
                self.api(Method::DELETE, format!("/api/v1/cache/tags?{q}"), None)
                    .await
            }
            _ => {
                return self.page(StatusCode::NOT_FOUND, "Not found", "<p>No such page.</p>");
            }
        };
        if a.status.is_success() {
            return redirect("/console/cache", &[]);
        }
        self.cache_page(Some((a.status, error_message(&a)))).await
    }

    fn error_page(&self, a: &Answer) -> Response<Full<Bytes>> {
        let body = format!(
            "<h1>Refused</h1><p class=\"error\" id=\"error\">{}</p><p><a href=\"/\">Back</a></p>",
            esc(&error_message(a))
        );
        self.page(a.status, "Refused", &body)
    }
}

/// The cached tags (one row per upstream, repository and tag), at most 500, sorted.
fn cached_tag_records(root: &std::path::Path) -> Vec<crate::proxy::blob_store::TagRecord> {
    let mut out: Vec<crate::proxy::blob_store::TagRecord> = Vec::new();
    let Ok(entries) = std::fs::read_dir(root.join("meta/tags")) else {
        return out;
    };
    for e in entries.flatten().take(5000) {
        let Ok(bytes) = std::fs::read(e.path()) else {
            continue;
        };
        let Ok(rec) = serde_json::from_slice::<crate::proxy::blob_store::TagRecord>(&bytes) else {
            continue;
        };
        if rec.tag.is_empty()
            || out.iter().any(|o| {
                o.upstream == rec.upstream && o.repository == rec.repository && o.tag == rec.tag
            })
        {
            continue;
        }
        out.push(rec);
        if out.len() >= 500 {
            break;
        }
    }
    out.sort_by(|a, b| {
        (&a.upstream, &a.repository, &a.tag).cmp(&(&b.upstream, &b.repository, &b.tag))
    });
    out
}

/// One row of the pulls table (`app.js` builds live ones in the same shape).
fn pull_row(p: &Value) -> String {
    format!(
        "<tr class=\"pull\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
         <td data-bytes>{}</td><td>{}</td><td>{}</td></tr>",
        esc(&text(&p["time"])),
        esc(&text(&p["namespace"])),
        esc(&text(&p["image"])),
        esc(&text(&p["reference"])),
        esc(&text(&p["kind"])),
        esc(&text(&p["status"])),
        esc(&text(&p["bytes"])),
        esc(&text(&p["cache"])),
        esc(&text(&p["duration_ms"])),
    )
}

fn or_never(v: &Value) -> String {
    match unix_time(v) {
        t if t.is_empty() => "never".into(),
        t => t,
    }
}

/// A URL query as name/value pairs.
fn parse_query(q: &str) -> Vec<(String, String)> {
    parse_form(q.as_bytes())
}

fn ns_ok(ns: &str) -> bool {
    crate::store::validate_namespace(ns).is_ok()
}

fn ok_body(a: &Answer) -> Option<&Value> {
    a.status.is_success().then_some(a.body.as_ref()).flatten()
}

fn error_message(a: &Answer) -> String {
    a.body
        .as_ref()
        .and_then(|b| b["error"]["message"].as_str())
        .unwrap_or("the request failed")
        .to_string()
}

/// A JSON scalar as text (`""` for null or absent).
fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn unix_time(v: &Value) -> String {
    v.as_u64()
        .map(|t| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(t),
            )
            .to_string()
        })
        .unwrap_or_default()
}

/// `s` where it goes into a URL path: names are DNS labels already; anything else is dropped.
fn path_safe(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .collect()
}

/// The whole page around `body`; a signed-in page has the navigation and the sign-out form.
fn layout(title: &str, csrf: Option<&str>, body: &str) -> String {
    let nav = match csrf {
        Some(csrf) => format!(
            "<nav><a href=\"/\" id=\"nav-namespaces\">Namespaces</a>\
             <a href=\"/console/pulls\" id=\"nav-pulls\">Pulls</a>\
             <a href=\"/console/cache\" id=\"nav-cache\">Cache</a>\
             <form method=\"post\" action=\"/console/signout\" class=\"inline\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\" id=\"signout\">Sign out</button></form></nav>",
            esc(csrf)
        ),
        None => String::new(),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · pullsecret</title><link rel=\"stylesheet\" href=\"/console/style.css\">\
         <script src=\"/console/app.js\" defer></script></head>\
         <body><header><span class=\"brand\">pullsecret</span>{nav}</header>\
         <main>{body}</main></body></html>",
        esc(title)
    )
}

/// HTML-escapes text for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html(status: StatusCode, body: String, cookies: &[String]) -> Response<Full<Bytes>> {
    let mut r = with_headers(status, "text/html; charset=utf-8", Bytes::from(body));
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

fn redirect(to: &str, cookies: &[String]) -> Response<Full<Bytes>> {
    let mut r = html(StatusCode::SEE_OTHER, String::new(), cookies);
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn asset(content_type: &'static str, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = with_headers(
        StatusCode::OK,
        content_type,
        Bytes::from_static(text.as_bytes()),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    r
}

/// Every console response carries the same security headers.
fn with_headers(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// Reads an `application/x-www-form-urlencoded` body (at most `MAX_FORM` bytes).
async fn read_form(
    req: Request<hyper::body::Incoming>,
) -> Result<Vec<(String, String)>, Response<Full<Bytes>>> {
    let too_big = || {
        html(
            StatusCode::PAYLOAD_TOO_LARGE,
            layout(
                "Too large",
                None,
                "<p class=\"error\">The form was too large.</p>",
            ),
            &[],
        )
    };
    let body = http_body_util::Limited::new(req.into_body(), MAX_FORM)
        .collect()
        .await
        .map_err(|_| too_big())?
        .to_bytes();
    Ok(parse_form(&body))
}

fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    body.split(|b| *b == b'&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let mut it = kv.splitn(2, |b| *b == b'=');
            let k = decode(it.next().unwrap_or_default());
            let v = decode(it.next().unwrap_or_default());
            (k, v)
        })
        .collect()
}

/// Percent-decoding with `+` as space; an invalid escape is kept as written.
fn decode(s: &[u8]) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                s.get(i + 1).and_then(|b| hex(*b)),
                s.get(i + 2).and_then(|b| hex(*b)),
            ) {
                (Some(h), Some(l)) => {
                    // Two hex digits are below 256.
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn field(form: &[(String, String)], name: &str) -> Option<String> {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

fn cookies(headers: &http::HeaderMap) -> HashMap<String, String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// 32 random bytes, URL-safe base64; `None` without an OS random source.
fn random_id() -> Option<String> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).ok()?;
    Some(B64.encode(raw))
}

fn no_random() -> Response<Full<Bytes>> {
    html(
        StatusCode::INTERNAL_SERVER_ERROR,
        layout("Error", None, "<p class=\"error\">No OS random source.</p>"),
        &[],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_and_html_escapes() {
        assert_eq!(
            parse_form(b"a=1+2&b=%3Cx%3E%zz&c"),
            vec![
                ("a".to_string(), "1 2".to_string()),
                ("b".to_string(), "<x>%zz".to_string()),
                ("c".to_string(), String::new()),
            ]
        );
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert!(owns("/") && owns("/console/ns/a") && !owns("/api/v1/cache"));
    }
}
