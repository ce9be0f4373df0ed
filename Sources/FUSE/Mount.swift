// SPDX-License-Identifier: Apache-2.0
import CLinuxFUSE
import Foundation
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// How a session is mounted.
public enum MountMethod: Sendable {
    /// `mount(2)` when running as root, else the helper.
    case automatic
    /// `mount(2)`.
    case syscall
    /// `fusermount3`, which mounts and hands the /dev/fuse fd back over a socket.
    case helper
}

/// Mounting and unmounting: the `/dev/fuse` fd of a new mount, by `mount(2)` or by `fusermount3`.
enum Mount {
    /// Mounts at `mountPoint` (a directory) as `options` say; returns the session's /dev/fuse fd.
    static func mount(at mountPoint: String, _ options: FUSESession.Options) throws(FUSEError) -> Int32 {
        var st = stat()
        guard stat(mountPoint, &st) == 0, (st.st_mode & 0o170000) == 0o040000 else {
            let e = errno
            throw FUSEError(e == 0 ? ENOTDIR : e, "mount point \(mountPoint) is not a directory")
        }
        let useHelper = options.method == .helper || (options.method == .automatic && geteuid() != 0)
        return useHelper ? try mountWithHelper(mountPoint, options) : try mountWithSyscall(mountPoint, options)
    }

    /// Attaches a fresh /dev/fuse fd to the session of `fd` (FUSE_DEV_IOC_CLONE), for another reader thread.
    static func clone(_ fd: Int32) -> Int32? {
        let c = open("/dev/fuse", O_RDWR | O_CLOEXEC)
        guard c >= 0 else { return nil }
        guard CLinuxFUSE_clone(c, fd) == 0 else {
            close(c)
            return nil
        }
        return c
    }

    /// Detaches the mount (lazily: open files keep working until closed); falls back on `fusermount3 -u -z`
    /// when we may not unmount ourselves. Nil when it is detached (or was not mounted), else why not.
    static func detach(_ mountPoint: String) -> String? {
        guard umount2(mountPoint, Int32(MNT_DETACH)) != 0 else { return nil }
        let e = errno
        if e == EINVAL || e == ENOENT { return nil }  // not a mount point (any more)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/fusermount3")
        p.arguments = ["-u", "-z", mountPoint]
        do { try p.run() } catch { return "umount2: \(String(cString: strerror(e))); fusermount3: \(error)" }
        p.waitUntilExit()
        return p.terminationStatus == 0 ? nil : "umount2: \(String(cString: strerror(e))); fusermount3 -u -z exited \(p.terminationStatus)"
    }

    static func mountWithSyscall(_ mountPoint: String, _ options: FUSESession.Options) throws(FUSEError) -> Int32 {
        let fd = open("/dev/fuse", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw FUSEError(errno, "cannot open /dev/fuse") }
        var data = "fd=\(fd),rootmode=40000,user_id=\(getuid()),group_id=\(getgid()),max_read=\(options.maxRead)"
        if options.allowOther { data += ",allow_other" }
        if options.defaultPermissions { data += ",default_permissions" }
        var flags = UInt(MS_NODEV)
        if !options.allowSetuid { flags |= UInt(MS_NOSUID) }
        if options.readOnly { flags |= UInt(MS_RDONLY) }
        guard Glibc.mount(options.fsName, mountPoint, "fuse.\(options.subtype)", flags, data) == 0 else {
            let e = errno
            close(fd)
            throw FUSEError(e, "mount(2) of \(mountPoint) failed: \(String(cString: strerror(e)))")
        }
        return fd
    }

    /// Runs `fusermount3` with one end of a socket pair as `_FUSE_COMMFD`; it mounts and sends the fd back.
    static func mountWithHelper(_ mountPoint: String, _ options: FUSESession.Options) throws(FUSEError) -> Int32 {
        let candidates: [String] = ["/usr/bin/fusermount3", "/bin/fusermount3"]
        guard let helper = candidates.first(where: { (p: String) in access(p, X_OK) == 0 }) else {
            throw FUSEError(ENOENT, "fusermount3 is not installed (apt-get install fuse3)")
        }
        var sv: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &sv) == 0 else {
            throw FUSEError(errno, "socketpair failed")
        }
        defer { close(sv[1]) }
        var opts = "nodev,fsname=\(options.fsName),subtype=\(options.subtype),max_read=\(options.maxRead)"
        opts += options.readOnly ? ",ro" : ",rw"
        opts += options.allowSetuid ? ",suid" : ",nosuid"
        if options.defaultPermissions { opts += ",default_permissions" }
        if options.allowOther { opts += ",allow_other" }
        // The child gets our end as fd 3 (posix_spawn: Foundation's Process would close it).
        var actions = posix_spawn_file_actions_t()
        guard posix_spawn_file_actions_init(&actions) == 0 else {
            close(sv[0])
            throw FUSEError(ENOMEM, "posix_spawn_file_actions_init failed")
        }
        defer { posix_spawn_file_actions_destroy(&actions) }
        let dup = posix_spawn_file_actions_adddup2(&actions, sv[0], 3)
        guard dup == 0 else {
            close(sv[0])
            throw FUSEError(dup, "posix_spawn_file_actions_adddup2 failed")
        }
        let argv = [helper, "-o", opts, "--", mountPoint]
        var env = ProcessInfo.processInfo.environment
        env["_FUSE_COMMFD"] = "3"
        let envv = env.map { "\($0.key)=\($0.value)" }
        var pid: pid_t = 0
        let rc = withCStrings(argv) { a in withCStrings(envv) { e in posix_spawn(&pid, helper, &actions, nil, a, e) } }
        close(sv[0])
        guard rc == 0 else { throw FUSEError(rc, "cannot run \(helper)") }
        let fd = CLinuxFUSE_receiveFD(sv[1])
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        guard fd >= 0 else {
            throw FUSEError(EPERM, "\(helper) did not mount \(mountPoint) (exit status \(status >> 8))")
        }
        return fd
    }

}

/// Runs `body` with a NULL-terminated C array of the strings.
private func withCStrings<R>(_ strings: [String], _ body: ([UnsafeMutablePointer<CChar>?]) -> R) -> R {
    var ptrs: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    ptrs.append(nil)
    defer { for p in ptrs { free(p) } }
    return body(ptrs)
}
