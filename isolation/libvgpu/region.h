/* The container's usage region: one mmap'd file that every process of a container maps (bind-mounted
 * by itself into the container, so it cannot be unlinked or replaced there). It holds USAGE only:
 * limits never come from it (limits.c). The container can write every byte of it, so each record
 * carries a check value (vgpu_check) and a record that fails its check counts at the maximum.
 * Fixed layout, read by isolation/region.py: keep both in step and bump VGPU_LAYOUT_VERSION on any
 * change. */
#ifndef VGPU_REGION_H
#define VGPU_REGION_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define VGPU_REGION_MAGIC 0x52475654u /* "TVGR" little-endian */
#define VGPU_LAYOUT_VERSION 2u
#define VGPU_MAX_DEVICES 16
#define VGPU_MAX_SLOTS 1024
/* What a slot that fails its check contributes to every device: more than any limit. */
#define VGPU_USED_INVALID (1ULL << 62)

/* One process. Its owner holds an OFD write lock on the slot's bytes for as long as it lives: the
 * kernel drops the lock when the process dies, so liveness cannot be forged by writing memory. */
struct vgpu_slot { /* 256 bytes */
    _Atomic int32_t pid; /* 0: free */
    _Atomic int32_t hostpid; /* pid as NVML reports it; 0 until known */
    _Atomic uint64_t check; /* vgpu_slot_check() of this slot; 0 is never valid */
    _Atomic uint64_t used[VGPU_MAX_DEVICES]; /* bytes charged per device */
    uint8_t reserved[112];
};

/* One device, in the order of the limits file (the container's canonical order). */
struct vgpu_device { /* 192 bytes */
    _Atomic uint64_t used; /* bytes, sum over the live slots: a cache, rebuilt when its check fails */
    _Atomic uint64_t used_check; /* vgpu_total_check() of used */
    uint32_t sm_count;
    uint32_t pad;
    _Atomic int64_t tat_ns; /* SM limiter: theoretical arrival time (CLOCK_MONOTONIC) */
    _Atomic uint64_t scale_ps; /* SM limiter: admission picoseconds per wave at 100 % */
    _Atomic int64_t tick_ns; /* SM limiter: last controller step */
    _Atomic uint32_t waited; /* a launch waited since the last step */
    _Atomic uint32_t util_permille; /* container utilisation last measured */
    _Atomic int64_t last_kernel_unix; /* seconds since the epoch of the last launch */
    char uuid[48]; /* NVML form, "GPU-..." */
    uint8_t reserved[80];
};

struct vgpu_region {
    uint32_t magic;
    uint32_t layout_version;
    uint32_t struct_size;
    uint32_t max_devices;
    uint32_t max_slots;
    _Atomic uint32_t device_count; /* devices whose uuid/sm_count are filled in */
    _Atomic uint64_t salt; /* random; seeds every check value */
    int64_t created_unix;
    uint8_t reserved0[24];
    union { pthread_mutex_t m; uint8_t pad[64]; } lock; /* robust, process-shared */
    struct vgpu_device dev[VGPU_MAX_DEVICES];
    struct vgpu_slot slot[VGPU_MAX_SLOTS];
};

_Static_assert(sizeof(struct vgpu_slot) == 256, "slot layout");
_Static_assert(sizeof(struct vgpu_device) == 192, "device layout");
_Static_assert(offsetof(struct vgpu_region, salt) == 24, "header layout");
_Static_assert(offsetof(struct vgpu_region, lock) == 64, "header layout");
_Static_assert(offsetof(struct vgpu_region, dev) == 128, "device table offset");
_Static_assert(offsetof(struct vgpu_region, slot) == 128 + 16 * 192, "slot table offset");

/* The check values (isolation/region.py computes the same): a keyed mix of the record's words.
 * Nonzero always, so a zeroed record never passes. They stop scribbles, not a forger who computes
 * them (the salt is readable): that one is caught by the node's watchdog, from NVML. */
uint64_t vgpu_check(uint64_t salt, uint64_t tag, const uint64_t *words, int n);
uint64_t vgpu_total_check(uint64_t salt, int dev, uint64_t used);

#endif
