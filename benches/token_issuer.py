#!/usr/bin/env python3
"""A small RS256 token issuer for a CNCF distribution registry (`auth: token:`), for benches.

GET  /token?service=S&scope=repository:NAME:pull,push   (optional Basic credentials; docker, skopeo)
POST /token  grant_type=password|refresh_token           (OAuth2 form; containerd)

One user (--user NAME:PASSWORD) gets every action it asks for on every repository; anonymous
callers get a token with no access, so the registry answers 401 and the client must authenticate.
Tokens carry the signing certificate in `x5c`: distribution 2.8 verifies it against its
`rootcertbundle`, then the signature with the certificate's key.

Signing uses the `cryptography` package when it can be imported, else `openssl dgst -sign`.
Writes the port it listens on to --port-file; one line per request to --log.
"""

import argparse
import base64
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Signer:
    def __init__(self, key_path: str, cert_path: str):
        self.key_path = key_path
        with open(cert_path, encoding="ascii") as f:
            pem = f.read()
        # The PEM body is the base64 of the DER certificate, which is what x5c holds.
        self.cert_b64 = "".join(l for l in pem.splitlines() if l and not l.startswith("-----"))
        self.key = None
        try:
            from cryptography.hazmat.primitives import hashes, serialization
            from cryptography.hazmat.primitives.asymmetric import padding

            with open(key_path, "rb") as f:
                self.key = serialization.load_pem_private_key(f.read(), password=None)
            self._sign = lambda data: self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
            self.backend = "cryptography"
        except ImportError:
            self._sign = self._openssl_sign
            self.backend = "openssl"

    def _openssl_sign(self, data: bytes) -> bytes:
        out = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", self.key_path],
            input=data,
            capture_output=True,
            check=True,
            timeout=10,
        )
        return out.stdout

    def token(self, issuer, service, subject, access, lifetime) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.cert_b64]}
        claims = {
            "iss": issuer,
            "sub": subject,
            "aud": service,
            "exp": now + lifetime,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = (
            b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        sig = self._sign(signing_input.encode())
        return signing_input + "." + b64url(sig)


def grants(scopes, authenticated):
    """Every requested action on repository scopes for the user; nothing for anonymous."""
    access = []
    if not authenticated:
        return access
    for scope in scopes:
        parts = scope.split(":")
        if len(parts) < 3:
            continue
        kind, name, actions = parts[0].split("(")[0], ":".join(parts[1:-1]), parts[-1]
        if kind != "repository":
            continue
        wanted = [a for a in actions.split(",") if a]
        if wanted:
            access.append({"type": "repository", "name": name, "actions": wanted})
    return access


def make_handler(cfg, signer, log):
    lock = threading.Lock()
    refresh_tokens = set()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "bench-token-issuer"

        def log_message(self, fmt, *args):  # one line per request, to the log file
            with lock:
                log.write("%s %s\n" % (self.log_date_time_string(), fmt % args))
                log.flush()

        def reply(self, status, body, extra=()):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def issue(self, params, user, with_refresh):
            scopes = [s for v in params.get("scope", []) for s in v.split(" ") if s]
            access = grants(scopes, user is not None)
            token = signer.token(cfg.issuer, cfg.service, user or "", access, cfg.expires)
            body = {
                "token": token,
                "access_token": token,
                "expires_in": cfg.expires,
                "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            if with_refresh and user is not None:
                rt = "refresh-" + secrets.token_hex(16)
                with lock:
                    refresh_tokens.add(rt)
                body["refresh_token"] = rt
            self.reply(200, body)

        def basic_user(self):
            """(user or None, ok): ok is False when credentials were offered and are wrong."""
            auth = self.headers.get("Authorization", "")
            if not auth.lower().startswith("basic "):
                return None, True
            try:
                raw = base64.b64decode(auth[6:].strip()).decode()
            except Exception:
                return None, False
            user, _, password = raw.partition(":")
            if user == cfg.user and password == cfg.password:
                return user, True
            return None, False

        def do_GET(self):
            path, _, query = self.path.partition("?")
            if path != "/token":
                return self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": "only /token"}]})
            params = urllib.parse.parse_qs(query)
            user, ok = self.basic_user()
            if not ok:
                return self.reply(
                    401,
                    {"errors": [{"code": "UNAUTHORIZED", "message": "invalid username or password"}]},
                    [("WWW-Authenticate", 'Basic realm="bench-token-issuer"')],
                )
            offline = params.get("offline_token", [""])[0] == "true"
            self.issue(params, user, offline)

        def do_POST(self):
            if self.path.partition("?")[0] != "/token":
                return self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": "only /token"}]})
            length = min(int(self.headers.get("Content-Length", "0") or 0), 1 << 16)
            params = urllib.parse.parse_qs(self.rfile.read(length).decode())
            grant = params.get("grant_type", [""])[0]
            if grant == "password":
                if (params.get("username", [""])[0], params.get("password", [""])[0]) != (cfg.user, cfg.password):
                    return self.reply(401, {"error": "invalid_grant"})
                return self.issue(params, cfg.user, True)
            if grant == "refresh_token":
                with lock:
                    known = params.get("refresh_token", [""])[0] in refresh_tokens
                if not known:
                    return self.reply(401, {"error": "invalid_grant"})
                return self.issue(params, cfg.user, False)
            self.reply(400, {"error": "unsupported_grant_type"})

    return Handler


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--port-file", required=True)
    p.add_argument("--key", required=True, help="RSA private key, PEM")
    p.add_argument("--cert", required=True, help="its self-signed certificate, PEM (the registry's rootcertbundle)")
    p.add_argument("--service", required=True)
    p.add_argument("--issuer", required=True)
    p.add_argument("--user", required=True, help="NAME:PASSWORD")
    p.add_argument("--expires", type=int, default=3600)
    p.add_argument("--log", required=True)
    cfg = p.parse_args()
    cfg.user, _, cfg.password = cfg.user.partition(":")
    signer = Signer(cfg.key, cfg.cert)
    host, _, port = cfg.listen.rpartition(":")
    with open(cfg.log, "a", encoding="utf-8") as log:
        log.write("signing with %s\n" % signer.backend)
        server = ThreadingHTTPServer((host, int(port)), make_handler(cfg, signer, log))
        server.daemon_threads = True
        with open(cfg.port_file + ".tmp", "w", encoding="ascii") as f:
            f.write(str(server.server_address[1]))
        # Renamed into place so a reader never sees a half-written port.
        os.replace(cfg.port_file + ".tmp", cfg.port_file)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    sys.exit(main())
