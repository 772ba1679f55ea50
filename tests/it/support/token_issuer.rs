//! An in-process RS256 token issuer (the registry's `auth.token` server): docker-style GET and
//! OAuth2 POST grants, per-user repository grants, and a record of every request for assertions.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};

use super::http::IO_TIMEOUT;

/// Repository access a user may be granted: `repo` is exact or a glob where `*` matches anything
/// (including `/`); `actions` may contain `*` for every action.
#[derive(Clone, Debug)]
pub struct Grant {
    pub repo: String,
    pub actions: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct TokenUser {
    pub name: String,
    pub password: String,
    pub grants: Vec<Grant>,
}

/// Who may get which tokens from a [`TokenIssuer`].
#[derive(Clone, Debug)]
pub struct TokenIssuerConfig {
    /// The `service` (JWT `aud`) the registry expects.
    pub service: String,
    /// The JWT `iss` the registry trusts.
    pub issuer: String,
    pub users: Vec<TokenUser>,
    /// Repository globs anyone (also anonymous) may pull.
    pub public_repos: Vec<String>,
    /// `expires_in` of responses and the JWT lifetime, in seconds (distribution adds 60 s leeway).
    pub expires_in: i64,
}

impl Default for TokenIssuerConfig {
    fn default() -> Self {
        Self {
            service: "pullsecret-test-registry".into(),
            issuer: "pullsecret-test-issuer".into(),
            users: Vec::new(),
            public_repos: Vec::new(),
            expires_in: 300,
        }
    }
}

impl TokenIssuerConfig {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a user with `(repo glob, actions)` grants, e.g. `&[("team/*", &["pull", "push"])]`.
    pub fn user(mut self, name: &str, password: &str, grants: &[(&str, &[&str])]) -> Self {
        let grants = grants
            .iter()
            .map(|(repo, actions)| Grant {
                repo: repo.to_string(),
                actions: actions.iter().map(|a| a.to_string()).collect(),
            })
            .collect();
        self.users.push(TokenUser {
            name: name.into(),
            password: password.into(),
            grants,
        });
        self
    }

    /// Lets anyone, anonymous included, pull repositories matching `repo_glob`.
    pub fn public(mut self, repo_glob: &str) -> Self {
        self.public_repos.push(repo_glob.into());
        self
    }

    pub fn expires_in(mut self, secs: i64) -> Self {
        self.expires_in = secs;
        self
    }

    fn check_password(&self, user: &str, password: &str) -> bool {
        self.users
            .iter()
            .any(|u| u.name == user && u.password == password)
    }
}

/// One entry of the JWT `access` claim.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

/// A token request as the issuer saw it, recorded for assertions.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// `GET` (docker/skopeo style) or `POST` (OAuth2 form, containerd style).
    pub method: String,
    /// `password` / `refresh_token` for POST; `None` for GET.
    pub grant_type: Option<String>,
    /// The authenticated user; `None` when anonymous or when authentication failed.
    pub user: Option<String>,
    /// The user name offered, even if its password was wrong.
    pub offered_user: Option<String>,
    /// Every requested scope, repeated `scope` params and space-separated values flattened.
    pub scopes: Vec<String>,
    pub granted: Vec<Access>,
    pub status: u16,
    pub refresh_token_issued: bool,
}

/// The RSA key (PKCS#8 DER) and its self-signed certificate, made once per test process because
/// RSA key generation is the slow part of starting an issuer.
struct SigningKey {
    pkcs8: Vec<u8>,
    cert_der: Vec<u8>,
    cert_pem: String,
}

