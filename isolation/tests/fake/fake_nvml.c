/* A fake libnvidia-ml.so.1 over the same state as the fake libcuda.so.1: memory from the arena,
 * the processes that hold a context, and utilisation measured on the shared virtual timeline
 * over the last sample period ($TESSERA_FAKE_NVML_PERIOD_MS, default 100 ms). */
#define _GNU_SOURCE
#include "../../include/cuabi.h"
#include "fake_state.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define EXPORT __attribute__((visibility("default")))

struct nvdev { int magic, sdev; };
#define NV_MAGIC 0x4e564d4c
static struct nvdev g_devs[FAKE_MAX_DEV];
static int g_init;

static nvmlReturn_t init(void)
{
    struct fake_view *v = fake_view();
    if (!v) return NVML_ERROR_UNKNOWN;
    for (int i = 0; i < v->nvis; i++) g_devs[i] = (struct nvdev){ NV_MAGIC, v->vis[i] };
    g_init = 1;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlInit(void) { FAKE_COUNT(nvmlInit); return init(); }
EXPORT nvmlReturn_t nvmlInit_v2(void) { FAKE_COUNT(nvmlInit_v2); return init(); }
EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int f) { (void)f; return init(); }
EXPORT nvmlReturn_t nvmlShutdown(void) { return g_init ? NVML_SUCCESS : NVML_ERROR_UNINITIALIZED; }

EXPORT const char *nvmlErrorString(nvmlReturn_t r)
{
    switch (r) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    default: return "Unknown Error";
    }
}

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *buf, unsigned int len)
{
    if (!buf || !len) return NVML_ERROR_INVALID_ARGUMENT;
    snprintf(buf, len, "580.00.fake");
    return NVML_SUCCESS;
}

static nvmlReturn_t cuda_version(int *v)
{
    struct fake_view *fv = fake_view();
    if (!v) return NVML_ERROR_INVALID_ARGUMENT;
    *v = fv ? fv->st->driver_version : 13000;
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *v) { return cuda_version(v); }
EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *v) { return cuda_version(v); }

#define NEED_INIT() do { if (!g_init) return NVML_ERROR_UNINITIALIZED; } while (0)

static nvmlReturn_t count(unsigned int *n)
{
    NEED_INIT();
    if (!n) return NVML_ERROR_INVALID_ARGUMENT;
    *n = (unsigned int)fake_view()->nvis;
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetCount(unsigned int *n) { return count(n); }
EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *n) { return count(n); }

static nvmlReturn_t by_index(unsigned int i, nvmlDevice_t *d)
{
    NEED_INIT();
    if (!d || i >= (unsigned)fake_view()->nvis) return NVML_ERROR_INVALID_ARGUMENT;
    *d = (nvmlDevice_t)&g_devs[i];
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int i, nvmlDevice_t *d) { return by_index(i, d); }
EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int i, nvmlDevice_t *d) { return by_index(i, d); }

static struct fake_dev *dev_of(nvmlDevice_t d)
{
    struct nvdev *x = (struct nvdev *)d;
    if (!g_init || !x || x < g_devs || x >= g_devs + FAKE_MAX_DEV || x->magic != NV_MAGIC) return NULL;
    return &fake_view()->st->dev[x->sdev];
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *d)
{
    NEED_INIT();
    if (!uuid || !d) return NVML_ERROR_INVALID_ARGUMENT;
    struct fake_view *v = fake_view();
    for (int i = 0; i < v->nvis; i++)
        if (!strcmp(v->st->dev[v->vis[i]].uuid, uuid)) {
            *d = (nvmlDevice_t)&g_devs[i];
            return NVML_SUCCESS;
        }
    return NVML_ERROR_NOT_FOUND;
}

