/* Lazy initialisation. Loading the library does nothing: no file, no thread, no driver loaded.
 * The first CUDA or NVML call reads the limits (the driver's file, else the env), maps the region
 * and takes a process slot; a successful cuInit then maps the CUDA ordinals to the limits' devices
 * by UUID and starts the tick thread. fork() children start over with their own slot. */
#include "vgpu.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct vgpu_state vgpu;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t g_post_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_post_done;
static int g_atfork;

static void child_after_fork(void)
{
    /* the parent's allocations, slot and thread are not ours */
    vgpu_tables_reset();
    pthread_mutex_init(&g_post_mu, NULL);
    g_post_done = 0;
    vgpu_limiter_reset_after_fork();
    if (vgpu.region && !vgpu.broken) vgpu_region_after_fork();
}

static void init_once(void)
{
    vgpu_log_init();
    vgpu.region_fd = -1;
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) vgpu.index[d] = -1;
    int from_file = vgpu_limits_load(&vgpu.cfg);
    if (from_file < 0) {
        vgpu.broken = 1;
        return;
    }
    if (!from_file) {
        vgpu_config_load(&vgpu.cfg);
        for (int d = 0; d < VGPU_MAX_DEVICES; d++) vgpu.index[d] = d; /* the env is per CUDA ordinal */
    }
    if (!g_atfork) {
        pthread_atfork(NULL, NULL, child_after_fork);
        g_atfork = 1;
    }
    if (!vgpu.cfg.cache_path[0]) return; /* nothing configured: pure pass-through */
    /* the driver creates the file; the env's word may name a new one */
    vgpu.region = vgpu_region_open(vgpu.cfg.cache_path, !from_file, from_file);
    if (!vgpu.region) {
        vgpu.broken = 1;
        return;
    }
    vgpu.slot = vgpu_region_register(vgpu.region);
    if (!vgpu.slot) vgpu.broken = 1;
}

int vgpu_ensure_init(void)
{
    pthread_once(&g_once, init_once);
    return vgpu.broken ? -1 : 0;
}

static void uuid_string(const CUuuid *u, char *out, size_t n)
{
    const unsigned char *b = (const unsigned char *)u->bytes;
    snprintf(out, n, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
             b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

/* The device index of CUDA ordinal d: by UUID in the limits file's list; the ordinal itself under
 * the env (whose limits are per ordinal). */
static int index_of(int d, const char *uuid)
{
    if (!vgpu.cfg.from_file) return d;
    for (int i = 0; i < vgpu.cfg.ndev; i++)
        if (uuid[0] && !strcmp(vgpu.cfg.uuid[i], uuid)) return i;
    return -1;
}

/* A driver whose CUDA UUIDs are not in the form its management tool reports (what the limits file
 * lists) matches none: then the file's order stands for the ordinals, each device still limited. */
static void match_by_order(int n)
{
    for (int d = 0; d < n; d++)
        if (vgpu.index[d] >= 0) return;
    if (n) vgpu_log(LOG_WARN, "no CUDA device's UUID is in the limits file: its devices are taken in CUDA order");
    for (int d = 0; d < n; d++) vgpu.index[d] = d < vgpu.cfg.ndev ? d : -1;
}

void vgpu_post_cuinit(void)
{
    if (__atomic_load_n(&g_post_done, __ATOMIC_ACQUIRE)) return;
    pthread_mutex_lock(&g_post_mu);
    int n = 0;
    char uuids[VGPU_MAX_DEVICES][48];
    if (!g_post_done && CALL(cuDeviceGetCount, &n) == CUDA_SUCCESS) { /* not before cuInit succeeded */
        if (n > VGPU_MAX_DEVICES) n = VGPU_MAX_DEVICES;
        for (int d = 0; d < n; d++) {
            int sms = 0;
            if (CALL(cuDeviceGetAttribute, &sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, d) != CUDA_SUCCESS || sms <= 0)
                sms = 1;
            vgpu.sm_count[d] = sms;
            char s[48] = "";
            CUuuid u;
            if (CALL(cuDeviceGetUuid_v2, &u, d) == CUDA_SUCCESS) uuid_string(&u, s, sizeof s);
            vgpu.index[d] = index_of(d, s);
            memcpy(uuids[d], s, sizeof s);
        }
        if (vgpu.cfg.from_file) match_by_order(n);
        for (int d = 0; d < n; d++) {
            int idx = vgpu.index[d];
            if (idx < 0) {
                vgpu_log(LOG_WARN, "CUDA device %d (%s) is not among the container's devices: allocations there are "
                         "refused", d, uuids[d][0] ? uuids[d] : "no UUID");
                continue;
            }
            if (!vgpu.region) continue;
            struct vgpu_device *dv = &vgpu.region->dev[idx]; /* what the node metrics show next to the usage */
            if (strncmp(dv->uuid, uuids[d], sizeof dv->uuid)) memcpy(dv->uuid, uuids[d], sizeof dv->uuid);
            dv->sm_count = (uint32_t)vgpu.sm_count[d];
            if ((uint32_t)idx + 1 > atomic_load(&vgpu.region->device_count))
                atomic_store(&vgpu.region->device_count, (uint32_t)idx + 1);
        }
        vgpu.ndev = n;
        if (vgpu.region) vgpu_tick_start();
        __atomic_store_n(&g_post_done, 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&g_post_mu);
}

int vgpu_current_device(void)
{
    CUdevice d = -1;
    if (CALL(cuCtxGetDevice, &d) != CUDA_SUCCESS) return -1;
    return d;
}

/* A normal exit gives the slot back at once (the driver frees the process's memory); a killed
 * process's slot is reclaimed by the next process that finds its lock gone. */
__attribute__((destructor)) static void release_slot(void) { vgpu_region_release(); }
