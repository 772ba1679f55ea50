//! Headless Chromium driven over the W3C WebDriver HTTP API: chromedriver on a free loopback
//! port, one session, and the few commands the console test needs (blocking reqwest, no
//! WebDriver crate).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use super::proxy::free_port;
use super::{eventually, require_bin};

/// The key a W3C element reference is stored under.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const WAIT: Duration = Duration::from_secs(15);

/// A chromedriver process with one browser session; both end on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::blocking::Client,
    profile: tempfile::TempDir,
}

/// An element of the current page.
pub struct Element<'b> {
    browser: &'b Browser,
    id: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium; `None` (after a SKIPPED notice) when either
    /// is missing outside E2E mode.
    pub fn start() -> Option<Self> {
        let install = "apt-get install chromium chromium-driver";
        let chromedriver = require_bin("chromedriver", install)?;
        let chromium = chromium_binary(install)?;
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        let base = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().expect("profile dir");
        let mut b = Self {
            driver,
            base,
            session: String::new(),
            http,
            profile,
        };
        eventually(WAIT, "chromedriver to answer /status", || {
            b.http
                .get(format!("{}/status", b.base))
                .send()
                .ok()
                .and_then(|r| r.json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == true)
        });
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1200,860".into(),
            format!("--user-data-dir={}", b.profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_string();
        Some(b)
    }

    /// One WebDriver command; panics on an error answer (naming the command and the error).
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{}", self.base, path);
        let req = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self
                .http
                .post(&url)
                .json(&body.unwrap_or_else(|| json!({}))),
        };
        let r = req
            .send()
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = r.status();
        let v: Value = r.json().unwrap_or(Value::Null);
        assert!(
            status.is_success(),
            "WebDriver {method} {path}: {status} {}",
            v["value"]["message"]
        );
        v["value"].clone()
    }

    /// Like `call`, but an error answer (e.g. a stale element after the page changed) is an `Err`.
    fn try_call(&self, method: &str, path: &str) -> Result<Value, String> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let r = match method {
            "GET" => self.http.get(&url),
            _ => self.http.post(&url).json(&json!({})),
        }
        .send()
        .map_err(|e| e.to_string())?;
        let status = r.status();
        let v: Value = r.json().unwrap_or(Value::Null);
        if status.is_success() {
            Ok(v["value"].clone())
        } else {
            Err(format!("{status} {}", v["value"]["message"]))
        }
    }

    /// The text of the first element matching `css`, read again if the page replaced it meanwhile
    /// (live updates re-render rows).
    pub fn text_of(&self, css: &str) -> String {
        eventually(WAIT, &format!("the text of {css}"), || {
            let e = self
                .try_find(css)
                .ok_or_else(|| format!("none on {}", self.url()))?;
            self.try_call("GET", &format!("/element/{}/text", e.id))
                .map(|v| v.as_str().unwrap_or_default().to_string())
        })
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn url(&self) -> String {
        self.session_call("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The page's HTML as the browser holds it now.
    pub fn source(&self) -> String {
        self.session_call("GET", "/source", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The first element matching `css` now, if any.
    pub fn try_find(&self, css: &str) -> Option<Element<'_>> {
        let url = format!("{}/session/{}/element", self.base, self.session);
        let r = self
            .http
            .post(url)
            .json(&json!({"using": "css selector", "value": css}))
            .send()
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        let v: Value = r.json().ok()?;
        Some(Element {
            browser: self,
            id: v["value"][ELEMENT].as_str()?.to_string(),
        })
    }

    /// The first element matching `css`, waiting for it to appear.
    pub fn find(&self, css: &str) -> Element<'_> {
        eventually(WAIT, &format!("an element {css}"), || {
            self.try_find(css)
                .ok_or_else(|| format!("none on {}", self.url()))
        })
    }

    /// Waits until the page's URL path ends with `suffix`.
    pub fn wait_for_path(&self, suffix: &str) {
        eventually(WAIT, &format!("the page {suffix}"), || {
            let url = self.url();
            let path = url
                .splitn(4, '/')
                .nth(3)
                .map(|p| format!("/{p}"))
                .unwrap_or_default();
            if path.ends_with(suffix) {
                Ok(())
            } else {
                Err(url)
            }
        });
    }

    /// Saves a PNG screenshot of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) {
        let b64 = self.session_call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .expect("screenshot base64");
        assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Element<'_> {
    fn call(&self, method: &str, what: &str, body: Option<Value>) -> Value {
        self.browser
            .session_call(method, &format!("/element/{}{what}", self.id), body)
    }

    pub fn send_keys(&self, text: &str) -> &Self {
        self.call("POST", "/value", Some(json!({ "text": text })));
        self
    }

    pub fn click(&self) {
        self.call("POST", "/click", None);
    }

    pub fn text(&self) -> String {
        self.call("GET", "/text", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self
                .http
                .delete(format!("{}/session/{}", self.base, self.session))
                .send();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Debian's `chromium` (or another Chromium/Chrome on PATH).
fn chromium_binary(install: &str) -> Option<PathBuf> {
    let on_path = |name: &str| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    };
    if let Some(p) = ["chromium-browser", "google-chrome"]
        .iter()
        .find_map(|n| on_path(n))
        .filter(|_| on_path("chromium").is_none())
    {
        return Some(p);
    }
    require_bin("chromium", install)
}
