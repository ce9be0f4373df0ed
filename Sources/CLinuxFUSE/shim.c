// SPDX-License-Identifier: Apache-2.0
#include "CLinuxFUSE.h"

#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

int CLinuxFUSE_readerWaiter(int fuse_fd, int wake_fd) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) return -1;
    struct epoll_event request = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.u64 = 0};
    struct epoll_event wake = {.events = EPOLLIN, .data.u64 = 1};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fuse_fd, &request) != 0 || epoll_ctl(ep, EPOLL_CTL_ADD, wake_fd, &wake) != 0) {
        int e = errno;
        close(ep);
        errno = e;
        return -1;
    }
    return ep;
}

int CLinuxFUSE_waitForRequest(int epoll_fd) {
    struct epoll_event events[2];
    for (;;) {
        int n = epoll_wait(epoll_fd, events, 2, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        for (int i = 0; i < n; i++)
            if (events[i].data.u64 == 1) return 1;
        return 0;
    }
}
