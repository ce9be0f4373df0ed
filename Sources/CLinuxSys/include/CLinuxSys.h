// SPDX-License-Identifier: Apache-2.0
// Linux headers that Glibc's Swift module map does not export.
#ifndef CLINUXSYS_H
#define CLINUXSYS_H
#include <stdint.h>
#include <sys/xattr.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <malloc.h>
/// A long-lived daemon: few malloc arenas; allocations of `large` bytes or more mapped on their own and
/// given back when freed, and the heap trimmed past `large` free bytes.
static inline void CLinuxSys_tuneMallocForDaemon(int arenas, int large) {
    mallopt(M_ARENA_MAX, arenas);
    mallopt(M_MMAP_THRESHOLD, large);
    mallopt(M_TRIM_THRESHOLD, large);
}
static inline int CLinuxSys_isatty(int fd) { return isatty(fd); }
static inline int CLinuxSys_terminalColumns(int fd) {
    struct winsize ws;
    if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
    return 80;
}
/// `struct ucred` (SO_PEERCRED), which glibc declares only under _GNU_SOURCE: the same layout.
typedef struct {
    int32_t pid;
    uint32_t uid;
    uint32_t gid;
} CLinuxSys_PeerCredentials;
/// The process at the other end of a connected unix socket, as the kernel saw it at connect(2) (SO_PEERCRED);
/// -1 and errno on failure.
int CLinuxSys_peerCredentials(int fd, CLinuxSys_PeerCredentials *out);
/// A close-on-exec unix socket (stream, or datagram) bound to `path` or connected to it ("@name": the abstract
/// namespace); -1 and errno (ENAMETOOLONG for a path that does not fit) on failure.
int CLinuxSys_unixSocket(const char *path, int datagram, int connectToPath);
/// sendmsg(2) of `len` bytes with `nfds` file descriptors (SCM_RIGHTS, at most 64) to `path` (a unix datagram
/// socket's path, "@name" for the abstract namespace) or, with `path` NULL, on a connected socket. The bytes
/// sent, or -1 and errno.
long CLinuxSys_sendWithFDs(int sock, const char *path, const void *bytes, unsigned long len, const int *fds, int nfds);
/// recvmsg(2) of at most `len` bytes and at most `maxfds` descriptors (SCM_RIGHTS; received with O_CLOEXEC); the
/// bytes received (fds in `fds`, their number in `nfds`; descriptors beyond `maxfds` are closed), or -1 and errno.
long CLinuxSys_receiveWithFDs(int sock, void *bytes, unsigned long len, int *fds, int maxfds, int *nfds);
/// memfd_create(name, MFD_CLOEXEC): -1 and errno where the kernel has none.
int CLinuxSys_memfd(const char *name);
#endif
