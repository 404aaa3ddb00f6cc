// swift-tools-version:6.1
// SPDX-License-Identifier: MIT
// dmop-broker: a per-guest process that forwards only the DMOPs its policy
// allows, for its one domain, from a deprivileged QEMU to Xen.
import PackageDescription

// The release version, written only here: the C targets get it as
// DMOP_BROKER_VERSION, Swift through CVersion; debian/changelog's newest entry
// must name it (VersionTests).
let version = "0.3.0"
let versionDefine = CSetting.define("DMOP_BROKER_VERSION", to: "\"\(version)\"")

// Where the wrapper looks for the drop-in library unless told otherwise:
// Debian's multiarch library directory, in a private subdirectory (not on
// the loader's default path, so only QEMU under the wrapper loads it).
#if arch(x86_64)
let multiarch = "x86_64-linux-gnu"
#elseif arch(arm64)
let multiarch = "aarch64-linux-gnu"
#else
let multiarch = "unknown-linux-gnu"
#endif
let libraryDirDefine = CSetting.define("DMOP_LIBRARY_DIR", to: "\"/usr/lib/\(multiarch)/dmop-broker\"")

// Hardening of release builds, the flags Debian's dpkg-buildflags asks for
// (lintian checks them in the package): the C code gets a stack protector,
// stack-clash and control-flow protection and _FORTIFY_SOURCE; every shipped
// binary is linked with full RELRO and immediate binding (bindnow). Written
// here rather than in debian/rules so that scripts/install, scripts/bench and
// the package build the same binaries and can share one release build.
let hardenedC: [CSetting] = [
    .unsafeFlags(["-fstack-protector-strong", "-fstack-clash-protection", "-fcf-protection",
                  "-D_FORTIFY_SOURCE=2", "-Wformat", "-Werror=format-security"],
                 .when(configuration: .release)),
]
let hardenedLink: [LinkerSetting] = [
    .unsafeFlags(["-Xlinker", "-z", "-Xlinker", "relro", "-Xlinker", "-z", "-Xlinker", "now"],
                 .when(configuration: .release)),
]

// Every C target of the project builds without a warning, in every
// configuration: a warning fails the build.
let strictC: [CSetting] = [.unsafeFlags(["-Wall", "-Wextra", "-Werror"])]
// Each C target's settings, written out here: sums of arrays inside the
// Package(...) expression take Swift 6.2's type checker too long.
let plainC: [CSetting] = strictC + hardenedC
let versionC: [CSetting] = [versionDefine] + plainC
let libraryC: [CSetting] = [.unsafeFlags(["-fvisibility=hidden"])] + plainC
let wrapperC: [CSetting] = [versionDefine, libraryDirDefine] + plainC

// The Swift executables are linked by lld: GNU ld (binutils 2.45, Debian
// unstable) leaves out the RELRO segment in a --static-swift-stdlib link
// despite -z relro; lld keeps it. Both toolchains (swift.org's, Debian's
// swiftlang) ship lld.
let swiftExecutableLink: [LinkerSetting] = hardenedLink + [
    .unsafeFlags(["-use-ld=lld"], .when(configuration: .release)),
]

