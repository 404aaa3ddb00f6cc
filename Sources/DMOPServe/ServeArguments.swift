// SPDX-License-Identifier: MIT
import DMOPServer
import DMOPSandbox

/// `dmop-broker serve`'s command line, parsed without swift-argument-parser,
/// which the broker does not link (its reflection over the option
/// declarations, its dependencies and the other commands would be most of
/// the broker's start-up). It accepts only a command line that the tools
/// executable's ArgumentParser declaration of `serve` would accept the same
/// way (--name value or --name=value, each option once except --accept-xen,
/// every value valid) and fills ServeOptions as it would. Anything else
/// (--help, an unknown option, a bad value, a repeated option) returns nil:
/// the broker then runs the tools executable, whose ArgumentParser parses
/// the line and prints its usual help or error.
public enum ServeArguments {
    public static func parse(_ arguments: ArraySlice<String>) -> ServeOptions? {
        var values = Values()
        var acceptXen: [XenAcceptance] = []
        var allowRoot = false
        var rest = arguments
        while let argument = rest.popFirst() {
            guard argument.hasPrefix("--"), argument.count > 2 else { return nil }
            var name = String(argument.dropFirst(2))
            var value: String?
            if let equals = name.firstIndex(of: "=") {
                value = String(name[name.index(after: equals)...])
                name = String(name[..<equals])
            }
            if name == "allow-root" {
                guard value == nil, !allowRoot else { return nil }
                allowRoot = true
                continue
            }
            guard let slot = Values.names.firstIndex(of: name) else { return nil }
            if value == nil {
                guard let next = rest.popFirst() else { return nil }
                // ArgumentParser takes a dash-led word as a value only for
                // --domid (parsing: .unconditional); let it say so.
                guard name == "domid" || !next.hasPrefix("-") else { return nil }
                value = next
            }
            guard let value else { return nil }
            if name == "accept-xen" {
                guard let acceptance = XenAcceptance(argument: value) else { return nil }
                acceptXen.append(acceptance)
                continue
            }
            guard values.slots[slot] == nil else { return nil }
            values.slots[slot] = value
        }
        return build(values, acceptXen: acceptXen, allowRoot: allowRoot)
    }

    /// The value of each option that takes one, by name. An array rather
    /// than a Set and a Dictionary: this runs at every start, where the
    /// first use of a generic type costs more than 19 string comparisons.
    struct Values {
        static let names = [
            "domid", "listen", "socket-fd", "policy", "hypervisor", "privcmd", "simulated-record", "simulated-vcpus",
            "simulated-xen-version", "accept-xen", "peer-uid", "ready-fd", "audit-log", "audit-forwards",
            "audit-failure", "audit-interval-ms", "guest-name", "hello-timeout", "user", "seccomp",
        ]
        var slots = [String?](repeating: nil, count: names.count)

        subscript(name: String) -> String? {
            guard let slot = Self.names.firstIndex(of: name) else { return nil }
            return slots[slot]
        }
    }

    private static func build(_ values: Values, acceptXen: [XenAcceptance], allowRoot: Bool) -> ServeOptions? {
        /// nil: absent; .some(nil): present but invalid.
        func convert<T>(_ name: String, _ make: (String) -> T?) -> T?? {
            guard let text = values[name] else { return .none }
            return .some(make(text))
        }
        guard let domidText = values["domid"], let domid = try? Domid.parse(domidText),
              let policy = values["policy"] else { return nil }
        var command = ServeOptions(domid: domid, policy: policy)
        command.listen = values["listen"]
        command.privcmd = values["privcmd"] ?? "/dev/xen/privcmd"
        command.simulatedRecord = values["simulated-record"]
        command.guestName = values["guest-name"]
        command.acceptXen = acceptXen
        switch convert("socket-fd", { Int32($0) }) { case .none: command.socketFD = nil; case .some(let v?): command.socketFD = v; default: return nil }
        switch convert("hypervisor", { HypervisorKind(rawValue: $0) }) { case .none: command.hypervisor = .privcmd; case .some(let v?): command.hypervisor = v; default: return nil }
        switch convert("simulated-vcpus", { UInt32($0) }) { case .none: command.simulatedVcpus = 2; case .some(let v?): command.simulatedVcpus = v; default: return nil }
        switch convert("simulated-xen-version", { XenReleaseArgument(argument: $0) }) { case .none: command.simulatedXenVersion = nil; case .some(let v?): command.simulatedXenVersion = v; default: return nil }
        switch convert("peer-uid", { UInt32($0) }) { case .none: command.peerUid = nil; case .some(let v?): command.peerUid = v; default: return nil }
        switch convert("ready-fd", { Int32($0) }) { case .none: command.readyFd = nil; case .some(let v?): command.readyFd = v; default: return nil }
        switch convert("audit-log", { AuditChannel(argument: $0) }) { case .none: command.auditLog = .stderr; case .some(let v?): command.auditLog = v; default: return nil }
        switch convert("audit-forwards", { AuditForwards(rawValue: $0) }) { case .none: command.auditForwards = .aggregate; case .some(let v?): command.auditForwards = v; default: return nil }
        switch convert("audit-failure", { AuditFailure(rawValue: $0) }) { case .none: command.auditFailure = .refuse; case .some(let v?): command.auditFailure = v; default: return nil }
        switch convert("audit-interval-ms", { UInt32($0) }) { case .none: command.auditIntervalMilliseconds = 10_000; case .some(let v?): command.auditIntervalMilliseconds = v; default: return nil }
        switch convert("hello-timeout", { UInt32($0) }) { case .none: command.helloTimeout = 10; case .some(let v?): command.helloTimeout = v; default: return nil }
        var confinement = ConfinementOptions()
        confinement.user = values["user"]
        confinement.allowRoot = allowRoot
        switch convert("seccomp", { SeccompMode(rawValue: $0) }) { case .none: confinement.seccomp = .enforce; case .some(let v?): confinement.seccomp = v; default: return nil }
        command.confinement = confinement
        // Those refusals are worded by ArgumentParser.
        guard command.invalidCombination() == nil else { return nil }
        return command
    }
}
