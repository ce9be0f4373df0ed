// SPDX-License-Identifier: Apache-2.0
public import Foundation

/// Podman with its own storage (vfs, a temporary graphroot), for end-to-end tests.
///
/// The flags that these machines need (`--runtime runc`, fixed ulimits) are added here, in test support only.
public final class TestPodman: Sendable {
    /// The storage directory.
    public let directory: String
    let storageConf: String

    /// Creates a podman sandbox; `additionalLayerStore` adds `additionallayerstores = ["PATH:ref"]`.
    public init(additionalLayerStore: String? = nil) throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/podman") else {
            throw SupportError("podman is not installed (apt-get install podman runc)")
        }
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("podman-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory + "/root", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: directory + "/run", withIntermediateDirectories: true)
        // Only the overlay driver consults additional layer stores.
        var conf = """
            [storage]
            driver = "\(additionalLayerStore == nil ? "vfs" : "overlay")"
            graphroot = "\(directory)/root"
            runroot = "\(directory)/run"
            """
        if let als = additionalLayerStore {
            conf += "\n[storage.options]\nadditionallayerstores = [\"\(als):ref\"]\n"
        }
        storageConf = directory + "/storage.conf"
        try conf.write(toFile: storageConf, atomically: true, encoding: .utf8)
    }

    /// Runs `podman ARGS…` and returns its standard output.
    @discardableResult
    public func callAsFunction(_ args: [String]) throws -> String {
        try run("/usr/bin/podman", args, environment: ["CONTAINERS_STORAGE_CONF": storageConf])
    }

    /// Starts `podman ARGS…` without waiting (`logs -f`): the process, with its standard output on a pipe and its
    /// standard error in `errors` (or nowhere).
    public func spawn(_ args: [String], errors: String? = nil) throws -> (Process, FileHandle) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/podman")
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        env["CONTAINERS_STORAGE_CONF"] = storageConf
        p.environment = env
        let out = Pipe()
        p.standardOutput = out
        if let errors, FileManager.default.createFile(atPath: errors, contents: nil), let h = FileHandle(forWritingAtPath: errors) {
            p.standardError = h
        } else {
            p.standardError = FileHandle.nullDevice
        }
        p.standardInput = FileHandle.nullDevice
        try p.run()
        return (p, out.fileHandleForReading)
    }

    /// `podman run -d --name NAME [flags] IMAGE COMMAND…`: the container keeps running. Its output goes nowhere
    /// here (conmon inherits podman's standard output and keeps it open: a pipe would never see its end).
    public func runDetached(_ name: String, _ image: String, _ command: [String]) throws {
        let status = try spawnAndWait(
            ["/usr/bin/podman", "run", "-d", "--name", name] + Self.runFlags + [image] + command,
            environment: ["CONTAINERS_STORAGE_CONF": storageConf])
        guard status == 0 else { throw SupportError("podman run -d \(image) exited \(status)") }
    }

    /// The flags `run` needs on these machines (before the image).
    public static let runFlags = ["--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--net=none"]

    /// `podman run --rm [OPTIONS…] IMAGE [COMMAND…]` with the flags these machines need.
    public func runContainer(_ image: String, _ command: [String] = [], options: [String] = []) throws -> String {
        try self(["run", "--rm", "--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
                  "--net=none"] + options + [image] + command)
    }

    /// Removes the storage.
    public func cleanUp() {
        _ = try? self(["rm", "--all", "--force"])
        _ = try? self(["rmi", "--all", "--force"])
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// A tar with a static busybox at bin/busybox, sh/cat/ls/echo links, and etc/os-release.
public func busyboxTar(osRelease: String = "NAME=\"stargz-swift test\"\n") throws -> [UInt8] {
    guard let bb = FileManager.default.contents(atPath: "/bin/busybox") else {
        throw SupportError("/bin/busybox is missing (apt-get install busybox-static)")
    }
    return TarBuilder()
        .dir("bin").dir("etc")
        .file("bin/busybox", Array(bb), mode: 0o755)
        .symlink("bin/sh", "busybox").symlink("bin/cat", "busybox").symlink("bin/ls", "busybox")
        .symlink("bin/echo", "busybox")
        .file("etc/os-release", Array(osRelease.utf8))
        .bytes()
}