// Absolute paths for linker flags: SwiftPM may run the linker elsewhere.
let packageDirectory = String(#filePath.dropLast("/Package.swift".count))

// C products that a foreign process loads or execs must not need the Swift
// runtime: swiftc links it by default; -nostartfiles drops swiftrt.o and the
// Embedded mode drops -lswiftCore and its rpath (link step only; no Swift
// code is compiled in these targets).
let noSwiftRuntime: [String] = ["-nostartfiles", "-enable-experimental-feature", "Embedded"]

// The drop-in library's and the wrapper's links (no Swift runtime).
let libraryLink: [LinkerSetting] = hardenedLink + [
    .linkedLibrary("xentoolcore"),
    .unsafeFlags(noSwiftRuntime + [
        "-Xlinker", "-soname=libxendevicemodel.so.1",
        "-Xlinker", "--version-script=\(packageDirectory)/Sources/xendevicemodel/libxendevicemodel.map",
        "-Xlinker", "-z", "-Xlinker", "defs",
    ]),
]
let wrapperLink: [LinkerSetting] = hardenedLink + [.linkedLibrary("seccomp"), .unsafeFlags(noSwiftRuntime)]

let package = Package(
    name: "dmop-broker",
    products: [
        .executable(name: "dmop-broker", targets: ["dmop-broker"]),
        // Every command but serve (README "Installing"): dmop-broker runs it.
        .executable(name: "dmop-broker-tools", targets: ["dmop-broker-tools"]),
        .library(name: "DMOPClient", targets: ["DMOPClient"]),
        // Drop-in libxendevicemodel.so.1 (soname) forwarding to the broker.
        // Not named libxendevicemodel.so, so no -lxendevicemodel can pick it up.
        .library(name: "dmop-xendevicemodel", type: .dynamic, targets: ["xendevicemodel"]),
        .executable(name: "dmop-qemu-wrapper", targets: ["dmop-qemu-wrapper"]),
        .executable(name: "dmop-bench", targets: ["dmop-bench"]),
        .executable(name: "dmop-bench-hello", targets: ["dmop-bench-hello"]),
        .executable(name: "dmop-bench-broker", targets: ["dmop-bench-broker"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // Debian's libxen-dev headers; numbers and layouts come from here only.
        .systemLibrary(name: "CXen", path: "Sources/CXen", providers: [.apt(["libxen-dev"])]),
        .systemLibrary(name: "CSeccomp", path: "Sources/CSeccomp", pkgConfig: "libseccomp",
                       providers: [.apt(["libseccomp-dev"])]),
        // ucred, accept4, SCM_RIGHTS, signal flag: what Swift cannot import.
        .target(name: "CPosix", cSettings: plainC),
        // The version for Swift code (dmop-broker --version, the start line).
        .target(name: "CVersion", cSettings: versionC),

        // Typed file descriptors, errno, SEQPACKET datagrams.
        .target(name: "DMOPPosix", dependencies: ["CPosix"]),
        // The trusted core (README "Trusted core"): what decides that only
        // allowed DMOPs for the one domid reach the hypervisor, and the
        // request handler and all of privcmd (fd, restriction, proof, DM_OP)
        // that carry the decision out. It depends on the C headers only.
        .target(name: "DMOPTrusted", dependencies: ["CXen"]),
        // Pure code beside it, not on the forward path: the policy parser and
        // its printing, reason names, logfmt, Xen releases.
        .target(name: "DMOPCore", dependencies: ["DMOPTrusted"]),
        // The simulated privcmd and Xen (--hypervisor simulated, tests):
        // outside the broker's trusted code.
        .target(name: "DMOPSimulation", dependencies: ["DMOPCore", "DMOPPosix", "CXen"]),
        // Whole-file reads and child processes for the tools, bench and tests.
        .target(name: "DMOPTooling", dependencies: ["DMOPPosix"]),
        // `dmop-broker policy learn`: a policy from audit logs and records.
        .target(name: "DMOPPolicyLearning", dependencies: ["DMOPCore"]),
        // prctl, setres*id, close_range, the SIGSYS reporter: for DMOPSandbox.
        .target(name: "CSandbox", cSettings: plainC),
        // Privilege drop, fd hygiene, rlimits, seccomp.
        .target(name: "DMOPSandbox", dependencies: ["DMOPPosix", "CSeccomp", "CXen", "CSandbox"]),
        // Installs the broker's filter, then does one forbidden thing (tests).
        .executableTarget(name: "dmop-seccomp-probe", dependencies: ["DMOPSandbox", "DMOPPosix", "DMOPTooling", "CSandbox", "CXen"]),
        // Socket setup, request loop, audit log.
        .target(name: "DMOPServer", dependencies: [
            "DMOPCore", "DMOPPosix",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Swift client API and the client's half of the wire codec.
        .target(name: "DMOPClient", dependencies: ["DMOPCore", "DMOPPosix"]),

        // `serve`: its options, their parser (no ArgumentParser), the
        // start-up sequence; shared by the two executables below.
        .target(name: "DMOPServe", dependencies: [
            "CPosix", "CVersion", "DMOPCore", "DMOPPosix", "DMOPSandbox",
            "DMOPServer", "DMOPTooling", .product(name: "Logging", package: "swift-log"),
        ]),
        // `serve --hypervisor simulated` for the executables that carry the
        // simulator; the shipped broker does not link it.
        .target(name: "DMOPSimulatedServe", dependencies: ["CSandbox", "DMOPServe", "DMOPSimulation"]),
        // The broker: serves, and runs dmop-broker-tools for anything else
        // (a simulated serve line included).
        // It links neither swift-argument-parser nor the tools, so that
        // starting one per guest stays cheap (docs/PERFORMANCE.md).
        .executableTarget(name: "dmop-broker", dependencies: ["DMOPServe"], linkerSettings: swiftExecutableLink),
        // The other commands (demo, policy, seccomp-profile, catalogue), the
        // help and the usage errors, with swift-argument-parser.
        .executableTarget(name: "dmop-broker-tools", dependencies: [
            "CPosix", "DMOPCore", "DMOPPosix", "DMOPSimulation", "DMOPSimulatedServe", "DMOPSandbox", "DMOPServe", "DMOPServer",
            "DMOPClient", "DMOPTooling", "DMOPPolicyLearning",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], linkerSettings: swiftExecutableLink),

        // libxendevicemodel.so.1 for unmodified QEMU (C: no Swift runtime in QEMU).
        // Nothing may depend on this target: its link flags are the library's.
        .target(name: "xendevicemodel", exclude: ["libxendevicemodel.map"],
                cSettings: libraryC,
                linkerSettings: libraryLink),
        // device_model_override= wrapper: broker, seccomp, exec QEMU.
        .executableTarget(name: "dmop-qemu-wrapper",
                          cSettings: wrapperC,
                          linkerSettings: wrapperLink),
        // Benchmarks: echo floor vs brokered round trip, decision,
        // start-up, memory. Loads the C library with dlopen, so no link to it.
        .executableTarget(name: "dmop-bench", dependencies: [
            "DMOPCore", "DMOPPosix", "DMOPSimulation", "DMOPClient", "DMOPServer", "DMOPTooling",
            "CPosix",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Fuzz targets: scripts/fuzz builds them with libFuzzer
        // (-DDMOP_FUZZING); a plain build gives replay tools for their inputs.
        // The start-up floor of dmop-bench: a Swift program that does nothing.
        .executableTarget(name: "dmop-bench-hello"),
        // The broker the benchmark starts: dmop-broker plus the simulator.
        .executableTarget(name: "dmop-bench-broker", dependencies: ["DMOPServe", "DMOPSimulatedServe"],
                          linkerSettings: swiftExecutableLink),
        .executableTarget(name: "dmop-fuzz-decoder", dependencies: ["DMOPCore", "DMOPPosix", "DMOPClient", "DMOPTooling"]),
        .executableTarget(name: "dmop-fuzz-request", dependencies: [
            "DMOPCore", "DMOPPosix", "DMOPSimulation", "DMOPServer", "DMOPClient", "DMOPTooling",
            "CXen", .product(name: "Logging", package: "swift-log"),
        ]),

        .testTarget(name: "DMOPBrokerTests", dependencies: [
            "DMOPCore", "DMOPPosix", "DMOPSimulation", "DMOPSandbox", "DMOPServer", "DMOPClient",
            "DMOPTooling", "DMOPPolicyLearning", "CXen", "DMOPServe", "dmop-broker", "dmop-broker-tools",
            "dmop-qemu-wrapper", "CVersion",
        ]),
    ]
)
