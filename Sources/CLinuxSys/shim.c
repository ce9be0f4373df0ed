// SPDX-License-Identifier: Apache-2.0
#define _GNU_SOURCE 1
#include "CLinuxSys.h"
#include <sys/socket.h>

_Static_assert(sizeof(CLinuxSys_PeerCredentials) == sizeof(struct ucred), "the layout of struct ucred");

int CLinuxSys_peerCredentials(int fd, CLinuxSys_PeerCredentials *out) {
    struct ucred c;
    socklen_t len = sizeof(c);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c, &len) != 0) return -1;
    out->pid = c.pid;
    out->uid = c.uid;
    out->gid = c.gid;
    return 0;
}

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/un.h>
#include <unistd.h>

/// A unix socket address for `path` ("@name": the abstract namespace); its length, or 0 with errno.
static socklen_t unixAddress(const char *path, struct sockaddr_un *addr) {
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(addr->sun_path)) { errno = ENAMETOOLONG; return 0; }
    memset(addr, 0, sizeof(*addr));
    addr->sun_family = AF_UNIX;
    memcpy(addr->sun_path, path, n);
    if (path[0] == '@') addr->sun_path[0] = 0;
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
}

int CLinuxSys_unixSocket(const char *path, int datagram, int connectToPath) {
    struct sockaddr_un addr;
    socklen_t addrlen = unixAddress(path, &addr);
    if (addrlen == 0) return -1;
    int sock = socket(AF_UNIX, (datagram ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0);
    if (sock < 0) return -1;
    int r = connectToPath ? connect(sock, (struct sockaddr *)&addr, addrlen) : bind(sock, (struct sockaddr *)&addr, addrlen);
    if (r != 0) {
        int e = errno;
        close(sock);
        errno = e;
        return -1;
    }
    return sock;
}

long CLinuxSys_sendWithFDs(int sock, const char *path, const void *bytes, unsigned long len, const int *fds, int nfds) {
    if (nfds < 0 || nfds > 64) { errno = EINVAL; return -1; }
    struct sockaddr_un addr;
    socklen_t addrlen = 0;
    if (path && (addrlen = unixAddress(path, &addr)) == 0) return -1;
    struct iovec iov = {.iov_base = (void *)bytes, .iov_len = len};
    union {
        char buf[CMSG_SPACE(sizeof(int) * 64)];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof(control));
    struct msghdr msg = {0};
    msg.msg_name = path ? &addr : NULL;
    msg.msg_namelen = addrlen;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (nfds > 0) {
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    ssize_t r;
    do { r = sendmsg(sock, &msg, MSG_NOSIGNAL); } while (r < 0 && errno == EINTR);
    return (long)r;
}

long CLinuxSys_receiveWithFDs(int sock, void *bytes, unsigned long len, int *fds, int maxfds, int *nfds) {
    struct iovec iov = {.iov_base = bytes, .iov_len = len};
    union {
        char buf[CMSG_SPACE(sizeof(int) * 64)];
        struct cmsghdr align;
    } control;
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof(control.buf);
    ssize_t r;
    do { r = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC); } while (r < 0 && errno == EINTR);
    *nfds = 0;
    if (r < 0) return -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int *in = (int *)CMSG_DATA(c);
        for (int i = 0; i < n; i++) {
            if (*nfds < maxfds) fds[(*nfds)++] = in[i];
            else close(in[i]);
        }
    }
    return (long)r;
}

int CLinuxSys_memfd(const char *name) { return memfd_create(name, MFD_CLOEXEC); }
