// SPDX-License-Identifier: MIT
// The Hypervisor interface it implements lives in the trusted core.
@_exported import DMOPTrusted
