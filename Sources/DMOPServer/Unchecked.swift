// SPDX-License-Identifier: MIT

/// A value the request loop changes on every request, kept behind a
/// pointer: a stored `var` of a class costs a dynamic exclusivity check on
/// each access (its methods may run while another access is open), memory
/// behind a pointer none. The broker is single-threaded, and the value is
/// only reached through `value`, one access at a time.
final class Unchecked<Value> {
    private let storage: UnsafeMutablePointer<Value>

    init(_ value: Value) {
        storage = .allocate(capacity: 1)
        storage.initialize(to: value)
    }

    deinit {
        storage.deinitialize(count: 1)
        storage.deallocate()
    }

    var value: Value {
        unsafeAddress { UnsafePointer(storage) }
        unsafeMutableAddress { storage }
    }
}
