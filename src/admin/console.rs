//! The web console at `/` of the admin listener: server-rendered pages over the admin API's own
//! routes (sign-in with an admin token; namespaces with their registry secrets and clients; the
//! cache and upstreams), sessions in memory, a CSRF token per session, strict headers.
//!
//! Nothing secret is ever rendered: the API's answers carry no values, the token lives only in
//! the sign-in request, and a password typed into a form is never written back into a page.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use super::api::{self, AdminState, Answer};
use super::tokens::{self, AdminIdentity};

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

/// Whether `path` belongs to the console (everything else is the API's).
pub fn owns(path: &str) -> bool {
    path == "/" || path == "/console" || path.starts_with("/console/")
}

/// The console's sessions; one per admin listener.
pub struct Console {
    /// Cookies get `Secure` (the listener speaks TLS).
    secure: bool,
    sessions: Mutex<HashMap<String, Session>>,
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
    pub response: Response<Full<Bytes>>,
    pub failed_sign_in: bool,
}

impl From<Response<Full<Bytes>>> for Outcome {
    fn from(response: Response<Full<Bytes>>) -> Self {
        Self {
            response,
            failed_sign_in: false,
        }
    }
}

impl Console {
    pub fn new(secure: bool) -> Self {
        Self {
            secure,
            sessions: Mutex::new(HashMap::new()),
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
        let method = req.method().clone();
        let path = req.uri().path().to_string();
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
        };
        let response = match (&method, parts.as_slice()) {
            (&Method::GET, []) | (&Method::GET, ["console"]) => ctx.namespaces_page(None).await,
            (&Method::POST, ["console", "namespaces"]) => ctx.create_namespace(&form).await,
            (&Method::GET, ["console", "ns", ns]) => ctx.namespace_page(ns, None, None).await,
            (&Method::POST, ["console", "ns", ns, "secrets"]) => ctx.add_secret(ns, &form).await,
            (&Method::POST, ["console", "ns", ns, "secrets", name, "delete"]) => {
                ctx.delete_secret(ns, name).await
            }
            (&Method::GET, ["console", "cache"]) => ctx.cache_page().await,
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
        Outcome {
            response: html(status, layout("Sign in", None, &body), &[cookie]),
            failed_sign_in: false,
        }
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
        let store = state.store.clone();
        let name = who.name.clone();
        let current = tokio::task::spawn_blocking(move || tokens::list(store.as_ref()))
            .await
            .ok()
            .and_then(Result::ok)
            .is_some_and(|list| {
                list.iter()
                    .any(|t| t.name == name && t.created == created && t.namespace == who.namespace)
            });
        if !current {
            self.lock().remove(&sid);
            return None;
        }
        Some((sid, who, csrf))
    }
}

fn alive(s: &Session, now: Instant) -> bool {
    now.duration_since(s.seen) < SESSION_IDLE && now.duration_since(s.started) < SESSION_MAX
}

/// One signed-in request: the state, who is acting, and the session's CSRF token.
struct Ctx<'a> {
    state: Arc<AdminState>,
    who: AdminIdentity,
    csrf: &'a str,
}

impl Ctx<'_> {
    /// One admin API call as this session's token (the API checks namespaces and audits).
    async fn api(&self, method: Method, path: String, body: Option<Value>) -> Answer {
        let state = self.state.clone();
        let who = self.who.clone();
        let body = Bytes::from(body.map(|b| b.to_string()).unwrap_or_default());
        tokio::task::spawn_blocking(move || api::route(&state, &who, &method, &path, None, &body))
            .await
            .unwrap_or_else(|_| {
                Answer::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL",
                    "the request failed",
                )
            })
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
        body.push_str(
            "<h2>Registry secrets</h2><table id=\"secrets\"><thead><tr><th>Name</th>\
             <th>Type</th><th>Server</th><th>Username</th><th>Scope</th><th></th></tr></thead>\
             <tbody>",
        );
        let list = sv["secrets"].as_array().cloned().unwrap_or_default();
        if list.is_empty() {
            body.push_str("<tr><td colspan=\"6\" class=\"empty\">No secrets yet.</td></tr>");
        }
        for s in &list {
            let name = text(&s["name"]);
            let _ = write!(
                body,
                "<tr data-secret=\"{n}\"><td>{n}</td><td>{t}</td><td>{srv}</td><td>{u}</td>\
                 <td>{sc}</td><td><form method=\"post\" \
                 action=\"/console/ns/{ns}/secrets/{pn}/delete\" class=\"inline\">{csrf}\
                 <button type=\"submit\" class=\"danger\" id=\"delete-{n}\">Delete</button>\
                 </form></td></tr>",
                n = esc(&name),
                t = esc(&text(&s["type"])),
                srv = esc(&text(&s["server"])),
                u = esc(&text(&s["username"])),
                sc = esc(&text(&s["scope"])),
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
        self.namespace_page(ns, Some((a.status, error_message(&a))), Some(form))
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
        self.namespace_page(ns, Some((a.status, error_message(&a))), None)
            .await
    }

    async fn cache_page(&self) -> Response<Full<Bytes>> {
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
        let mut body = String::from("<h1>Cache</h1><dl id=\"cache\" class=\"figures\">");
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
        body.push_str(
            "<h2>Upstreams</h2><table id=\"upstreams\"><thead><tr><th>Name</th><th>URL</th>\
             <th>Requests</th><th>Errors</th><th>Fetched</th></tr></thead><tbody>",
        );
        for up in u["upstreams"].as_array().into_iter().flatten() {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td data-bytes>{}</td></tr>",
                esc(&text(&up["name"])),
                esc(&text(&up["url"])),
                esc(&text(&up["requests"])),
                esc(&text(&up["errors"])),
                esc(&text(&up["bytes"]))
            );
        }
        body.push_str("</tbody></table>");
        self.page(StatusCode::OK, "Cache", &body)
    }

    fn error_page(&self, a: &Answer) -> Response<Full<Bytes>> {
        let body = format!(
            "<h1>Refused</h1><p class=\"error\" id=\"error\">{}</p><p><a href=\"/\">Back</a></p>",
            esc(&error_message(a))
        );
        self.page(a.status, "Refused", &body)
    }
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

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
