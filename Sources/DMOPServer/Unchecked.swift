// SPDX-License-Identifier: MIT

/// A value the request loop changes on every request, kept behind a
/// pointer: a stored `var` of a class costs a dynamic exclusivity check on
/// each access (its methods may run while another access is open), memory
/// behind a pointer none. The broker is single-threaded, and the value is
/// only reached through `value`, one access at a time.
final class Unchecked<Value> {
    private let storage: UnsafeMutablePointer<Value>

    init(_ value: Value) {
        // SAFETY: one Value, initialized at once; destroyed and freed once in deinit.
        storage = .allocate(capacity: 1)
        storage.initialize(to: value)
    }

    deinit {
        // SAFETY: the Value init initialized, destroyed and freed exactly once.
        storage.deinitialize(count: 1)
        storage.deallocate()
    }

    var value: Value {
        // SAFETY: the storage holds an initialized Value for the object's life, and
        // accesses never overlap (one thread, one access at a time, as above).
        unsafeAddress { UnsafePointer(storage) }
        unsafeMutableAddress { storage }
    }
}
