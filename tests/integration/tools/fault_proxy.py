#!/usr/bin/env python3
"""A fault-injecting HTTP reverse proxy for clip's registry tests.

Listens on 127.0.0.1 and forwards every request to one upstream registry
(plain HTTP, keep-alive on both sides). Rules decide which requests get a
fault instead of, or on top of, the upstream answer.

Rules come from --rule JSON (repeatable) and from the --control file, a JSON
document {"rules": [RULE, ...]} that is read again whenever it changes (write
it to a temp file and rename it over the old one). Loading rules resets their
counters. A RULE is an object:

  match    "method": "GET" (default: any), "path": a Python regular
           expression searched in the request path (default: any)
  when     "skip": N matching requests pass untouched first (default 0),
           "times": then the fault hits this many of them (default 1; -1: all)
  action   "cut"       forward, but close the connection after "after_bytes"
                       body bytes (default: half the body)
           "corrupt"   forward with the byte at body offset "at" (default: the
                       middle) inverted; same length, same headers
           "delay"     forward after sleeping "seconds" (default 1); with
                       "after_bytes", sleep after sending that much body;
                       with "rate", send the body from "after_bytes" (default
                       0) on at "rate" bytes a second instead of sleeping (a
                       slow registry that never stops sending)
           "status"    answer "status" (e.g. 500, 429) with "headers" (e.g.
                       {"Retry-After": "1"}) without asking upstream
           "drop"      close the connection without answering
           "redirect"  answer 307 to "location" (a template: {path} is the
                       request path and query, {port} the proxy's port);
                       a request whose path starts with /__redirected__ is
                       forwarded upstream with that prefix removed and with
                       --redirect-auth credentials instead of the client's,
                       as a pre-signed object storage URL would be served
Every request counts for every rule whose match it passes; the first rule
whose window it falls in applies.

--log FILE gets one JSON object per line and request: "n", "time" (when it
arrived, seconds since the epoch), "method", "path", "range", "host",
"authorization" (whether the client sent one: never its value), "status",
"bytes" (body bytes sent), "fault" (the action or null).

Usage: fault_proxy.py --upstream HOST:PORT [--port N | --port-file F]
       [--control FILE] [--rule JSON]... [--log FILE] [--redirect-auth U:P]
"""

import argparse
import base64
import http.client
import http.server
import json
import os
import re
import socket
import sys
import threading
import time

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
REDIRECT_PREFIX = "/__redirected__"
CHUNK = 64 * 1024


class Rules:
    """The active rules and their counters; thread-safe."""

    def __init__(self, initial, control):
        self.lock = threading.Lock()
        self.initial = initial
        self.control = control
        self.signature = None
        self.rules = []
        self.counts = []
        self.load(list(initial))

    def load(self, rules):
        for r in rules:
            r["_re"] = re.compile(r.get("path", ""))
        self.rules = rules
        self.counts = [0] * len(rules)

    def refresh(self):
        if not self.control:
            return
        try:
            st = os.stat(self.control)
        except FileNotFoundError:
            sig = None
        else:
            sig = (st.st_ino, st.st_mtime_ns, st.st_size)
        if sig == self.signature:
            return
        self.signature = sig
        rules = list(self.initial)
        if sig is not None:
            with open(self.control) as f:
                text = f.read()
            if text.strip():
                rules += json.loads(text).get("rules", [])
        self.load([dict(r) for r in rules])

    def pick(self, method, path):
        with self.lock:
            self.refresh()
            chosen = None
            for i, r in enumerate(self.rules):
                if r.get("method", method) != method or not r["_re"].search(path):
                    continue
                self.counts[i] += 1
                skip, times = r.get("skip", 0), r.get("times", 1)
                n = self.counts[i] - skip
                if chosen is None and n >= 1 and (times < 0 or n <= times):
                    chosen = r
            return chosen


