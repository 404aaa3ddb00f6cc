// swift-tools-version:6.1
// dmop-broker: a per-guest process that forwards only the DMOPs its policy
// allows, for its one domain, from a deprivileged QEMU to Xen.
import PackageDescription

let package = Package(
    name: "dmop-broker",
    products: [
        .executable(name: "dmop-broker", targets: ["dmop-broker"]),
        .library(name: "DMOPClient", targets: ["DMOPClient"]),
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
        .target(name: "CPosix"),

        // Pure: catalogue, wire codec, policy, decision. No OS calls.
        .target(name: "DMOPCore", dependencies: ["CXen"]),
        // Typed file descriptors, errno, SEQPACKET datagrams.
        .target(name: "DMOPPosix", dependencies: ["CPosix"]),
        // The hypervisor interface: real privcmd and the simulated model.
        .target(name: "DMOPHypervisor", dependencies: ["DMOPCore", "DMOPPosix", "CXen"]),
        // prctl, setres*id, close_range, the SIGSYS reporter: for DMOPSandbox.
        .target(name: "CSandbox"),
        // Privilege drop, fd hygiene, rlimits, seccomp.
        .target(name: "DMOPSandbox", dependencies: ["DMOPPosix", "CSeccomp", "CXen", "CSandbox"]),
        // Installs the broker's filter, then does one forbidden thing (tests).
        .executableTarget(name: "dmop-seccomp-probe", dependencies: ["DMOPSandbox", "DMOPPosix", "CSandbox", "CXen"]),
        // Socket setup, request loop, audit log.
        .target(name: "DMOPServer", dependencies: [
            "DMOPCore", "DMOPPosix", "DMOPHypervisor",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Swift client API.
        .target(name: "DMOPClient", dependencies: ["DMOPCore", "DMOPPosix"]),

        .executableTarget(name: "dmop-broker", dependencies: [
            "DMOPCore", "DMOPPosix", "DMOPHypervisor", "DMOPSandbox", "DMOPServer", "DMOPClient",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),

        .testTarget(name: "DMOPBrokerTests", dependencies: [
            "DMOPCore", "DMOPPosix", "DMOPHypervisor", "DMOPSandbox", "DMOPServer", "DMOPClient", "CXen",
            "dmop-broker",
        ]),
    ]
)
