// SPDX-License-Identifier: MIT
// The floor of dmop-bench's start-up target: spawned and reaped, it does nothing.
