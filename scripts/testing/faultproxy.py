#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A fault-injecting HTTP proxy in front of a real registry, for tests (stdlib only).

usage: faultproxy.py UPSTREAM_HOST:PORT [--match S] [--fail-status CODE --fail-times N]
       [--fail-skip N] [--cut-after BYTES --cut-times N] [--ignore-range] [--refuse-multirange]
       [--redirect-blobs [--redirect-expires SECS]]
--fail-status 401 forwards the request without its Authorization header, so the client gets the registry's
own challenge (as it would for an expired token). --fail-skip lets N matching requests through first.
--redirect-expires adds an Expires=<unix time> query parameter (as signed storage URLs carry) to redirects.
--signed-redirect S (with --redirect-blobs) redirects to this proxy's signed URL instead, good for S seconds (0 or
less: expired when the client follows it, answered 403).
--corrupt-times N flips one byte in the middle of the next N partial (206) blob bodies that match, after
--corrupt-skip M have passed untouched.
--hold-range PREFIX holds blob requests whose Range header starts with PREFIX until GET /__release.
GET /__heal turns every fault off. --rate B sends blob bodies at B bytes per second (a slow link).
"bytes" in the stats counts the blob body bytes sent.
--random-faults P faults each ranged blob GET with probability P (seeded by --seed), picking one of --fault-kinds
(default all): reset (RST after half the body), 500, 503, 429 (Retry-After: 1), truncate (half the body, then
FIN), length (a Content-Length one byte short, and that many bytes), stall (no answer for --stall-seconds, then
close), redirect (a 307 to a signed URL of this proxy that expires 2 s later: 403 there from then on, so a client
that keeps the redirect must notice and ask the registry again). The stats count each
kind as "fault.KIND", requests to the signed URLs as "signed" (not in "requests") and those refused as expired
as "signed.expired".
Prints "listening on PORT" when ready. GET /__stats answers {"requests": n, "faults": m, "redirects": r,
"multirange": k, "METHOD": count, ...}.
"""
import argparse, http.client, http.server, json, os, random, signal, socket, struct, sys, threading, time

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
ap.add_argument("--signed-redirect", type=int, default=None)
ap.add_argument("--corrupt-times", type=int, default=0)
ap.add_argument("--corrupt-skip", type=int, default=0)
ap.add_argument("--rate", type=int, default=0, help="bytes per second for blob bodies (0: unthrottled)")
ap.add_argument("--hold-range", default=None)
ap.add_argument("--random-faults", type=float, default=0.0)
ap.add_argument("--seed", type=int, default=1)
ap.add_argument("--fault-kinds", default="reset,500,503,429,truncate,length,stall,redirect")
ap.add_argument("--stall-seconds", type=float, default=3.0)
args = ap.parse_args()

lock = threading.Lock()
stats = {"requests": 0, "faults": 0, "multirange": 0, "redirects": 0, "bytes": 0, "held": 0, "signed": 0,
         "signed.expired": 0}
released = threading.Event()
rng = random.Random(args.seed)
kinds = [k for k in args.fault_kinds.split(",") if k]


def random_fault():
    """The kind of fault for this request, or None."""
    if args.random_faults <= 0:
        return None
    with lock:
        if rng.random() >= args.random_faults:
            return None
        k = rng.choice(kinds)
        stats["faults"] += 1
        stats["fault." + k] = stats.get("fault." + k, 0) + 1
        return k


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
        if self.path.startswith("/__signed/"):
            # A signed storage URL: good until its Expires, then refused as storage services do.
            path, _, query = self.path[len("/__signed"):].partition("?")
            expires = int(dict(p.partition("=")[::2] for p in query.split("&")).get("Expires", "0"))
            with lock:
                stats["signed"] += 1
            if time.time() >= expires:
                with lock:
                    stats["signed.expired"] += 1
                return self.reply(403, b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>")
            self.path = path
            return self.forward(None, False, False)
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
        if rng and self.command == "GET" and "/blobs/sha256:" in self.path:
            kind = random_fault()
            if kind:
                return self.inject(kind, body)
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
            if args.signed_redirect is not None:
                target = "http://127.0.0.1:%d/__signed%s?Expires=%d" % (port, self.path, int(time.time()) + args.signed_redirect)
            return self.reply(307, b"", [("Location", target)])
        return self.forward(body, strip_auth, matched)

    def inject(self, kind, body):
        if kind in ("500", "503", "429"):
            err = json.dumps({"errors": [{"code": "INJECTED", "message": "injected %s" % kind}]}).encode()
            extra = [("Retry-After", "1")] if kind == "429" else []
            return self.reply(int(kind), err, [("Content-Type", "application/json")] + extra)
        if kind == "stall":
            time.sleep(args.stall_seconds)
            return self.abort(rst=False)
        if kind == "redirect":
            target = "http://127.0.0.1:%d/__signed%s?Expires=%d" % (port, self.path, int(time.time()) + 2)
            return self.reply(307, b"", [("Location", target)])
        status, headers, data = self.fetch(body)
        if status != 206 or len(data) < 2:
            return self.reply(status, data, headers)
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if kind == "length":
            self.send_header("Content-Length", str(len(data) - 1))
            self.end_headers()
            self.wfile.write(data[:-1])
            return
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.abort(rst=(kind == "reset"))

    def abort(self, rst):
        """Ends the connection: with a RST (SO_LINGER 0) or a FIN."""
        self.close_connection = True
        try:
            if rst:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def fetch(self, body, strip_auth=False):
        """The upstream's answer to this request: status, headers to pass on (Location pointed back at this
        proxy), body."""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        if strip_auth:
            headers.pop("Authorization", None)
        if args.ignore_range:
            headers.pop("Range", None)
        conn = http.client.HTTPConnection(args.upstream, timeout=60)
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        keep = []
        for k, v in resp.getheaders():
            if k.lower() in ("content-length", "connection", "transfer-encoding"):
                continue
            if k.lower() == "location":
                v = v.replace("http://" + args.upstream, "http://127.0.0.1:%d" % port)
            keep.append((k, v))
        return resp.status, keep, data

    def forward(self, body, strip_auth, matched):
        status, headers, data = self.fetch(body, strip_auth)
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        if "/blobs/" in self.path and self.command == "GET":
            with lock:
                stats["bytes"] += len(data)
            if matched and status == 206 and len(data) > 2 and take("corrupt"):
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