class Proxy(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler, opts):
        super().__init__(addr, handler)
        self.opts = opts
        host, _, port = opts.upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.rules = Rules([json.loads(r) for r in opts.rule], opts.control)
        self.log_lock = threading.Lock()
        self.serial = 0

    def record(self, entry):
        with self.log_lock:
            self.serial += 1
            entry["n"] = self.serial
            if self.opts.log:
                with open(self.opts.log, "a") as f:
                    f.write(json.dumps(entry, sort_keys=True) + "\n")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "clip-test-fault-proxy"
    upstream_conn = None

    def log_message(self, fmt, *args):
        if self.server.opts.verbose:
            super().log_message(fmt, *args)

    def finish(self):
        if self.upstream_conn is not None:
            self.upstream_conn.close()
        super().finish()

    # --- requests ---------------------------------------------------------

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def handle_any(self):
        body = self.read_body()
        path = self.path
        entry = {
            "time": time.time(),
            "method": self.command,
            "path": path,
            "range": self.headers.get("Range"),
            "host": self.headers.get("Host"),
            "authorization": "Authorization" in self.headers,
            "fault": None,
            "status": None,
            "bytes": 0,
        }
        try:
            if path.startswith(REDIRECT_PREFIX):
                rule = None
                path = path[len(REDIRECT_PREFIX) :]
            else:
                rule = self.server.rules.pick(self.command, path)
            if rule is not None:
                entry["fault"] = rule["action"]
            self.serve(rule, path, body, entry, redirected=path != self.path)
        finally:
            self.server.record(entry)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any

    def send_simple(self, status, headers, body, entry):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
            entry["bytes"] = len(body)
        entry["status"] = status

    def serve(self, rule, path, body, entry, redirected):
        action = rule["action"] if rule else None
        if action == "status":
            status = int(rule.get("status", 500))
            err = {"errors": [{"code": "CLIP_TEST_FAULT", "message": "injected HTTP %d" % status}]}
            headers = {"Content-Type": "application/json"}
            headers.update(rule.get("headers", {}))
            self.send_simple(status, headers, json.dumps(err).encode(), entry)
            return
        if action == "drop":
            self.abort()
            return
        if action == "redirect":
            location = rule["location"].format(path=path, port=self.server.server_address[1])
            self.send_simple(307, {"Location": location}, b"", entry)
            return
        if action == "delay" and "after_bytes" not in rule and "rate" not in rule:
            time.sleep(float(rule.get("seconds", 1)))

        # A list, not a dict: a request may repeat a header (Accept, for manifests).
        drop = HOP_BY_HOP | {"content-length"} | ({"authorization"} if redirected else set())
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in drop]
        if redirected and self.server.opts.redirect_auth:
            cred = base64.b64encode(self.server.opts.redirect_auth.encode()).decode()
            headers.append(("Authorization", "Basic " + cred))
        if body is not None:
            headers.append(("Content-Length", str(len(body))))
        try:
            resp = self.upstream(path, body, headers)
        except OSError as e:
            self.send_simple(502, {"Content-Type": "text/plain"}, ("upstream: %s\n" % e).encode(), entry)
            return

        length = resp.getheader("Content-Length")
        data = None
        if length is None and self.command != "HEAD":
            data = resp.read()  # chunked upstream: pass on with a length
            length = str(len(data))
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                self.send_header(k, v)
        if length is not None:
            self.send_header("Content-Length", length)
        self.end_headers()
        entry["status"] = resp.status
        if self.command == "HEAD":
            resp.read()
            return
        total = int(length)
        cut_at = int(rule.get("after_bytes", total // 2)) if action == "cut" else None
        flip_at = int(rule.get("at", total // 2)) if action == "corrupt" else None
        rate = float(rule["rate"]) if action == "delay" and "rate" in rule else None
        pause_at = None
        if action == "delay" and "after_bytes" in rule and rate is None:
            pause_at = int(rule["after_bytes"])
        slow_from = int(rule.get("after_bytes", 0)) if rate is not None else None
        sent = 0
        while sent < total:
            chunk = data[sent : sent + CHUNK] if data is not None else resp.read(min(CHUNK, total - sent))
            if not chunk:
                break
            if cut_at is not None and sent + len(chunk) >= cut_at:
                self.wfile.write(chunk[: cut_at - sent])
                entry["bytes"] = cut_at
                self.abort()
                return
            if pause_at is not None and sent + len(chunk) >= pause_at:
                self.wfile.write(chunk[: pause_at - sent])
                self.wfile.flush()
                time.sleep(float(rule.get("seconds", 1)))
                chunk = chunk[pause_at - sent :]
                sent, pause_at = pause_at, None
            if flip_at is not None and sent <= flip_at < sent + len(chunk):
                i = flip_at - sent
                chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :]
            self.wfile.write(chunk)
            if slow_from is not None and sent + len(chunk) > slow_from:
                self.wfile.flush()
                time.sleep((sent + len(chunk) - max(sent, slow_from)) / rate)
            sent += len(chunk)
            entry["bytes"] = sent
        if sent < total:  # upstream ended early: do not pretend otherwise
            self.abort()

    def upstream(self, path, body, headers):
        for attempt in (0, 1):
            if self.upstream_conn is None:
                self.upstream_conn = http.client.HTTPConnection(*self.server.upstream, timeout=60)
            try:
                conn = self.upstream_conn
                conn.putrequest(self.command, path, skip_host=True, skip_accept_encoding=True)
                for k, v in headers:
                    conn.putheader(k, v)
                conn.endheaders(body)
                return self.upstream_conn.getresponse()
            except (http.client.HTTPException, OSError):
                # A kept-alive upstream connection may have been closed: one fresh try.
                self.upstream_conn.close()
                self.upstream_conn = None
                if attempt:
                    raise

    def abort(self):
        """Close the client connection now, without finishing the answer."""
        try:
            self.wfile.flush()
        except OSError:
            pass
        if self.upstream_conn is not None:
            self.upstream_conn.close()
            self.upstream_conn = None
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--upstream", required=True, help="HOST:PORT of the registry (plain HTTP)")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file", help="where to write the port once listening")
    p.add_argument("--control", help="JSON rules file, reloaded when it changes")
    p.add_argument("--rule", action="append", default=[], help="a JSON rule, always active")
    p.add_argument("--log", help="append one JSON line per request here")
    p.add_argument("--redirect-auth", help="USER:PASSWORD sent upstream for redirected requests")
    p.add_argument("--verbose", action="store_true")
    opts = p.parse_args()

    srv = Proxy(("127.0.0.1", opts.port), Handler, opts)
    if opts.port_file:
        tmp = opts.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % srv.server_address[1])
        os.rename(tmp, opts.port_file)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
