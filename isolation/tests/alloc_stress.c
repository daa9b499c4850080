/* alloc-stress: threads allocating at once against one limit (the multi-process tests).
 *
 *   alloc-stress --threads N --chunk-mib M [--start-file F] [--hold-seconds S] [--churn-seconds S]
 *
 * Each thread allocates chunks until CUDA_ERROR_OUT_OF_MEMORY (after waiting for --start-file to
 * exist, so many processes start together), then the process holds its memory for S seconds and
 * prints one JSON line: pid, MiB granted, OOMs, other errors. --churn-seconds makes every thread
 * allocate and free in a loop instead (a process to SIGKILL at any moment). */
#define _GNU_SOURCE
#include "../tools/drv.h"

#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static struct drv D;
static CUcontext g_ctx;
static size_t g_chunk;
static double g_churn;
static const char *g_start;
static _Atomic unsigned long long g_granted;
static _Atomic int g_ooms, g_errors;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *worker(void *arg)
{
    (void)arg;
    D.CtxSetCurrent(g_ctx);
    while (g_start && access(g_start, F_OK) != 0) usleep(1000);
    if (g_churn > 0) {
        double end = now_s() + g_churn;
        while (now_s() < end) {
            CUdeviceptr p;
            CUresult r = D.MemAlloc(&p, g_chunk);
            if (r == CUDA_SUCCESS) D.MemFree(p);
            else if (r == CUDA_ERROR_OUT_OF_MEMORY) atomic_fetch_add(&g_ooms, 1);
            else atomic_fetch_add(&g_errors, 1);
        }
        return NULL;
    }
    for (;;) {
        CUdeviceptr p;
        CUresult r = D.MemAlloc(&p, g_chunk);
        if (r == CUDA_SUCCESS) {
            atomic_fetch_add(&g_granted, g_chunk);
            continue;
        }
        if (r == CUDA_ERROR_OUT_OF_MEMORY) atomic_fetch_add(&g_ooms, 1);
        else atomic_fetch_add(&g_errors, 1);
        return NULL;
    }
}

int main(int argc, char **argv)
{
    int threads = 4;
    double hold = 0;
    unsigned long long chunk_mib = 64;
    static const struct option opts[] = { { "threads", 1, 0, 't' }, { "chunk-mib", 1, 0, 'c' },
                                          { "start-file", 1, 0, 's' }, { "hold-seconds", 1, 0, 'h' },
                                          { "churn-seconds", 1, 0, 'u' }, { 0, 0, 0, 0 } };
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 't': threads = atoi(optarg); break;
        case 'c': chunk_mib = strtoull(optarg, NULL, 10); break;
        case 's': g_start = optarg; break;
        case 'h': hold = atof(optarg); break;
        case 'u': g_churn = atof(optarg); break;
        default: return 2;
        }
    }
    if (threads < 1 || threads > 64 || !chunk_mib) return 2;
    g_chunk = (size_t)(chunk_mib << 20);
    if (drv_open(&D, DRV_ROUTE_CUDART, 0) != 0) return 2;
    CUdevice dev;
    if (D.Init(0) || D.DeviceGet(&dev, 0) || D.PrimaryCtxRetain(&g_ctx, dev)) return 2;
    pthread_t th[64];
    for (int i = 0; i < threads; i++) pthread_create(&th[i], NULL, worker, NULL);
    for (int i = 0; i < threads; i++) pthread_join(th[i], NULL);
    printf("{\"pid\":%d,\"granted_mib\":%llu,\"ooms\":%d,\"errors\":%d}\n", (int)getpid(),
           (unsigned long long)(atomic_load(&g_granted) >> 20), atomic_load(&g_ooms), atomic_load(&g_errors));
    fflush(stdout);
    if (hold > 0) usleep((useconds_t)(hold * 1e6));
    return 0;
}
