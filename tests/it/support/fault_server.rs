//! A fault-injecting upstream registry: serves one image over minimal HTTP/1.1 and can reset
//! mid-blob, answer 500/503/429, stall, or speak garbage instead of TLS, switched at run time.
//! It demands Basic auth with the canary password, so every proxy in front of it carries the
//! canary through each fault.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{store_canary_secret, Env};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Close the connection after half the blob.
    ResetMidBlob,
    Status(u16),
    /// 429 with `Retry-After: 1`.
    TooMany,
    /// Send headers and half the blob, then go silent for this long.
    Stall(Duration),
    /// Send half the blob, pause this long, then the rest (a slow but complete upstream).
    Pause(Duration),
    /// Go silent for this long before any response header (every request but `/v2/`).
    /// Range answers carry wrong bytes (whole GETs are right).
    CorruptRanges,
    StallHeaders(Duration),
    /// Answer every connection with bytes that are not TLS (for an https:// upstream URL).
    NotTls,
    /// Manifests of 5 MiB (over the 4 MiB limit registries use).
    HugeManifest,
}

pub struct FaultServer {
    pub addr: String,
    pub fault: Arc<Mutex<Fault>>,
    pub blob_gets: Arc<AtomicUsize>,
    /// Every request line read, `/v2/` and refused ones included.
    pub requests: Arc<AtomicUsize>,
    /// Header lines (`Name: value\r\n`) added to every answer, e.g. rate-limit headers.
    pub extra_headers: Arc<Mutex<String>>,
    /// Range GETs of the blob (answered at once, whatever the fault).
    pub range_gets: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub blob_digest: String,
}

fn digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

impl FaultServer {
    /// Serves `blob` to clients with the canary credentials.
    pub fn start(blob: Vec<u8>) -> Self {
        Self::start_with_login(blob, super::CANARY_USER, super::CANARY)
    }

    /// Serves `blob` to clients that log in as `user` with `password` (Basic).
    pub fn start_with_login(blob: Vec<u8>, user: &str, password: &str) -> Self {
        use base64::Engine;
        let auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let blob_digest = digest(&blob);
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
                .to_vec();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blob_digest, "size": blob.len()}]
        }))
        .expect("manifest");
        let manifest_digest = digest(&manifest);
        let fault = Arc::new(Mutex::new(Fault::None));
        let blob_gets = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let extra_headers = Arc::new(Mutex::new(String::new()));
        let range_gets = Arc::new(AtomicUsize::new(0));
        let ranges = range_gets.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let state = (
            auth,
            fault.clone(),
            blob_gets.clone(),
            requests.clone(),
            extra_headers.clone(),
            stop.clone(),
            manifest.clone(),
            manifest_digest.clone(),
            blob.clone(),
            blob_digest.clone(),
            config,
        );
        std::thread::spawn(move || {
            let (auth, fault, gets, requests, extra, stop, manifest, md, blob, bd, config) = state;
            let shared = Arc::new((manifest, md, blob, bd, config, auth));
            for conn in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(s) = conn else { continue };
                let (fault, gets, shared) = (fault.clone(), gets.clone(), shared.clone());
                let (requests, extra) = (requests.clone(), extra.clone());
                let ranges = ranges.clone();
                std::thread::spawn(move || {
                    let counters = Counters {
                        gets: &gets,
                        range_gets: &ranges,
                        requests: &requests,
                        extra: &extra,
                        auth: &shared.5,
                    };
                    let _ = serve(
                        s, &fault, &counters, &shared.0, &shared.1, &shared.2, &shared.3, &shared.4,
                    );
                });
            }
        });
        Self {
            addr,
            fault,
            blob_gets,
            requests,
            extra_headers,
            range_gets,
            stop,
            manifest,
            manifest_digest,
            blob_digest,
        }
    }

    /// An `[[upstream]]` table named "f" for this server with `extra` keys, its credentials the
    /// canary secret (stored in `env` as "fault-canary").
    pub fn upstream(&self, env: &Env, scheme: &str, extra: &str) -> String {
        store_canary_secret(env, "fault-canary", &self.addr);
        format!(
            "[[upstream]]\nname = \"f\"\nurl = \"{scheme}://{}\"\ninsecure = {}\nsecret = \"fault-canary\"\n{extra}\n",
            self.addr,
            scheme == "http"
        )
    }

    pub fn set(&self, f: Fault) {
        *self.fault.lock().unwrap_or_else(|e| e.into_inner()) = f;
    }

    pub fn set_extra_headers(&self, lines: &str) {
        *self.extra_headers.lock().unwrap_or_else(|e| e.into_inner()) = lines.to_string();
    }

    pub fn request_count(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the blocking accept so the loop sees the flag.
        let _ = TcpStream::connect(&self.addr);
    }
}

struct Counters<'a> {
    gets: &'a AtomicUsize,
    range_gets: &'a AtomicUsize,
    requests: &'a AtomicUsize,
    extra: &'a Mutex<String>,
    /// The `Authorization` value this server accepts.
    auth: &'a str,
}

