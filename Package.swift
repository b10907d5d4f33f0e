// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Xerotier",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "xerotier", targets: ["xerotier"]),
        .executable(name: "xeroctl", targets: ["xeroctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "5.0.1"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth.git", from: "2.5.0"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache.git", from: "2.1.1"),
    ],
    targets: [
        // C libraries from Debian packages.
        .systemLibrary(name: "CZeroMQ", pkgConfig: "libzmq", providers: [.apt(["libzmq3-dev"])]),
        .systemLibrary(name: "CHiredis", pkgConfig: "hiredis", providers: [.apt(["libhiredis-dev"])]),

        // Wire types, envelopes, tiers, errors, config. No I/O.
        .target(name: "XeroCore", dependencies: [
            .product(name: "Yams", package: "Yams"),
        ]),
        // ZeroMQ sockets owned by one thread each; async bridges.
        .target(name: "XeroQueue", dependencies: [
            "CZeroMQ", "XeroCore",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Redis over hiredis: connections owned by threads, pipelining, scripts.
        .target(name: "XeroStore", dependencies: [
            "CHiredis", "XeroCore",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The one way to run a job: admit (rate limits), submit, read its events, end it.
        // Used by every inference route and by the batch runner.
        .target(name: "XeroJobs", dependencies: [
            "XeroCore", "XeroQueue", "XeroStore", "XeroMetrics",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Prometheus metrics every process exports (docs/operations.md, "Metrics"): one registry
        // per process, instruments named after vLLM's, served on its own --metrics-port.
        .target(name: "XeroMetrics", dependencies: [
            "XeroCore",
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Metrics", package: "swift-metrics"),
        ]),
        // Tier queues, credits, deadlines, worker liveness.
        .target(name: "XeroRouter", dependencies: [
            "XeroCore", "XeroQueue", "XeroStore", "XeroMetrics",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The built-in GGUF engine, from its first piece: the model-file reader.
        // Its quantized matrix products: AVX2 / AVX-512 VNNI intrinsics Swift SIMD cannot express.
        // No FP contraction: every FMA is written out, so the rounding is exactly llama.cpp's.
        .target(name: "CXeroKernels", cSettings: [.unsafeFlags(["-O3", "-mavx2", "-mfma", "-mf16c", "-ffp-contract=off"])]),
        .target(name: "XeroGGUF", dependencies: ["XeroCore", "CXeroKernels"], swiftSettings: [.unsafeFlags(["-O", "-target-cpu", "haswell"])]),
        // Built-in sentence embeddings: BERT (all-MiniLM-L6-v2) in Swift, optimised even in debug builds.
        .target(name: "XeroEmbeddings", swiftSettings: [.unsafeFlags(["-O"])]),
        // The Engine seam and its implementations.
        .target(name: "XeroEngines", dependencies: ["XeroCore", "XeroEmbeddings", "XeroGGUF"]),
        // The `openai` engine: a worker in front of any OpenAI-compatible server (vLLM, llama-server, …).
        .target(name: "XeroUpstreamEngine", dependencies: [
            "XeroCore", "XeroEngines",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
        ]),
        // Job loop: pulls jobs with credits, drives an Engine, publishes tokens.
        .target(name: "XeroWorker", dependencies: [
            "XeroCore", "XeroQueue", "XeroStore", "XeroEngines", "XeroMetrics",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // HTTP front door: OpenAI routes, SSE, auth.
        // Files and Batches: file store seam, batch records, the batch runner.
        .target(name: "XeroBatch", dependencies: [
            "XeroCore", "XeroQueue", "XeroStore", "XeroJobs",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "XeroGateway", dependencies: [
            "XeroCore", "XeroQueue", "XeroStore", "XeroBatch", "XeroJobs", "XeroEngines",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "HummingbirdTLS", package: "hummingbird"),
            // The console: sessions and bcrypt, and its pages' templates.
            .product(name: "HummingbirdAuth", package: "hummingbird-auth"),
            .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
            .product(name: "Mustache", package: "swift-mustache"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "xerotier", dependencies: [
            "XeroCore", "XeroQueue", "XeroStore", "XeroRouter", "XeroWorker", "XeroEngines", "XeroGateway", "XeroBatch", "XeroJobs", "XeroUpstreamEngine", "XeroMetrics",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
        ]),

        // The management API from a terminal.
        .executableTarget(name: "xeroctl", dependencies: [
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // Load generator and engine baseline for docs/benchmarks.md (bench/run.sh drives it).
        .executableTarget(name: "xerobench", dependencies: [
            "XeroCore", "XeroEngines", "XeroEmbeddings", "XeroGGUF", "XeroRouter", "XeroStore", "XeroJobs", "CXeroKernels",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
        ], path: "bench/xerobench"),

        .testTarget(name: "XeroCoreTests", dependencies: [
            "XeroCore",
            .product(name: "PropertyBased", package: "swift-property-based"),
        ]),
        .testTarget(name: "XeroQueueTests", dependencies: ["XeroQueue", "XeroCore"]),
        .testTarget(name: "XeroStoreTests", dependencies: ["XeroStore", "XeroCore"]),
        .testTarget(name: "XeroRouterTests", dependencies: ["XeroRouter", "XeroCore", "XeroQueue"]),
        .testTarget(name: "XeroWorkerTests", dependencies: ["XeroWorker"]),
        .testTarget(name: "XeroMetricsTests", dependencies: ["XeroMetrics"]),
        .testTarget(name: "XeroEnginesTests", dependencies: ["XeroEngines", "XeroCore", "XeroGGUF"]),
        .testTarget(name: "XeroGGUFTests", dependencies: ["XeroGGUF", "CXeroKernels", "XeroCore"]),
        .testTarget(name: "XeroEmbeddingsTests", dependencies: ["XeroEmbeddings"], resources: [.copy("Fixtures")]),
        .testTarget(name: "XeroBatchTests", dependencies: ["XeroBatch", "XeroCore", "XeroStore"]),
        .testTarget(name: "XeroGatewayTests", dependencies: [
            "XeroGateway", "XeroCore", "XeroJobs", "XeroQueue",
            .product(name: "HummingbirdTesting", package: "hummingbird"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
        ]),
    ]
)
