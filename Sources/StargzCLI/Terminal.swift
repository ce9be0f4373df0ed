// SPDX-License-Identifier: Apache-2.0
import CLinuxSys
import Foundation

enum Terminal {
    static func isTTY(_ fd: Int32) -> Bool { CLinuxSys_isatty(fd) != 0 }

    static func error(_ message: String) { FileHandle.standardError.write(Data("error: \(message)\n".utf8)) }
    static func warn(_ message: String) { FileHandle.standardError.write(Data("warning: \(message)\n".utf8)) }
    static func note(_ message: String) { FileHandle.standardError.write(Data("note: \(message)\n".utf8)) }

    static func printJSON(_ value: some Encodable) {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        if let data = try? enc.encode(value) { print(String(decoding: data, as: UTF8.self)) }
    }
}

/// A one-line progress bar on a terminal (stderr when stdout carries data, else stdout).
final class ProgressBar {
    let label: String
    let fd: Int32
    var lastPercent = -1

    init(label: String, fd: Int32 = 2) {
        self.label = label
        self.fd = fd
    }

    func update(_ done: Int64, _ total: Int64) {
        guard total > 0 else { return }
        let percent = Int(done * 100 / total)
        guard percent != lastPercent else { return }
        lastPercent = percent
        let width = max(10, min(50, Int(CLinuxSys_terminalColumns(fd)) - label.count - 30))
        let filled = width * percent / 100
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        let line = "\r\(label) [\(bar)] \(percent)% \(done >> 20)/\(total >> 20) MiB"
        FileHandle(fileDescriptor: fd).write(Data(line.utf8))
    }

    func finish() {
        guard lastPercent >= 0 else { return }
        FileHandle(fileDescriptor: fd).write(Data("\n".utf8))
    }
}
