// SPDX-License-Identifier: Apache-2.0
// Linux headers that Glibc's Swift module map does not export.
#ifndef CLINUXSYS_H
#define CLINUXSYS_H
#include <sys/xattr.h>
#include <sys/ioctl.h>
#include <unistd.h>
static inline int CLinuxSys_isatty(int fd) { return isatty(fd); }
static inline int CLinuxSys_terminalColumns(int fd) {
    struct winsize ws;
    if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
    return 80;
}
#endif
