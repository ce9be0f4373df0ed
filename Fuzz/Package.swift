// swift-tools-version:6.1
// SPDX-License-Identifier: Apache-2.0
// libFuzzer targets, kept out of the main package so a normal build never needs the sanitizer flags.
// Build and run: scripts/fuzz.sh TARGET SECONDS   (TARGET: FuzzTOC or FuzzLayer)
import PackageDescription

let package = Package(
    name: "stargz-fuzz",
    dependencies: [
        .package(path: ".."),
        // Already in the main package's graph (LazyLayer logs through it); named here for the no-op handler.
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    ],
    targets: [
        .executableTarget(
            name: "FuzzTOC",
            dependencies: [.product(name: "EStargz", package: "main")],
            swiftSettings: [.swiftLanguageMode(.v5)]),
        // Structure-aware: a custom mutator edits an eStargz blob's TOC and gzip members and re-encodes a
        // valid-shaped blob, which is then served through a LazyLayer with the calls the daemon answers.
        .executableTarget(
            name: "FuzzLayer",
            dependencies: [
                .product(name: "EStargz", package: "main"),
                .product(name: "LazyLayer", package: "main"),
                .product(name: "FUSE", package: "main"),
                .product(name: "Compression", package: "main"),
                .product(name: "OCI", package: "main"),
                .product(name: "FuzzDriver", package: "main"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: [.swiftLanguageMode(.v5)]),
    ]
)
