// SPDX-License-Identifier: Apache-2.0
// Linux headers that Glibc's Swift module map does not export.
#ifndef CLINUXSYS_H
#define CLINUXSYS_H
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
#endif
