#!/usr/bin/env python3
"""An OCI 1.1 referrers API in front of a registry that has none, for tests.

docker-registry 2.8 (Debian's) predates the referrers API. This proxy
forwards every request to it (plain HTTP) and adds what a 1.1 registry does:

  PUT  /v2/<name>/manifests/<ref>   forwarded; when upstream stored it (201)
                                    and the manifest has a "subject", the
                                    manifest's descriptor (mediaType, digest,
                                    size, artifactType, annotations) is noted
                                    under the subject's digest and the answer
                                    gets "OCI-Subject: <subject digest>"
  GET  /v2/<name>/referrers/<dgst>  200, an image index of the descriptors
                                    noted for <dgst> in <name>, filtered by
                                    ?artifactType= (with OCI-Filters-Applied)
  DELETE /v2/<name>/manifests/<d>   forwarded; the descriptor is forgotten

What it noted is kept in --state (JSON), so a proxy restarted over the same
storage still lists what was pushed through it. --log FILE gets one JSON
line per request: "method", "path", "status".

Usage: referrers_proxy.py --upstream HOST:PORT --port-file F --state FILE
       [--log FILE]
"""

import argparse
import hashlib
import http.client
import http.server
import json
import os
import re
import socketserver
import threading
import urllib.parse

MANIFEST = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)$")
REFERRERS = re.compile(r"^/v2/(?P<name>.+)/referrers/(?P<digest>sha256:[0-9a-f]{64})$")
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
       "proxy-authorization", "proxy-authenticate"}


class State:
    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.refs = {}  # "name subject" -> {digest: descriptor}
        if os.path.exists(path):
            with open(path) as f:
                self.refs = json.load(f)

    def save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.refs, f)
        os.replace(tmp, self.path)

    def add(self, name, subject, desc):
        with self.lock:
            self.refs.setdefault(name + " " + subject, {})[desc["digest"]] = desc
            self.save()

    def remove(self, name, digest):
        with self.lock:
            for entries in self.refs.values():
                entries.pop(digest, None)
            self.save()

    def list(self, name, subject):
        with self.lock:
            return list(self.refs.get(name + " " + subject, {}).values())


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def log_request_line(self, status):
        if self.server.log:
            with self.server.log_lock, open(self.server.log, "a") as f:
                f.write(json.dumps({"method": self.command, "path": self.path,
                                    "status": status}) + "\n")

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def answer(self, status, headers, body):
        self.send_response(status)
        for k, v in headers:
            if k.lower() not in HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.log_request_line(status)

    def forward(self, body):
        conn = http.client.HTTPConnection(self.server.upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        conn.request(self.command, self.path, body=body if body else None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        out = resp.getheaders()
        conn.close()
        return resp.status, out, data

    def referrers(self, m):
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        wanted = query.get("artifactType", [None])[0]
        entries = self.server.state.list(m.group("name"), m.group("digest"))
        headers = [("Content-Type", "application/vnd.oci.image.index.v1+json")]
        if wanted is not None:
            entries = [e for e in entries if e.get("artifactType") == wanted]
            headers.append(("OCI-Filters-Applied", "artifactType"))
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                 "manifests": entries}
        self.answer(200, headers, json.dumps(index).encode())

    def handle_any(self):
        path = urllib.parse.urlsplit(self.path).path
        m = REFERRERS.match(path)
        if m and self.command == "GET":
            return self.referrers(m)
        body = self.body()
        status, headers, data = self.forward(body)
        m = MANIFEST.match(path)
        if m and self.command == "PUT" and status == 201:
            try:
                doc = json.loads(body)
            except ValueError:
                doc = {}
            subject = (doc.get("subject") or {}).get("digest")
            if subject:
                desc = {"mediaType": doc.get("mediaType") or self.headers.get("Content-Type"),
                        "digest": "sha256:" + hashlib.sha256(body).hexdigest(),
                        "size": len(body)}
                artifact_type = doc.get("artifactType") or (doc.get("config") or {}).get(
                    "mediaType")
                if artifact_type:
                    desc["artifactType"] = artifact_type
                if doc.get("annotations"):
                    desc["annotations"] = doc["annotations"]
                self.server.state.add(m.group("name"), subject, desc)
                headers = list(headers) + [("OCI-Subject", subject)]
        if m and self.command == "DELETE" and status == 202:
            self.server.state.remove(m.group("name"), m.group("ref"))
        self.answer(status, headers, data)

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = handle_any


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--state", required=True)
    ap.add_argument("--log")
    args = ap.parse_args()
    srv = Server(("127.0.0.1", 0), Handler)
    srv.upstream = args.upstream
    srv.state = State(args.state)
    srv.log = args.log
    srv.log_lock = threading.Lock()
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % srv.server_address[1])
    os.replace(tmp, args.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
