/* SPDX-License-Identifier: MIT */
/* The DMOP ABI identifier: one 32-bit number derived, at build time, from
 * the dm_op.h the code is compiled against. HELLO carries it, so a library
 * and a broker agree exactly when the wire they both pass to Xen is laid out
 * the same: every op number, sizeof and every field's offset and width of
 * each payload struct, the header, the buffer descriptor and the constants
 * policies name. __XEN_LATEST_INTERFACE_VERSION__ is deliberately not part of
 * it: Xen 4.19 raised it without changing any of this (see XenReleases.swift).
 *
 * FNV-1a over 32-bit words; the compiler folds it to a constant. A field
 * renamed or removed in a future dm_op.h breaks the build here, which is the
 * point: the catalogue needs review then. Included by cxen.h (Swift) and by
 * the C library (session.c). */
#ifndef DMOP_ABI_H
#define DMOP_ABI_H
#ifndef __XEN_TOOLS__
#define __XEN_TOOLS__ 1
#endif
#include <stddef.h>
#include <stdint.h>
#include <xen/xen.h>
#include <xen/hvm/dm_op.h>
#include <xen/hvm/hvm_op.h>

static inline uint32_t dmop_abi_mix(uint32_t hash, uint32_t word)
{
    for (int i = 0; i < 4; i++) {
        hash ^= (word >> (8 * i)) & 0xffu;
        hash *= 16777619u;
    }
    return hash;
}