EXPORT nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t d, unsigned int *i)
{
    if (!dev_of(d) || !i) return NVML_ERROR_INVALID_ARGUMENT;
    *i = (unsigned int)((struct nvdev *)d - g_devs);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *buf, unsigned int len)
{
    struct fake_dev *fd = dev_of(d);
    if (!fd || !buf) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(fd->uuid) + 1 > len) return NVML_ERROR_INSUFFICIENT_SIZE;
    snprintf(buf, len, "%s", fd->uuid);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *buf, unsigned int len)
{
    struct fake_dev *fd = dev_of(d);
    if (!fd || !buf || !len) return NVML_ERROR_INVALID_ARGUMENT;
    snprintf(buf, len, "%s", fd->name);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t d, unsigned int *cur, unsigned int *pend)
{
    (void)cur; (void)pend;
    return dev_of(d) ? NVML_ERROR_NOT_SUPPORTED : NVML_ERROR_INVALID_ARGUMENT;
}

static void mem(struct fake_dev *fd, unsigned long long *total, unsigned long long *free_b, unsigned long long *used)
{
    struct fake_state *st = fake_view()->st;
    fake_lock(st);
    fake_reap_locked(st);
    *total = fd->capacity;
    *used = fd->used;
    *free_b = fd->capacity - fd->used;
    fake_unlock(st);
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *m)
{
    FAKE_COUNT(nvmlDeviceGetMemoryInfo);
    struct fake_dev *fd = dev_of(d);
    if (!fd || !m) return NVML_ERROR_INVALID_ARGUMENT;
    mem(fd, &m->total, &m->free, &m->used);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t *m)
{
    FAKE_COUNT(nvmlDeviceGetMemoryInfo_v2);
    struct fake_dev *fd = dev_of(d);
    if (!fd || !m) return NVML_ERROR_INVALID_ARGUMENT;
    if (m->version != nvmlMemory_v2) return NVML_ERROR_INVALID_ARGUMENT;
    m->reserved = 0;
    mem(fd, &m->total, &m->free, &m->used);
    return NVML_SUCCESS;
}

/* Reaping checks every process slot against /proc (PID reuse): a node's worth of processes costs
 * milliseconds. A caller that queries every device in a row (a monitor's scan) pays it once: at most
 * one reap per REAP_NS in this process (the time of the last one is this library's own state, like
 * the device handles above). */
#define REAP_NS 20000000LL
static _Atomic int64_t g_last_reap;

static void reap_now_and_then(struct fake_state *st)
{
    int64_t now = fake_now_ns();
    if (now - atomic_load(&g_last_reap) < REAP_NS) return;
    fake_reap_locked(st);
    atomic_store(&g_last_reap, now);
}

/* Processes holding a context on the device, with the bytes they were granted (the fake CUDA
 * driver's per-process accounting: every copy of it in a process, a dlmopen'd one included, charges
 * the same slot). NVML's per-process figure on a real GPU is the same kind of number: what the
 * driver allocated for the process, whoever asked. */
static nvmlReturn_t procs(nvmlDevice_t d, unsigned int *n, void *out, size_t stride, int v1)
{
    struct fake_dev *fd = dev_of(d);
    if (!fd || !n) return NVML_ERROR_INVALID_ARGUMENT;
    struct fake_state *st = fake_view()->st;
    int sdev = (int)(fd - st->dev);
    fake_lock(st);
    reap_now_and_then(st);
    unsigned found = 0;
    for (int i = 0; i < FAKE_MAX_PROC; i++) {
        struct fake_proc *p = &st->proc[i];
        if (!p->pid || !(p->has_ctx & (1 << sdev))) continue;
        if (out && found < *n) {
            char *slot = (char *)out + found * stride;
            if (v1) {
                nvmlProcessInfo_v1_t *e = (nvmlProcessInfo_v1_t *)(void *)slot;
                e->pid = (unsigned)p->pid;
                e->usedGpuMemory = p->granted[sdev];
            } else {
                nvmlProcessInfo_t *e = (nvmlProcessInfo_t *)(void *)slot;
                e->pid = (unsigned)p->pid;
                e->usedGpuMemory = p->granted[sdev];
                e->gpuInstanceId = e->computeInstanceId = 0xFFFFFFFFu;
            }
        }
        found++;
    }
    fake_unlock(st);
    nvmlReturn_t r = (!out && found) || found > *n ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS;
    *n = found;
    return r;
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t d, unsigned int *n, nvmlProcessInfo_v1_t *p)
{
    FAKE_COUNT(nvmlDeviceGetComputeRunningProcesses);
    return procs(d, n, p, sizeof *p, 1);
}
EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t d, unsigned int *n, nvmlProcessInfo_t *p)
{
    return procs(d, n, p, sizeof *p, 0);
}
EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned int *n, nvmlProcessInfo_t *p)
{
    return procs(d, n, p, sizeof *p, 0);
}

