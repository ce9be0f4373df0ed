#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Records real FUSE request bytes from the running kernel as fixtures for the FUSE codec tests.

usage (root, /dev/fuse, no other FUSE server needed):  sudo python3 scripts/testing/record-fuse-requests.py [OUTDIR]
OUTDIR defaults to Tests/FUSETests/Fixtures/kernel-<major.minor of uname -r>.

It mounts /dev/fuse twice with mount(2) and serves a tiny tree itself: / {hello.txt, link -> hello.txt, slow, d/}.
Mount 1 is read-only with default_permissions and READDIRPLUS; mount 2 is read-write, without default_permissions
(so ACCESS is sent) and without READDIRPLUS (plain READDIR); it answers CREATE and RMDIR with EROFS. INTERRUPT comes
from SIGKILLing a child blocked in a (held) direct-I/O READ of "slow"; FORGET and BATCH_FORGET from
FUSE_NOTIFY_INVAL_ENTRY of cached names.
Child processes make the syscalls; the serving thread keeps the first request of each opcode byte for byte as read
from /dev/fuse and writes <opname>.hex (lowercase, 32 bytes a line), expected.json (decoded fields, C names) and
README.md. Exits 1 if a required opcode was not seen. Every path unmounts (umount2 MNT_DETACH, fusermount3 -u -z).
"""
import ctypes, errno, json, os, re, select, signal, stat, struct, subprocess, sys, tempfile, threading, time

HDR = struct.Struct("<IIQQIIIHH")  # fuse_in_header
OUT = struct.Struct("<IiQ")  # fuse_out_header
ATTR = "QQQQQQIIIIIIIIII"  # fuse_attr (88 bytes)
BUFSIZE = (1 << 20) + 4096
OPS = {1: "LOOKUP", 2: "FORGET", 3: "GETATTR", 5: "READLINK", 11: "RMDIR", 14: "OPEN", 15: "READ", 17: "STATFS",
       18: "RELEASE", 22: "GETXATTR", 23: "LISTXATTR", 25: "FLUSH", 26: "INIT", 27: "OPENDIR", 28: "READDIR",
       29: "RELEASEDIR", 34: "ACCESS", 35: "CREATE", 36: "INTERRUPT", 42: "BATCH_FORGET", 44: "READDIRPLUS"}
REQUIRED = ["INIT", "LOOKUP", "GETATTR", "OPEN", "READ", "OPENDIR", "GETXATTR", "LISTXATTR", "STATFS", "READLINK",
            "CREATE", "RMDIR"]  # plus READDIR or READDIRPLUS
# opcode -> (struct format, C field names, a NUL-terminated name follows)
BODY = {26: ("<16I", "major minor max_readahead flags flags2 unused[11]", False), 1: ("", "", True),
        3: ("<IIQ", "getattr_flags dummy fh", False), 14: ("<II", "flags open_flags", False),
        15: ("<QQIIQII", "fh offset size read_flags lock_owner flags padding", False),
        18: ("<QIIQ", "fh flags release_flags lock_owner", False), 22: ("<II", "size padding", True),
        23: ("<II", "size padding", False), 25: ("<QIIQ", "fh unused padding lock_owner", False),
        34: ("<II", "mask padding", False), 2: ("<Q", "nlookup", False), 42: ("<II", "count dummy", False),
        36: ("<Q", "unique", False), 35: ("<IIII", "flags mode umask open_flags", True), 11: ("", "", True),
        5: ("", "", False), 17: ("", "", False)}
BODY[27], BODY[28], BODY[44], BODY[29] = BODY[14], BODY[15], BODY[15], BODY[18]
# Only these requests count for their opcode (other lookups etc. are served, not recorded).
WANT = {1: lambda h, b: h["nodeid"] == 1 and b["name"] == "hello.txt", 15: lambda h, b: h["nodeid"] == 2,
        22: lambda h, b: b["name"] == "user.test", 35: lambda h, b: b["name"] == "x",
        11: lambda h, b: b["name"] == "d", 28: lambda h, b: h["nodeid"] == 1, 44: lambda h, b: h["nodeid"] == 1}
ASYNC_READ, DO_READDIRPLUS, READDIRPLUS_AUTO, PARALLEL_DIROPS, MAX_PAGES = 1, 1 << 13, 1 << 14, 1 << 18, 1 << 22
NEWER_FLAGS = {34: "FUSE_CREATE_SUPP_GROUP", 36: "FUSE_DIRECT_IO_ALLOW_MMAP", 37: "FUSE_PASSTHROUGH",
               38: "FUSE_NO_EXPORT_SUPPORT", 39: "FUSE_HAS_RESEND", 40: "FUSE_ALLOW_IDMAP", 41: "FUSE_OVER_IO_URING",
               42: "FUSE_REQUEST_TIMEOUT"}  # upstream names newer than a 7.38 /usr/include/linux/fuse.h
O_FLAGS = {0o1: "O_WRONLY", 0o2: "O_RDWR", 0o100: "O_CREAT", 0o200: "O_EXCL", 0o1000: "O_TRUNC", 0o2000: "O_APPEND",
           0o4000: "O_NONBLOCK", 0o40000: "O_DIRECT", 0o100000: "O_LARGEFILE", 0o200000: "O_DIRECTORY",
           0o400000: "O_NOFOLLOW", 0o1000000: "O_NOATIME"}  # x86_64 / generic values
HELLO = b"hello world\n"
# nodeid -> (name, mode, content); the root lists 2..5
NODES = {1: ("/", stat.S_IFDIR | 0o755, b""), 2: ("hello.txt", stat.S_IFREG | 0o644, HELLO),
         3: ("link", stat.S_IFLNK | 0o777, b"hello.txt"), 4: ("slow", stat.S_IFREG | 0o644, HELLO),
         5: ("d", stat.S_IFDIR | 0o755, b"")}
CHILDREN = {NODES[n][0]: n for n in (2, 3, 4, 5)}

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
MS_RDONLY, MS_NOSUID, MS_NODEV, MNT_DETACH = 1, 2, 4, 2


def decode(buf):
    vals = HDR.unpack_from(buf)
    hdr = dict(zip("len opcode unique nodeid uid gid pid total_extlen padding".split(), vals))
    fmt, names, has_name = BODY.get(hdr["opcode"], ("", "", False))
    raw, body = buf[HDR.size:hdr["len"]], {}
    it = iter(struct.unpack_from(fmt, raw) if fmt else ())
    for n in names.split():
        m = re.fullmatch(r"(\w+)\[(\d+)\]", n)
        body[m[1] if m else n] = [next(it) for _ in range(int(m[2]))] if m else next(it)
    off = struct.calcsize(fmt) if fmt else 0
    if hdr["opcode"] == 42:  # fuse_batch_forget_in + count * fuse_forget_one
        body["forgets"] = [dict(zip(("nodeid", "nlookup"), struct.unpack_from("<QQ", raw, off + 16 * i)))
                           for i in range(body["count"])]
        off += 16 * body["count"]
    if has_name:
        body["name"] = raw[off:raw.index(b"\0", off)].decode()
        off = raw.index(b"\0", off) + 1
    if off < len(raw):
        body["trailing_hex"] = raw[off:].hex()
    return hdr, body


def attr(n):
    _, mode, data = NODES[n]
    t = 1700000000
    return struct.pack("<" + ATTR, n, len(data), (len(data) + 511) // 512, t, t, t, 0, 0, 0, mode,
                       2 if stat.S_ISDIR(mode) else 1, 0, 0, 0, 4096, 0)


def entry(n):  # fuse_entry_out: entries valid 1 s, attributes 0 s (so stat sends GETATTR)
    return struct.pack("<QQQQII", n, 0, 1, 0, 0, 0) + attr(n) if n else bytes(128)


class Server:
    def __init__(self, fd, label, plus):
        self.fd, self.label, self.plus = fd, label, plus
        self.lock, self.cond = threading.Lock(), threading.Condition()
        self.stop, self.error, self.action, self.held, self.minor = False, None, "mount", None, None

    def reply(self, unique, err=0, data=b""):
        try:
            os.write(self.fd, OUT.pack(OUT.size + len(data), -err, unique) + data)
        except OSError as e:  # ENOENT: the request is gone (interrupted/aborted)
            if e.errno != errno.ENOENT:
                raise

    def run(self):
        try:
            while not self.stop:
                if not select.select([self.fd], [], [], 0.1)[0]:
                    continue
                with self.lock:
                    try:
                        buf = os.read(self.fd, BUFSIZE)
                    except OSError as e:
                        if e.errno == errno.ENODEV:
                            return
                        if e.errno in (errno.ENOENT, errno.EINTR, errno.EAGAIN):
                            continue
                        raise
                    self.handle(buf)
        except Exception as e:  # reported by the main thread
            self.error = e

    def handle(self, buf):
        hdr, body = decode(buf)
        op, name = hdr["opcode"], OPS.get(hdr["opcode"])
        with self.cond:
            # FORGETs count only when we caused them (memory reclaim can send some at any time)
            ours = op not in (2, 42) or self.action.startswith("FUSE_NOTIFY")
            if name and name not in RECORDED and ours and WANT.get(op, lambda h, b: True)(hdr, body):
                RECORDED[name] = dict(raw=buf, hdr=hdr, body=body, mount=self.label, action=self.action)
            self.cond.notify_all()
        u, n = hdr["unique"], hdr["nodeid"]
        if op == 26:
            self.minor = min(body["minor"], 38)
            want = ASYNC_READ | MAX_PAGES | PARALLEL_DIROPS | (DO_READDIRPLUS | READDIRPLUS_AUTO if self.plus else 0)
            self.reply(u, 0, struct.pack("<IIIIHHIIHHI7I", 7, self.minor, body["max_readahead"], body["flags"] & want,
                                         16, 12, 131072, 1, 256, 0, 0, *[0] * 7))
        elif op == 1:
            c = CHILDREN.get(body["name"]) if n == 1 else None
            self.reply(u, 0, entry(c)) if c else self.reply(u, errno.ENOENT)
        elif op == 3:
            self.reply(u, 0, struct.pack("<QII", 0, 0, 0) + attr(n))
        elif op in (14, 27):  # the slow file is direct I/O so its READ is synchronous (interruptible)
            fh, open_flags = (0x100 if op == 14 else 0x200) + n, 1 if op == 14 and n == 4 else 0  # FOPEN_DIRECT_IO
            self.reply(u, 0, struct.pack("<QII", fh, open_flags, 0))
        elif op == 15 and n == 4:
            with self.cond:
                self.held = u
                self.cond.notify_all()
        elif op == 15:
            self.reply(u, 0, NODES[n][2][body["offset"]:body["offset"] + body["size"]])
        elif op in (28, 44):
            self.reply(u, 0, self.dirents(n, body["offset"], body["size"], op == 44))
        elif op in (22, 23):  # xattrs: hello.txt has user.test = "hi"
            val = b"hi" if op == 22 else b"user.test\0"
            if op == 22 and (n != 2 or body["name"] != "user.test"):
                self.reply(u, errno.ENODATA)
            elif body["size"] == 0:
                self.reply(u, 0, struct.pack("<II", len(val), 0))
            else:
                self.reply(u, errno.ERANGE) if body["size"] < len(val) else self.reply(u, 0, val)
        elif op == 17:
            self.reply(u, 0, struct.pack("<QQQQQIIII6I", 100, 0, 0, 5, 0, 4096, 255, 4096, 0, *[0] * 6))
        elif op == 5:
            self.reply(u, 0, NODES[n][2])
        elif op == 36:  # answer the interrupted READ, not the INTERRUPT itself
            if body["unique"] == self.held:
                self.reply(self.held, errno.EINTR)
                self.held = None
        elif op in (18, 25, 29, 34):
            self.reply(u)
        elif op not in (2, 42):  # FORGETs get no reply
            self.reply(u, errno.EROFS if op in (4, 6, 8, 9, 10, 11, 12, 13, 16, 21, 24, 35) else errno.ENOSYS)

    def dirents(self, n, offset, size, plus):
        ents = [(".", n, 0), ("..", 1, 0)] + ([(k, v, v) for k, v in CHILDREN.items()] if n == 1 else [])
        out = b""
        for i, (name, ino, e) in enumerate(ents[offset:], offset + 1):
            nm = name.encode()
            d = struct.pack("<QQII", ino, i, len(nm), NODES[ino][1] >> 12) + nm
            d = (entry(e) if plus else b"") + d + b"\0" * (-len(d) % 8)
            if len(out) + len(d) > size:
                break
            out += d
        return out

    def wait(self, pred, timeout):
        with self.cond:
            return self.cond.wait_for(lambda: pred() or self.error, timeout)

    def notify_inval_entry(self, name):  # FUSE_NOTIFY_INVAL_ENTRY (3) for name in the root: drops it -> FORGET
        nm = name.encode() + b"\0"
        body = struct.pack("<QII", 1, len(nm) - 1, 0) + nm
        try:
            os.write(self.fd, OUT.pack(OUT.size + len(body), 3, 0) + body)
        except OSError:
            pass


RECORDED, CHILDREN_PROCS = {}, []


def child(code, mnt):
    p = subprocess.Popen([sys.executable, "-c", "import os, sys; p = sys.argv[1]\n" + code, mnt],
                         stdout=subprocess.DEVNULL)
    CHILDREN_PROCS.append(p)
    return p


def step(srv, mnt, action, code, expect):
    srv.action = action
    p, deadline = child(code, mnt), time.monotonic() + 10
    while p.poll() is None and not srv.error and time.monotonic() < deadline:
        time.sleep(0.05)
    if p.poll() is None:
        p.kill()
        print(f"warning: '{action}' did not finish", file=sys.stderr)
    srv.wait(lambda: all(e in RECORDED for e in expect), 2)
    if srv.error:
        raise srv.error


def interrupt(srv, mnt):
    srv.action = "read(5) of slow from a child that is then sent SIGKILL"
    p = child("fd = os.open(p + '/slow', os.O_RDONLY); os.read(fd, 5)", mnt)
    if srv.wait(lambda: srv.held, 5):
        p.send_signal(signal.SIGKILL)
        if not srv.wait(lambda: "INTERRUPT" in RECORDED, 3):
            with srv.lock:  # the kernel sent no INTERRUPT: free the reader anyway
                srv.reply(srv.held, errno.EINTR)
                srv.held = None
    p.kill()
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        print("warning: the slow reader is still waiting", file=sys.stderr)


def forgets(srv, mnt):
    step(srv, mnt, "lstat of each name in /", "for n in os.listdir(p): os.lstat(p + '/' + n)", [])
    for names, want in ((["hello.txt"], "FORGET"), (["link", "slow", "d"], "BATCH_FORGET")):
        srv.action = "FUSE_NOTIFY_INVAL_ENTRY of " + ", ".join(names) + " in node 1 (dentry dropped, inode evicted)"
        with srv.lock:  # hold the reader so several forgets queue up and come as one BATCH_FORGET
            for name in names:
                srv.notify_inval_entry(name)
            time.sleep(0.3)
        srv.wait(lambda: want in RECORDED, 2)


def session(mnt, label, rdonly, steps):
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    opts = f"fd={fd},rootmode=40000,user_id=0,group_id=0,max_read=1048576,allow_other"
    opts += ",default_permissions" if rdonly else ""
    srv, mounted, thread = Server(fd, label, plus=rdonly), False, None
    try:
        flags = MS_NODEV | MS_NOSUID | (MS_RDONLY if rdonly else 0)
        if libc.mount(b"stargz", mnt.encode(), b"fuse.stargz", flags, opts.encode()) != 0:
            raise OSError(ctypes.get_errno(), f"mount {mnt}: {os.strerror(ctypes.get_errno())}")
        mounted = True
        thread = threading.Thread(target=srv.run, daemon=True)
        thread.start()
        if not srv.wait(lambda: srv.minor is not None, 5):
            raise RuntimeError("no INIT from the kernel")
        for s in steps:
            s(srv) if callable(s) else step(srv, mnt, *s)
        if srv.error:
            raise srv.error
    finally:
        for p in CHILDREN_PROCS:
            if p.poll() is None:
                p.kill()
        if mounted and libc.umount2(mnt.encode(), MNT_DETACH) != 0:
            subprocess.run(["fusermount3", "-u", "-z", mnt], check=False)
        srv.stop = True
        if thread:
            thread.join(5)
        os.close(fd)  # aborts the connection: any reader still waiting gets ECONNABORTED
        for p in CHILDREN_PROCS:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                print(f"warning: child {p.pid} did not exit", file=sys.stderr)
    return srv


def flag_names(flags, flags2):
    hdr = open("/usr/include/linux/fuse.h").read()
    section = hdr[hdr.index("INIT request/reply flags"):hdr.index("CUSE INIT request/reply flags")]
    names = {int(b): n for n, b in re.findall(r"#define\s+(FUSE_\w+)\s+\(1(?:ULL)?\s*<<\s*(\d+)\)", section)}
    names = {**{b: n + "*" for b, n in NEWER_FLAGS.items()}, **names}
    bits = flags | flags2 << 32
    return [names.get(b, f"bit {b}") for b in range(64) if bits >> b & 1]


def show(op, k, v):
    if k in ("mode", "umask"):
        return oct(v)
    if k == "flags" and op in (14, 15, 18, 27, 28, 29, 35, 44):  # open(2) flags of the file
        return f"{v:#x} (" + "|".join([n for b, n in O_FLAGS.items() if v & b] or ["O_RDONLY"]) + ")"
    return hex(v) if "flags" in k or k in ("fh", "lock_owner") else v


def write(outdir, kernel):
    os.makedirs(outdir, exist_ok=True)
    for f in os.listdir(outdir):
        if f.endswith(".hex"):
            os.remove(os.path.join(outdir, f))
    init = RECORDED["INIT"]["body"]
    expected = {"kernel_release": kernel, "protocol": {"major": init["major"], "minor": init["minor"]}, "files": {}}
    lines = [f"# FUSE requests recorded from Linux {kernel}", "",
             f"Kernel release (`uname -r`): `{kernel}`; protocol offered in INIT: {init['major']}.{init['minor']} "
             f"(the recorder answered minor {min(init['minor'], 38)}).", "",
             "Recorded with `scripts/testing/record-fuse-requests.py` (as root). It serves / {hello.txt, link -> "
             "hello.txt, slow, d/} itself from /dev/fuse and keeps the first request of each opcode exactly as read "
             "(1 MiB + 4096 buffer). Each `.hex` is that request, lowercase hex, 32 bytes a line. `expected.json` has "
             "every header and body field under its C name (`struct fuse_in_header`, `fuse_*_in`).", "",
             "- mount `ro`: MS_RDONLY|MS_NOSUID|MS_NODEV, `fd=N,rootmode=40000,user_id=0,group_id=0,max_read=1048576,"
             "allow_other,default_permissions`; INIT reply flags ASYNC_READ|DO_READDIRPLUS|READDIRPLUS_AUTO|"
             "MAX_PAGES|PARALLEL_DIROPS (those offered).",
             "- mount `rw`: MS_NOSUID|MS_NODEV, same data without `default_permissions` (so ACCESS is sent); no "
             "READDIRPLUS flags (a fallback for READDIR; READDIRPLUS_AUTO usually sends one on the ro mount already); "
             "CREATE and RMDIR answered EROFS.", "",
             "Unique and pid values are whatever the kernel used (pid 0: sent by the kernel itself, e.g. background "
             "RELEASE, FORGET, INTERRUPT). u64 fields are plain JSON integers and `lock_owner` can exceed 2^63: decode "
             "them as UInt64.", ""]
    for name, r in sorted(RECORDED.items(), key=lambda kv: kv[1]["hdr"]["opcode"]):
        fname = name.lower() + ".hex"
        raw, hdr, body = r["raw"], r["hdr"], r["body"]
        with open(os.path.join(outdir, fname), "w") as f:
            f.writelines(raw[i:i + 32].hex() + "\n" for i in range(0, len(raw), 32))
        expected["files"][fname] = {"opname": name, "mount": r["mount"], "header": hdr, "body": body}
        shown = {k: show(hdr["opcode"], k, v) for k, v in body.items() if k not in ("unused", "padding", "dummy")}
        node = NODES.get(hdr["nodeid"], ("?",))[0]
        lines += [f"## {fname}", "",
                  f"- opcode {hdr['opcode']} ({name}), nodeid {hdr['nodeid']} ({node if hdr['nodeid'] else '-'}), "
                  f"len {hdr['len']}, unique {hdr['unique']}, uid {hdr['uid']} gid {hdr['gid']} pid {hdr['pid']}, "
                  f"mount `{r['mount']}`",
                  f"- triggered by: {r['action']}", f"- fields: {json.dumps(shown) if shown else '(no body)'}"]
        if name == "INIT":
            lines.append(f"- flags | flags2 << 32 offered: {', '.join(flag_names(body['flags'], body['flags2']))} "
                         "(* = upstream name, not in the 7.38 /usr/include/linux/fuse.h)")
        lines.append("")
    with open(os.path.join(outdir, "expected.json"), "w") as f:
        json.dump(expected, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(outdir, "README.md"), "w") as f:
        f.write("\n".join(lines))


def main():
    kernel = os.uname().release
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        root, "Tests/FUSETests/Fixtures/kernel-" + ".".join(kernel.split(".")[:2]))
    mnt = tempfile.mkdtemp(prefix="fuse-record-")
    ro = [("stat of hello.txt", "os.stat(p + '/hello.txt')", ["LOOKUP", "GETATTR"]),
          ("open, read(5) at 0 and close of hello.txt",
           "f = open(p + '/hello.txt', 'rb', buffering=0); f.read(5); f.close()", ["OPEN", "READ", "FLUSH", "RELEASE"]),
          ("listdir of /", "os.listdir(p)", ["OPENDIR", "READDIRPLUS", "RELEASEDIR"]),
          ("getxattr user.test of hello.txt", "os.getxattr(p + '/hello.txt', 'user.test')", ["GETXATTR"]),
          ("listxattr of hello.txt", "os.listxattr(p + '/hello.txt')", ["LISTXATTR"]),
          ("statvfs of /", "os.statvfs(p)", ["STATFS"]),
          ("readlink of link", "os.readlink(p + '/link')", ["READLINK"]),
          lambda srv: interrupt(srv, mnt), lambda srv: forgets(srv, mnt)]
    rw = [("access(R_OK) of hello.txt", "os.access(p + '/hello.txt', os.R_OK)", ["ACCESS"]),
          ("open(O_CREAT|O_WRONLY, 0644) of x in /", "try: os.open(p + '/x', os.O_CREAT | os.O_WRONLY, 0o644)\n"
           "except OSError: pass", ["CREATE"]),
          ("rmdir of d in /", "try: os.rmdir(p + '/d')\nexcept OSError: pass", ["RMDIR"]),
          ("listdir of / (no READDIRPLUS)", "os.listdir(p)", ["READDIR"])]
    try:
        session(mnt, "ro", True, ro)
        session(mnt, "rw", False, rw)
    finally:
        os.rmdir(mnt)
    if "INIT" in RECORDED:
        write(outdir, kernel)
    missing = [op for op in REQUIRED if op not in RECORDED]
    missing += [] if {"READDIR", "READDIRPLUS"} & RECORDED.keys() else ["READDIR or READDIRPLUS"]
    print(f"wrote {len(RECORDED)} requests to {outdir}: {' '.join(sorted(RECORDED))}")
    if missing:
        sys.exit("missing: " + ", ".join(missing))


if __name__ == "__main__":
    main()
