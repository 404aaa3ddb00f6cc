/* SPDX-License-Identifier: MIT */
#ifndef DMOP_VERSION_H
#define DMOP_VERSION_H

/* The release version, as Package.swift defines it for every C target. */
const char *dmop_broker_version(void);

#endif
