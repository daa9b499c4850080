/* What NVML tells the container (nvidia-smi, pynvml): the limit as total memory, the container's
 * charged bytes as used, free saturating at zero; the process list reduced to the container's own
 * processes with their charged bytes. */
#include "vgpu.h"

#include <string.h>

int vgpu_nvml_index(nvmlDevice_t d)
{
    char u[96];
    if (!vgpu.region || NCALL(nvmlDeviceGetUUID, d, u, sizeof u) != NVML_SUCCESS) return -1;
    for (int i = 0; i < VGPU_MAX_DEVICES; i++) {
        const char *mine = vgpu.cfg.from_file ? (i < vgpu.cfg.ndev ? vgpu.cfg.uuid[i] : "") : vgpu.region->dev[i].uuid;
        if (mine[0] && !strcmp(mine, u)) return i;
    }
    if (vgpu.cfg.from_file) return -1;
    unsigned idx; /* the env's limits are per ordinal: before any CUDA call the NVML index stands in */
    return NCALL(nvmlDeviceGetIndex, d, &idx) == NVML_SUCCESS && idx < VGPU_MAX_DEVICES ? (int)idx : -1;
}

#define NRESOLVE(name) \
    do { if (!vgpu_real[H_##name]) vgpu_resolve_nvml(); \
         if (!vgpu_real[H_##name]) return NVML_ERROR_FUNCTION_NOT_FOUND; } while (0)

static int view(nvmlDevice_t d, unsigned long long *total, unsigned long long *free_b, unsigned long long *used)
{
    if (vgpu_ensure_init() || !vgpu.region) return 0;
    int idx = vgpu_nvml_index(d);
    uint64_t lim = vgpu_limit_at(idx);
    if (!lim) return 0;
    uint64_t u = vgpu_used_at(idx);
    if (u > lim) u = lim; /* a damaged slot counts as exhausting the device */
    *total = lim;
    *used = u;
    *free_b = lim > u ? lim - u : 0;
    return 1;
}

VGPU_EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *m)
{
    NRESOLVE(nvmlDeviceGetMemoryInfo);
    nvmlReturn_t r = REAL(nvmlDeviceGetMemoryInfo)(d, m);
    if (r == NVML_SUCCESS && m) view(d, &m->total, &m->free, &m->used);
    return r;
}

VGPU_EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t *m)
{
    NRESOLVE(nvmlDeviceGetMemoryInfo_v2);
    nvmlReturn_t r = REAL(nvmlDeviceGetMemoryInfo_v2)(d, m);
    if (r == NVML_SUCCESS && m && view(d, &m->total, &m->free, &m->used)) m->reserved = 0;
    return r;
}

/* Keep the container's processes (by the PID NVML knows them by) with their charged bytes. */
static unsigned filter(nvmlDevice_t d, unsigned n, void *buf, size_t stride, int v1)
{
    if (vgpu_ensure_init() || !vgpu.region) return n;
    int idx = vgpu_nvml_index(d);
    unsigned kept = 0;
    for (unsigned i = 0; i < n; i++) {
        char *e = (char *)buf + i * stride;
        unsigned pid = v1 ? ((nvmlProcessInfo_v1_t *)(void *)e)->pid : ((nvmlProcessInfo_t *)(void *)e)->pid;
        const struct vgpu_slot *mine = NULL;
        for (int s = 0; s < VGPU_MAX_SLOTS && !mine; s++)
            if (atomic_load(&vgpu.region->slot[s].pid) && (unsigned)atomic_load(&vgpu.region->slot[s].hostpid) == pid)
                mine = &vgpu.region->slot[s];
        if (!mine) continue;
        unsigned long long used = idx >= 0 ? atomic_load(&mine->used[idx]) : 0;
        if (kept != i) memmove((char *)buf + kept * stride, e, stride);
        char *k = (char *)buf + kept * stride;
        if (v1) ((nvmlProcessInfo_v1_t *)(void *)k)->usedGpuMemory = used;
        else ((nvmlProcessInfo_t *)(void *)k)->usedGpuMemory = used;
        kept++;
    }
    return kept;
}

VGPU_EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t d, unsigned int *n, nvmlProcessInfo_v1_t *p)
{
    NRESOLVE(nvmlDeviceGetComputeRunningProcesses);
    nvmlReturn_t r = REAL(nvmlDeviceGetComputeRunningProcesses)(d, n, p);
    if (r == NVML_SUCCESS && n && p) *n = filter(d, *n, p, sizeof *p, 1);
    return r;
}

VGPU_EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t d, unsigned int *n, nvmlProcessInfo_t *p)
{
    NRESOLVE(nvmlDeviceGetComputeRunningProcesses_v2);
    nvmlReturn_t r = REAL(nvmlDeviceGetComputeRunningProcesses_v2)(d, n, p);
    if (r == NVML_SUCCESS && n && p) *n = filter(d, *n, p, sizeof *p, 0);
    return r;
}

VGPU_EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned int *n, nvmlProcessInfo_t *p)
{
    NRESOLVE(nvmlDeviceGetComputeRunningProcesses_v3);
    nvmlReturn_t r = REAL(nvmlDeviceGetComputeRunningProcesses_v3)(d, n, p);
    if (r == NVML_SUCCESS && n && p) *n = filter(d, *n, p, sizeof *p, 0);
    return r;
}
