/* Launches. With no SM limit and nothing paused the wrapper costs two relaxed atomic loads (the
 * gate and the "launched" flag) on top of the driver call; otherwise the slow path meters the
 * launch (limiter.c). Graph launches are metered by the kernels their graph holds. */
#include "vgpu.h"

#include <stdlib.h>

#define GATE(name, blocks)                                                                       \
    void *f_ = vgpu_real[H_##name];                                                              \
    if (__builtin_expect(!f_, 0)) {                                                              \
        vgpu_resolve_cuda();                                                                     \
        if (!(f_ = vgpu_real[H_##name])) return CUDA_ERROR_NOT_SUPPORTED;                        \
    }                                                                                            \
    if (__builtin_expect(atomic_load_explicit(&vgpu_launch_gate, memory_order_relaxed), 0)) {    \
        int dev_ = vgpu_current_device();                                                        \
        if (dev_ >= 0) vgpu_launch_slow(dev_, (blocks));                                         \
    }                                                                                            \
    if (!atomic_load_explicit(&vgpu_launched, memory_order_relaxed))                             \
        atomic_store_explicit(&vgpu_launched, 1, memory_order_relaxed);

#define BLOCKS(x, y, z) ((uint64_t)(x) * (uint64_t)(y) * (uint64_t)(z))

VGPU_EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                                    unsigned bz, unsigned shmem, CUstream s, void **params, void **extra)
{
    GATE(cuLaunchKernel, BLOCKS(gx, gy, gz));
    return ((__typeof__(&cuLaunchKernel))f_)(f, gx, gy, gz, bx, by, bz, shmem, s, params, extra);
}

VGPU_EXPORT CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                                         unsigned by, unsigned bz, unsigned shmem, CUstream s, void **params,
                                         void **extra)
{
    GATE(cuLaunchKernel_ptsz, BLOCKS(gx, gy, gz));
    return ((__typeof__(&cuLaunchKernel_ptsz))f_)(f, gx, gy, gz, bx, by, bz, shmem, s, params, extra);
}

VGPU_EXPORT CUresult cuLaunchKernelEx(const CUlaunchConfig *c, CUfunction f, void **params, void **extra)
{
    GATE(cuLaunchKernelEx, c ? BLOCKS(c->gridDimX, c->gridDimY, c->gridDimZ) : 1);
    return ((__typeof__(&cuLaunchKernelEx))f_)(c, f, params, extra);
}

VGPU_EXPORT CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *c, CUfunction f, void **params, void **extra)
{
    GATE(cuLaunchKernelEx_ptsz, c ? BLOCKS(c->gridDimX, c->gridDimY, c->gridDimZ) : 1);
    return ((__typeof__(&cuLaunchKernelEx_ptsz))f_)(c, f, params, extra);
}

VGPU_EXPORT CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                                               unsigned by, unsigned bz, unsigned shmem, CUstream s, void **params)
{
    GATE(cuLaunchCooperativeKernel, BLOCKS(gx, gy, gz));
    return ((__typeof__(&cuLaunchCooperativeKernel))f_)(f, gx, gy, gz, bx, by, bz, shmem, s, params);
}

VGPU_EXPORT CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                                                    unsigned by, unsigned bz, unsigned shmem, CUstream s,
                                                    void **params)
{
    GATE(cuLaunchCooperativeKernel_ptsz, BLOCKS(gx, gy, gz));
    return ((__typeof__(&cuLaunchCooperativeKernel_ptsz))f_)(f, gx, gy, gz, bx, by, bz, shmem, s, params);
}

/* ---- graphs: count the waves of their kernel nodes once, at instantiation ---- */
static uint64_t graph_waves(CUgraph g, int dev)
{
    size_t n = 0;
    if (CALL(cuGraphGetNodes, g, NULL, &n) != CUDA_SUCCESS || !n) return 1;
    CUgraphNode *nodes = calloc(n, sizeof *nodes);
    if (!nodes) return 1;
    uint64_t waves = 0;
    if (CALL(cuGraphGetNodes, g, nodes, &n) == CUDA_SUCCESS) {
        for (size_t i = 0; i < n; i++) {
            int type = -1;
            CUDA_KERNEL_NODE_PARAMS_v2 p;
            if (CALL(cuGraphNodeGetType, nodes[i], &type) != CUDA_SUCCESS || type != CU_GRAPH_NODE_TYPE_KERNEL) continue;
            if (CALL(cuGraphKernelNodeGetParams_v2, nodes[i], &p) != CUDA_SUCCESS) continue;
            waves += vgpu_waves(dev, BLOCKS(p.gridDimX, p.gridDimY, p.gridDimZ));
        }
    }
    free(nodes);
    return waves ? waves : 1;
}

