/* SPDX-License-Identifier: MIT */
/*
 * dmop_wire.h: the numbers of the dmop-broker wire protocol, versions 1 and 2,
 * for C clients (this library and the C test programs).
 *
 * The contract is man/dmop-broker-protocol.7; every value here is copied
 * from that page, not from Xen: protocol numbers are the project's own.
 * Xen ABI numbers (op codes, struct sizes, the interface version) come from
 * the Xen headers wherever they are used.
 */
#ifndef DMOP_WIRE_H
#define DMOP_WIRE_H

#include <stdint.h>

/* Common header: magic (the bytes 'DMOB'), type, a type-specific u16. */
#define DMOP_WIRE_MAGIC              0x424F4D44u
#define DMOP_WIRE_HEADER_SIZE        8

#define DMOP_WIRE_TYPE_HELLO          0x0001
#define DMOP_WIRE_TYPE_WELCOME        0x0002
#define DMOP_WIRE_TYPE_REFUSED        0x0003
#define DMOP_WIRE_TYPE_REQUEST        0x0010
#define DMOP_WIRE_TYPE_REPLY          0x0011
#define DMOP_WIRE_TYPE_PROTOCOL_ERROR 0x00FF

/* The protocol versions this client speaks. */
#define DMOP_WIRE_VERSION_MIN        1
#define DMOP_WIRE_VERSION_MAX        2
/* The first version with posted requests. */
#define DMOP_WIRE_VERSION_POSTING    2

/* Message sizes. */
#define DMOP_WIRE_HELLO_SIZE          16
#define DMOP_WIRE_WELCOME_SIZE        32
#define DMOP_WIRE_REFUSED_FIXED       20   /* plus text_length bytes */
#define DMOP_WIRE_REQUEST_FIXED       16   /* plus 4 * nr_bufs, plus the buffers */
#define DMOP_WIRE_REPLY_FIXED         24   /* plus 8 * nr_bufs, plus the buffers */
#define DMOP_WIRE_REPLY_DESC_SIZE     8
#define DMOP_WIRE_PROTOCOL_ERROR_FIXED 16  /* plus text_length bytes */
#define DMOP_WIRE_POSTED_FAILURE_SIZE 20   /* REPLY trailer, version 2 */

/* REQUEST flags (bytes 14..15) and REPLY flags (bytes 22..23), version 2. */
#define DMOP_WIRE_REQUEST_POSTED        0x0001
#define DMOP_WIRE_REPLY_POSTED_FAILURE  0x0001

/* Protocol limits: those of Linux IOCTL_PRIVCMD_DM_OP. */
#define DMOP_WIRE_MAX_BUFFERS         16
#define DMOP_WIRE_MAX_BUFFER_SIZE     4096
#define DMOP_WIRE_MAX_REPLY_BUFFERS   2

/* REPLY origin. */
#define DMOP_WIRE_ORIGIN_HYPERVISOR   0
#define DMOP_WIRE_ORIGIN_BROKER       1

/* Reason codes: refusals of a well-formed request (REPLY origin 1) ... */
#define DMOP_REASON_DOMID_MISMATCH      1
#define DMOP_REASON_DOMID_RESERVED      2
#define DMOP_REASON_OP_UNKNOWN          3
#define DMOP_REASON_OP_NOT_ALLOWED      4
#define DMOP_REASON_BAD_BUFFER_COUNT    5
#define DMOP_REASON_BAD_BUFFER_SIZE     6
#define DMOP_REASON_PAYLOAD_FIELD_NONZERO 7
#define DMOP_REASON_CONDITION_FAILED    8
#define DMOP_REASON_RATE_LIMITED        9
#define DMOP_REASON_NOT_OWNER           10
#define DMOP_REASON_AUDIT_UNAVAILABLE   11
#define DMOP_REASON_POSTING_NOT_ALLOWED 12
/* ... and errors that end the session or refuse the hello. */
#define DMOP_REASON_BAD_MAGIC           32
#define DMOP_REASON_TRUNCATED           33
#define DMOP_REASON_OVERSIZED           34
#define DMOP_REASON_UNKNOWN_TYPE        35
#define DMOP_REASON_HELLO_REQUIRED      36
#define DMOP_REASON_DUPLICATE_HELLO     37
#define DMOP_REASON_LENGTH_MISMATCH     38
#define DMOP_REASON_TOO_MANY_BUFFERS    39
#define DMOP_REASON_BUFFER_TOO_LARGE    40
#define DMOP_REASON_FDS_ATTACHED        41
#define DMOP_REASON_HEADER_RESERVED_NONZERO 42
#define DMOP_REASON_VERSION_UNSUPPORTED 43
#define DMOP_REASON_XEN_INTERFACE_MISMATCH 44
#define DMOP_REASON_BAD_HELLO           45