/* The fake runs no graphics work: an empty list, with NVML's answers to the size query. */
static nvmlReturn_t graphics(nvmlDevice_t d, unsigned int *n)
{
    FAKE_COUNT(nvmlDeviceGetGraphicsRunningProcesses);
    if (!dev_of(d) || !n) return NVML_ERROR_INVALID_ARGUMENT;
    *n = 0;
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses(nvmlDevice_t d, unsigned int *n, nvmlProcessInfo_v1_t *p)
{
    (void)p;
    return graphics(d, n);
}
EXPORT nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v2(nvmlDevice_t d, unsigned int *n, nvmlProcessInfo_t *p)
{
    (void)p;
    return graphics(d, n);
}
EXPORT nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlDevice_t d, unsigned int *n, nvmlProcessInfo_t *p)
{
    (void)p;
    return graphics(d, n);
}

static unsigned long long wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000ULL;
}

EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *u)
{
    struct fake_dev *fd = dev_of(d);
    if (!fd || !u) return NVML_ERROR_INVALID_ARGUMENT;
    struct fake_state *st = fake_view()->st;
    int64_t period = (int64_t)st->period_ms * 1000000LL, now = fake_now_ns();
    fake_lock(st);
    int64_t busy = fake_busy_between_locked(fd, 0, now - period, now);
    fake_unlock(st);
    u->gpu = (unsigned)((busy * 100 + period / 2) / period);
    u->memory = 0;
    return NVML_SUCCESS;
}

/* One sample per process that was busy in the last period, stamped now (CPU time in us). */
EXPORT nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t d, nvmlProcessUtilizationSample_t *out,
                                                    unsigned int *n, unsigned long long last_seen)
{
    FAKE_COUNT(nvmlDeviceGetProcessUtilization);
    struct fake_dev *fd = dev_of(d);
    if (!fd || !n) return NVML_ERROR_INVALID_ARGUMENT;
    struct fake_state *st = fake_view()->st;
    int64_t period = (int64_t)st->period_ms * 1000000LL, now = fake_now_ns();
    unsigned long long stamp = wall_us();
    if (last_seen >= stamp) return NVML_ERROR_NOT_FOUND;
    int pids[FAKE_MAX_PROC];
    unsigned util[FAKE_MAX_PROC];
    unsigned found = 0;
    fake_lock(st);
    for (int i = 0; i < FAKE_MAX_PROC; i++) {
        int pid = st->proc[i].pid;
        if (!pid) continue;
        int64_t busy = fake_busy_between_locked(fd, pid, now - period, now);
        if (busy <= 0) continue;
        pids[found] = pid;
        util[found] = (unsigned)((busy * 100 + period / 2) / period);
        found++;
    }
    fake_unlock(st);
    if (!found) return NVML_ERROR_NOT_FOUND;
    if (!out || *n < found) {
        *n = found;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    for (unsigned i = 0; i < found; i++)
        out[i] = (nvmlProcessUtilizationSample_t){ (unsigned)pids[i], stamp, util[i], 0, 0, 0 };
    *n = found;
    return NVML_SUCCESS;
}
