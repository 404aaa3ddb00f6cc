// SPDX-License-Identifier: MIT
import CVersion
import DMOPCore
import DMOPTooling
import Glibc

/// The release version (Package.swift).
public let brokerVersion = String(cString: dmop_broker_version())

/// The listen socket this process bound, removed by `fail` on a refused
/// start. Cleared before the seccomp filter is loaded (it forbids unlink).
// SAFETY: the broker is single-threaded: start-up sets it and `fail` reads it,
// both on the main thread.
nonisolated(unsafe) var boundSocketPath: String?

/// Prints one clear line and exits with a status of dmop-broker(8).
public func fail(_ status: ExitStatus, _ message: String) -> Never {
    var line = "dmop-broker: \(message)\n"
    // SAFETY: the view lives for the write, which copies the bytes.
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    if let path = boundSocketPath { unlink(path) }
    Glibc.exit(status.rawValue)
}

/// Loads and parses a policy file, or exits with the policy status.
public func loadPolicy(_ path: String) -> Policy {
    do {
        let bytes = try Files.read(path)
        return try Policy.parse(String(decoding: bytes, as: UTF8.self), file: path)
    } catch let error as PolicyError {
        fail(.policy, "\(error)")
    } catch {
        fail(.policy, "policy \(path): \(error)")
    }
}

/// Why a command-line word is not a guest's domid, in words.
public struct DomidError: Error, CustomStringConvertible {
    public let description: String
}

/// A guest's domid from the command line: decimal, 1 up to below
/// DOMID_FIRST_RESERVED. Domain 0 is never a DMOP target.
public struct Domid: CustomStringConvertible, Sendable {
    public let value: UInt16

    public init?(argument: String) {
        guard let value = try? Self.parse(argument) else { return nil }
        self = value
    }

    private init(value: UInt16) { self.value = value }

    public static func parse(_ argument: String) throws(DomidError) -> Domid {
        let highest = DMOPABI.firstReservedDomid - 1
        guard let value = UInt16(argument) else {
            throw DomidError(description: "'\(argument)' is not a domid: give a number from 1 to \(highest)")
        }
        guard value != 0 else { throw DomidError(description: "domid 0 is dom0, never a device model's guest") }
        guard value <= highest else {
            throw DomidError(description: "domid \(value) is reserved (\(DMOPABI.firstReservedDomid) and above are special ids, not guests)")
        }
        return Domid(value: value)
    }

    public var description: String { String(value) }
}