fn signing_key() -> Arc<SigningKey> {
    static KEY: OnceLock<Arc<SigningKey>> = OnceLock::new();
    KEY.get_or_init(|| {
        let dir = tempfile::tempdir().expect("key tempdir");
        let key_pem = dir.path().join("key.pem");
        let key_der = dir.path().join("key.der");
        let cert = dir.path().join("cert.pem");
        let openssl = |args: &[&std::ffi::OsStr]| {
            let out = Command::new("openssl")
                .args(args)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req".as_ref(),
            "-x509".as_ref(),
            "-newkey".as_ref(),
            "rsa:2048".as_ref(),
            "-nodes".as_ref(),
            "-subj".as_ref(),
            "/CN=pullsecret-test-token-issuer".as_ref(),
            "-days".as_ref(),
            "2".as_ref(),
            "-keyout".as_ref(),
            key_pem.as_os_str(),
            "-out".as_ref(),
            cert.as_os_str(),
        ]);
        openssl(&[
            "pkcs8".as_ref(),
            "-topk8".as_ref(),
            "-nocrypt".as_ref(),
            "-outform".as_ref(),
            "DER".as_ref(),
            "-in".as_ref(),
            key_pem.as_os_str(),
            "-out".as_ref(),
            key_der.as_os_str(),
        ]);
        let cert_pem = std::fs::read_to_string(&cert).expect("read cert");
        let b64: String = cert_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        Arc::new(SigningKey {
            pkcs8: std::fs::read(&key_der).expect("read key"),
            cert_der: STANDARD.decode(b64).expect("cert base64"),
            cert_pem,
        })
    })
    .clone()
}

/// The authenticated user (`None`: anonymous) and the refresh token to hand out, if any.
type Identity = (Option<String>, Option<String>);
/// An error status and JSON body.
type Refusal = (u16, Value);

struct IssuerState {
    config: Mutex<TokenIssuerConfig>,
    key: Arc<SigningKey>,
    keypair: ring::signature::RsaKeyPair,
    requests: Mutex<Vec<TokenRequest>>,
    refresh_tokens: Mutex<HashMap<String, String>>,
    counter: AtomicU64,
}

