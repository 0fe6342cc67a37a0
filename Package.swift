// swift-tools-version:6.0
import PackageDescription

// Where a C target gets its system library from on Debian.
let debianDevPackages: [String] = ["libunwind-dev", "libdw-dev", "libelf-dev", "zlib1g-dev"]

let cSettings: [CSetting] = [.define("_GNU_SOURCE")]

let package = Package(
    name: "swiftleak",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "swiftleak", targets: ["swiftleak"]),
        // The LD_PRELOAD interposer. It must need nothing but libc: see
        // CShims/SwiftLeakPreload/preload.c for how the Swift runtime is kept out.
        .library(name: "swiftleak_preload", type: .dynamic, targets: ["SwiftLeakPreload"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // MARK: C side
        .target(
            name: "SwiftLeakEventABI",
            path: "CShims/SwiftLeakEventABI",
            cSettings: cSettings
        ),
        .target(
            name: "SwiftLeakPreload",
            dependencies: ["SwiftLeakEventABI"],
            path: "CShims/SwiftLeakPreload",
            cSettings: cSettings + [.unsafeFlags(["-O2", "-fexceptions", "-fvisibility=hidden", "-ftls-model=initial-exec"])],
            linkerSettings: [
                .linkedLibrary("dl"),
                // No swiftrt.o: its constructor calls into libswiftCore.
                .unsafeFlags(["-nostartfiles"]),
            ]
        ),
        .target(
            name: "CSwiftLeakSys",
            dependencies: ["SwiftLeakEventABI"],
            path: "CShims/CSwiftLeakSys",
            cSettings: cSettings
        ),
        .systemLibrary(
            name: "CLibDW",
            path: "CShims/CLibDW",
            pkgConfig: "libdw",
            providers: [.apt(["libdw-dev", "libelf-dev"])]
        ),
        .target(
            name: "CSwiftLeakDW",
            dependencies: ["CLibDW"],
            path: "CShims/CSwiftLeakDW",
            cSettings: cSettings,
            linkerSettings: [.linkedLibrary("dw"), .linkedLibrary("elf"), .linkedLibrary("stdc++")]
        ),
        // Cache prefetch for the live-block table (a C builtin Swift does not have).
        .target(
            name: "CSwiftLeakPrefetch",
            path: "CShims/CSwiftLeakPrefetch"
        ),
        .systemLibrary(
            name: "CZlib",
            path: "CShims/CZlib",
            providers: [.apt(["zlib1g-dev"])]
        ),

        // MARK: Swift side
        .target(name: "SwiftLeakCore"),
        .target(name: "SwiftLeakTracer", dependencies: ["SwiftLeakCore", "CSwiftLeakSys"]),
        // Recording: the ring and its drain, turned into a stream of `HeapEvent`s.
        .target(
            name: "SwiftLeakRecorder",
            dependencies: ["SwiftLeakCore", "CSwiftLeakSys", "SwiftLeakEventABI"],
            swiftSettings: [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]
        ),
        // The heap model: a pure consumer of that stream (live blocks, per-stack figures over time).
        .target(
            name: "SwiftLeakModel",
            dependencies: ["SwiftLeakCore", "CSwiftLeakPrefetch", "CSwiftLeakSys"],
            // It applies every event the program publishes; the table's indices are masked into
            // range by construction.
            swiftSettings: [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]
        ),
        // The trace file: gzip'd records of that stream plus what the report needs at the end.
        .target(name: "SwiftLeakTrace", dependencies: ["SwiftLeakCore", "SwiftLeakModel", "CZlib", "CSwiftLeakPrefetch"]),
        .target(name: "SwiftLeakScanner", dependencies: ["SwiftLeakCore", "CSwiftLeakSys"]),
        .target(name: "SwiftLeakSymbolizer", dependencies: ["SwiftLeakCore", "CSwiftLeakDW"]),
        .target(name: "SwiftLeakSuppressions", dependencies: ["SwiftLeakCore"]),
        .target(name: "SwiftLeakReports", dependencies: ["SwiftLeakCore", "SwiftLeakModel", "SwiftLeakSymbolizer", "SwiftLeakSuppressions", "SwiftLeakOutput"]),
        // Files swiftleak writes (reports, traces): opened safely, before the program starts.
        .target(name: "SwiftLeakOutput"),
        .target(
            name: "SwiftLeakSession",
            dependencies: [
                "SwiftLeakCore", "SwiftLeakTracer", "SwiftLeakRecorder", "SwiftLeakModel", "SwiftLeakTrace",
                "SwiftLeakScanner", "SwiftLeakSymbolizer", "SwiftLeakReports", "CSwiftLeakSys",
            ]
        ),
        .executableTarget(
            name: "swiftleak",
            dependencies: [
                "SwiftLeakSession", "SwiftLeakCore", "SwiftLeakReports", "SwiftLeakTracer", "CSwiftLeakSys",
                "SwiftLeakSuppressions", "SwiftLeakSymbolizer",
                "SwiftLeakOutput",
                "SwiftLeakModel", "SwiftLeakTrace",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            // Release: the Swift runtime, Foundation Essentials (ArgumentParser's) and dispatch linked
            // in. Each `swiftleak run` then maps 11 shared libraries instead of 19, and ld.so binds
            // the runtime's symbols once at link time instead of at every start: `swiftleak
            // --version` 8.9 -> 6.9 ms (docs/benchmarks.md, "Fixed cost"). Debug builds keep the
            // shared runtime: the test bundle links this target's code beside swift-testing and
            // XCTest, which exist only as shared libraries, and one process cannot hold two runtimes.
            linkerSettings: [
                .unsafeFlags(["-static-stdlib", "-Xlinker", "-l_FoundationCollections", "-Xlinker", "-l_FoundationCShims"],
                             .when(configuration: .release)),
            ]
        ),

        // MARK: Tests
        .testTarget(
            name: "SwiftLeakCoreTests",
            dependencies: ["SwiftLeakCore", "SwiftLeakRecorder", "SwiftLeakReports"]
        ),
        .testTarget(name: "SwiftLeakSuppressionsTests", dependencies: ["SwiftLeakSuppressions", "SwiftLeakCore"]),
        // Test helpers shared by the test targets (not a product).
        .target(name: "SwiftLeakTestSupport", path: "Tests/SwiftLeakTestSupport"),
        .testTarget(name: "SwiftLeakModelTests", dependencies: ["SwiftLeakModel", "SwiftLeakReports", "SwiftLeakCore", "SwiftLeakTestSupport"]),
        .testTarget(name: "SwiftLeakTraceTests", dependencies: ["SwiftLeakTrace", "SwiftLeakModel", "SwiftLeakCore", "SwiftLeakTestSupport", "CZlib"]),
        .testTarget(name: "SwiftLeakScannerTests", dependencies: ["SwiftLeakScanner", "SwiftLeakCore", "SwiftLeakTestSupport"]),
        .testTarget(name: "SwiftLeakTracerTests", dependencies: ["SwiftLeakTracer", "SwiftLeakCore"]),
        .testTarget(name: "SwiftLeakSymbolizerTests", dependencies: ["SwiftLeakSymbolizer", "SwiftLeakCore"]),
        .testTarget(
            name: "SwiftLeakEndToEndTests",
            dependencies: ["swiftleak", "SwiftLeakCore"]
        ),
    ]
)
