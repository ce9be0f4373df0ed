// swift-tools-version:6.1
// SPDX-License-Identifier: Apache-2.0
// libFuzzer targets, kept out of the main package so a normal build never needs the sanitizer flags.
// Build and run: scripts/fuzz.sh [SECONDS]
import PackageDescription

let package = Package(
    name: "stargz-fuzz",
    dependencies: [.package(path: "..")],
    targets: [
        .executableTarget(
            name: "FuzzTOC",
            dependencies: [.product(name: "EStargz", package: "main")],
            swiftSettings: [.swiftLanguageMode(.v5)]),
    ]
)
