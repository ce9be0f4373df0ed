// SPDX-License-Identifier: Apache-2.0
public import FUSE
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// `[offset, offset+length)` of the file at `path` by `pread` (short at its end), or the errno. With `dropCache`,
/// the file's page cache is dropped first, so that the read reaches the filesystem (a FUSE server) behind it.
public func preadFile(_ path: String, offset: Int, length: Int, dropCache: Bool = false) -> Result<[UInt8], FUSEError> {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return .failure(FUSEError(errno)) }
    defer { close(fd) }
    if dropCache { _ = posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_DONTNEED)) }
    var out = [UInt8](repeating: 0, count: length)
    var got = 0
    while got < length {
        let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + got, length - got, off_t(offset + got)) }
        if n < 0 {
            if errno == EINTR { continue }
            return .failure(FUSEError(errno))
        }
        if n == 0 { break }
        got += n
    }
    return .success(Array(out.prefix(got)))
}
