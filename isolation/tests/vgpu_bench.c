/* vgpu-bench: per-call cost of the hot driver entry points, reached the way cudart reaches them.
 * Prints one JSON line of medians in nanoseconds over batches; bench/isolation.py runs it with and
 * without libvgpu preloaded and reports the difference. */
#define _GNU_SOURCE
#include "../tools/drv.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define BATCHES 31

static struct drv D;

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v)
{
    qsort(v, BATCHES, sizeof *v, cmp);
    return v[BATCHES / 2];
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 20000;
    if (n <= 0 || drv_open(&D, DRV_ROUTE_CUDART, 0) != 0) return 2;
    CUdevice dev;
    CUcontext ctx;
    CUmodule mod;
    CUfunction fn;
    if (D.Init(0) || D.DeviceGet(&dev, 0) || D.PrimaryCtxRetain(&ctx, dev) || D.CtxSetCurrent(ctx) ||
        D.ModuleLoadData(&mod, drv_spin_ptx) || D.ModuleGetFunction(&fn, mod, "spin"))
        return 2;
    unsigned long long ns = 1;
    void *params[] = { &ns };
    double launch[BATCHES], alloc[BATCHES], gpa[BATCHES];
    for (int b = 0; b < BATCHES; b++) {
        double t0 = now_ns();
        for (int i = 0; i < n; i++)
            if (D.LaunchKernel(fn, 1, 1, 1, 32, 1, 1, 0, NULL, params, NULL)) return 3;
        launch[b] = (now_ns() - t0) / n;
        D.CtxSynchronize();
        t0 = now_ns();
        for (int i = 0; i < n / 4; i++) {
            CUdeviceptr p;
            if (D.MemAlloc(&p, 1 << 20) || D.MemFree(p)) return 4;
        }
        alloc[b] = (now_ns() - t0) / (n / 4);
        t0 = now_ns();
        for (int i = 0; i < n / 4; i++) {
            void *f;
            CUdriverProcAddressQueryResult st;
            if (D.GetProcAddress("cuMemAlloc", &f, 3020, 0, &st) || !f) return 5;
        }
        gpa[b] = (now_ns() - t0) / (n / 4);
    }
    printf("{\"launch_ns\":%.1f,\"alloc_free_ns\":%.1f,\"get_proc_address_ns\":%.1f}\n", median(launch), median(alloc),
           median(gpa));
    return 0;
}
