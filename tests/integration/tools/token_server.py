#!/usr/bin/env python3
"""A Docker token authentication server for clip's registry tests.

Implements the token endpoint of the Docker Registry v2 token specification
(https://distribution.github.io/distribution/spec/auth/token/) well enough for
distribution 2.8 configured with `auth: token:`:

  GET  /token?service=S&scope=T:NAME:ACTIONS[&scope=...][&account=U]
       with an optional `Authorization: Basic` header
       -> {"token": JWT, "access_token": JWT, "expires_in": N, "issued_at": ...}
  POST /token  (OAuth2 form: grant_type=password with username/password, or
       grant_type=refresh_token with refresh_token) -> the same, plus
       "refresh_token" for grant_type=password when --refresh-token is set.

The JWT is signed RS256 by shelling out to `openssl dgst -sha256 -sign KEY`.
distribution 2.8 finds the verification key from the header: "kid" is the
libtrust fingerprint of the public key of a certificate in the registry's
`rootcertbundle` (base32 of the first 240 bits of SHA-256 of the DER
SubjectPublicKeyInfo, in twelve ':'-separated groups of four); with --x5c the
certificate itself is sent as a one-element "x5c" chain instead.

Every requested scope is granted when the caller is allowed in: with --user
given, a wrong password is refused (401), and with --require-auth anonymous
callers are refused too; otherwise anonymous callers get tokens.

Every request is appended to --log as one JSON object per line:
  {"method", "path", "user" (null when anonymous), "scopes", "grant",
   "status"}
Passwords and tokens are never logged.

Usage: token_server.py --key KEY.pem --cert CERT.pem --issuer I --service S
       [--port N | --port-file F] [--user NAME:PASSWORD]... [--require-auth]
       [--refresh-token TOKEN] [--expires-in SECONDS] [--x5c] [--log FILE]
Listens on 127.0.0.1 only; --port 0 (the default) picks a free port, written
to --port-file (atomically) once the socket is listening.
"""

import argparse
import base64
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pem_blocks(text: str, label: str):
    """The DER bodies of every `-----BEGIN <label>-----` block in text."""
    out, body, inside = [], [], False
    for line in text.splitlines():
        line = line.strip()
        if line == "-----BEGIN %s-----" % label:
            inside, body = True, []
        elif line == "-----END %s-----" % label:
            inside = False
            out.append(base64.b64decode("".join(body)))
        elif inside:
            body.append(line)
    return out


def libtrust_key_id(spki_der: bytes) -> str:
    digest = hashlib.sha256(spki_der).digest()[:30]
    b32 = base64.b32encode(digest).decode().rstrip("=")
    return ":".join(b32[i : i + 4] for i in range(0, len(b32), 4))


def public_key_der(cert_path: str) -> bytes:
    pem = subprocess.run(
        ["openssl", "x509", "-in", cert_path, "-noout", "-pubkey"],
        check=True,
        stdout=subprocess.PIPE,
    ).stdout.decode()
    keys = pem_blocks(pem, "PUBLIC KEY")
    if len(keys) != 1:
        sys.exit("token_server: no public key in %s" % cert_path)
    return keys[0]


def parse_scope(scope: str):
    """"repository:a/b:pull,push" -> {"type", "name", "actions"}; the name
    may itself hold ':' (a registry host with a port), so split at the first
    and the last ':'."""
    first, last = scope.find(":"), scope.rfind(":")
    if first < 0 or last == first:
        return None
    return {
        "type": scope[:first],
        "name": scope[first + 1 : last],
        "actions": [a for a in scope[last + 1 :].split(",") if a],
    }


class TokenServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr, handler, opts):
        super().__init__(addr, handler)
        self.opts = opts
        self.users = dict(u.split(":", 1) for u in opts.user)
        self.log_lock = threading.Lock()
        cert_pem = open(opts.cert).read()
        self.header = {"typ": "JWT", "alg": "RS256"}
        if opts.x5c:
            self.header["x5c"] = [base64.b64encode(d).decode() for d in pem_blocks(cert_pem, "CERTIFICATE")[:1]]
        else:
            self.header["kid"] = libtrust_key_id(public_key_der(opts.cert))
        self.serial = 0

    def sign(self, subject: str, access) -> str:
        now = int(time.time())
        with self.log_lock:
            self.serial += 1
            serial = self.serial
        claims = {
            "iss": self.opts.issuer,
            "sub": subject,
            "aud": self.opts.service,
            "exp": now + self.opts.expires_in,
            "nbf": now - 10,
            "iat": now,
            "jti": "clip-test-%d-%d" % (os.getpid(), serial),
            "access": access,
        }
        signing_input = (
            b64url(json.dumps(self.header, separators=(",", ":")).encode())
            + "."
            + b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        sig = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", self.opts.key],
            input=signing_input.encode(),
            check=True,
            stdout=subprocess.PIPE,
        ).stdout
        return signing_input + "." + b64url(sig)

    def record(self, entry):
        if not self.opts.log:
            return
        with self.log_lock:
            with open(self.opts.log, "a") as f:
                f.write(json.dumps(entry, sort_keys=True) + "\n")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "clip-test-token-server"

    def log_message(self, fmt, *args):
        if self.server.opts.verbose:
            super().log_message(fmt, *args)

    def reply(self, status, body: dict, extra=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def basic_user(self):
        """(user, ok): the Basic credentials of the request; (None, True)
        when there are none."""
        auth = self.headers.get("Authorization")
        if not auth:
            return None, True
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "basic":
            return None, False
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None, False
        return user, self.server.users.get(user) == password

    def grant(self, user, ok, scopes, grant, extra_body=None):
        srv = self.server
        entry = {"method": self.command, "path": self.path.split("?")[0], "user": user, "scopes": scopes, "grant": grant}
        if not ok or (user is None and srv.opts.require_auth):
            entry["status"] = 401
            srv.record(entry)
            self.reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                       {"WWW-Authenticate": 'Basic realm="clip-test-token"'})
            return
        access = [a for a in map(parse_scope, scopes) if a]
        token = srv.sign(user or "", access)
        body = {
            "token": token,
            "access_token": token,
            "expires_in": srv.opts.expires_in,
            "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        body.update(extra_body or {})
        entry["status"] = 200
        srv.record(entry)
        self.reply(200, body)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/token":
            self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": url.path}]})
            return
        query = urllib.parse.parse_qs(url.query)
        if query.get("service", [None])[0] != self.server.opts.service:
            self.reply(400, {"errors": [{"code": "BAD_REQUEST", "message": "unknown service"}]})
            return
        user, ok = self.basic_user()
        # Repeated scope parameters, or several in one separated by spaces (both are seen).
        scopes = " ".join(query.get("scope", [])).split()
        self.grant(user, ok, scopes, "basic" if user else "anonymous")

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        if url.path != "/token":
            self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": url.path}]})
            return
        opts = self.server.opts
        grant_type = form.get("grant_type", [""])[0]
        scopes = " ".join(form.get("scope", [])).split()
        if form.get("service", [None])[0] != opts.service:
            self.reply(400, {"error": "invalid_request", "error_description": "unknown service"})
            return
        if grant_type == "password":
            user = form.get("username", [""])[0]
            ok = self.server.users.get(user) == form.get("password", [None])[0]
            extra = {"refresh_token": opts.refresh_token} if opts.refresh_token and ok else None
            self.grant(user, ok, scopes, "password", extra)
        elif grant_type == "refresh_token":
            ok = bool(opts.refresh_token) and form.get("refresh_token", [None])[0] == opts.refresh_token
            self.grant("refresh-user", ok, scopes, "refresh_token")
        else:
            self.reply(400, {"error": "unsupported_grant_type"})


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--key", required=True, help="RSA private key (PEM) to sign with")
    p.add_argument("--cert", required=True, help="its certificate (PEM), in the registry's rootcertbundle")
    p.add_argument("--issuer", required=True)
    p.add_argument("--service", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file")
    p.add_argument("--user", action="append", default=[], help="NAME:PASSWORD accepted in Basic auth")
    p.add_argument("--require-auth", action="store_true", help="refuse anonymous token requests")
    p.add_argument("--refresh-token", help="refresh token accepted by POST grant_type=refresh_token")
    p.add_argument("--expires-in", type=int, default=300)
    p.add_argument("--x5c", action="store_true", help="send the certificate as x5c instead of kid")
    p.add_argument("--log", help="append one JSON line per request here")
    p.add_argument("--verbose", action="store_true")
    opts = p.parse_args()
    for u in opts.user:
        if ":" not in u:
            p.error("--user wants NAME:PASSWORD")

    srv = TokenServer(("127.0.0.1", opts.port), Handler, opts)
    if opts.port_file:
        tmp = opts.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % srv.server_address[1])
        os.rename(tmp, opts.port_file)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
