// SPDX-License-Identifier: MIT
import DMOPPosix
import DMOPTooling
import Glibc

/// The two executables of the command line. `dmop-broker` serves, and
/// links only what serving needs, so that it starts fast; every other
/// command (and a `serve` line it cannot take whole) is run by
/// `dmop-broker-tools`, which links swift-argument-parser and the tools.
/// Installed, the tools are PREFIX/libexec/dmop-broker/dmop-broker-tools
/// for PREFIX/sbin/dmop-broker; in a build directory the two are side by side.
public enum BrokerExecutables {
    public static let broker = "dmop-broker"
    public static let tools = "dmop-broker-tools"

    /// Where the tools are for the broker at `brokerPath`, in the order looked at.
    public static func toolsCandidates(brokerPath: String) -> [String] {
        let directory = parent(brokerPath)
        return [parent(directory) + "/libexec/dmop-broker/" + tools, directory + "/" + tools]
    }

    /// Where the broker is for the tools at `toolsPath`, in the order looked at.
    public static func brokerCandidates(toolsPath: String) -> [String] {
        let directory = parent(toolsPath)
        return [parent(parent(directory)) + "/sbin/" + broker, directory + "/" + broker]
    }

    /// Runs the tools in this process, with the same arguments and
    /// environment; exits with the tools-missing status if none can be run.
    /// `why` says what the tools have that this executable lacks, when it
    /// is not the parser.
    public static func execTools(_ arguments: [String], why: String? = nil) -> Never {
        guard let me = Files.selfExecutable() else {
            fail(.toolsMissing, "cannot find my own executable (/proc/self/exe), so not the tools either")
        }
        let candidates = toolsCandidates(brokerPath: me)
        // SAFETY: execv gets NUL-terminated copies that live until it
        // returns (on success it does not return; on failure they leak
        // only until the exit below).
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        var tried: [String] = []
        for path in candidates {
            execv(path, argv)
            tried.append("\(path): \(Errno.name(errno))")
        }
        let parserNeed = switch arguments.dropFirst().first {
        case "serve"?: "this serve command line needs the full parser, for its help or its error; it is in"
        case let word?: "'\(word)' is run by"
        case nil: "the usage text is printed by"
        }
        fail(.toolsMissing, "\(why ?? parserNeed) \(tools), which cannot be run: \(tried.joined(separator: "; "))")
    }

    private static func parent(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "" : String(path[..<slash])
    }
}