#[allow(clippy::too_many_arguments)]
fn serve(
    s: TcpStream,
    current: &Mutex<Fault>,
    counters: &Counters<'_>,
    manifest: &[u8],
    md: &str,
    blob: &[u8],
    bd: &str,
    config: &[u8],
) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let expected_auth = counters.auth;
    let mut r = BufReader::new(s.try_clone()?);
    let mut w = s;
    // Read per request: the proxy keeps connections alive across fault switches.
    let fault_now = || *current.lock().unwrap_or_else(|e| e.into_inner());
    if fault_now() == Fault::NotTls {
        let mut buf = [0u8; 16];
        let _ = r.read(&mut buf);
        w.write_all(b"this is not a TLS server\r\n")?;
        return Ok(());
    }
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        counters.requests.fetch_add(1, Ordering::Relaxed);
        let gets = counters.gets;
        let always = counters
            .extra
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or("").to_string(),
        );
        let mut authorized = false;
        let mut range: Option<(usize, usize)> = None;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 || h == "\r\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                authorized |= k.eq_ignore_ascii_case("authorization") && v.trim() == expected_auth;
                // `bytes=a-b` and `bytes=a-` (to the end): the proxy's own range requests.
                if k.eq_ignore_ascii_case("range") {
                    range = v
                        .trim()
                        .strip_prefix("bytes=")
                        .and_then(|r| r.split_once('-'))
                        .and_then(|(a, b)| {
                            let end = if b.is_empty() {
                                usize::MAX
                            } else {
                                b.parse().ok()?
                            };
                            Some((a.parse().ok()?, end))
                        });
                }
            }
        }
        let head = method == "HEAD";
        let fault = fault_now();
        let respond = |w: &mut TcpStream,
                       status: &str,
                       ctype: &str,
                       extra: &str,
                       body: &[u8]|
         -> std::io::Result<()> {
            write!(
                w,
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{always}{extra}\r\n",
                body.len()
            )?;
            if !head {
                w.write_all(body)?;
            }
            Ok(())
        };
        if !authorized {
            respond(
                &mut w,
                "401 Unauthorized",
                "application/json",
                "WWW-Authenticate: Basic realm=\"fault\"\r\n",
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            )?;
            continue;
        }
        if path == "/v2/" {
            respond(&mut w, "200 OK", "application/json", "", b"{}")?;
            continue;
        }
        match fault {
            Fault::StallHeaders(d) => {
                std::thread::sleep(d);
                return Ok(());
            }
            Fault::Status(code) => {
                let body = br#"{"errors":[{"code":"UNAVAILABLE","message":"injected"}]}"#;
                respond(
                    &mut w,
                    &format!("{code} Injected"),
                    "application/json",
                    "",
                    body,
                )?;
                continue;
            }
            Fault::TooMany => {
                let body = br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#;
                respond(
                    &mut w,
                    "429 Too Many Requests",
                    "application/json",
                    "Retry-After: 1\r\n",
                    body,
                )?;
                continue;
            }
            _ => {}
        }
        if path.contains("/manifests/") && fault == Fault::HugeManifest {
            let huge = vec![b' '; 5 << 20];
            respond(
                &mut w,
                "200 OK",
                "application/vnd.oci.image.manifest.v1+json",
                "",
                &huge,
            )?;
        } else if path.contains("/manifests/") {
            respond(
                &mut w,
                "200 OK",
                "application/vnd.oci.image.manifest.v1+json",
                &format!("Docker-Content-Digest: {md}\r\n"),
                manifest,
            )?;
        } else if path.ends_with(bd) {
            if head {
                respond(
                    &mut w,
                    "200 OK",
                    "application/octet-stream",
                    &format!("Docker-Content-Digest: {bd}\r\n"),
                    blob,
                )?;
                continue;
            }
            // A range request is answered at once, whatever the fault does to whole GETs.
            let range = range.map(|(a, b)| (a, b.min(blob.len().saturating_sub(1))));
            if let Some((a, b)) = range.filter(|(a, b)| a <= b && *b < blob.len()) {
                counters.range_gets.fetch_add(1, Ordering::Relaxed);
                write!(w, "HTTP/1.1 206 Partial Content\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nContent-Range: bytes {a}-{b}/{}\r\n\r\n", b - a + 1, blob.len())?;
                if fault == Fault::CorruptRanges {
                    let wrong: Vec<u8> = blob[a..=b].iter().map(|x| x ^ 0xff).collect();
                    w.write_all(&wrong)?;
                } else {
                    w.write_all(&blob[a..=b])?;
                }
                continue;
            }
            gets.fetch_add(1, Ordering::Relaxed);
            write!(w, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nDocker-Content-Digest: {bd}\r\n\r\n", blob.len())?;
            match fault {
                Fault::ResetMidBlob => {
                    w.write_all(&blob[..blob.len() / 2])?;
                    w.flush()?;
                    let _ = w.shutdown(std::net::Shutdown::Both);
                    return Ok(());
                }
                Fault::Stall(d) => {
                    w.write_all(&blob[..blob.len() / 2])?;
                    w.flush()?;
                    std::thread::sleep(d);
                    return Ok(());
                }
                Fault::Pause(d) => {
                    w.write_all(&blob[..blob.len() / 2])?;
                    w.flush()?;
                    std::thread::sleep(d);
                    w.write_all(&blob[blob.len() / 2..])?;
                }
                _ => w.write_all(blob)?,
            }
        } else if path.contains("/blobs/") && path.ends_with(&digest(config)) {
            respond(&mut w, "200 OK", "application/octet-stream", "", config)?;
        } else {
            respond(
                &mut w,
                "404 Not Found",
                "application/json",
                "",
                br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"unknown"}]}"#,
            )?;
        }
    }
}
