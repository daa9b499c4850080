/* The SM limiter: a closed loop on measured utilisation.
 *
 * Launches are admitted by a container-wide GCRA bucket in the shared region, metered in device
 * time: a launch of w waves (blocks / SM count, so small and large GPUs read alike) is charged
 * w x scale x 100 / limit nanoseconds of admission time. The controller measures the container's
 * utilisation from NVML every period and corrects `scale` multiplicatively (U/limit, damped), so
 * the loop's gain does not depend on the SM count, the kernel length or the grid size; when the
 * device is saturated it doubles until it finds the range. One process of the container steps the
 * controller per period (whoever wins the CAS on tick_ns); all processes share the bucket.
 *
 * The tick thread (started after cuInit) also publishes activity to the node region (priority.c)
 * and keeps the per-process gate: 0 unless a device has an active limit or is paused. */
#include "vgpu.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

_Atomic int vgpu_launch_gate;
_Atomic int vgpu_launched;
static _Atomic int g_active[VGPU_MAX_DEVICES];
static _Atomic int g_paused[VGPU_MAX_DEVICES];
static pthread_t g_thread;
static _Atomic int g_thread_started;
static int g_node_ok;

#define TICK_NS 20000000LL /* 20 ms */
#define TOLERANCE_NS 2000000LL /* burst allowed ahead of the schedule */
#define SCALE_INIT_PS 50000000ULL /* 50 us per wave until measured */
#define SCALE_MIN_PS 1000ULL
#define SCALE_MAX_PS 10000000000000ULL /* 10 s per wave */

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_ns(int64_t ns)
{
    if (ns <= 0) return;
    struct timespec ts = { (time_t)(ns / 1000000000LL), (long)(ns % 1000000000LL) };
    nanosleep(&ts, NULL);
}

uint64_t vgpu_waves(int dev, uint64_t blocks)
{
    uint64_t sms = dev >= 0 && dev < VGPU_MAX_DEVICES && vgpu.sm_count[dev] > 0 ? (uint64_t)vgpu.sm_count[dev] : 1;
    uint64_t w = (blocks + sms - 1) / sms;
    return w ? w : 1;
}

int vgpu_limiter_active(int dev) { return dev >= 0 && dev < VGPU_MAX_DEVICES && atomic_load(&g_active[dev]); }

void vgpu_graph_slow(int dev, uint64_t waves)
{
    if (dev < 0 || dev >= VGPU_MAX_DEVICES || !vgpu.region) return;
    struct vgpu_device *dv = &vgpu.region->dev[dev];
    while (atomic_load_explicit(&g_paused[dev], memory_order_relaxed)) {
        atomic_store(&dv->waited, 1);
        sleep_ns(2000000); /* a higher-priority task is active on this device */
    }
    if (!atomic_load_explicit(&g_active[dev], memory_order_relaxed)) return;
    uint32_t limit = dv->sm_limit;
    if (!limit || limit >= 100) return;
    uint64_t scale = atomic_load(&dv->scale_ps);
    if (!scale) scale = SCALE_INIT_PS;
    int64_t cost = (int64_t)((long double)waves * (long double)scale / 1000.0L * 100.0L / (long double)limit);
    for (;;) {
        int64_t tat = atomic_load(&dv->tat_ns), now = mono_ns();
        if (tat > now + TOLERANCE_NS) {
            atomic_store_explicit(&dv->waited, 1, memory_order_relaxed);
            sleep_ns(tat - now - TOLERANCE_NS);
            continue;
        }
        int64_t base = tat > now ? tat : now;
        if (atomic_compare_exchange_weak(&dv->tat_ns, &tat, base + cost)) return;
    }
}

void vgpu_launch_slow(int dev, uint64_t blocks) { vgpu_graph_slow(dev, vgpu_waves(dev, blocks)); }

/* ---- measurement ---- */
static nvmlDevice_t g_nvdev[VGPU_MAX_DEVICES];
static int g_nvml_ok = -1;

