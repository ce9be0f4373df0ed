#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""One reader of the store's load test: reads random files of the store's layers whole and checks their sha256.

usage: readload.py MANIFEST SEED (READS | --seconds S)
MANIFEST is JSON: [[path, size, sha256hex], ...] (paths inside the store's mount). Prints one JSON line:
{"reads": n, "wrong": w, "failed": f, "errors": [...up to 5], "latencies": [seconds, ...]}.
The page cache of each file is dropped before it is read, so that the read reaches the store.
"""
import hashlib, json, os, random, signal, sys, time

# The parent (a test process) may have SIGTERM blocked; a blocked mask is inherited across exec.
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM, signal.SIGINT])

files = json.load(open(sys.argv[1]))
rng = random.Random(int(sys.argv[2]))
if sys.argv[3] == "--seconds":
    until, budget = time.monotonic() + float(sys.argv[4]), None
else:
    until, budget = None, int(sys.argv[3])
out = {"reads": 0, "wrong": 0, "failed": 0, "errors": [], "latencies": []}
while (budget is None or out["reads"] < budget) and (until is None or time.monotonic() < until):
    path, size, want = rng.choice(files)
    t0 = time.monotonic()
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            h, n = hashlib.sha256(), 0
            while True:
                b = os.read(fd, 1 << 20)
                if not b:
                    break
                h.update(b)
                n += len(b)
        finally:
            os.close(fd)
        if n != size or h.hexdigest() != want:
            out["wrong"] += 1
    except OSError as e:
        out["failed"] += 1
        if len(out["errors"]) < 5:
            out["errors"].append("%s: %s" % (path, e))
    out["latencies"].append(time.monotonic() - t0)
    out["reads"] += 1
print(json.dumps(out), flush=True)