/* Little-endian field access; the protocol is little-endian on every host. */
static inline uint16_t dmop_get16(const unsigned char *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t dmop_get32(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) |
           ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline void dmop_put16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static inline void dmop_put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

/* The name of a reason code as the man page spells it, or "UNKNOWN". */
static inline const char *dmop_reason_name(unsigned int reason)
{
    switch (reason) {
    case DMOP_REASON_DOMID_MISMATCH: return "DOMID_MISMATCH";
    case DMOP_REASON_DOMID_RESERVED: return "DOMID_RESERVED";
    case DMOP_REASON_OP_UNKNOWN: return "OP_UNKNOWN";
    case DMOP_REASON_OP_NOT_ALLOWED: return "OP_NOT_ALLOWED";
    case DMOP_REASON_BAD_BUFFER_COUNT: return "BAD_BUFFER_COUNT";
    case DMOP_REASON_BAD_BUFFER_SIZE: return "BAD_BUFFER_SIZE";
    case DMOP_REASON_PAYLOAD_FIELD_NONZERO: return "PAYLOAD_FIELD_NONZERO";
    case DMOP_REASON_CONDITION_FAILED: return "CONDITION_FAILED";
    case DMOP_REASON_RATE_LIMITED: return "RATE_LIMITED";
    case DMOP_REASON_NOT_OWNER: return "NOT_OWNER";
    case DMOP_REASON_AUDIT_UNAVAILABLE: return "AUDIT_UNAVAILABLE";
    case DMOP_REASON_POSTING_NOT_ALLOWED: return "POSTING_NOT_ALLOWED";
    case DMOP_REASON_BAD_MAGIC: return "BAD_MAGIC";
    case DMOP_REASON_TRUNCATED: return "TRUNCATED";
    case DMOP_REASON_OVERSIZED: return "OVERSIZED";
    case DMOP_REASON_UNKNOWN_TYPE: return "UNKNOWN_TYPE";
    case DMOP_REASON_HELLO_REQUIRED: return "HELLO_REQUIRED";
    case DMOP_REASON_DUPLICATE_HELLO: return "DUPLICATE_HELLO";
    case DMOP_REASON_LENGTH_MISMATCH: return "LENGTH_MISMATCH";
    case DMOP_REASON_TOO_MANY_BUFFERS: return "TOO_MANY_BUFFERS";
    case DMOP_REASON_BUFFER_TOO_LARGE: return "BUFFER_TOO_LARGE";
    case DMOP_REASON_FDS_ATTACHED: return "FDS_ATTACHED";
    case DMOP_REASON_HEADER_RESERVED_NONZERO: return "HEADER_RESERVED_NONZERO";
    case DMOP_REASON_VERSION_UNSUPPORTED: return "VERSION_UNSUPPORTED";
    case DMOP_REASON_XEN_INTERFACE_MISMATCH: return "XEN_INTERFACE_MISMATCH";
    case DMOP_REASON_BAD_HELLO: return "BAD_HELLO";
    default: return "UNKNOWN";
    }
}

#endif /* DMOP_WIRE_H */
