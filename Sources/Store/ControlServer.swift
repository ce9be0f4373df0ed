// SPDX-License-Identifier: Apache-2.0
import CLinuxSys
import Foundation
public import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
public import Registry
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// The store's control socket (`<root>/store.sock`, as upstream's): where `stargz-store-helper` hands over a pull's
/// credentials. HTTP/1.1 on a unix socket, so an operator can speak it with `curl --unix-socket`:
///
/// - `POST /v1/credentials` with the helper's JSON (``GivenCredentials/add(json:)``): `204` once the store holds
///   them (written to its file), `400` with one line saying why not (nothing changed), `413` over the size bound.
///
/// The socket is mode 0600 and every peer's credentials are checked with `SO_PEERCRED`: only root, or the user
/// the store runs as (a rootless store), is heard; others get `403`.
public final class ControlServer: Sendable {
    let channel: any Channel
    /// The socket's path.
    public let path: String

    /// The socket file's inode: a successor may have bound the path since (it is then left alone).
    let inode: UInt64

    private init(channel: any Channel, path: String) {
        self.channel = channel
        self.path = path
        var st = stat()
        inode = lstat(path, &st) == 0 ? UInt64(st.st_ino) : 0
    }

    /// Binds `path` (replacing a socket a previous run left; refusing to replace anything else) and serves until
    /// ``close()``.
    public static func start(path: String, credentials: GivenCredentials, logger: Logger) async throws -> ControlServer {
        let dir = (path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var st = stat()
        if lstat(path, &st) == 0 && (st.st_mode & S_IFMT) != S_IFSOCK {
            throw StoreError(.setup, "\(path) exists and is not a socket; not replaced")
        }
        let me = getuid()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { ch in
                peerCredentials(ch).flatMapThrowing { peer in
                    let ops = ch.pipeline.syncOperations
                    try ops.configureHTTPServerPipeline(withErrorHandling: false)
                    let allowed = peer.map { $0.uid == 0 || $0.uid == me } ?? false
                    try ops.addHandler(ControlHandler(credentials: credentials, logger: logger, peer: peer, allowed: allowed))
                }
            }
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).get()
        guard chmod(path, 0o600) == 0 else {
            let why = String(cString: strerror(errno))
            try? await channel.close().get()
            throw StoreError(.setup, "cannot make \(path) mode 0600: \(why)")
        }
        return ControlServer(channel: channel, path: path)
    }

    /// Stops serving and removes the socket (unless a successor's is there now).
    public func close() async {
        try? await channel.close().get()
        var st = stat()
        if lstat(path, &st) == 0 && UInt64(st.st_ino) == inode { unlink(path) }
    }

    /// The connecting process, as the kernel saw it at `connect(2)`.
    struct Peer: Sendable {
        var pid: Int32
        var uid: UInt32
    }

    static func peerCredentials(_ ch: any Channel) -> EventLoopFuture<Peer?> {
        guard let provider = ch as? any SocketOptionProvider else { return ch.eventLoop.makeSucceededFuture(nil) }
        let got: EventLoopFuture<CLinuxSys_PeerCredentials> = provider.unsafeGetSocketOption(
            level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED))
        return got.map { Optional(Peer(pid: $0.pid, uid: $0.uid)) }.recover { _ in nil }
    }
}

/// One request on the control socket, gathered up to its bound, then answered.
final class ControlHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let credentials: GivenCredentials
    let logger: Logger
    let peer: ControlServer.Peer?
    let allowed: Bool
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var refused: (HTTPResponseStatus, String)?

    init(credentials: GivenCredentials, logger: Logger, peer: ControlServer.Peer?, allowed: Bool) {
        self.credentials = credentials
        self.logger = logger
        self.peer = peer
        self.allowed = allowed
    }

    private var peerMetadata: Logger.Metadata {
        ["peer.pid": "\(peer.map { String($0.pid) } ?? "?")", "peer.uid": "\(peer.map { String($0.uid) } ?? "?")"]
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            body = []
            refused = nil
            if !allowed {
                refused = (.forbidden, "only root (or the store's own user) may hand credentials to the store")
            } else if h.uri != "/v1/credentials" {
                refused = (.notFound, "no such endpoint; POST /v1/credentials")
            } else if h.method != .POST {
                refused = (.methodNotAllowed, "POST /v1/credentials")
            } else if let n = h.headers.first(name: "Content-Length").flatMap(Int.init), n > GivenCredentials.Limits.maxBytes {
                refused = (.payloadTooLarge, "the credentials are \(n) bytes, more than \(GivenCredentials.Limits.maxBytes)")
            }
            // A request refused by its head is answered at once, and the connection closed: its body is not read.
            if let (status, message) = refused {
                head = nil
                logger.warning("control socket: \(message)", metadata: peerMetadata.merging(["status": "\(status.code)"]) { $1 })
                respond(context, h, status, message)
            }
        case .body(var part):
            guard head != nil, refused == nil else { return }
            if body.count + part.readableBytes > GivenCredentials.Limits.maxBytes {
                refused = (.payloadTooLarge, "the credentials are more than \(GivenCredentials.Limits.maxBytes) bytes")
                body = []
                return
            }
            body += part.readBytes(length: part.readableBytes) ?? []
        case .end:
            guard let h = head else { return }
            head = nil
            if let (status, message) = refused {
                logger.warning("control socket: \(message)", metadata: peerMetadata.merging(["status": "\(status.code)"]) { $1 })
                return respond(context, h, status, message)
            }
            let json = body
            body = []
            let credentials = credentials, logger = logger, metadata = peerMetadata
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            // The file is written off the event loop.
            NIOThreadPool.singleton.runIfActive(eventLoop: context.eventLoop) { () throws -> [String] in
                try credentials.add(json: json)
            }.whenComplete { result in
                let (handler, context) = bound.value
                switch result {
                case .success(let scopes):
                    logger.info(
                        "credentials received",
                        metadata: metadata.merging(["scopes": "\(scopes.isEmpty ? "none (anonymous pull)" : scopes.joined(separator: ","))"]) { $1 })
                    handler.respond(context, h, .noContent, nil)
                case .failure(let error):
                    logger.warning("credentials refused: \(error)", metadata: metadata)
                    handler.respond(context, h, .badRequest, "\(error)")
                }
            }
        }
    }

    /// One request per connection, answered within ``timeout`` of the connection (then it is closed).
    static let timeout = TimeAmount.seconds(10)
    private var deadline: Scheduled<Void>?

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        deadline = context.eventLoop.scheduleTask(in: Self.timeout) { channel.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
    }

    /// Bytes that are not HTTP: 400, and the connection closed.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.warning("control socket: not an HTTP request", metadata: peerMetadata.merging(["error": "\(error)"]) { $1 })
        respond(context, HTTPRequestHead(version: .http1_1, method: .GET, uri: "/"), .badRequest, "not an HTTP/1.1 request")
    }

    private func respond(_ context: ChannelHandlerContext, _ head: HTTPRequestHead, _ status: HTTPResponseStatus, _ message: String?) {
        guard context.channel.isActive else { return }
        var headers = HTTPHeaders()
        let text = message.map { $0 + "\n" } ?? ""
        if message != nil { headers.add(name: "Content-Type", value: "text/plain; charset=utf-8") }
        headers.add(name: "Content-Length", value: String(text.utf8.count))
        headers.add(name: "Connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        if !text.isEmpty { context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil) }
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}