static void graph_record(CUresult r, CUgraphExec *e, CUgraph g)
{
    if (r == CUDA_SUCCESS && e && vgpu_ensure_init() == 0 && vgpu.region) {
        int dev = vgpu_current_device();
        if (dev >= 0) vgpu_tab_put(TAB_GRAPH, (uint64_t)(uintptr_t)*e, dev, 0, graph_waves(g, dev));
    }
}

#define GRAPH_REAL(name) \
    void *f = vgpu_real[H_##name]; \
    if (!f) { vgpu_resolve_cuda(); if (!(f = vgpu_real[H_##name])) return CUDA_ERROR_NOT_SUPPORTED; }

VGPU_EXPORT CUresult cuGraphInstantiateWithFlags(CUgraphExec *e, CUgraph g, unsigned long long flags)
{
    GRAPH_REAL(cuGraphInstantiateWithFlags);
    CUresult r = ((__typeof__(&cuGraphInstantiateWithFlags))f)(e, g, flags);
    graph_record(r, e, g);
    return r;
}

VGPU_EXPORT CUresult cuGraphInstantiateWithParams(CUgraphExec *e, CUgraph g, CUDA_GRAPH_INSTANTIATE_PARAMS *params)
{
    GRAPH_REAL(cuGraphInstantiateWithParams);
    CUresult r = ((__typeof__(&cuGraphInstantiateWithParams))f)(e, g, params);
    graph_record(r, e, g);
    return r;
}

VGPU_EXPORT CUresult cuGraphInstantiateWithParams_ptsz(CUgraphExec *e, CUgraph g, CUDA_GRAPH_INSTANTIATE_PARAMS *params)
{
    GRAPH_REAL(cuGraphInstantiateWithParams_ptsz);
    CUresult r = ((__typeof__(&cuGraphInstantiateWithParams_ptsz))f)(e, g, params);
    graph_record(r, e, g);
    return r;
}

VGPU_EXPORT CUresult cuGraphExecDestroy(CUgraphExec e)
{
    void *f = vgpu_real[H_cuGraphExecDestroy];
    if (!f) {
        vgpu_resolve_cuda();
        if (!(f = vgpu_real[H_cuGraphExecDestroy])) return CUDA_ERROR_NOT_SUPPORTED;
    }
    struct vgpu_entry ent;
    vgpu_tab_take(TAB_GRAPH, (uint64_t)(uintptr_t)e, &ent);
    return ((__typeof__(&cuGraphExecDestroy))f)(e);
}

static void graph_gate(CUgraphExec e)
{
    if (!atomic_load_explicit(&vgpu_launch_gate, memory_order_relaxed)) return;
    struct vgpu_entry ent;
    int dev = vgpu_current_device();
    if (dev < 0) return;
    uint64_t waves = vgpu_tab_get(TAB_GRAPH, (uint64_t)(uintptr_t)e, &ent) ? ent.bytes : 1;
    vgpu_graph_slow(dev, waves);
}

VGPU_EXPORT CUresult cuGraphLaunch(CUgraphExec e, CUstream s)
{
    void *f = vgpu_real[H_cuGraphLaunch];
    if (!f) {
        vgpu_resolve_cuda();
        if (!(f = vgpu_real[H_cuGraphLaunch])) return CUDA_ERROR_NOT_SUPPORTED;
    }
    graph_gate(e);
    if (!atomic_load_explicit(&vgpu_launched, memory_order_relaxed)) atomic_store(&vgpu_launched, 1);
    return ((__typeof__(&cuGraphLaunch))f)(e, s);
}

VGPU_EXPORT CUresult cuGraphLaunch_ptsz(CUgraphExec e, CUstream s)
{
    void *f = vgpu_real[H_cuGraphLaunch_ptsz];
    if (!f) {
        vgpu_resolve_cuda();
        if (!(f = vgpu_real[H_cuGraphLaunch_ptsz])) return CUDA_ERROR_NOT_SUPPORTED;
    }
    graph_gate(e);
    if (!atomic_load_explicit(&vgpu_launched, memory_order_relaxed)) atomic_store(&vgpu_launched, 1);
    return ((__typeof__(&cuGraphLaunch_ptsz))f)(e, s);
}
