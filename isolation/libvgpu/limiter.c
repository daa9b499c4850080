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
 * Limits, policy and priority are this process's own (vgpu.cfg, from the limits file); the bucket
 * and the measurements live in the region. The tick thread (started after cuInit) also publishes
 * activity to the node records (priority.c), republishes this process's slot if it was written
 * over (region.c), and keeps the per-process gate: 0 unless a device has an active limit or is
 * paused. */
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

/* The bucket's scale as stored, kept within what the controller can produce (the container can
 * write the region: a scale of 0 or 1 ps must not admit everything). */
static uint64_t scale_of(struct vgpu_device *dv)
{
    uint64_t scale = atomic_load(&dv->scale_ps);
    return !scale ? SCALE_INIT_PS : scale < SCALE_MIN_PS ? SCALE_MIN_PS : scale > SCALE_MAX_PS ? SCALE_MAX_PS : scale;
}

void vgpu_graph_slow(int dev, uint64_t waves)
{
    int idx = vgpu_index(dev);
    if (idx < 0 || !vgpu.region) return;
    struct vgpu_device *dv = &vgpu.region->dev[idx];
    while (atomic_load_explicit(&g_paused[dev], memory_order_relaxed)) {
        atomic_store(&dv->waited, 1);
        sleep_ns(2000000); /* a higher-priority task is active on this device */
    }
    if (!atomic_load_explicit(&g_active[dev], memory_order_relaxed)) return;
    uint32_t limit = vgpu.cfg.sm_limit[idx];
    if (!limit || limit >= 100) return;
    uint64_t scale = scale_of(dv);
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

/* The UUID of CUDA ordinal d: the limits file's, else what CUDA reported into the region. */
static const char *uuid_of(int d)
{
    int idx = vgpu_index(d);
    if (idx < 0) return "";
    return vgpu.cfg.from_file ? vgpu.cfg.uuid[idx] : vgpu.region->dev[idx].uuid;
}

static uint32_t sm_limit_of(int d)
{
    int idx = vgpu_index(d);
    return idx < 0 ? 0 : vgpu.cfg.sm_limit[idx];
}

static int nvml_ready(void)
{
    if (g_nvml_ok >= 0) return g_nvml_ok;
    vgpu_resolve_nvml();
    g_nvml_ok = NCALL(nvmlInit_v2) == NVML_SUCCESS;
    if (!g_nvml_ok) {
        int limited = 0;
        for (int d = 0; d < vgpu.ndev; d++) limited |= sm_limit_of(d) > 0;
        vgpu_log(limited ? LOG_WARN : LOG_INFO,
                 "NVML unavailable: utilisation cannot be measured%s", limited ? "; the SM limit is not enforced" : "");
    }
    unsigned n = 0;
    if (g_nvml_ok && NCALL(nvmlDeviceGetCount_v2, &n) == NVML_SUCCESS) {
        for (int d = 0; d < vgpu.ndev; d++) {
            const char *want = uuid_of(d);
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
        if ((int)procs[i].pid == getpid()) vgpu_region_set_hostpid(getpid());
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

/* One controller step for CUDA ordinal dev; the caller won this period's CAS. */
static void control(int dev, int64_t period_ns)
{
    struct vgpu_device *dv = &vgpu.region->dev[vgpu_index(dev)];
    double u = measure(dev, period_ns);
    if (u < 0) return;
    atomic_store(&dv->util_permille, (uint32_t)(u * 10));
    int waited = atomic_exchange(&dv->waited, 0);
    double lim = sm_limit_of(dev), f = 1.0;
    if (u >= 98) f = u / lim > 2 ? u / lim : 2; /* saturated: the true gain is unknown, move fast */
    else if (u > lim) f = 1 + 0.7 * (u / lim - 1);
    else if (waited) f = u > 0 ? 1 + 0.7 * (u / lim - 1) : 0.25; /* throttled below target: admit more */
    if (f < 0.25) f = 0.25;
    if (f > 4) f = 4;
    double ns = (double)scale_of(dv) * f;
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
        vgpu_region_heal(); /* our slot back if someone wrote over it */
        int any_mem = 0;
        for (int d = 0; d < vgpu.ndev; d++)
            if (vgpu_index(d) >= 0 && atomic_load(&vgpu.mine[vgpu_index(d)])) any_mem = 1;
        int here[VGPU_MAX_DEVICES] = { 0 }, higher[VGPU_MAX_DEVICES], others[VGPU_MAX_DEVICES];
        for (int d = 0; d < vgpu.ndev; d++) {
            int idx = vgpu_index(d);
            /* a process launches where it holds memory (or anywhere, if it holds none) */
            if (idx >= 0 && launched && (!any_mem || atomic_load(&vgpu.mine[idx]))) here[idx] = 1;
        }
        vgpu_node_update(here, higher, others);
        int gate = 0;
        for (int d = 0; d < vgpu.ndev; d++) {
            int idx = vgpu_index(d);
            if (idx < 0) continue;
            struct vgpu_device *dv = &r->dev[idx];
            if (here[idx]) atomic_store(&dv->last_kernel_unix, (int64_t)time(NULL));
            atomic_store(&g_paused[d], higher[idx]);
            int limited = sm_limit_of(d) > 0 && sm_limit_of(d) < 100 && vgpu.cfg.policy != POLICY_DISABLE &&
                          (vgpu.cfg.policy == POLICY_FORCE || !g_node_ok || others[idx]);
            atomic_store(&g_active[d], limited);
            gate |= limited | higher[idx];
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
    g_node_ok = vgpu.cfg.from_file && vgpu_node_open(&vgpu.cfg) == 0;
    int gate = 0;
    for (int d = 0; d < vgpu.ndev; d++) { /* limits apply from the first launch, before any tick */
        int limited = sm_limit_of(d) > 0 && sm_limit_of(d) < 100 && vgpu.cfg.policy != POLICY_DISABLE &&
                      (vgpu.cfg.policy == POLICY_FORCE || !g_node_ok);
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