/// The `auth.token` server: answers `GET /token?service=…&scope=…` (optional Basic credentials)
/// and the OAuth2 `POST /token` password and refresh_token grants with RS256 JWTs; stops on drop.
pub struct TokenIssuer {
    addr: SocketAddr,
    realm: String,
    state: Arc<IssuerState>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TokenIssuer {
    /// Listens on 127.0.0.1 (free port). Needs `openssl` on PATH for the one-time key generation.
    pub fn start(config: TokenIssuerConfig) -> Self {
        let key = signing_key();
        let keypair = ring::signature::RsaKeyPair::from_pkcs8(&key.pkcs8).expect("RSA PKCS#8 key");
        let state = Arc::new(IssuerState {
            config: Mutex::new(config),
            key,
            keypair,
            requests: Mutex::new(Vec::new()),
            refresh_tokens: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token issuer");
        let addr = listener.local_addr().expect("issuer addr");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = conn else { continue };
                    let state = state.clone();
                    // One thread per connection so a stalled client cannot block the others.
                    std::thread::spawn(move || serve_token_conn(&state, stream));
                }
            })
        };
        Self {
            addr,
            realm: format!("http://{addr}/token"),
            state,
            stop,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/token`.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    pub fn service(&self) -> String {
        self.state.config.lock().unwrap().service.clone()
    }

    /// The signing certificate (PEM), the registry's `rootcertbundle`.
    pub fn cert_pem(&self) -> &str {
        &self.state.key.cert_pem
    }

    /// Every token request so far, oldest first.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn clear_requests(&self) {
        self.state.requests.lock().unwrap().clear();
    }

    /// Signs a token directly, e.g. one that is already expired (`lifetime_secs` < -60).
    pub fn mint(&self, subject: &str, access: &[Access], lifetime_secs: i64) -> String {
        let config = self.state.config.lock().unwrap().clone();
        self.state.sign(&config, subject, access, lifetime_secs)
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the loop sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct IncomingRequest {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn read_request(stream: &TcpStream) -> std::io::Result<IncomingRequest> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad request");
    let mut reader = BufReader::new(stream.take(1 << 20));
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().ok_or_else(bad)?.to_string();
    let target = parts.next().ok_or_else(bad)?.to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(bad());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len.min(1 << 16)];
    reader.read_exact(&mut body)?;
    Ok(IncomingRequest {
        method,
        target,
        headers,
        body,
    })
}

fn serve_token_conn(state: &IssuerState, mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let Ok(req) = read_request(&stream) else {
        return;
    };
    let (status, body) = state.handle(&req);
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    let body = body.to_string();
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status == 401 {
        head.push_str("WWW-Authenticate: Basic realm=\"pullsecret-test-issuer\"\r\n");
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}

impl IssuerState {
    fn handle(&self, req: &IncomingRequest) -> (u16, Value) {
        let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
        if path != "/token" {
            return (
                404,
                json!({"errors": [{"code": "NOT_FOUND", "message": "only /token is served"}]}),
            );
        }
        let params = match req.method.as_str() {
            "GET" => parse_form(query),
            "POST" => parse_form(&String::from_utf8_lossy(&req.body)),
            _ => {
                return (
                    405,
                    json!({"errors": [{"code": "UNSUPPORTED", "message": "GET or POST"}]}),
                )
            }
        };
        let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let scopes: Vec<String> = params
            .iter()
            .filter(|(n, _)| n == "scope")
            .flat_map(|(_, v)| {
                v.split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut record = TokenRequest {
            method: req.method.clone(),
            grant_type: None,
            user: None,
            offered_user: None,
            scopes: scopes.clone(),
            granted: Vec::new(),
            status: 200,
            refresh_token_issued: false,
        };
        let config = self.config.lock().unwrap().clone();
        // Who is asking, and whether they get a refresh token.
        let outcome = if req.method == "GET" {
            let offline = param("offline_token").as_deref() == Some("true");
            self.authenticate_basic(&config, req, offline, &mut record)
        } else {
            record.grant_type = param("grant_type");
            self.authenticate_grant(&config, &param, &mut record)
        };
        let (user, refresh) = match outcome {
            Ok(v) => v,
            Err((status, body)) => {
                record.status = status;
                self.requests.lock().unwrap().push(record);
                return (status, body);
            }
        };
        let granted: Vec<Access> = scopes
            .iter()
            .filter_map(|s| grant(&config, user.as_deref(), s))
            .collect();
        let token = self.sign(
            &config,
            user.as_deref().unwrap_or(""),
            &granted,
            config.expires_in,
        );
        let mut body = json!({
            "token": token,
            "access_token": token,
            "expires_in": config.expires_in,
            "issued_at": rfc3339(now_secs()),
        });
        if let Some(rt) = &refresh {
            body["refresh_token"] = json!(rt);
        }
        record.user = user;
        record.granted = granted;
        record.refresh_token_issued = refresh.is_some();
        self.requests.lock().unwrap().push(record);
        (200, body)
    }

    /// docker/skopeo style: optional Basic credentials; a refresh token only with `offline_token=true`.
    fn authenticate_basic(
        &self,
        config: &TokenIssuerConfig,
        req: &IncomingRequest,
        offline: bool,
        record: &mut TokenRequest,
    ) -> Result<Identity, Refusal> {
        let basic = req
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .and_then(|(_, v)| v.strip_prefix("Basic "))
            .and_then(|b| STANDARD.decode(b.trim()).ok())
            .and_then(|b| String::from_utf8(b).ok());
        let Some((user, password)) = basic.as_deref().and_then(|s| s.split_once(':')) else {
            return Ok((None, None));
        };
        record.offered_user = Some(user.to_string());
        if !config.check_password(user, password) {
            let msg = "invalid username or password";
            return Err((
                401,
                json!({"errors": [{"code": "UNAUTHORIZED", "message": msg}]}),
            ));
        }
        let refresh = offline.then(|| self.new_refresh(user));
        Ok((Some(user.to_string()), refresh))
    }

    /// containerd style OAuth2 form: `grant_type=password` (always gets a refresh token) or
    /// `grant_type=refresh_token`.
    fn authenticate_grant(
        &self,
        config: &TokenIssuerConfig,
        param: &dyn Fn(&str) -> Option<String>,
        record: &mut TokenRequest,
    ) -> Result<Identity, Refusal> {
        let invalid = |why: &str| {
            (
                401,
                json!({"error": "invalid_grant", "error_description": why}),
            )
        };
        match param("grant_type").as_deref() {
            Some("password") => {
                let user = param("username").unwrap_or_default();
                record.offered_user = Some(user.clone());
                if !config.check_password(&user, &param("password").unwrap_or_default()) {
                    return Err(invalid("invalid username or password"));
                }
                let refresh = self.new_refresh(&user);
                Ok((Some(user), Some(refresh)))
            }
            Some("refresh_token") => {
                let rt = param("refresh_token").unwrap_or_default();
                let owner = self.refresh_tokens.lock().unwrap().get(&rt).cloned();
                // A refresh token dies with its user.
                let user = owner
                    .filter(|u| config.users.iter().any(|x| &x.name == u))
                    .ok_or_else(|| invalid("unknown refresh token"))?;
                record.offered_user = Some(user.clone());
                Ok((Some(user), Some(rt)))
            }
            _ => Err((400, json!({"error": "unsupported_grant_type"}))),
        }
    }

    fn new_refresh(&self, user: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let mut salt = [0u8; 8];
        let _ = getrandom::fill(&mut salt);
        let token = format!("refresh-{n}-{}", hex::encode(salt));
        self.refresh_tokens
            .lock()
            .unwrap()
            .insert(token.clone(), user.to_string());
        token
    }

    fn sign(
        &self,
        config: &TokenIssuerConfig,
        subject: &str,
        access: &[Access],
        lifetime: i64,
    ) -> String {
        let now = now_secs();
        let jti = self.counter.fetch_add(1, Ordering::SeqCst);
        // distribution 2.8 checks the signature with the key in the `x5c` certificate, after
        // verifying that certificate against `rootcertbundle`.
        let header =
            json!({"typ": "JWT", "alg": "RS256", "x5c": [STANDARD.encode(&self.key.cert_der)]});
        let claims = json!({
            "iss": config.issuer,
            "sub": subject,
            "aud": config.service,
            "exp": now + lifetime,
            "nbf": now.min(now + lifetime),
            "iat": now,
            "jti": format!("pullsecret-test-{jti}"),
            "access": access,
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0; self.keypair.public().modulus_len()];
        self.keypair
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .expect("RS256 sign");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

/// The access granted for one requested scope (`type:name:actions`): the requested actions that
/// the user's grants (or the public list) allow; `None` when nothing is granted.
fn grant(config: &TokenIssuerConfig, user: Option<&str>, scope: &str) -> Option<Access> {
    let (rest, actions) = scope.rsplit_once(':')?;
    let (kind, name) = rest.split_once(':')?;
    // `repository(plugin)` is a repository with a resource class.
    let kind = kind.split('(').next().unwrap_or(kind);
    if kind != "repository" {
        return None;
    }
    let mut allowed: Vec<&str> = Vec::new();
    if config.public_repos.iter().any(|p| glob_match(p, name)) {
        allowed.push("pull");
    }
    if let Some(u) = user.and_then(|u| config.users.iter().find(|x| x.name == u)) {
        for g in u.grants.iter().filter(|g| glob_match(&g.repo, name)) {
            allowed.extend(g.actions.iter().map(String::as_str));
        }
    }
    let all = allowed.contains(&"*");
    let mut granted: Vec<String> = Vec::new();
    for a in actions.split(',').filter(|a| !a.is_empty()) {
        if (all || allowed.contains(&a)) && !granted.iter().any(|g| g == a) {
            granted.push(a.to_string());
        }
    }
    (!granted.is_empty()).then(|| Access {
        kind: kind.into(),
        name: name.into(),
        actions: granted,
    })
}

/// `*` matches any run of characters, `/` included; everything else is literal.
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// `application/x-www-form-urlencoded` (also query strings) into ordered pairs.
fn parse_form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

/// Percent-encodes a form/query value.
pub fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|c| match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (c as char).to_string()
            }
            _ => format!("%{c:02X}"),
        })
        .collect()
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// `YYYY-MM-DDTHH:MM:SSZ` for Unix seconds (civil-from-days, proleptic Gregorian).
fn rfc3339(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[test]
fn token_issuer_pure_helpers() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_825_599), "2000-02-29T11:59:59Z");
    assert_eq!(rfc3339(1_767_225_600), "2026-01-01T00:00:00Z");
    assert!(glob_match("team/*", "team/a/b") && glob_match("a*c", "abbc") && glob_match("x", "x"));
    assert!(!glob_match("team/*", "other/a") && !glob_match("x", "xy"));
    assert_eq!(percent_decode("a%2Fb+c%3a"), "a/b c:");
    assert_eq!(
        percent_decode(&form_encode("repository:a/b:pull,push")),
        "repository:a/b:pull,push"
    );
}
