#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A Docker registry token server for tests (stdlib + the openssl CLI).

usage: tokenserver.py DIR USER PASSWORD [--lifetime SECONDS] [--refresh-token TOKEN]
DIR holds key.pem and cert.pem (ES256). Issues JWTs (x5c header) for the scopes asked for, to USER:PASSWORD
(any other credentials get 401; anonymous requests get a token without access). Prints "listening on PORT".
With --refresh-token, POST (OAuth2: grant_type=refresh_token&refresh_token=TOKEN as a form) issues tokens too;
a wrong refresh token gets 401. GET /__stats answers {"tokens": n, "oauth2": n}.
"""
import argparse, base64, http.server, json, os, signal, subprocess, threading, time, urllib.parse

signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM, signal.SIGINT])
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))

ap = argparse.ArgumentParser()
ap.add_argument("dir")
ap.add_argument("user")
ap.add_argument("password")
ap.add_argument("--lifetime", type=int, default=60)
ap.add_argument("--refresh-token", default=None)
args = ap.parse_args()
lock = threading.Lock()
stats = {"tokens": 0, "oauth2": 0}


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


with open(os.path.join(args.dir, "cert.pem")) as f:
    pem = f.read()
der = base64.b64decode("".join(l for l in pem.splitlines() if "-----" not in l))


def sign(data):
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", os.path.join(args.dir, "key.pem")],
                         input=data, capture_output=True, check=True).stdout
    # DER ECDSA signature -> raw r||s, 32 bytes each
    assert sig[0] == 0x30
    i = 2 if sig[1] < 0x80 else 3
    def integer(i):
        assert sig[i] == 0x02
        n = sig[i + 1]
        v = sig[i + 2:i + 2 + n]
        return v.lstrip(b"\x00").rjust(32, b"\x00"), i + 2 + n
    r, i = integer(i)
    s, i = integer(i)
    return r + s


def token(service, scopes, allowed):
    header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der).decode()]}
    now = int(time.time())
    access = []
    if allowed:
        for sc in scopes:
            parts = sc.split(":")
            if len(parts) == 3:
                access.append({"type": parts[0], "name": parts[1], "actions": parts[2].split(",")})
    claims = {"iss": "test-issuer", "sub": args.user if allowed else "", "aud": service, "exp": now + args.lifetime,
              "nbf": now - 10, "iat": now, "jti": str(now) + str(stats["tokens"]), "access": access}
    signing = (b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())).encode()
    return signing.decode() + "." + b64url(sign(signing))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        u = urllib.parse.urlparse(self.path)
        if u.path == "/__stats":
            return self.reply(200, stats)
        q = urllib.parse.parse_qs(u.query)
        auth = self.headers.get("Authorization", "")
        allowed = False
        if auth.startswith("Basic "):
            user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
            if user != args.user or pw != args.password:
                return self.reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
            allowed = True
        t = token(q.get("service", [""])[0], q.get("scope", []), allowed)
        with lock:
            stats["tokens"] += 1
        self.reply(200, {"token": t, "access_token": t, "expires_in": args.lifetime})


    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        form = urllib.parse.parse_qs(self.rfile.read(n).decode())
        if form.get("grant_type") != ["refresh_token"] or args.refresh_token is None \
                or form.get("refresh_token") != [args.refresh_token]:
            return self.reply(401, {"error": "invalid_grant"})
        t = token(form.get("service", [""])[0], form.get("scope", []), True)
        with lock:
            stats["tokens"] += 1
            stats["oauth2"] += 1
        self.reply(200, {"access_token": t, "expires_in": args.lifetime})


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print("listening on %d" % server.server_address[1], flush=True)
server.serve_forever()
