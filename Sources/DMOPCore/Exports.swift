// SPDX-License-Identifier: MIT
// DMOPCore is the pure code outside the trust line (the policy parser,
// reason names, logfmt, the Xen release table); it re-exports the trusted
// core so its users need one import.
@_exported import DMOPTrusted