static int nvml_ready(void)
{
    if (g_nvml_ok >= 0) return g_nvml_ok;
    vgpu_resolve_nvml();
    g_nvml_ok = NCALL(nvmlInit_v2) == NVML_SUCCESS;
    if (!g_nvml_ok) {
        int limited = 0;
        for (int d = 0; d < vgpu.ndev; d++) limited |= vgpu.region->dev[d].sm_limit > 0;
        vgpu_log(limited ? LOG_WARN : LOG_INFO,
                 "NVML unavailable: utilisation cannot be measured%s", limited ? "; the SM limit is not enforced" : "");
    }
    unsigned n = 0;
    if (g_nvml_ok && NCALL(nvmlDeviceGetCount_v2, &n) == NVML_SUCCESS) {
        for (int d = 0; d < vgpu.ndev; d++) {
            const char *want = vgpu.region->dev[d].uuid;
            for (unsigned i = 0; i < n; i++) { /* match by UUID; index order as the fallback */
                nvmlDevice_t h;
                char u[96];
                if (NCALL(nvmlDeviceGetHandleByIndex_v2, i, &h) != NVML_SUCCESS) continue;
                if (NCALL(nvmlDeviceGetUUID, h, u, sizeof u) == NVML_SUCCESS && !strcmp(u, want)) g_nvdev[d] = h;
            }
            if (!g_nvdev[d] && (unsigned)d < n) NCALL(nvmlDeviceGetHandleByIndex_v2, (unsigned)d, &g_nvdev[d]);
        }
    }
    return g_nvml_ok;
}

static unsigned long long wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000ULL;
}

/* Learn the PID NVML knows this process by: our own, when NVML lists it (same PID namespace). */
static void discover_hostpid(int dev)
{
    if (!vgpu.slot || atomic_load(&vgpu.slot->hostpid) || !g_nvdev[dev] || !vgpu_real[H_nvmlDeviceGetComputeRunningProcesses])
        return;
    nvmlProcessInfo_v1_t procs[256];
    unsigned n = 256;
    if (REAL(nvmlDeviceGetComputeRunningProcesses)(g_nvdev[dev], &n, procs) != NVML_SUCCESS) return;
    for (unsigned i = 0; i < n; i++)
        if ((int)procs[i].pid == getpid()) atomic_store(&vgpu.slot->hostpid, getpid());
}

/* Container utilisation of a device in percent over the last window; -1 if unknown. */
static double measure(int dev, int64_t window_ns)
{
    if (!nvml_ready() || !g_nvdev[dev]) return -1;
    int pids[VGPU_MAX_SLOTS], npids = 0;
    for (int i = 0; i < VGPU_MAX_SLOTS; i++) {
        int hp = atomic_load(&vgpu.region->slot[i].hostpid);
        if (hp && atomic_load(&vgpu.region->slot[i].pid)) pids[npids++] = hp;
    }
    if (!npids) { /* PIDs unknown (own PID namespace): the device-wide figure, an upper bound */
        nvmlUtilization_t u;
        return NCALL(nvmlDeviceGetUtilizationRates, g_nvdev[dev], &u) == NVML_SUCCESS ? (double)u.gpu : -1;
    }
    unsigned long long since = wall_us() - (unsigned long long)(window_ns / 1000);
    unsigned n = 0;
    nvmlReturn_t r = NCALL(nvmlDeviceGetProcessUtilization, g_nvdev[dev], NULL, &n, since);
    if (r == NVML_ERROR_NOT_FOUND) return 0;
    if (r != NVML_ERROR_INSUFFICIENT_SIZE && r != NVML_SUCCESS) return -1;
    n += 16;
    nvmlProcessUtilizationSample_t *s = calloc(n, sizeof *s);
    if (!s) return -1;
    r = NCALL(nvmlDeviceGetProcessUtilization, g_nvdev[dev], s, &n, since);
    double total = 0;
    if (r == NVML_SUCCESS) {
        for (int k = 0; k < npids; k++) {
            double sum = 0;
            int cnt = 0;
            for (unsigned i = 0; i < n; i++)
                if ((int)s[i].pid == pids[k] && s[i].timeStamp > since) {
                    sum += s[i].smUtil;
                    cnt++;
                }
            if (cnt) total += sum / cnt;
        }
    }
    free(s);
    if (r == NVML_ERROR_NOT_FOUND) return 0;
    if (r != NVML_SUCCESS) return -1;
    return total > 100 ? 100 : total;
}

/* One controller step for a device; the caller won this period's CAS. */
static void control(int dev, int64_t period_ns)
{
    struct vgpu_device *dv = &vgpu.region->dev[dev];
    double u = measure(dev, period_ns);
    if (u < 0) return;
    atomic_store(&dv->util_permille, (uint32_t)(u * 10));
    int waited = atomic_exchange(&dv->waited, 0);
    double lim = dv->sm_limit, f = 1.0;
    if (u >= 98) f = u / lim > 2 ? u / lim : 2; /* saturated: the true gain is unknown, move fast */
    else if (u > lim) f = 1 + 0.7 * (u / lim - 1);
    else if (waited) f = u > 0 ? 1 + 0.7 * (u / lim - 1) : 0.25; /* throttled below target: admit more */
    if (f < 0.25) f = 0.25;
    if (f > 4) f = 4;
    uint64_t scale = atomic_load(&dv->scale_ps);
    if (!scale) scale = SCALE_INIT_PS;
    double ns = (double)scale * f;
    if (ns < (double)SCALE_MIN_PS) ns = (double)SCALE_MIN_PS;
    if (ns > (double)SCALE_MAX_PS) ns = (double)SCALE_MAX_PS;
    atomic_store(&dv->scale_ps, (uint64_t)ns);
}