static inline uint32_t dmop_abi_identifier(void)
{
    uint32_t h = 2166136261u;
#define DMOP_ABI_WORD(v) (h = dmop_abi_mix(h, (uint32_t)(v)))
#define DMOP_ABI_STRUCT(T) DMOP_ABI_WORD(sizeof(T))
#define DMOP_ABI_FIELD(T, f) (DMOP_ABI_WORD(offsetof(T, f)), DMOP_ABI_WORD(sizeof(((T *)0)->f)))
#define DMOP_ABI_OP(number, T) (DMOP_ABI_WORD(number), DMOP_ABI_STRUCT(T))

    DMOP_ABI_STRUCT(struct xen_dm_op);
    DMOP_ABI_FIELD(struct xen_dm_op, op);
    DMOP_ABI_FIELD(struct xen_dm_op, pad);
    DMOP_ABI_FIELD(struct xen_dm_op, u);
    DMOP_ABI_STRUCT(xen_dm_op_buf_t);
    DMOP_ABI_FIELD(xen_dm_op_buf_t, h);
    DMOP_ABI_FIELD(xen_dm_op_buf_t, size);

    DMOP_ABI_OP(XEN_DMOP_create_ioreq_server, struct xen_dm_op_create_ioreq_server);
    DMOP_ABI_FIELD(struct xen_dm_op_create_ioreq_server, handle_bufioreq);
    DMOP_ABI_FIELD(struct xen_dm_op_create_ioreq_server, pad);
    DMOP_ABI_FIELD(struct xen_dm_op_create_ioreq_server, id);
    DMOP_ABI_WORD(HVM_IOREQSRV_BUFIOREQ_OFF);
    DMOP_ABI_WORD(HVM_IOREQSRV_BUFIOREQ_LEGACY);
    DMOP_ABI_WORD(HVM_IOREQSRV_BUFIOREQ_ATOMIC);

    DMOP_ABI_OP(XEN_DMOP_get_ioreq_server_info, struct xen_dm_op_get_ioreq_server_info);
    DMOP_ABI_FIELD(struct xen_dm_op_get_ioreq_server_info, id);
    DMOP_ABI_FIELD(struct xen_dm_op_get_ioreq_server_info, flags);
    DMOP_ABI_FIELD(struct xen_dm_op_get_ioreq_server_info, bufioreq_port);
    DMOP_ABI_FIELD(struct xen_dm_op_get_ioreq_server_info, ioreq_gfn);
    DMOP_ABI_FIELD(struct xen_dm_op_get_ioreq_server_info, bufioreq_gfn);
    DMOP_ABI_WORD(XEN_DMOP_no_gfns);

    DMOP_ABI_OP(XEN_DMOP_map_io_range_to_ioreq_server, struct xen_dm_op_ioreq_server_range);
    DMOP_ABI_OP(XEN_DMOP_unmap_io_range_from_ioreq_server, struct xen_dm_op_ioreq_server_range);
    DMOP_ABI_FIELD(struct xen_dm_op_ioreq_server_range, id);
    DMOP_ABI_FIELD(struct xen_dm_op_ioreq_server_range, pad);
    DMOP_ABI_FIELD(struct xen_dm_op_ioreq_server_range, type);
    DMOP_ABI_FIELD(struct xen_dm_op_ioreq_server_range, start);
    DMOP_ABI_FIELD(struct xen_dm_op_ioreq_server_range, end);
    DMOP_ABI_WORD(XEN_DMOP_IO_RANGE_PORT);
    DMOP_ABI_WORD(XEN_DMOP_IO_RANGE_MEMORY);
    DMOP_ABI_WORD(XEN_DMOP_IO_RANGE_PCI);
    DMOP_ABI_WORD(XEN_DMOP_PCI_SBDF(1, 2, 3, 4));

    DMOP_ABI_OP(XEN_DMOP_set_ioreq_server_state, struct xen_dm_op_set_ioreq_server_state);
    DMOP_ABI_FIELD(struct xen_dm_op_set_ioreq_server_state, id);
    DMOP_ABI_FIELD(struct xen_dm_op_set_ioreq_server_state, enabled);
    DMOP_ABI_FIELD(struct xen_dm_op_set_ioreq_server_state, pad);

    DMOP_ABI_OP(XEN_DMOP_destroy_ioreq_server, struct xen_dm_op_destroy_ioreq_server);
    DMOP_ABI_FIELD(struct xen_dm_op_destroy_ioreq_server, id);
    DMOP_ABI_FIELD(struct xen_dm_op_destroy_ioreq_server, pad);

    DMOP_ABI_OP(XEN_DMOP_track_dirty_vram, struct xen_dm_op_track_dirty_vram);
    DMOP_ABI_FIELD(struct xen_dm_op_track_dirty_vram, nr);
    DMOP_ABI_FIELD(struct xen_dm_op_track_dirty_vram, pad);
    DMOP_ABI_FIELD(struct xen_dm_op_track_dirty_vram, first_pfn);

    DMOP_ABI_OP(XEN_DMOP_set_pci_intx_level, struct xen_dm_op_set_pci_intx_level);
    DMOP_ABI_FIELD(struct xen_dm_op_set_pci_intx_level, domain);
    DMOP_ABI_FIELD(struct xen_dm_op_set_pci_intx_level, bus);
    DMOP_ABI_FIELD(struct xen_dm_op_set_pci_intx_level, device);
    DMOP_ABI_FIELD(struct xen_dm_op_set_pci_intx_level, intx);
    DMOP_ABI_FIELD(struct xen_dm_op_set_pci_intx_level, level);

    DMOP_ABI_OP(XEN_DMOP_set_isa_irq_level, struct xen_dm_op_set_isa_irq_level);
    DMOP_ABI_FIELD(struct xen_dm_op_set_isa_irq_level, isa_irq);
    DMOP_ABI_FIELD(struct xen_dm_op_set_isa_irq_level, level);

    DMOP_ABI_OP(XEN_DMOP_set_pci_link_route, struct xen_dm_op_set_pci_link_route);
    DMOP_ABI_FIELD(struct xen_dm_op_set_pci_link_route, link);
    DMOP_ABI_FIELD(struct xen_dm_op_set_pci_link_route, isa_irq);

    DMOP_ABI_OP(XEN_DMOP_modified_memory, struct xen_dm_op_modified_memory);
    DMOP_ABI_FIELD(struct xen_dm_op_modified_memory, nr_extents);
    DMOP_ABI_FIELD(struct xen_dm_op_modified_memory, opaque);
    DMOP_ABI_STRUCT(struct xen_dm_op_modified_memory_extent);
    DMOP_ABI_FIELD(struct xen_dm_op_modified_memory_extent, nr);
    DMOP_ABI_FIELD(struct xen_dm_op_modified_memory_extent, pad);
    DMOP_ABI_FIELD(struct xen_dm_op_modified_memory_extent, first_pfn);

    DMOP_ABI_OP(XEN_DMOP_set_mem_type, struct xen_dm_op_set_mem_type);
    DMOP_ABI_FIELD(struct xen_dm_op_set_mem_type, nr);
    DMOP_ABI_FIELD(struct xen_dm_op_set_mem_type, mem_type);
    DMOP_ABI_FIELD(struct xen_dm_op_set_mem_type, pad);
    DMOP_ABI_FIELD(struct xen_dm_op_set_mem_type, first_pfn);
    DMOP_ABI_WORD(HVMMEM_ram_rw);
    DMOP_ABI_WORD(HVMMEM_ram_ro);
    DMOP_ABI_WORD(HVMMEM_mmio_dm);
    DMOP_ABI_WORD(HVMMEM_unused);
    DMOP_ABI_WORD(HVMMEM_ioreq_server);

    DMOP_ABI_OP(XEN_DMOP_inject_event, struct xen_dm_op_inject_event);
    DMOP_ABI_FIELD(struct xen_dm_op_inject_event, vcpuid);
    DMOP_ABI_FIELD(struct xen_dm_op_inject_event, vector);
    DMOP_ABI_FIELD(struct xen_dm_op_inject_event, type);
    DMOP_ABI_FIELD(struct xen_dm_op_inject_event, insn_len);
    DMOP_ABI_FIELD(struct xen_dm_op_inject_event, pad0);
    DMOP_ABI_FIELD(struct xen_dm_op_inject_event, error_code);
    DMOP_ABI_FIELD(struct xen_dm_op_inject_event, pad1);
    DMOP_ABI_FIELD(struct xen_dm_op_inject_event, cr2);

    DMOP_ABI_OP(XEN_DMOP_inject_msi, struct xen_dm_op_inject_msi);
    DMOP_ABI_FIELD(struct xen_dm_op_inject_msi, data);
    DMOP_ABI_FIELD(struct xen_dm_op_inject_msi, pad);
    DMOP_ABI_FIELD(struct xen_dm_op_inject_msi, addr);

    DMOP_ABI_OP(XEN_DMOP_map_mem_type_to_ioreq_server, struct xen_dm_op_map_mem_type_to_ioreq_server);
    DMOP_ABI_FIELD(struct xen_dm_op_map_mem_type_to_ioreq_server, id);
    DMOP_ABI_FIELD(struct xen_dm_op_map_mem_type_to_ioreq_server, type);
    DMOP_ABI_FIELD(struct xen_dm_op_map_mem_type_to_ioreq_server, flags);
    DMOP_ABI_FIELD(struct xen_dm_op_map_mem_type_to_ioreq_server, opaque);
    DMOP_ABI_WORD(XEN_DMOP_IOREQ_MEM_ACCESS_READ);
    DMOP_ABI_WORD(XEN_DMOP_IOREQ_MEM_ACCESS_WRITE);

    DMOP_ABI_OP(XEN_DMOP_remote_shutdown, struct xen_dm_op_remote_shutdown);
    DMOP_ABI_FIELD(struct xen_dm_op_remote_shutdown, reason);

    DMOP_ABI_OP(XEN_DMOP_relocate_memory, struct xen_dm_op_relocate_memory);
    DMOP_ABI_FIELD(struct xen_dm_op_relocate_memory, size);
    DMOP_ABI_FIELD(struct xen_dm_op_relocate_memory, pad);
    DMOP_ABI_FIELD(struct xen_dm_op_relocate_memory, src_gfn);
    DMOP_ABI_FIELD(struct xen_dm_op_relocate_memory, dst_gfn);

    DMOP_ABI_OP(XEN_DMOP_pin_memory_cacheattr, struct xen_dm_op_pin_memory_cacheattr);
    DMOP_ABI_FIELD(struct xen_dm_op_pin_memory_cacheattr, start);
    DMOP_ABI_FIELD(struct xen_dm_op_pin_memory_cacheattr, end);
    DMOP_ABI_FIELD(struct xen_dm_op_pin_memory_cacheattr, type);
    DMOP_ABI_FIELD(struct xen_dm_op_pin_memory_cacheattr, pad);
    DMOP_ABI_WORD(XEN_DMOP_MEM_CACHEATTR_UC);
    DMOP_ABI_WORD(XEN_DMOP_MEM_CACHEATTR_WC);
    DMOP_ABI_WORD(XEN_DMOP_MEM_CACHEATTR_WT);
    DMOP_ABI_WORD(XEN_DMOP_MEM_CACHEATTR_WP);
    DMOP_ABI_WORD(XEN_DMOP_MEM_CACHEATTR_WB);
    DMOP_ABI_WORD(XEN_DMOP_MEM_CACHEATTR_UCM);
    DMOP_ABI_WORD(XEN_DMOP_DELETE_MEM_CACHEATTR);

    DMOP_ABI_OP(XEN_DMOP_set_irq_level, struct xen_dm_op_set_irq_level);
    DMOP_ABI_FIELD(struct xen_dm_op_set_irq_level, irq);
    DMOP_ABI_FIELD(struct xen_dm_op_set_irq_level, level);
    DMOP_ABI_FIELD(struct xen_dm_op_set_irq_level, pad);

    DMOP_ABI_OP(XEN_DMOP_nr_vcpus, struct xen_dm_op_nr_vcpus);
    DMOP_ABI_FIELD(struct xen_dm_op_nr_vcpus, vcpus);

#undef DMOP_ABI_OP
#undef DMOP_ABI_FIELD
#undef DMOP_ABI_STRUCT
#undef DMOP_ABI_WORD
    return h;
}
#endif
