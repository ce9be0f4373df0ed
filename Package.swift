// swift-tools-version:6.1
// SPDX-License-Identifier: Apache-2.0
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

// What `--version` prints. scripts/release.sh sets STARGZ_VERSION and STARGZ_COMMIT; other builds take the
// checkout's tag and commit from git ("-dirty" when the tree has changes). SwiftPM caches the evaluated manifest by
// its contents and environment, not by the git state, so a development build may show the commit of an earlier
// evaluation; release builds set both variables.
let git = Context.gitInformation
let buildVersion = Context.environment["STARGZ_VERSION"] ?? git?.currentTag.map { $0.hasPrefix("v") ? String($0.dropFirst()) : $0 } ?? "0.1.0-dev"
let buildCommit = Context.environment["STARGZ_COMMIT"] ?? git.map { String($0.currentCommit.prefix(12)) + ($0.hasUncommittedChanges ? "-dirty" : "") } ?? "unknown"
/// A C string literal of `s` for a -D definition (versions and commits are printable ASCII; anything else is dropped).
func cLiteral(_ s: String) -> String {
    "\"" + String(s.unicodeScalars.filter { $0.value > 0x20 && $0.value < 0x7F && $0 != "\"" && $0 != "\\" }.map(Character.init)) + "\""
}

let package = Package(
    name: "stargz-swift",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "stargz", targets: ["stargz"]),
        .executable(name: "stargz-store", targets: ["stargz-store"]),
        // What registries.conf's additional-layer-store-auth-helper names: hands a pull's credentials to the store.
        .executable(name: "stargz-store-helper", targets: ["stargz-store-helper"]),
        .library(name: "EStargz", targets: ["EStargz"]),
        .library(name: "OCI", targets: ["OCI"]),
        .library(name: "Compression", targets: ["Compression"]),
        .library(name: "StargzCLI", targets: ["StargzCLI"]),
        .library(name: "Registry", targets: ["Registry"]),
        .library(name: "Convert", targets: ["Convert"]),
        .library(name: "FUSE", targets: ["FUSE"]),
        .library(name: "LazyLayer", targets: ["LazyLayer"]),
        .library(name: "Store", targets: ["Store"]),
        .library(name: "Deploy", targets: ["Deploy"]),
        // Drives a lazy layer as the daemon would, with invariants: for the fuzzer (Fuzz/) and its replay in tests.
        .library(name: "FuzzDriver", targets: ["FuzzDriver"]),
        // Starts real registries and tools for tests and benchmarks; not for products.
        .library(name: "TestSupport", targets: ["TestSupport"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        // Already in the graph (async-http-client's); the daemon's signals and graceful shutdown.
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        // /metrics: swift-metrics' API in the store, Prometheus' text format from swift-prometheus (upstream's names).
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        .systemLibrary(
            name: "CZlib", pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"]), .yum(["zlib-devel"])]),
        .systemLibrary(
            name: "CLibdeflate", pkgConfig: "libdeflate",
            providers: [.apt(["libdeflate-dev"]), .yum(["libdeflate-devel"])]),
        .systemLibrary(
            name: "CZstd", pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"]), .yum(["libzstd-devel"])]),
        .target(name: "CLinuxSys"),
        .target(
            name: "CBuildInfo",
            cSettings: [.define("STARGZ_VERSION", to: cLiteral(buildVersion)), .define("STARGZ_COMMIT", to: cLiteral(buildCommit))]),
        .target(
            name: "Compression",
            dependencies: ["CZlib", "CLibdeflate", "CZstd"],
            swiftSettings: swiftSettings),
        .target(
            name: "OCI",
            dependencies: [.product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: swiftSettings),
        .target(
            name: "EStargz",
            dependencies: ["OCI", "Compression", "CLinuxSys"],
            swiftSettings: swiftSettings),
        .target(name: "TOML", swiftSettings: swiftSettings),
        .target(name: "CLinuxFUSE"),
        .target(
            name: "LazyLayer",
            dependencies: [
                "EStargz", "FUSE", "OCI", .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: swiftSettings),
        .target(
            name: "FUSE",
            dependencies: ["CLinuxFUSE", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings),
        .target(
            name: "Registry",
            dependencies: [
                "OCI", "TOML",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings),
        .target(
            name: "Store",
            dependencies: [
                "CLinuxSys", "LazyLayer", "FUSE", "Registry", "OCI", "EStargz", "TOML", .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: swiftSettings),
        .target(
            name: "Convert",
            dependencies: ["EStargz", "OCI", "Registry", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings),
        .target(name: "Deploy", dependencies: ["TOML", "CLinuxSys"], swiftSettings: swiftSettings),
        .target(
            name: "FuzzDriver",
            dependencies: ["EStargz", "LazyLayer", "FUSE", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings),
        .target(
            name: "TestSupport",
            dependencies: ["OCI", "EStargz", "Registry", "Compression", "LazyLayer", "FUSE", "CLinuxSys"],
            swiftSettings: swiftSettings),
        .target(
            name: "StargzCLI",
            dependencies: [
                "EStargz", "OCI", "CLinuxSys", "CBuildInfo", "Registry", "Convert", "Store", "LazyLayer", "FUSE", "Deploy",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        .executableTarget(
            name: "stargz",
            dependencies: ["StargzCLI", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: swiftSettings),
        .executableTarget(name: "stargz-store", dependencies: ["StargzCLI"], swiftSettings: swiftSettings),
        // No dependencies: it runs once per pull, synchronously inside containers/image.
        .executableTarget(name: "stargz-store-helper", dependencies: ["CLinuxSys"], swiftSettings: swiftSettings),
        .testTarget(name: "CompressionTests", dependencies: ["Compression"], swiftSettings: swiftSettings),
        .testTarget(name: "OCITests", dependencies: ["OCI"], swiftSettings: swiftSettings),
        .testTarget(
            name: "FUSETests", dependencies: ["FUSE", "CLinuxFUSE", .product(name: "Logging", package: "swift-log")],
            exclude: ["Fixtures"],  // recorded requests, read by the tests from the source tree
            swiftSettings: swiftSettings),
        .testTarget(
            name: "LazyLayerTests",
            dependencies: [
                "LazyLayer", "FUSE", "CLinuxFUSE", "CLinuxSys", "Store", "Registry", "EStargz", "OCI", "TestSupport", "FuzzDriver",
            ],
            exclude: ["Fuzz"],  // fuzzer reproducers, read by FuzzRegressionTests from the source tree
            swiftSettings: swiftSettings),
        .testTarget(
            name: "StoreTests",
            dependencies: [
                "Store", "LazyLayer", "FUSE", "Registry", "EStargz", "OCI", "TestSupport", "Convert",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "ConvertTests", dependencies: ["Convert", "Registry", "OCI", "EStargz", "TestSupport"],
            swiftSettings: swiftSettings),
        .testTarget(name: "ConfigTests", dependencies: ["TOML", "Registry", "Store", "OCI"], swiftSettings: swiftSettings),
        .testTarget(
            name: "EStargzTests", dependencies: ["EStargz", "OCI", "Compression", "TestSupport"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "RegistryTests", dependencies: ["Registry", "OCI", "Convert", "EStargz", "TestSupport"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "DeployTests", dependencies: ["Deploy", "TOML", "StargzCLI", "Store", "TestSupport"],
            exclude: ["Golden"], swiftSettings: swiftSettings),
        .testTarget(
            name: "StargzCLITests", dependencies: ["StargzCLI", "EStargz", "OCI", "Registry", "TestSupport"],
            swiftSettings: swiftSettings),
    ]
)
