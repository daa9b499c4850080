/* Lazy initialisation. Loading the library does nothing: no file, no thread, no driver loaded.
 * The first CUDA or NVML call reads the env, maps the region and takes a process slot; a
 * successful cuInit then records the devices and starts the tick thread. fork() children start
 * over with their own slot. */
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
    vgpu.slot = NULL;
    pthread_mutex_init(&g_post_mu, NULL);
    g_post_done = 0;
    vgpu_limiter_reset_after_fork();
    if (vgpu.region && !vgpu.broken) vgpu.slot = vgpu_region_register(vgpu.region);
}

static void init_once(void)
{
    vgpu_log_init();
    vgpu_config_load(&vgpu.cfg);
    if (!g_atfork) {
        pthread_atfork(NULL, NULL, child_after_fork);
        g_atfork = 1;
    }
    if (!vgpu.cfg.cache_path[0]) return; /* nothing configured: pure pass-through */
    vgpu.region = vgpu_region_open(vgpu.cfg.cache_path, &vgpu.cfg);
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

void vgpu_post_cuinit(void)
{
    if (__atomic_load_n(&g_post_done, __ATOMIC_ACQUIRE)) return;
    pthread_mutex_lock(&g_post_mu);
    if (!g_post_done) {
        int n = 0;
        if (CALL(cuDeviceGetCount, &n) != CUDA_SUCCESS) n = 0;
        if (n > VGPU_MAX_DEVICES) n = VGPU_MAX_DEVICES;
        for (int d = 0; d < n; d++) {
            int sms = 0;
            if (CALL(cuDeviceGetAttribute, &sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, d) != CUDA_SUCCESS || sms <= 0)
                sms = 1;
            vgpu.sm_count[d] = sms;
            if (vgpu.region) {
                struct vgpu_device *dv = &vgpu.region->dev[d];
                CUuuid u;
                if (!dv->uuid[0] && CALL(cuDeviceGetUuid_v2, &u, d) == CUDA_SUCCESS) {
                    char s[48];
                    uuid_string(&u, s, sizeof s);
                    memcpy(dv->uuid, s, sizeof dv->uuid);
                }
                dv->sm_count = (uint32_t)sms;
            }
        }
        vgpu.ndev = n;
        if (vgpu.region && (uint32_t)n > atomic_load(&vgpu.region->device_count))
            atomic_store(&vgpu.region->device_count, (uint32_t)n);
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
 * process's slot is reclaimed by the next process that checks liveness. */
__attribute__((destructor)) static void release_slot(void)
{
    struct vgpu_region *r = vgpu.region;
    struct vgpu_slot *s = vgpu.slot;
    if (!r || !s || atomic_load(&s->pid) != getpid() || vgpu_region_lock(r)) return;
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        uint64_t u = atomic_exchange(&s->used[d], 0), cur = atomic_load(&r->dev[d].used);
        atomic_store(&r->dev[d].used, cur >= u ? cur - u : 0);
    }
    atomic_store(&s->hostpid, 0);
    atomic_store(&s->pid, 0);
    vgpu.slot = NULL;
    vgpu_region_unlock(r);
}
