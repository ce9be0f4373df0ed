#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A fault-injecting HTTP proxy in front of a real registry, for tests (stdlib only).

usage: faultproxy.py UPSTREAM_HOST:PORT [--match S] [--fail-status CODE --fail-times N]
       [--fail-skip N] [--cut-after BYTES --cut-times N] [--ignore-range] [--refuse-multirange]
       [--redirect-blobs [--redirect-expires SECS]]
--fail-status 401 forwards the request without its Authorization header, so the client gets the registry's
own challenge (as it would for an expired token). --fail-skip lets N matching requests through first.
--redirect-expires adds an Expires=<unix time> query parameter (as signed storage URLs carry) to redirects.
--corrupt-times N flips one byte in the middle of the next N partial (206) blob bodies that match, after
--corrupt-skip M have passed untouched.
--hold-range PREFIX holds blob requests whose Range header starts with PREFIX until GET /__release.
GET /__heal turns every fault off. --rate B sends blob bodies at B bytes per second (a slow link).
"bytes" in the stats counts the blob body bytes sent.
Prints "listening on PORT" when ready. GET /__stats answers {"requests": n, "faults": m, "redirects": r,
"multirange": k, "METHOD": count, ...}.
"""
import argparse, http.client, http.server, json, os, signal, socket, sys, threading, time

# The parent (a test process) may have SIGTERM blocked; a blocked mask is inherited across exec.
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM, signal.SIGINT])
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))

ap = argparse.ArgumentParser()
ap.add_argument("upstream")
ap.add_argument("--match", default="")
ap.add_argument("--fail-status", type=int, default=0)
ap.add_argument("--fail-times", type=int, default=0)
ap.add_argument("--fail-skip", type=int, default=0)
ap.add_argument("--redirect-expires", type=int, default=None)
ap.add_argument("--cut-after", type=int, default=-1)
ap.add_argument("--cut-times", type=int, default=0)
ap.add_argument("--ignore-range", action="store_true")
ap.add_argument("--refuse-multirange", action="store_true")
ap.add_argument("--redirect-blobs", action="store_true")
ap.add_argument("--corrupt-times", type=int, default=0)
ap.add_argument("--corrupt-skip", type=int, default=0)
ap.add_argument("--rate", type=int, default=0, help="bytes per second for blob bodies (0: unthrottled)")
ap.add_argument("--hold-range", default=None)
args = ap.parse_args()

lock = threading.Lock()
stats = {"requests": 0, "faults": 0, "multirange": 0, "redirects": 0, "bytes": 0, "held": 0}
released = threading.Event()


# Per fault kind: [matching requests still to let through, faults still to inject].
budget = {"fail": [args.fail_skip, args.fail_times], "corrupt": [args.corrupt_skip, args.corrupt_times],
          "cut": [0, args.cut_times]}


def take(kind):
    with lock:
        b = budget[kind]
        if b[0] > 0:
            b[0] -= 1
            return False
        if b[1] > 0:
            b[1] -= 1
            stats["faults"] += 1
            return True
    return False


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        if self.path == "/__stats":
            with lock:
                body = json.dumps(stats).encode()
            return self.reply(200, body, [("Content-Type", "application/json")])
        if self.path == "/__heal":
            with lock:
                for b in budget.values():
                    b[1] = 0
            return self.reply(200, b"healed")
        if self.path == "/__release":
            released.set()
            return self.reply(200, b"released")
        with lock:
            stats["requests"] += 1
            stats[self.command] = stats.get(self.command, 0) + 1
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        matched = args.match in self.path
        strip_auth = False
        if matched and args.fail_status and take("fail"):
            if args.fail_status == 401:
                strip_auth = True
                return self.forward(body, strip_auth, matched)
            err = json.dumps({"errors": [{"code": "INJECTED", "message": "injected fault"}]}).encode()
            return self.reply(args.fail_status, err, [("Content-Type", "application/json"), ("Retry-After", "0")])
        rng = self.headers.get("Range")
        if args.hold_range and rng and rng.startswith(args.hold_range) and "/blobs/" in self.path:
            with lock:
                stats["held"] += 1
            released.wait()
        if rng and "," in rng:
            with lock:
                stats["multirange"] += 1
            if args.refuse_multirange:
                return self.reply(400, b"multi-range not supported")
        if args.redirect_blobs and self.command == "GET" and "/blobs/sha256:" in self.path and "/uploads/" not in self.path:
            with lock:
                stats["redirects"] += 1
            target = "http://%s%s?signature=secret" % (args.upstream, self.path)
            if args.redirect_expires is not None:
                target += "&Expires=%d" % (int(time.time()) + args.redirect_expires)
            return self.reply(307, b"", [("Location", target)])
        return self.forward(body, strip_auth, matched)

    def forward(self, body, strip_auth, matched):
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        if strip_auth:
            headers.pop("Authorization", None)
        if args.ignore_range:
            headers.pop("Range", None)
        conn = http.client.HTTPConnection(args.upstream, timeout=60)
        # Rewrite Location headers of the registry back to this proxy.
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() in ("content-length", "connection", "transfer-encoding"):
                continue
            if k.lower() == "location":
                v = v.replace("http://" + args.upstream, "http://127.0.0.1:%d" % port)
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        if "/blobs/" in self.path and self.command == "GET":
            with lock:
                stats["bytes"] += len(data)
            if matched and resp.status == 206 and len(data) > 2 and take("corrupt"):
                mid = len(data) // 2
                data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1:]
        if matched and self.command == "GET" and args.cut_after >= 0 and len(data) > args.cut_after and take("cut"):
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data[: args.cut_after])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.end_headers()
        if self.command != "HEAD":
            if args.rate > 0 and "/blobs/" in self.path:
                piece = max(4096, args.rate // 100)
                start = time.monotonic()
                for i in range(0, len(data), piece):
                    self.wfile.write(data[i:i + piece])
                    ahead = (i + piece) / args.rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
            else:
                self.wfile.write(data)

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = handle_any


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
port = server.server_address[1]
print("listening on %d" % port, flush=True)
server.serve_forever()
