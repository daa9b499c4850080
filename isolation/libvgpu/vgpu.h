/* libvgpu internals shared between its files. Each file owns one concern:
 *   env.c       the env contract (limits, policy, priority, paths)
 *   log.c       messages to stderr
 *   resolve.c   real entry points, dlsym and cuGetProcAddress interception by identity
 *   region.c    the container's shared region (robust lock, slots, charges)
 *   memory.c    per-process allocation tables and pool accounting
 *   alloc_hooks.c, launch_hooks.c, nvml_view.c   the exported wrappers
 *   limiter.c   the SM limiter and the background tick
 *   priority.c  the node-wide region for task priority and contention
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

/* ---- env.c ---- */
enum { POLICY_DEFAULT = 0, POLICY_FORCE = 1, POLICY_DISABLE = 2 };
struct vgpu_config {
    uint64_t mem_limit[VGPU_MAX_DEVICES]; /* bytes, 0 none */
    uint32_t sm_limit[VGPU_MAX_DEVICES]; /* percent, 0 none */
    int priority; /* 0 high, 1 low */
    int policy;
    int oversubscribe;
    int any_limit;
    char cache_path[512]; /* "" when unset and no limit: no region */
    char node_dir[512];
    int period_ms; /* SM controller period */
};
/* Parse "<digits>[k|m|g]" (case-insensitive); 0 on success, -1 if malformed or overflowing. */
int vgpu_parse_size(const char *s, uint64_t *out);
/* Parse a non-negative decimal integer <= max; -1 if malformed. */
int vgpu_parse_uint(const char *s, uint64_t max, uint64_t *out);
void vgpu_config_load(struct vgpu_config *c);

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
    int broken; /* the region was refused: CUDA calls fail cleanly */
    int ndev;
    int sm_count[VGPU_MAX_DEVICES];
};
extern struct vgpu_state vgpu;
/* First CUDA/NVML use: config, region, slot. Returns 0 or -1 (broken). */
int vgpu_ensure_init(void);
/* After a successful cuInit: devices, uuids, the tick thread. */
void vgpu_post_cuinit(void);
int vgpu_current_device(void);

/* ---- region.c ---- */
/* Open or create the region file; NULL with a message when refused (corrupt, truncated, foreign). */
struct vgpu_region *vgpu_region_open(const char *path, const struct vgpu_config *cfg);
struct vgpu_slot *vgpu_region_register(struct vgpu_region *r);
int vgpu_region_lock(struct vgpu_region *r);
void vgpu_region_unlock(struct vgpu_region *r);
void vgpu_region_reclaim_locked(struct vgpu_region *r);
/* Reserve bytes on device dev against its limit; 0 ok, -1 over the limit. */
int vgpu_charge(int dev, uint64_t bytes);
void vgpu_charge_force(int dev, uint64_t bytes);
void vgpu_uncharge(int dev, uint64_t bytes);
uint64_t vgpu_limit(int dev);
uint64_t vgpu_used(int dev);
int vgpu_pid_alive(int pid, uint64_t starttime);
uint64_t vgpu_starttime(int pid);

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
int vgpu_node_open(const char *dir);
/* Publish this container's activity on a device and read what others do there. */
void vgpu_node_update(const char *uuid, uint64_t container_id, int priority, int active, int *higher_active,
                      int *others_active);

/* ---- nvml_view.c ---- */
int vgpu_nvml_ordinal(nvmlDevice_t d);

#endif
