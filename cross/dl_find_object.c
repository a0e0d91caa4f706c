/*
 * _dl_find_object for static musl binaries.
 *
 * GCC 12's unwinder (libgcc_eh.a, built for glibc >= 2.35) looks up the
 * .eh_frame of the object containing a PC with glibc's _dl_find_object on
 * aarch64 and MIPS. musl has no such function, so linking Rust's musl
 * targets (which link -lunwind, here libgcc_eh.a) fails with an undefined
 * reference. This is the same lookup over musl's dl_iterate_phdr, which also
 * works in static binaries. cross/build.sh compiles it into the per-target
 * libunwind.a next to libgcc_eh's objects.
 *
 * Layout: glibc's struct dl_find_object for targets without
 * DLFO_STRUCT_HAS_EH_DBASE / _EH_COUNT (aarch64, mips, ...).
 */
#define _GNU_SOURCE
#include <link.h>
#include <stddef.h>
#include <stdint.h>

struct dl_find_object {
    unsigned long long dlfo_flags;
    void *dlfo_map_start;
    void *dlfo_map_end;
    struct link_map *dlfo_link_map;
    void *dlfo_eh_frame;
    unsigned long long __dlfo_reserved[7];
};

struct lookup {
    uintptr_t pc;
    struct dl_find_object *out;
    int found;
};

static int visit(struct dl_phdr_info *info, size_t size, void *data)
{
    struct lookup *l = data;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    const void *eh = NULL;
    int hit = 0;
    (void)size;
    for (size_t i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t start = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD) {
            uintptr_t end = start + ph->p_memsz;
            if (start < lo) lo = start;
            if (end > hi) hi = end;
            if (l->pc >= start && l->pc < end) hit = 1;
        } else if (ph->p_type == PT_GNU_EH_FRAME) {
            eh = (const void *)start;
        }
    }
    if (!hit) return 0;
    l->out->dlfo_flags = 0;
    l->out->dlfo_map_start = (void *)lo;
    l->out->dlfo_map_end = (void *)hi;
    l->out->dlfo_link_map = NULL;
    l->out->dlfo_eh_frame = (void *)eh;
    l->found = 1;
    return 1;
}

int _dl_find_object(void *pc, struct dl_find_object *result)
{
    struct lookup l = { (uintptr_t)pc, result, 0 };
    dl_iterate_phdr(visit, &l);
    return l.found && result->dlfo_eh_frame ? 0 : -1;
}
