/* libvgpu internals shared between its files. Each file owns one concern:
 *   limits.c    the driver's limits file (read-only in the container): the limits, when it exists
 *   env.c       the env contract (limits, policy, priority, paths): the fallback without that file
 *   log.c       messages to stderr
 *   resolve.c   real entry points, dlsym and cuGetProcAddress interception by identity
 *   region.c    the container's usage region (robust lock, slots, check values, charges)
 *   memory.c    per-process allocation tables and pool accounting
 *   alloc_hooks.c, launch_hooks.c, nvml_view.c   the exported wrappers
 *   limiter.c   the SM limiter and the background tick
 *   priority.c  task priority and contention across containers (per-container node records)
 *   init.c      lazy initialisation, fork handling */
#ifndef VGPU_H
#define VGPU_H

#include "../include/cuabi.h"
#include "hooks.h"
#include "region.h"
#include "wrappers.h"

#include <stdatomic.h>
#include <stdint.h>

#define VGPU_EXPORT __attribute__((visibility("default")))

/* ---- env.c / limits.c ---- */
enum { POLICY_DEFAULT = 0, POLICY_FORCE = 1, POLICY_DISABLE = 2 };
struct vgpu_config {
    int from_file; /* 1: from the driver's limits file; the isolation env is ignored */
    int ndev; /* file: devices listed, in the container's canonical order; env: VGPU_MAX_DEVICES */
    char uuid[VGPU_MAX_DEVICES][48]; /* file: the devices' UUIDs ("GPU-..."); env: empty */
    uint64_t mem_limit[VGPU_MAX_DEVICES]; /* bytes, 0 none */
    uint32_t sm_limit[VGPU_MAX_DEVICES]; /* percent, 0 none */
    int priority; /* 0 high, 1 low */
    int policy;
    int oversubscribe;
    int any_limit;
    char cache_path[512]; /* the usage region; "" when unset and no limit: no region */
    char node_dir[512]; /* file: the node's record directory, "" none */
    char node_id[128]; /* file: this container's record name in node_dir */
    int period_ms; /* SM controller period */
};
/* Parse "<digits>[k|m|g]" (case-insensitive); 0 on success, -1 if malformed or overflowing. */
int vgpu_parse_size(const char *s, uint64_t *out);
/* Parse a non-negative decimal integer <= max; -1 if malformed. */
int vgpu_parse_uint(const char *s, uint64_t max, uint64_t *out);
void vgpu_config_load(struct vgpu_config *c);

/* The fixed, well-known place of the driver's limits file inside a container (a read-only mount). */
#define VGPU_LIMITS_PATH "/run/tessera/limits"
enum { LIMITS_CONTAINER, LIMITS_NODE_META };
/* 1: loaded from the limits file, 0: there is none (the env applies), -1: one is there but refused
 * (the caller fails CUDA calls: never looser than the file). */
int vgpu_limits_load(struct vgpu_config *c);
/* Parse the text of a limits file (LIMITS_CONTAINER) or of a node record's meta file
 * (LIMITS_NODE_META: priority and devices only). NULL on success, else why (and *line). */
const char *vgpu_limits_parse(const char *text, int kind, struct vgpu_config *c, int *line);

/* ---- log.c ---- */
void vgpu_log_init(void);
void vgpu_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
enum { LOG_ERROR = 0, LOG_WARN = 2, LOG_INFO = 3, LOG_DEBUG = 4 };

/* ---- resolve.c ---- */
extern void *vgpu_real[H_COUNT];
#define REAL(name) ((__typeof__(&name))vgpu_real[H_##name])
extern void *vgpu_use[U_COUNT];
#define USE(name, type) ((type)vgpu_use[U_##name])
void vgpu_resolve_cuda(void);
void vgpu_resolve_nvml(void);
void *vgpu_real_dlsym(void *h, const char *name);
/* The wrapper for a real driver pointer, or NULL if we do not wrap it. */
void *vgpu_wrapper_for(const void *real);

/* ---- init.c ---- */
struct vgpu_state {
    struct vgpu_config cfg;
    struct vgpu_region *region; /* NULL: no region (nothing configured) */
    struct vgpu_slot *slot; /* this process's slot */
    int region_fd; /* holds the OFD lock on our slot; -1 without a region */
    uint64_t region_dev, region_ino; /* what region_fd must refer to */
    int broken; /* the limits or the region were refused: CUDA calls fail cleanly */
    int ndev; /* CUDA ordinals this process sees */
    int sm_count[VGPU_MAX_DEVICES]; /* per CUDA ordinal */
    int index[VGPU_MAX_DEVICES]; /* CUDA ordinal -> device index in the region and config; -1 none */
    _Atomic uint64_t mine[VGPU_MAX_DEVICES]; /* bytes this process charged, per device index: the truth
                                              * its slot is republished from */
};
extern struct vgpu_state vgpu;
/* First CUDA/NVML use: config, region, slot. Returns 0 or -1 (broken). */
int vgpu_ensure_init(void);
/* After a successful cuInit: devices, uuids, the tick thread. */
void vgpu_post_cuinit(void);
int vgpu_current_device(void);
/* The device index (region, config) of a CUDA ordinal; -1 if the container has no such device. */
static inline int vgpu_index(int ordinal)
{
    return ordinal >= 0 && ordinal < VGPU_MAX_DEVICES ? vgpu.index[ordinal] : -1;
}

