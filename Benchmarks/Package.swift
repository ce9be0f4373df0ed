// swift-tools-version:6.1
// SPDX-License-Identifier: Apache-2.0
// Benchmarks, kept out of the main package so its build never pays for them. Run: scripts/bench.sh
import PackageDescription

let package = Package(
    name: "stargz-benchmarks",
    dependencies: [.package(path: "..")],
    targets: [
        .executableTarget(
            name: "EStargzBench",
            dependencies: [
                .product(name: "EStargz", package: "main"),
                .product(name: "Compression", package: "main"),
                .product(name: "OCI", package: "main"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]),
        .executableTarget(
            name: "RegistryBench",
            dependencies: [
                .product(name: "Registry", package: "main"),
                .product(name: "Convert", package: "main"),
                .product(name: "EStargz", package: "main"),
                .product(name: "OCI", package: "main"),
                .product(name: "TestSupport", package: "main"),
                .product(name: "LazyLayer", package: "main"),
                .product(name: "Store", package: "main"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]),
    ]
)
