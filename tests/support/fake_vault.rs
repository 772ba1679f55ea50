//! A fake HashiCorp Vault for integration tests: a `std::net` HTTP/1.1 server on
//! 127.0.0.1 that answers the KV v2 read and AppRole login endpoints with the JSON
//! shapes real Vault sends, and records every request so tests can check what the
//! client put on the wire (path, token, namespace, login body).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};

/// The static token the server accepts (as if created with `vault token create`).
pub const TOKEN: &str = "hvs.CAESIStaticTestToken0123456789";
/// The AppRole credentials the server accepts at `auth/approle/login`.
pub const ROLE_ID: &str = "59d6d1ca-47bb-4e7e-a40b-8be3bc5a0ba8";
pub const SECRET_ID: &str = "84896a0c-1347-aa90-a4f6-aca8b7558780";
/// The token a successful AppRole login hands out; it is only valid once issued.
pub const CLIENT_TOKEN: &str = "hvs.CAESIAppRoleIssuedToken9876543210";
/// The value stored under `password` at `secret/ci/registry`.
pub const PASSWORD: &str = "reg-p4ss-from-vault";

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Header names lowercased, since HTTP header names are case-insensitive.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

struct State {
    requests: Vec<Recorded>,
    /// Tokens that authorize reads: the static one plus any issued by AppRole login.
    valid_tokens: HashSet<String>,
    /// Paths answered with `307 Temporary Redirect` to a location (as a standby Vault does).
    redirects: Vec<(String, String)>,
}

pub struct FakeVault {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeVault {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let state = Arc::new(Mutex::new(State {
            requests: Vec::new(),
            valid_tokens: HashSet::from([TOKEN.to_string()]),
            redirects: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let state = Arc::clone(&state);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    // One request per connection (we always answer `Connection: close`),
                    // so serving connections one after another is enough.
                    if let Err(e) = serve(stream, &state) {
                        eprintln!("fake vault: {e}");
                    }
                }
            })
        };
        Self {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, the value for `VAULT_ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state).requests.clone()
    }

    /// Answers requests for `path` with `307 Temporary Redirect` to `location` (an absolute
    /// URL, possibly on another server), the way a standby Vault node sends clients on.
    pub fn redirect(&self, path: &str, location: &str) {
        lock(&self.state)
            .redirects
            .push((path.to_string(), location.to_string()));
    }
}

impl Drop for FakeVault {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // `accept` blocks; a throwaway connection wakes the loop so it sees `stop`.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // A panicking test must not turn every later request into a second panic.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn serve(stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    // A client that stalls must fail its own test, not hang the server forever.
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        // The wake-up connection from `Drop`, or a client that gave up.
        return Ok(());
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            break;
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    let req = Recorded {
        method,
        path,
        headers,
        body,
    };
    let location = lock(state)
        .redirects
        .iter()
        .find(|(p, _)| *p == req.path)
        .map(|(_, l)| l.clone());
    let (status, json) = match &location {
        Some(_) => (307, json!({})),
        None => route(&req, state),
    };
    lock(state).requests.push(req);
    respond(stream, status, location.as_deref(), &json)
}

fn route(req: &Recorded, state: &Mutex<State>) -> (u16, Value) {
    match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/v1/auth/approle/login") => {
            let creds: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            if creds["role_id"] == ROLE_ID && creds["secret_id"] == SECRET_ID {
                lock(state).valid_tokens.insert(CLIENT_TOKEN.to_string());
                (200, approle_login_response())
            } else {
                (400, json!({"errors": ["invalid role or secret ID"]}))
            }
        }
        ("GET", p) if p.starts_with("/v1/secret/data/") => {
            let authorized = req
                .header("x-vault-token")
                .is_some_and(|t| lock(state).valid_tokens.contains(t));
            if !authorized {
                // Vault answers a bad or missing token with a bare 403, whatever the path.
                return (403, json!({"errors": ["permission denied"]}));
            }
            match &p["/v1/secret/data/".len()..] {
                "ci/registry" => (200, kv2_read_response()),
                // KV v2 reports a path with no secret as 404 with an empty error list.
                _ => (404, json!({"errors": []})),
            }
        }
        _ => (404, json!({"errors": []})),
    }
}

/// `GET /v1/secret/data/ci/registry`, shaped like Vault's KV v2 read response.
fn kv2_read_response() -> Value {
    json!({
        "request_id": "3a1e4f6c-2f0b-7d41-9a3e-5c2b8d0e1f47",
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": {
            "data": {
                "username": "ci-bot",
                "password": PASSWORD,
                "port": 5000
            },
            "metadata": {
                "created_time": "2018-03-22T02:24:06.945319214Z",
                "custom_metadata": null,
                "deletion_time": "",
                "destroyed": false,
                "version": 2
            }
        },
        "wrap_info": null,
        "warnings": null,
        "auth": null
    })
}

/// `POST /v1/auth/approle/login`, shaped like Vault's login response.
fn approle_login_response() -> Value {
    json!({
        "request_id": "9c1e7a52-8b3d-4f0e-b6a1-2d4c5e6f7a8b",
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": null,
        "wrap_info": null,
        "warnings": null,
        "auth": {
            "client_token": CLIENT_TOKEN,
            "accessor": "hvs.K3mPXaBNGTUVWdd3f2eGtYwZ",
            "policies": ["default"],
            "token_policies": ["default"],
            "metadata": {"role_name": "ci"},
            "lease_duration": 1200,
            "renewable": true,
            "entity_id": "b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d5e",
            "token_type": "service",
            "orphan": true
        }
    })
}

fn respond(
    mut stream: TcpStream,
    status: u16,
    location: Option<&str>,
    json: &Value,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Unknown",
    };
    let body = json.to_string();
    let location = location
        .map(|l| format!("Location: {l}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\n\
         {location}\
         Content-Type: application/json\r\n\
         Cache-Control: no-store\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}