/* Whoever moves tick_ns forward owns this period's step. */
static int win_period(_Atomic int64_t *tick, int64_t now, int64_t period)
{
    int64_t last = atomic_load(tick);
    return now - last >= period && atomic_compare_exchange_strong(tick, &last, now);
}

static int64_t g_metric_tick[VGPU_MAX_DEVICES];
static int64_t g_discover_ns, g_started_ns;

static void *tick_main(void *arg)
{
    (void)arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* never take the application's signals */
    struct vgpu_region *r = vgpu.region;
    int64_t period = (int64_t)vgpu.cfg.period_ms * 1000000LL;
    g_started_ns = mono_ns();
    for (;;) {
        sleep_ns(TICK_NS);
        int64_t now = mono_ns();
        int launched = atomic_exchange(&vgpu_launched, 0);
        if (vgpu.slot && !atomic_load(&vgpu.slot->hostpid) && now - g_discover_ns >= 100000000LL &&
            now - g_started_ns < 60000000000LL) { /* NVML lists a process once it has a context */
            g_discover_ns = now;
            if (nvml_ready())
                for (int d = 0; d < vgpu.ndev; d++) discover_hostpid(d);
        }
        int any_mem = 0;
        for (int d = 0; d < vgpu.ndev; d++)
            if (vgpu.slot && atomic_load(&vgpu.slot->used[d])) any_mem = 1;
        int gate = 0;
        for (int d = 0; d < vgpu.ndev; d++) {
            struct vgpu_device *dv = &r->dev[d];
            /* a process launches where it holds memory (or anywhere, if it holds none) */
            int here = launched && (!any_mem || (vgpu.slot && atomic_load(&vgpu.slot->used[d])));
            if (here) atomic_store(&dv->last_kernel_unix, (int64_t)time(NULL));
            int higher = 0, others = 0;
            if (g_node_ok && dv->uuid[0])
                vgpu_node_update(dv->uuid, r->container_id, r->priority, here, &higher, &others);
            atomic_store(&g_paused[d], higher);
            int limited = dv->sm_limit > 0 && dv->sm_limit < 100 && r->policy != POLICY_DISABLE &&
                          (r->policy == POLICY_FORCE || !g_node_ok || others);
            atomic_store(&g_active[d], limited);
            gate |= limited | higher;
            if (limited) {
                if (win_period(&dv->tick_ns, now, period)) control(d, period);
            } else if (now - g_metric_tick[d] >= 1000000000LL) { /* utilisation for the metrics */
                g_metric_tick[d] = now;
                double u = measure(d, 1000000000LL);
                if (u >= 0) atomic_store(&dv->util_permille, (uint32_t)(u * 10));
            }
        }
        atomic_store(&vgpu_launch_gate, gate);
    }
    return NULL;
}

void vgpu_tick_start(void)
{
    if (atomic_exchange(&g_thread_started, 1)) return;
    if (vgpu.cfg.node_dir[0]) g_node_ok = vgpu_node_open(vgpu.cfg.node_dir) == 0;
    int gate = 0;
    for (int d = 0; d < vgpu.ndev; d++) { /* limits apply from the first launch, before any tick */
        struct vgpu_device *dv = &vgpu.region->dev[d];
        int limited = dv->sm_limit > 0 && dv->sm_limit < 100 && vgpu.region->policy != POLICY_DISABLE &&
                      (vgpu.region->policy == POLICY_FORCE || !g_node_ok);
        atomic_store(&g_active[d], limited);
        gate |= limited;
    }
    atomic_store(&vgpu_launch_gate, gate);
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&g_thread, &a, tick_main, NULL) != 0) {
        vgpu_log(LOG_ERROR, "cannot start the limiter thread: SM limits and priority are not enforced");
        atomic_store(&g_thread_started, 0);
    }
    pthread_attr_destroy(&a);
}

void vgpu_limiter_reset_after_fork(void)
{
    atomic_store(&g_thread_started, 0);
    atomic_store(&vgpu_launch_gate, 0);
    atomic_store(&vgpu_launched, 0);
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        atomic_store(&g_active[d], 0);
        atomic_store(&g_paused[d], 0);
    }
}
