// SPDX-License-Identifier: Apache-2.0
// The FUSE kernel ABI (<linux/fuse.h>, 7.38 on Debian 12) and the few macros Swift cannot import.
#ifndef CLINUXFUSE_H
#define CLINUXFUSE_H
// No _GNU_SOURCE here: it changes how glibc declares shared types (fd_set), and the module would then
// disagree with the other C modules (CDispatch) that a Swift file imports with it.
#include <linux/fuse.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <spawn.h>

/// FUSE_DEV_IOC_CLONE: attaches `fd` (a fresh open of /dev/fuse) to the session of `sessionFD`.
static inline int CLinuxFUSE_clone(int fd, int sessionFD) {
    uint32_t s = (uint32_t)sessionFD;
    return ioctl(fd, FUSE_DEV_IOC_CLONE, &s);
}

static inline int CLinuxFUSE_errno(void) { return errno; }

/// Receives the /dev/fuse fd that fusermount3 sends over `sock` (SCM_RIGHTS); -1 when none came.
static inline int CLinuxFUSE_receiveFD(int sock) {
    char byte;
    struct iovec iov = { &byte, 1 };
    union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int))]; } control;
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof(control.buf);
    ssize_t n;
#ifndef MSG_CMSG_CLOEXEC
#define MSG_CMSG_CLOEXEC 0x40000000
#endif
    do { n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC); } while (n < 0 && errno == EINTR);
    if (n <= 0) return -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (c == NULL || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) return -1;
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof(int));
    return fd;
}

/// The size of the dirent record for a name of `namelen` bytes, padded to 8 (FUSE_DIRENT_SIZE).
static inline size_t CLinuxFUSE_direntSize(size_t namelen) {
    return FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + namelen);
}

static inline size_t CLinuxFUSE_direntplusSize(size_t namelen) {
    return FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET_DIRENTPLUS + namelen);
}

static inline size_t CLinuxFUSE_nameOffset(void) { return FUSE_NAME_OFFSET; }
static inline size_t CLinuxFUSE_nameOffsetPlus(void) { return FUSE_NAME_OFFSET_DIRENTPLUS; }

static inline unsigned int CLinuxFUSE_makedev(unsigned int major, unsigned int minor) {
    // The kernel's new_encode_dev, as fuse_attr.rdev carries it.
    return (minor & 0xff) | (major << 8) | ((minor & ~0xffu) << 12);
}
/// An epoll instance for one FUSE reader: `fuse_fd` readable (EPOLLEXCLUSIVE: a request wakes one reader, not
/// all of those waiting on the connection's queue) and `wake_fd` readable (every reader: time to stop). -1 and
/// errno on failure.
int CLinuxFUSE_readerWaiter(int fuse_fd, int wake_fd);
/// Waits on a reader's epoll instance: 0 when a request may be there (or the connection is gone: read to see),
/// 1 when woken to stop, -1 and errno on failure.
int CLinuxFUSE_waitForRequest(int epoll_fd);
#endif
