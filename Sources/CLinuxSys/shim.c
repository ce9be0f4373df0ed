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
