/* The container's shared region: one mmap'd file ($CUDA_DEVICE_MEMORY_SHARED_CACHE) that every
 * process of a container maps. Fixed layout, read by isolation/region.py: keep both in step and
 * bump VGPU_LAYOUT_VERSION on any change. */
#ifndef VGPU_REGION_H
#define VGPU_REGION_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define VGPU_REGION_MAGIC 0x52475654u /* "TVGR" little-endian */
#define VGPU_LAYOUT_VERSION 1u
#define VGPU_MAX_DEVICES 16
#define VGPU_MAX_SLOTS 1024

struct vgpu_slot { /* 256 bytes */
    _Atomic int32_t pid; /* 0: free */
    _Atomic int32_t hostpid; /* pid as NVML reports it; 0 until known */
    uint64_t starttime; /* /proc/<pid>/stat start time, against PID reuse */
    _Atomic uint64_t used[VGPU_MAX_DEVICES]; /* bytes charged per device */
    uint8_t reserved[112];
};

struct vgpu_device { /* 192 bytes */
    uint64_t limit; /* bytes; 0: no limit */
    uint32_t sm_limit; /* percent; 0: no limit */
    uint32_t sm_count;
    _Atomic uint64_t used; /* bytes, sum over the live slots */
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
    int32_t priority;
    uint32_t policy; /* 0 default, 1 force, 2 disable */
    uint64_t container_id; /* random, names the container in the node region */
    int64_t created_unix;
    uint8_t reserved0[16];
    union { pthread_mutex_t m; uint8_t pad[64]; } lock; /* robust, process-shared */
    struct vgpu_device dev[VGPU_MAX_DEVICES];
    struct vgpu_slot slot[VGPU_MAX_SLOTS];
};

_Static_assert(sizeof(struct vgpu_slot) == 256, "slot layout");
_Static_assert(sizeof(struct vgpu_device) == 192, "device layout");
_Static_assert(offsetof(struct vgpu_region, lock) == 64, "header layout");
_Static_assert(offsetof(struct vgpu_region, dev) == 128, "device table offset");
_Static_assert(offsetof(struct vgpu_region, slot) == 128 + 16 * 192, "slot table offset");

#endif