/* ---- region.c ---- */
/* Open the region file (create it only when `create`; with `reinit`, a damaged file that no live
 * process uses is initialised again). NULL with a message when refused. */
struct vgpu_region *vgpu_region_open(const char *path, int create, int reinit);
/* Take a slot (an OFD lock on its bytes, through vgpu.region_fd). */
struct vgpu_slot *vgpu_region_register(struct vgpu_region *r);
int vgpu_region_lock(struct vgpu_region *r);
void vgpu_region_unlock(struct vgpu_region *r);
/* Rebuild the totals from the slots: dead slots freed, damaged live ones counted at the maximum. */
void vgpu_region_recompute_locked(struct vgpu_region *r);
/* Tick: put our slot back if it was damaged, rebuild a total whose check fails. */
void vgpu_region_heal(void);
/* Give our slot back (exit). */
void vgpu_region_release(void);
/* Charges take a CUDA ordinal. Reserve bytes against its limit; 0 ok, -1 over the limit. */
int vgpu_charge(int dev, uint64_t bytes);
void vgpu_charge_force(int dev, uint64_t bytes);
void vgpu_uncharge(int dev, uint64_t bytes);
/* Limit and use of a device INDEX (see vgpu_index); limit 0: none. */
uint64_t vgpu_limit_at(int idx);
uint64_t vgpu_used_at(int idx);
/* Our slot's hostpid (the PID NVML knows us by). */
void vgpu_region_set_hostpid(int32_t hostpid);
/* In a fork child: a descriptor and a slot of its own. */
void vgpu_region_after_fork(void);

/* ---- memory.c ---- */
struct vgpu_entry { uint64_t key; int32_t dev; int32_t kind; uint64_t bytes; };
enum { TAB_PTR, TAB_HANDLE, TAB_ARRAY, TAB_GRAPH, TAB_COUNT };
void vgpu_tab_put(int tab, uint64_t key, int dev, int kind, uint64_t bytes);
int vgpu_tab_take(int tab, uint64_t key, struct vgpu_entry *out);
int vgpu_tab_get(int tab, uint64_t key, struct vgpu_entry *out);
void vgpu_tables_reset(void);
void vgpu_pool_track(CUmemoryPool pool, int dev);
int vgpu_pool_device(CUmemoryPool pool);
/* Bring the charge of every tracked pool in line with its reserved memory. */
void vgpu_pools_refresh(void);
/* Reconcile one pool after an allocation that pre-charged `tentative`; returns the overshoot that
 * could not be charged within the limit (0 normally). */
uint64_t vgpu_pool_settle(CUmemoryPool pool, int dev, uint64_t tentative);
void vgpu_pool_forget(CUmemoryPool pool);
uint64_t vgpu_pool_reserved(CUmemoryPool pool);
uint64_t vgpu_pool_used(CUmemoryPool pool);

/* ---- limiter.c ---- */
extern _Atomic int vgpu_launch_gate; /* nonzero: launches take the slow path */
extern _Atomic int vgpu_launched; /* a launch happened since the last tick */
void vgpu_launch_slow(int dev, uint64_t blocks);
void vgpu_graph_slow(int dev, uint64_t waves);
void vgpu_tick_start(void);
void vgpu_limiter_reset_after_fork(void);
int vgpu_limiter_active(int dev);
uint64_t vgpu_waves(int dev, uint64_t blocks);

/* ---- priority.c ---- */
/* Open this container's record and the node directory (config from the limits file). */
int vgpu_node_open(const struct vgpu_config *c);
/* Publish on which device indexes this container launched and read the other containers' records:
 * per device index, one with a higher priority (smaller number) active, any other active. Arrays of
 * VGPU_MAX_DEVICES. */
void vgpu_node_update(const int *launched, int *higher_active, int *others_active);

/* ---- nvml_view.c ---- */
/* The device index of an NVML device (by UUID); -1 if not one of the container's. */
int vgpu_nvml_index(nvmlDevice_t d);

#endif
