// SPDX-License-Identifier: Apache-2.0

/// FUSE request opcodes (`enum fuse_opcode` of <linux/fuse.h>).
public enum Opcode: UInt32, Sendable {
    case lookup = 1, forget = 2, getattr = 3, setattr = 4, readlink = 5, symlink = 6, mknod = 8, mkdir = 9
    case unlink = 10, rmdir = 11, rename = 12, link = 13, open = 14, read = 15, write = 16, statfs = 17
    case release = 18, fsync = 20, setxattr = 21, getxattr = 22, listxattr = 23, removexattr = 24, flush = 25
    case initialize = 26, opendir = 27, readdir = 28, releasedir = 29, fsyncdir = 30, getlk = 31, setlk = 32
    case setlkw = 33, access = 34, create = 35, interrupt = 36, bmap = 37, destroy = 38, ioctl = 39, poll = 40
    case notifyReply = 41, batchForget = 42, fallocate = 43, readdirplus = 44, rename2 = 45, lseek = 46
    case copyFileRange = 47, setupmapping = 48, removemapping = 49, syncfs = 50, tmpfile = 51

    /// Operations that would change the tree: answered EROFS.
    var isWrite: Bool {
        switch self {
        case .setattr, .symlink, .mknod, .mkdir, .unlink, .rmdir, .rename, .link, .write, .setxattr, .removexattr,
            .create, .fallocate, .rename2, .copyFileRange, .tmpfile:
            true
        default: false
        }
    }
}
