/* A fake libcuda.so.1 for CPU tests: devices from $TESSERA_FAKE_GPUS, a physical arena per device
 * that runs out, stream-ordered pools that keep freed memory reserved until trimmed or
 * synchronised past their release threshold, the VMM calls, arrays, and launches that add busy
 * time to a device-wide timeline shared by every process (fake_state.c).
 *
 * Linked -Bsymbolic with a version script that exports only cu*: its internal references cannot be
 * interposed by a preload, exactly as with NVIDIA's driver. */
#define _GNU_SOURCE
#include "../../include/cuabi.h"
#include "fake_state.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))
#define GRAN (2ULL << 20)
#define ROUND_UP(x, a) (((x) + (a) - 1) / (a) * (a))

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_inited;

/* ---- contexts ---------------------------------------------------------------------------- */
struct fctx { int magic, ordinal, primary, refs; };
#define CTX_MAGIC 0x43545831
static struct fctx g_primary[FAKE_MAX_DEV];
static __thread struct fctx *t_stack[16];
static __thread int t_depth;

static struct fctx *cur_ctx(void) { return t_depth ? t_stack[t_depth - 1] : NULL; }

static int ctx_ok(CUcontext c)
{
    const struct fctx *x = (const struct fctx *)c;
    return x && x->magic == CTX_MAGIC;
}

static struct fake_view *view_or_null(void) { return fake_view(); }

static int sdev_of(int ordinal)
{
    struct fake_view *v = view_or_null();
    return v && ordinal >= 0 && ordinal < v->nvis ? v->vis[ordinal] : -1;
}

static int cur_sdev(void)
{
    struct fctx *c = cur_ctx();
    return c ? sdev_of(c->ordinal) : -1;
}

static void mark_ctx(int ordinal)
{
    struct fake_view *v = view_or_null();
    int sdev = sdev_of(ordinal);
    if (!v || sdev < 0) return;
    fake_lock(v->st);
    struct fake_proc *p = fake_self_locked(v->st);
    if (p) p->has_ctx |= 1 << sdev;
    fake_unlock(v->st);
}

/* ---- allocation table (process-local) ------------------------------------------------------ */
enum { K_PLAIN = 1, K_MANAGED, K_PITCH, K_ASYNC, K_HOST };
struct pool;
struct alloc { CUdeviceptr ptr; uint64_t size; int sdev, kind; struct pool *pool; };
static struct alloc *g_allocs;
static size_t g_nalloc, g_capalloc;
static CUdeviceptr g_next_va = 0x7f0000000000ULL;

static CUdeviceptr new_va(uint64_t size)
{
    CUdeviceptr p = g_next_va;
    g_next_va += ROUND_UP(size ? size : 1, 4096) + 4096;
    return p;
}

static void table_add(CUdeviceptr ptr, uint64_t size, int sdev, int kind, struct pool *pool)
{
    if (g_nalloc == g_capalloc) {
        g_capalloc = g_capalloc ? g_capalloc * 2 : 256;
        g_allocs = realloc(g_allocs, g_capalloc * sizeof *g_allocs);
        if (!g_allocs) abort();
    }
    g_allocs[g_nalloc++] = (struct alloc){ ptr, size, sdev, kind, pool };
}

static int table_take(CUdeviceptr ptr, struct alloc *out)
{
    for (size_t i = g_nalloc; i-- > 0;)
        if (g_allocs[i].ptr == ptr) {
            *out = g_allocs[i];
            g_allocs[i] = g_allocs[--g_nalloc];
            return 1;
        }
    return 0;
}

static const struct alloc *table_find(CUdeviceptr ptr)
{
    for (size_t i = 0; i < g_nalloc; i++)
        if (ptr >= g_allocs[i].ptr && ptr < g_allocs[i].ptr + (g_allocs[i].size ? g_allocs[i].size : 1))
            return &g_allocs[i];
    return NULL;
}

/* ---- init, versions, proc address ----------------------------------------------------------- */
EXPORT CUresult cuInit(unsigned int flags)
{
    FAKE_COUNT(cuInit);
    if (flags) return CUDA_ERROR_INVALID_VALUE;
    if (!fake_view()) return CUDA_ERROR_NO_DEVICE;
    pthread_mutex_lock(&g_mu);
    g_inited = 1;
    pthread_mutex_unlock(&g_mu);
    return CUDA_SUCCESS;
}

#define NEED_INIT() do { if (!g_inited) return CUDA_ERROR_NOT_INITIALIZED; } while (0)
#define NEED_CTX() do { NEED_INIT(); if (!cur_ctx()) return CUDA_ERROR_INVALID_CONTEXT; } while (0)

EXPORT CUresult cuDriverGetVersion(int *v)
{
    FAKE_COUNT(cuDriverGetVersion);
    struct fake_view *fv = fake_view();
    if (!v) return CUDA_ERROR_INVALID_VALUE;
    *v = fv ? fv->st->driver_version : 13000;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGetExportTable(const void **table, const CUuuid *id)
{
    FAKE_COUNT(cuGetExportTable);
    (void)id;
    if (table) *table = NULL;
    return CUDA_ERROR_NOT_SUPPORTED;
}

EXPORT CUresult cuGetErrorString(CUresult e, const char **s)
{
    FAKE_COUNT(cuGetErrorString);
    if (!s) return CUDA_ERROR_INVALID_VALUE;
    switch (e) {
    case CUDA_SUCCESS: *s = "no error"; break;
    case CUDA_ERROR_INVALID_VALUE: *s = "invalid argument"; break;
    case CUDA_ERROR_OUT_OF_MEMORY: *s = "out of memory"; break;
    case CUDA_ERROR_NOT_INITIALIZED: *s = "initialization error"; break;
    case CUDA_ERROR_INVALID_CONTEXT: *s = "invalid device context"; break;
    default: *s = "unknown error"; break;
    }
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGetErrorName(CUresult e, const char **s)
{
    FAKE_COUNT(cuGetErrorName);
    if (!s) return CUDA_ERROR_INVALID_VALUE;
    switch (e) {
    case CUDA_SUCCESS: *s = "CUDA_SUCCESS"; break;
    case CUDA_ERROR_INVALID_VALUE: *s = "CUDA_ERROR_INVALID_VALUE"; break;
    case CUDA_ERROR_OUT_OF_MEMORY: *s = "CUDA_ERROR_OUT_OF_MEMORY"; break;
    case CUDA_ERROR_NOT_INITIALIZED: *s = "CUDA_ERROR_NOT_INITIALIZED"; break;
    case CUDA_ERROR_INVALID_CONTEXT: *s = "CUDA_ERROR_INVALID_CONTEXT"; break;
    default: *s = "CUDA_ERROR_UNKNOWN"; break;
    }
    return CUDA_SUCCESS;
}

/* ---- devices ------------------------------------------------------------------------------- */
EXPORT CUresult cuDeviceGetCount(int *n)
{
    FAKE_COUNT(cuDeviceGetCount);
    NEED_INIT();
    if (!n) return CUDA_ERROR_INVALID_VALUE;
    *n = fake_view()->nvis;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGet(CUdevice *d, int ordinal)
{
    FAKE_COUNT(cuDeviceGet);
    NEED_INIT();
    if (!d) return CUDA_ERROR_INVALID_VALUE;
    if (sdev_of(ordinal) < 0) return CUDA_ERROR_INVALID_DEVICE;
    *d = ordinal;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetName(char *name, int len, CUdevice d)
{
    FAKE_COUNT(cuDeviceGetName);
    NEED_INIT();
    int s = sdev_of(d);
    if (s < 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!name || len <= 0) return CUDA_ERROR_INVALID_VALUE;
    snprintf(name, (size_t)len, "%s", fake_view()->st->dev[s].name);
    return CUDA_SUCCESS;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static CUresult uuid_of(CUuuid *u, CUdevice d)
{
    NEED_INIT();
    int s = sdev_of(d);
    if (s < 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!u) return CUDA_ERROR_INVALID_VALUE;
    memset(u, 0, sizeof *u);
    const char *p = fake_view()->st->dev[s].uuid;
    if (!strncmp(p, "GPU-", 4)) p += 4;
    for (int i = 0; i < 16 && *p;) {
        if (*p == '-') { p++; continue; }
        int hi = hexval(p[0]), lo = p[1] ? hexval(p[1]) : -1;
        if (hi < 0 || lo < 0) break;
        u->bytes[i++] = (char)(hi * 16 + lo);
        p += 2;
    }
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetUuid(CUuuid *u, CUdevice d) { FAKE_COUNT(cuDeviceGetUuid); return uuid_of(u, d); }
EXPORT CUresult cuDeviceGetUuid_v2(CUuuid *u, CUdevice d) { FAKE_COUNT(cuDeviceGetUuid_v2); return uuid_of(u, d); }

EXPORT CUresult cuDeviceGetPCIBusId(char *bus, int len, CUdevice d)
{
    FAKE_COUNT(cuDeviceGetPCIBusId);
    NEED_INIT();
    int s = sdev_of(d);
    if (s < 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!bus || len <= 0) return CUDA_ERROR_INVALID_VALUE;
    snprintf(bus, (size_t)len, "00000000:%02X:00.0", 0x18 + s);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice d)
{
    FAKE_COUNT(cuDeviceTotalMem_v2);
    NEED_INIT();
    int s = sdev_of(d);
    if (s < 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!bytes) return CUDA_ERROR_INVALID_VALUE;
    *bytes = (size_t)fake_view()->st->dev[s].capacity;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetAttribute(int *v, CUdevice_attribute attr, CUdevice d)
{
    FAKE_COUNT(cuDeviceGetAttribute);
    NEED_INIT();
    int s = sdev_of(d);
    if (s < 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!v) return CUDA_ERROR_INVALID_VALUE;
    switch (attr) {
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *v = (int)fake_view()->st->dev[s].sms; break;
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR: *v = 2048; break;
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *v = 1024; break;
    case CU_DEVICE_ATTRIBUTE_TEXTURE_PITCH_ALIGNMENT: *v = 32; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *v = 9; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *v = 0; break;
    case CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY: *v = 1; break;
    default: *v = 0; break;
    }
    return CUDA_SUCCESS;
}

/* ---- contexts ------------------------------------------------------------------------------ */
EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d)
{
    FAKE_COUNT(cuDevicePrimaryCtxRetain);
    NEED_INIT();
    if (sdev_of(d) < 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!c) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_mu);
    struct fctx *x = &g_primary[d];
    x->magic = CTX_MAGIC;
    x->ordinal = d;
    x->primary = 1;
    x->refs++;
    pthread_mutex_unlock(&g_mu);
    mark_ctx(d);
    *c = (CUcontext)x;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d)
{
    FAKE_COUNT(cuDevicePrimaryCtxRelease_v2);
    NEED_INIT();
    if (sdev_of(d) < 0) return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&g_mu);
    if (g_primary[d].refs > 0) g_primary[d].refs--;
    pthread_mutex_unlock(&g_mu);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxSetFlags_v2(CUdevice d, unsigned int f)
{
    FAKE_COUNT(cuDevicePrimaryCtxSetFlags_v2);
    (void)f;
    NEED_INIT();
    return sdev_of(d) < 0 ? CUDA_ERROR_INVALID_DEVICE : CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxGetState(CUdevice d, unsigned int *flags, int *active)
{
    FAKE_COUNT(cuDevicePrimaryCtxGetState);
    NEED_INIT();
    if (sdev_of(d) < 0) return CUDA_ERROR_INVALID_DEVICE;
    if (flags) *flags = 0;
    if (active) *active = g_primary[d].refs > 0;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxReset_v2(CUdevice d)
{
    FAKE_COUNT(cuDevicePrimaryCtxReset_v2);
    NEED_INIT();
    return sdev_of(d) < 0 ? CUDA_ERROR_INVALID_DEVICE : CUDA_SUCCESS;
}

EXPORT CUresult cuCtxCreate_v2(CUcontext *c, unsigned int flags, CUdevice d)
{
    FAKE_COUNT(cuCtxCreate_v2);
    (void)flags;
    NEED_INIT();
    if (sdev_of(d) < 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!c) return CUDA_ERROR_INVALID_VALUE;
    struct fctx *x = calloc(1, sizeof *x);
    if (!x) return CUDA_ERROR_OUT_OF_MEMORY;
    x->magic = CTX_MAGIC;
    x->ordinal = d;
    if (t_depth < 16) t_stack[t_depth++] = x;
    mark_ctx(d);
    *c = (CUcontext)x;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxDestroy_v2(CUcontext c)
{
    FAKE_COUNT(cuCtxDestroy_v2);
    NEED_INIT();
    if (!ctx_ok(c) || ((struct fctx *)c)->primary) return CUDA_ERROR_INVALID_CONTEXT;
    for (int i = 0; i < t_depth; i++)
        if (t_stack[i] == (struct fctx *)c) {
            memmove(&t_stack[i], &t_stack[i + 1], (size_t)(t_depth - i - 1) * sizeof t_stack[0]);
            t_depth--;
            break;
        }
    ((struct fctx *)c)->magic = 0;
    free(c);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxGetCurrent(CUcontext *c)
{
    FAKE_COUNT(cuCtxGetCurrent);
    NEED_INIT();
    if (!c) return CUDA_ERROR_INVALID_VALUE;
    *c = (CUcontext)cur_ctx();
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxSetCurrent(CUcontext c)
{
    FAKE_COUNT(cuCtxSetCurrent);
    NEED_INIT();
    if (!c) {
        if (t_depth) t_depth--;
        return CUDA_SUCCESS;
    }
    if (!ctx_ok(c)) return CUDA_ERROR_INVALID_CONTEXT;
    if (t_depth) t_stack[t_depth - 1] = (struct fctx *)c;
    else t_stack[t_depth++] = (struct fctx *)c;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxPushCurrent_v2(CUcontext c)
{
    FAKE_COUNT(cuCtxPushCurrent_v2);
    NEED_INIT();
    if (!ctx_ok(c)) return CUDA_ERROR_INVALID_CONTEXT;
    if (t_depth >= 16) return CUDA_ERROR_INVALID_VALUE;
    t_stack[t_depth++] = (struct fctx *)c;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxPopCurrent_v2(CUcontext *c)
{
    FAKE_COUNT(cuCtxPopCurrent_v2);
    NEED_INIT();
    if (!t_depth) return CUDA_ERROR_INVALID_CONTEXT;
    struct fctx *x = t_stack[--t_depth];
    if (c) *c = (CUcontext)x;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxGetDevice(CUdevice *d)
{
    FAKE_COUNT(cuCtxGetDevice);
    NEED_INIT();
    if (!d) return CUDA_ERROR_INVALID_VALUE;
    struct fctx *x = cur_ctx();
    if (!x) return CUDA_ERROR_INVALID_CONTEXT; /* a thread without a context, as the real driver */
    *d = x->ordinal;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxGetDevice_v2(CUdevice *d, CUcontext c)
{
    FAKE_COUNT(cuCtxGetDevice_v2);
    NEED_INIT();
    if (!d) return CUDA_ERROR_INVALID_VALUE;
    struct fctx *x = c ? (struct fctx *)c : cur_ctx();
    if (!x || x->magic != CTX_MAGIC) return CUDA_ERROR_INVALID_CONTEXT;
    *d = x->ordinal;
    return CUDA_SUCCESS;
}

/* Pools release what exceeds their threshold at synchronisation, as the real driver does. */
static void pools_sync_release(void);

static void wait_device(int sdev)
{
    struct fake_view *v = fake_view();
    if (!v || sdev < 0) return;
    fake_lock(v->st);
    int64_t until = v->st->dev[sdev].busy_until;
    fake_unlock(v->st);
    int64_t now = fake_now_ns();
    if (until > now) {
        struct timespec ts = { (time_t)((until - now) / 1000000000LL), (long)((until - now) % 1000000000LL) };
        nanosleep(&ts, NULL);
    }
}

EXPORT CUresult cuCtxSynchronize(void)
{
    FAKE_COUNT(cuCtxSynchronize);
    NEED_CTX();
    wait_device(cur_sdev());
    pools_sync_release();
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxSynchronize_v2(CUcontext c)
{
    FAKE_COUNT(cuCtxSynchronize_v2);
    NEED_INIT();
    struct fctx *x = c ? (struct fctx *)c : cur_ctx();
    if (!x || x->magic != CTX_MAGIC) return CUDA_ERROR_INVALID_CONTEXT;
    wait_device(sdev_of(x->ordinal));
    pools_sync_release();
    return CUDA_SUCCESS;
}

/* ---- plain allocations ------------------------------------------------------------------------ */
static CUresult alloc_common(CUdeviceptr *p, uint64_t size, int kind, int sdev)
{
    if (!p || !size) return CUDA_ERROR_INVALID_VALUE;
    if (sdev < 0) return CUDA_ERROR_INVALID_CONTEXT;
    if (fake_grant(sdev, size) != 0) return CUDA_ERROR_OUT_OF_MEMORY;
    pthread_mutex_lock(&g_mu);
    *p = new_va(size);
    table_add(*p, size, sdev, kind, NULL);
    pthread_mutex_unlock(&g_mu);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t size)
{
    FAKE_COUNT(cuMemAlloc_v2);
    NEED_CTX();
    return alloc_common(p, size, K_PLAIN, cur_sdev());
}

EXPORT CUresult cuMemAllocManaged(CUdeviceptr *p, size_t size, unsigned int flags)
{
    FAKE_COUNT(cuMemAllocManaged);
    NEED_CTX();
    if (flags != CU_MEM_ATTACH_GLOBAL && flags != CU_MEM_ATTACH_HOST) return CUDA_ERROR_INVALID_VALUE;
    if (!p || !size) return CUDA_ERROR_INVALID_VALUE;
    /* managed pages migrate on demand: they do not hold the device arena, so they can exceed it */
    pthread_mutex_lock(&g_mu);
    *p = new_va(size);
    table_add(*p, size, cur_sdev(), K_MANAGED, NULL);
    pthread_mutex_unlock(&g_mu);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemAllocPitch_v2(CUdeviceptr *p, size_t *pitch, size_t width, size_t height, unsigned int elem)
{
    FAKE_COUNT(cuMemAllocPitch_v2);
    NEED_CTX();
    if (!pitch || !width || !height || (elem != 4 && elem != 8 && elem != 16)) return CUDA_ERROR_INVALID_VALUE;
    size_t pt = (size_t)ROUND_UP(width, 512);
    CUresult r = alloc_common(p, (uint64_t)pt * height, K_PITCH, cur_sdev());
    if (r == CUDA_SUCCESS) *pitch = pt;
    return r;
}

static void pool_return(struct pool *pl, uint64_t size);

EXPORT CUresult cuMemFree_v2(CUdeviceptr p)
{
    FAKE_COUNT(cuMemFree_v2);
    NEED_INIT();
    if (!p) return CUDA_SUCCESS;
    struct alloc a;
    pthread_mutex_lock(&g_mu);
    int found = table_take(p, &a);
    pthread_mutex_unlock(&g_mu);
    if (!found || a.kind == K_HOST) return CUDA_ERROR_INVALID_VALUE;
    if (a.kind == K_ASYNC) {
        pool_return(a.pool, a.size);
        return CUDA_SUCCESS;
    }
    if (a.kind != K_MANAGED) fake_ungrant(a.sdev, a.size);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemGetInfo_v2(size_t *free_b, size_t *total_b)
{
    FAKE_COUNT(cuMemGetInfo_v2);
    NEED_CTX();
    if (!free_b || !total_b) return CUDA_ERROR_INVALID_VALUE;
    struct fake_view *v = fake_view();
    int s = cur_sdev();
    fake_lock(v->st);
    fake_reap_locked(v->st);
    struct fake_dev *d = &v->st->dev[s];
    *total_b = (size_t)d->capacity;
    *free_b = (size_t)(d->capacity - d->used);
    fake_unlock(v->st);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemGetAddressRange_v2(CUdeviceptr *base, size_t *size, CUdeviceptr p)
{
    FAKE_COUNT(cuMemGetAddressRange_v2);
    NEED_INIT();
    pthread_mutex_lock(&g_mu);
    const struct alloc *a = table_find(p);
    CUresult r = CUDA_ERROR_NOT_FOUND;
    if (a) {
        if (base) *base = a->ptr;
        if (size) *size = (size_t)a->size;
        r = CUDA_SUCCESS;
    }
    pthread_mutex_unlock(&g_mu);
    return r;
}

/* ---- host memory: host only, never device memory -------------------------------------------- */
static CUresult host_alloc(void **pp, size_t size)
{
    if (!pp || !size) return CUDA_ERROR_INVALID_VALUE;
    void *m = malloc(size);
    if (!m) return CUDA_ERROR_OUT_OF_MEMORY;
    pthread_mutex_lock(&g_mu);
    table_add((CUdeviceptr)(uintptr_t)m, size, -1, K_HOST, NULL);
    pthread_mutex_unlock(&g_mu);
    *pp = m;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemAllocHost_v2(void **pp, size_t size) { FAKE_COUNT(cuMemAllocHost_v2); NEED_CTX(); return host_alloc(pp, size); }

EXPORT CUresult cuMemHostAlloc(void **pp, size_t size, unsigned int flags)
{
    FAKE_COUNT(cuMemHostAlloc);
    (void)flags;
    NEED_CTX();
    return host_alloc(pp, size);
}

EXPORT CUresult cuMemFreeHost(void *p)
{
    FAKE_COUNT(cuMemFreeHost);
    NEED_INIT();
    struct alloc a;
    pthread_mutex_lock(&g_mu);
    int found = table_take((CUdeviceptr)(uintptr_t)p, &a);
    pthread_mutex_unlock(&g_mu);
    if (!found || a.kind != K_HOST) return CUDA_ERROR_INVALID_VALUE;
    free(p);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemHostRegister_v2(void *p, size_t size, unsigned int flags)
{
    FAKE_COUNT(cuMemHostRegister_v2);
    (void)flags;
    NEED_CTX();
    return p && size ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

EXPORT CUresult cuMemHostUnregister(void *p)
{
    FAKE_COUNT(cuMemHostUnregister);
    NEED_CTX();
    return p ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

/* ---- copies and advice: argument checks only; the variant called is what tests look at ------ */
EXPORT CUresult cuMemcpy(CUdeviceptr d, CUdeviceptr s, size_t n) { FAKE_COUNT(cuMemcpy); (void)d; (void)s; (void)n; NEED_CTX(); return CUDA_SUCCESS; }
EXPORT CUresult cuMemcpy_ptds(CUdeviceptr d, CUdeviceptr s, size_t n) { FAKE_COUNT(cuMemcpy_ptds); (void)d; (void)s; (void)n; NEED_CTX(); return CUDA_SUCCESS; }
EXPORT CUresult cuMemsetD8_v2(CUdeviceptr d, unsigned char v, size_t n) { FAKE_COUNT(cuMemsetD8_v2); (void)d; (void)v; (void)n; NEED_CTX(); return CUDA_SUCCESS; }
EXPORT CUresult cuMemsetD8_v2_ptds(CUdeviceptr d, unsigned char v, size_t n) { FAKE_COUNT(cuMemsetD8_v2_ptds); (void)d; (void)v; (void)n; NEED_CTX(); return CUDA_SUCCESS; }
EXPORT CUresult cuMemAdvise(CUdeviceptr p, size_t n, CUmem_advise advice, CUdevice d)
{
    FAKE_COUNT(cuMemAdvise);
    (void)p; (void)n; (void)advice;
    NEED_INIT();
    return sdev_of(d) < 0 && d != -1 ? CUDA_ERROR_INVALID_DEVICE : CUDA_SUCCESS;
}
EXPORT CUresult cuMemAdvise_v2(CUdeviceptr p, size_t n, CUmem_advise advice, CUmemLocation loc)
{
    FAKE_COUNT(cuMemAdvise_v2);
    (void)p; (void)n; (void)advice;
    NEED_INIT();
    return loc.type == CU_MEM_LOCATION_TYPE_INVALID ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
}
EXPORT CUresult cuMemPrefetchAsync(CUdeviceptr p, size_t n, CUdevice d, CUstream s) { FAKE_COUNT(cuMemPrefetchAsync); (void)p; (void)n; (void)d; (void)s; NEED_CTX(); return CUDA_SUCCESS; }
EXPORT CUresult cuMemPrefetchAsync_ptsz(CUdeviceptr p, size_t n, CUdevice d, CUstream s) { FAKE_COUNT(cuMemPrefetchAsync_ptsz); (void)p; (void)n; (void)d; (void)s; NEED_CTX(); return CUDA_SUCCESS; }
EXPORT CUresult cuMemPrefetchAsync_v2(CUdeviceptr p, size_t n, CUmemLocation l, unsigned int f, CUstream s) { FAKE_COUNT(cuMemPrefetchAsync_v2); (void)p; (void)n; (void)l; (void)f; (void)s; NEED_CTX(); return CUDA_SUCCESS; }
EXPORT CUresult cuMemPrefetchAsync_v2_ptsz(CUdeviceptr p, size_t n, CUmemLocation l, unsigned int f, CUstream s) { FAKE_COUNT(cuMemPrefetchAsync_v2_ptsz); (void)p; (void)n; (void)l; (void)f; (void)s; NEED_CTX(); return CUDA_SUCCESS; }

/* ---- stream-ordered pools ----------------------------------------------------------------- */
struct pool {
    int magic, sdev, is_default;
    uint64_t reserved, used, reserved_high, used_high, threshold;
    struct pool *next;
};
#define POOL_MAGIC 0x504f4f4c
static struct pool *g_pools;
static struct pool *g_default_pool[FAKE_MAX_DEV];
static struct pool *g_current_pool[FAKE_MAX_DEV];

static struct pool *pool_new(int sdev, int is_default)
{
    struct pool *pl = calloc(1, sizeof *pl);
    if (!pl) return NULL;
    pl->magic = POOL_MAGIC;
    pl->sdev = sdev;
    pl->is_default = is_default;
    pl->next = g_pools;
    g_pools = pl;
    return pl;
}

/* g_mu held */
static struct pool *default_pool_locked(int ordinal)
{
    int sdev = sdev_of(ordinal);
    if (sdev < 0) return NULL;
    if (!g_default_pool[ordinal]) g_default_pool[ordinal] = pool_new(sdev, 1);
    if (!g_current_pool[ordinal]) g_current_pool[ordinal] = g_default_pool[ordinal];
    return g_current_pool[ordinal];
}

static int pool_ok(CUmemoryPool p) { return p && ((struct pool *)p)->magic == POOL_MAGIC; }

/* g_mu held: shrink reserved memory to max(used, keep) in whole chunks */
static void pool_trim_locked(struct pool *pl, uint64_t keep)
{
    uint64_t floor_b = pl->used > keep ? pl->used : keep;
    floor_b = ROUND_UP(floor_b, GRAN);
    if (pl->reserved > floor_b) {
        fake_ungrant(pl->sdev, pl->reserved - floor_b);
        pl->reserved = floor_b;
    }
}

static void pools_sync_release(void)
{
    pthread_mutex_lock(&g_mu);
    for (struct pool *pl = g_pools; pl; pl = pl->next)
        if (pl->magic == POOL_MAGIC && pl->reserved > pl->threshold) pool_trim_locked(pl, pl->threshold);
    pthread_mutex_unlock(&g_mu);
}

static void pool_return(struct pool *pl, uint64_t size)
{
    pthread_mutex_lock(&g_mu);
    pl->used = pl->used >= size ? pl->used - size : 0;
    pthread_mutex_unlock(&g_mu);
}

static CUresult pool_alloc(CUdeviceptr *p, size_t size, struct pool *pl)
{
    if (!p || !size) return CUDA_ERROR_INVALID_VALUE;
    uint64_t sz = ROUND_UP(size, 512);
    pthread_mutex_lock(&g_mu);
    if (pl->reserved - pl->used < sz) {
        uint64_t grow = ROUND_UP(sz - (pl->reserved - pl->used), GRAN);
        if (fake_grant(pl->sdev, grow) != 0) {
            pthread_mutex_unlock(&g_mu);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
        pl->reserved += grow;
        if (pl->reserved > pl->reserved_high) pl->reserved_high = pl->reserved;
    }
    pl->used += sz;
    if (pl->used > pl->used_high) pl->used_high = pl->used;
    *p = new_va(sz);
    table_add(*p, sz, pl->sdev, K_ASYNC, pl);
    pthread_mutex_unlock(&g_mu);
    return CUDA_SUCCESS;
}

static CUresult alloc_async(CUdeviceptr *p, size_t size, CUstream s)
{
    (void)s;
    NEED_CTX();
    pthread_mutex_lock(&g_mu);
    struct pool *pl = default_pool_locked(cur_ctx()->ordinal);
    pthread_mutex_unlock(&g_mu);
    return pl ? pool_alloc(p, size, pl) : CUDA_ERROR_INVALID_DEVICE;
}

EXPORT CUresult cuMemAllocAsync(CUdeviceptr *p, size_t size, CUstream s) { FAKE_COUNT(cuMemAllocAsync); return alloc_async(p, size, s); }
EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr *p, size_t size, CUstream s) { FAKE_COUNT(cuMemAllocAsync_ptsz); return alloc_async(p, size, s); }

static CUresult alloc_from_pool(CUdeviceptr *p, size_t size, CUmemoryPool pool, CUstream s)
{
    (void)s;
    NEED_CTX();
    if (!pool_ok(pool)) return CUDA_ERROR_INVALID_VALUE;
    return pool_alloc(p, size, (struct pool *)pool);
}

EXPORT CUresult cuMemAllocFromPoolAsync(CUdeviceptr *p, size_t size, CUmemoryPool pool, CUstream s) { FAKE_COUNT(cuMemAllocFromPoolAsync); return alloc_from_pool(p, size, pool, s); }
EXPORT CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *p, size_t size, CUmemoryPool pool, CUstream s) { FAKE_COUNT(cuMemAllocFromPoolAsync_ptsz); return alloc_from_pool(p, size, pool, s); }

static CUresult free_async(CUdeviceptr p, CUstream s)
{
    (void)s;
    NEED_CTX();
    struct alloc a;
    pthread_mutex_lock(&g_mu);
    int found = table_take(p, &a);
    pthread_mutex_unlock(&g_mu);
    if (!found || a.kind == K_HOST) return CUDA_ERROR_INVALID_VALUE;
    if (a.kind == K_ASYNC) pool_return(a.pool, a.size);
    else if (a.kind != K_MANAGED) fake_ungrant(a.sdev, a.size);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemFreeAsync(CUdeviceptr p, CUstream s) { FAKE_COUNT(cuMemFreeAsync); return free_async(p, s); }
EXPORT CUresult cuMemFreeAsync_ptsz(CUdeviceptr p, CUstream s) { FAKE_COUNT(cuMemFreeAsync_ptsz); return free_async(p, s); }

EXPORT CUresult cuDeviceGetDefaultMemPool(CUmemoryPool *p, CUdevice d)
{
    FAKE_COUNT(cuDeviceGetDefaultMemPool);
    NEED_INIT();
    if (!p) return CUDA_ERROR_INVALID_VALUE;
    if (sdev_of(d) < 0) return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&g_mu);
    default_pool_locked(d);
    *p = (CUmemoryPool)g_default_pool[d];
    pthread_mutex_unlock(&g_mu);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetMemPool(CUmemoryPool *p, CUdevice d)
{
    FAKE_COUNT(cuDeviceGetMemPool);
    NEED_INIT();
    if (!p) return CUDA_ERROR_INVALID_VALUE;
    if (sdev_of(d) < 0) return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&g_mu);
    *p = (CUmemoryPool)default_pool_locked(d);
    pthread_mutex_unlock(&g_mu);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceSetMemPool(CUdevice d, CUmemoryPool p)
{
    FAKE_COUNT(cuDeviceSetMemPool);
    NEED_INIT();
    if (sdev_of(d) < 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!pool_ok(p) || ((struct pool *)p)->sdev != sdev_of(d)) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_mu);
    g_current_pool[d] = (struct pool *)p;
    pthread_mutex_unlock(&g_mu);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemPoolCreate(CUmemoryPool *p, const CUmemPoolProps *props)
{
    FAKE_COUNT(cuMemPoolCreate);
    NEED_INIT();
    if (!p || !props || props->location.type != CU_MEM_LOCATION_TYPE_DEVICE) return CUDA_ERROR_INVALID_VALUE;
    int sdev = sdev_of(props->location.id);
    if (sdev < 0) return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&g_mu);
    struct pool *pl = pool_new(sdev, 0);
    pthread_mutex_unlock(&g_mu);
    if (!pl) return CUDA_ERROR_OUT_OF_MEMORY;
    *p = (CUmemoryPool)pl;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemPoolDestroy(CUmemoryPool p)
{
    FAKE_COUNT(cuMemPoolDestroy);
    NEED_INIT();
    if (!pool_ok(p) || ((struct pool *)p)->is_default) return CUDA_ERROR_INVALID_VALUE;
    struct pool *pl = (struct pool *)p;
    pthread_mutex_lock(&g_mu);
    /* outstanding allocations are freed with the pool */
    for (size_t i = g_nalloc; i-- > 0;)
        if (g_allocs[i].pool == pl) g_allocs[i] = g_allocs[--g_nalloc];
    pl->used = 0;
    pool_trim_locked(pl, 0);
    for (int d = 0; d < FAKE_MAX_DEV; d++)
        if (g_current_pool[d] == pl) g_current_pool[d] = g_default_pool[d];
    pl->magic = 0; /* kept on the list, never reused: stale handles stay detectable */
    pthread_mutex_unlock(&g_mu);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemPoolGetAttribute(CUmemoryPool p, CUmemPool_attribute attr, void *value)
{
    FAKE_COUNT(cuMemPoolGetAttribute);
    NEED_INIT();
    if (!pool_ok(p) || !value) return CUDA_ERROR_INVALID_VALUE;
    struct pool *pl = (struct pool *)p;
    pthread_mutex_lock(&g_mu);
    CUresult r = CUDA_SUCCESS;
    uint64_t *v = value;
    switch (attr) {
    case CU_MEMPOOL_ATTR_RELEASE_THRESHOLD: *v = pl->threshold; break;
    case CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT: *v = pl->reserved; break;
    case CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH: *v = pl->reserved_high; break;
    case CU_MEMPOOL_ATTR_USED_MEM_CURRENT: *v = pl->used; break;
    case CU_MEMPOOL_ATTR_USED_MEM_HIGH: *v = pl->used_high; break;
    case CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES:
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC:
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES: *(int *)value = 1; break;
    default: r = CUDA_ERROR_INVALID_VALUE;
    }
    pthread_mutex_unlock(&g_mu);
    return r;
}

EXPORT CUresult cuMemPoolSetAttribute(CUmemoryPool p, CUmemPool_attribute attr, void *value)
{
    FAKE_COUNT(cuMemPoolSetAttribute);
    NEED_INIT();
    if (!pool_ok(p) || !value) return CUDA_ERROR_INVALID_VALUE;
    struct pool *pl = (struct pool *)p;
    pthread_mutex_lock(&g_mu);
    CUresult r = CUDA_SUCCESS;
    switch (attr) {
    case CU_MEMPOOL_ATTR_RELEASE_THRESHOLD: pl->threshold = *(uint64_t *)value; break;
    case CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH: pl->reserved_high = pl->reserved; break;
    case CU_MEMPOOL_ATTR_USED_MEM_HIGH: pl->used_high = pl->used; break;
    case CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES:
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC:
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES: break;
    default: r = CUDA_ERROR_INVALID_VALUE;
    }
    pthread_mutex_unlock(&g_mu);
    return r;
}

EXPORT CUresult cuMemPoolTrimTo(CUmemoryPool p, size_t keep)
{
    FAKE_COUNT(cuMemPoolTrimTo);
    NEED_INIT();
    if (!pool_ok(p)) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_mu);
    pool_trim_locked((struct pool *)p, keep);
    pthread_mutex_unlock(&g_mu);
    return CUDA_SUCCESS;
}

/* ---- virtual memory management -------------------------------------------------------------- */
struct vhandle { int magic, sdev, maps, released; uint64_t size; };
#define VH_MAGIC 0x564d4d48

EXPORT CUresult cuMemGetAllocationGranularity(size_t *g, const CUmemAllocationProp *prop,
                                               CUmemAllocationGranularity_flags option)
{
    FAKE_COUNT(cuMemGetAllocationGranularity);
    (void)option;
    NEED_INIT();
    if (!g || !prop) return CUDA_ERROR_INVALID_VALUE;
    *g = (size_t)GRAN;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle *h, size_t size, const CUmemAllocationProp *prop,
                            unsigned long long flags)
{
    FAKE_COUNT(cuMemCreate);
    NEED_INIT();
    if (!h || !prop || flags || !size || size % GRAN) return CUDA_ERROR_INVALID_VALUE;
    if (prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE) return CUDA_ERROR_INVALID_VALUE;
    int sdev = sdev_of(prop->location.id);
    if (sdev < 0) return CUDA_ERROR_INVALID_DEVICE;
    struct vhandle *vh = calloc(1, sizeof *vh);
    if (!vh) return CUDA_ERROR_OUT_OF_MEMORY;
    if (fake_grant(sdev, size) != 0) {
        free(vh);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    vh->magic = VH_MAGIC;
    vh->sdev = sdev;
    vh->size = size;
    *h = (CUmemGenericAllocationHandle)(uintptr_t)vh;
    return CUDA_SUCCESS;
}

static void vh_maybe_free(struct vhandle *vh)
{
    if (vh->released && vh->maps == 0) {
        fake_ungrant(vh->sdev, vh->size);
        vh->magic = 0;
        free(vh);
    }
}

EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle h)
{
    FAKE_COUNT(cuMemRelease);
    NEED_INIT();
    struct vhandle *vh = (struct vhandle *)(uintptr_t)h;
    if (!vh || vh->magic != VH_MAGIC || vh->released) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_mu);
    vh->released = 1;
    vh_maybe_free(vh);
    pthread_mutex_unlock(&g_mu);
    return CUDA_SUCCESS;
}

struct vmap { CUdeviceptr va; size_t size; struct vhandle *vh; };
static struct vmap g_maps[1024];
static int g_nmaps;

EXPORT CUresult cuMemAddressReserve(CUdeviceptr *p, size_t size, size_t align, CUdeviceptr addr, unsigned long long f)
{
    FAKE_COUNT(cuMemAddressReserve);
    (void)align; (void)addr; (void)f;
    NEED_INIT();
    if (!p || !size) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_mu);
    *p = new_va(size);
    pthread_mutex_unlock(&g_mu);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemAddressFree(CUdeviceptr p, size_t size)
{
    FAKE_COUNT(cuMemAddressFree);
    NEED_INIT();
    return p && size ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

EXPORT CUresult cuMemMap(CUdeviceptr p, size_t size, size_t offset, CUmemGenericAllocationHandle h, unsigned long long f)
{
    FAKE_COUNT(cuMemMap);
    (void)offset;
    NEED_INIT();
    struct vhandle *vh = (struct vhandle *)(uintptr_t)h;
    if (!p || !size || f || !vh || vh->magic != VH_MAGIC || vh->released) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_mu);
    if (g_nmaps == 1024) {
        pthread_mutex_unlock(&g_mu);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    g_maps[g_nmaps++] = (struct vmap){ p, size, vh };
    vh->maps++;
    pthread_mutex_unlock(&g_mu);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemUnmap(CUdeviceptr p, size_t size)
{
    FAKE_COUNT(cuMemUnmap);
    (void)size;
    NEED_INIT();
    pthread_mutex_lock(&g_mu);
    for (int i = 0; i < g_nmaps; i++)
        if (g_maps[i].va == p) {
            struct vhandle *vh = g_maps[i].vh;
            g_maps[i] = g_maps[--g_nmaps];
            vh->maps--;
            vh_maybe_free(vh);
            pthread_mutex_unlock(&g_mu);
            return CUDA_SUCCESS;
        }
    pthread_mutex_unlock(&g_mu);
    return CUDA_ERROR_INVALID_VALUE;
}

EXPORT CUresult cuMemSetAccess(CUdeviceptr p, size_t size, const CUmemAccessDesc *desc, size_t count)
{
    FAKE_COUNT(cuMemSetAccess);
    NEED_INIT();
    return p && size && desc && count ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

/* ---- arrays ------------------------------------------------------------------------------- */
struct farray { int magic, sdev; uint64_t size; };
#define AR_MAGIC 0x41525259

static unsigned elem_size(int fmt)
{
    switch (fmt) {
    case CU_AD_FORMAT_UNSIGNED_INT8: case CU_AD_FORMAT_SIGNED_INT8: return 1;
    case CU_AD_FORMAT_UNSIGNED_INT16: case CU_AD_FORMAT_SIGNED_INT16: case CU_AD_FORMAT_HALF: return 2;
    case CU_AD_FORMAT_UNSIGNED_INT32: case CU_AD_FORMAT_SIGNED_INT32: case CU_AD_FORMAT_FLOAT: return 4;
    default: return 0;
    }
}

/* The hardware pads arrays: charge whole 64 KiB pages. */
static uint64_t array_bytes(size_t w, size_t h, size_t d, int fmt, unsigned ch)
{
    unsigned es = elem_size(fmt);
    if (!es || !w || (ch != 1 && ch != 2 && ch != 4)) return 0;
    return ROUND_UP((uint64_t)w * (h ? h : 1) * (d ? d : 1) * es * ch, 65536);
}

static CUresult array_new(void **out, uint64_t bytes)
{
    if (!out) return CUDA_ERROR_INVALID_VALUE;
    if (!bytes) return CUDA_ERROR_INVALID_VALUE;
    int sdev = cur_sdev();
    if (sdev < 0) return CUDA_ERROR_INVALID_CONTEXT;
    struct farray *a = calloc(1, sizeof *a);
    if (!a) return CUDA_ERROR_OUT_OF_MEMORY;
    if (fake_grant(sdev, bytes) != 0) {
        free(a);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    a->magic = AR_MAGIC;
    a->sdev = sdev;
    a->size = bytes;
    *out = a;
    return CUDA_SUCCESS;
}

static CUresult array_free(void *p)
{
    struct farray *a = p;
    if (!a || a->magic != AR_MAGIC) return CUDA_ERROR_INVALID_HANDLE;
    fake_ungrant(a->sdev, a->size);
    a->magic = 0;
    free(a);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuArrayCreate_v2(CUarray *arr, const CUDA_ARRAY_DESCRIPTOR *d)
{
    FAKE_COUNT(cuArrayCreate_v2);
    NEED_CTX();
    if (!d) return CUDA_ERROR_INVALID_VALUE;
    return array_new((void **)arr, array_bytes(d->Width, d->Height, 0, d->Format, d->NumChannels));
}

EXPORT CUresult cuArray3DCreate_v2(CUarray *arr, const CUDA_ARRAY3D_DESCRIPTOR *d)
{
    FAKE_COUNT(cuArray3DCreate_v2);
    NEED_CTX();
    if (!d) return CUDA_ERROR_INVALID_VALUE;
    return array_new((void **)arr, array_bytes(d->Width, d->Height, d->Depth, d->Format, d->NumChannels));
}

EXPORT CUresult cuArrayDestroy(CUarray a) { FAKE_COUNT(cuArrayDestroy); NEED_INIT(); return array_free(a); }

EXPORT CUresult cuMipmappedArrayCreate(CUmipmappedArray *arr, const CUDA_ARRAY3D_DESCRIPTOR *d, unsigned int levels)
{
    FAKE_COUNT(cuMipmappedArrayCreate);
    NEED_CTX();
    if (!d || !levels) return CUDA_ERROR_INVALID_VALUE;
    uint64_t total = 0;
    size_t w = d->Width, h = d->Height, z = d->Depth;
    for (unsigned l = 0; l < levels; l++) {
        uint64_t b = array_bytes(w, h, z, d->Format, d->NumChannels);
        if (!b) return CUDA_ERROR_INVALID_VALUE;
        total += b;
        w = w > 1 ? w / 2 : 1;
        h = h > 1 ? h / 2 : h;
        z = z > 1 ? z / 2 : z;
    }
    return array_new((void **)arr, total);
}

EXPORT CUresult cuMipmappedArrayDestroy(CUmipmappedArray a) { FAKE_COUNT(cuMipmappedArrayDestroy); NEED_INIT(); return array_free(a); }

static CUresult array_reqs(CUDA_ARRAY_MEMORY_REQUIREMENTS *r, void *p)
{
    struct farray *a = p;
    if (!r || !a || a->magic != AR_MAGIC) return CUDA_ERROR_INVALID_VALUE;
    memset(r, 0, sizeof *r);
    r->size = (size_t)a->size;
    r->alignment = 65536;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuArrayGetMemoryRequirements(CUDA_ARRAY_MEMORY_REQUIREMENTS *r, CUarray a, CUdevice d)
{
    FAKE_COUNT(cuArrayGetMemoryRequirements);
    (void)d;
    NEED_INIT();
    return array_reqs(r, a);
}

EXPORT CUresult cuMipmappedArrayGetMemoryRequirements(CUDA_ARRAY_MEMORY_REQUIREMENTS *r, CUmipmappedArray a, CUdevice d)
{
    FAKE_COUNT(cuMipmappedArrayGetMemoryRequirements);
    (void)d;
    NEED_INIT();
    return array_reqs(r, a);
}

/* ---- modules, streams ----------------------------------------------------------------------- */
struct ffunc { int magic, spin; int64_t ns_per_wave; };
#define FN_MAGIC 0x46554e43

EXPORT CUresult cuModuleLoadData(CUmodule *m, const void *image)
{
    FAKE_COUNT(cuModuleLoadData);
    NEED_CTX();
    if (!m || !image) return CUDA_ERROR_INVALID_VALUE;
    *m = (CUmodule)calloc(1, 16);
    return *m ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

EXPORT CUresult cuModuleUnload(CUmodule m) { FAKE_COUNT(cuModuleUnload); NEED_INIT(); free(m); return CUDA_SUCCESS; }

/* A kernel named "<name>@<ns>" takes <ns> nanoseconds per wave of blocks; default 10 us. */
EXPORT CUresult cuModuleGetFunction(CUfunction *f, CUmodule m, const char *name)
{
    FAKE_COUNT(cuModuleGetFunction);
    NEED_INIT();
    if (!f || !m || !name) return CUDA_ERROR_INVALID_VALUE;
    struct ffunc *fn = calloc(1, sizeof *fn);
    if (!fn) return CUDA_ERROR_OUT_OF_MEMORY;
    fn->magic = FN_MAGIC;
    fn->spin = !strcmp(name, "spin");
    const char *at = strchr(name, '@');
    fn->ns_per_wave = at ? strtoll(at + 1, NULL, 10) : 10000;
    if (fn->ns_per_wave <= 0) fn->ns_per_wave = 10000;
    *f = (CUfunction)fn;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamCreate(CUstream *s, unsigned int flags)
{
    FAKE_COUNT(cuStreamCreate);
    (void)flags;
    NEED_CTX();
    if (!s) return CUDA_ERROR_INVALID_VALUE;
    *s = (CUstream)calloc(1, 16);
    return *s ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

EXPORT CUresult cuStreamDestroy_v2(CUstream s) { FAKE_COUNT(cuStreamDestroy_v2); NEED_INIT(); free(s); return CUDA_SUCCESS; }

EXPORT CUresult cuStreamSynchronize(CUstream s)
{
    FAKE_COUNT(cuStreamSynchronize);
    (void)s;
    NEED_CTX();
    wait_device(cur_sdev());
    pools_sync_release();
    return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamSynchronize_ptsz(CUstream s)
{
    FAKE_COUNT(cuStreamSynchronize_ptsz);
    (void)s;
    NEED_CTX();
    wait_device(cur_sdev());
    pools_sync_release();
    return CUDA_SUCCESS;
}

/* ---- launches: busy time = waves of blocks x time per wave ----------------------------------- */
/* "spin" kernels (the tools' PTX kernel) take their time per wave from their first parameter. */
static int64_t wave_ns(CUfunction f, void **params)
{
    const struct ffunc *fn = (const struct ffunc *)f;
    if (fn->spin && params && params[0]) {
        int64_t ns = (int64_t)*(const uint64_t *)params[0];
        return ns > 0 ? ns : 1;
    }
    return fn->ns_per_wave;
}

static int64_t kernel_ns(int64_t per_wave, unsigned gx, unsigned gy, unsigned gz, int sdev)
{
    uint64_t blocks = (uint64_t)gx * gy * gz;
    uint64_t sms = fake_view()->st->dev[sdev].sms;
    uint64_t waves = (blocks + sms - 1) / sms;
    return (int64_t)waves * per_wave;
}

static CUresult launch(CUfunction f, void **params, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                       unsigned bz)
{
    NEED_CTX();
    const struct ffunc *fn = (const struct ffunc *)f;
    if (!fn || fn->magic != FN_MAGIC) return CUDA_ERROR_INVALID_HANDLE;
    if (!gx || !gy || !gz || !bx || !by || !bz || (uint64_t)bx * by * bz > 1024) return CUDA_ERROR_INVALID_VALUE;
    int sdev = cur_sdev();
    fake_timeline_add(sdev, kernel_ns(wave_ns(f, params), gx, gy, gz, sdev));
    return CUDA_SUCCESS;
}

EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                               unsigned shmem, CUstream s, void **params, void **extra)
{
    FAKE_COUNT(cuLaunchKernel);
    (void)shmem; (void)s; (void)extra;
    return launch(f, params, gx, gy, gz, bx, by, bz);
}

EXPORT CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                                    unsigned bz, unsigned shmem, CUstream s, void **params, void **extra)
{
    FAKE_COUNT(cuLaunchKernel_ptsz);
    (void)shmem; (void)s; (void)extra;
    return launch(f, params, gx, gy, gz, bx, by, bz);
}

EXPORT CUresult cuLaunchKernelEx(const CUlaunchConfig *c, CUfunction f, void **params, void **extra)
{
    FAKE_COUNT(cuLaunchKernelEx);
    (void)extra;
    if (!c) return CUDA_ERROR_INVALID_VALUE;
    return launch(f, params, c->gridDimX, c->gridDimY, c->gridDimZ, c->blockDimX, c->blockDimY, c->blockDimZ);
}

EXPORT CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *c, CUfunction f, void **params, void **extra)
{
    FAKE_COUNT(cuLaunchKernelEx_ptsz);
    (void)extra;
    if (!c) return CUDA_ERROR_INVALID_VALUE;
    return launch(f, params, c->gridDimX, c->gridDimY, c->gridDimZ, c->blockDimX, c->blockDimY, c->blockDimZ);
}

EXPORT CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                                          unsigned by, unsigned bz, unsigned shmem, CUstream s, void **params)
{
    FAKE_COUNT(cuLaunchCooperativeKernel);
    (void)shmem; (void)s;
    return launch(f, params, gx, gy, gz, bx, by, bz);
}

EXPORT CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                                               unsigned by, unsigned bz, unsigned shmem, CUstream s, void **params)
{
    FAKE_COUNT(cuLaunchCooperativeKernel_ptsz);
    (void)shmem; (void)s;
    return launch(f, params, gx, gy, gz, bx, by, bz);
}

/* ---- graphs: kernel nodes only, which is what the limiter meters ----------------------------- */
struct fnode { int magic, type; CUDA_KERNEL_NODE_PARAMS_v2 p; int64_t per_wave; };
struct fgraph { int magic, n; struct fnode *nodes[256]; };
struct fexec { int magic, n; CUDA_KERNEL_NODE_PARAMS_v2 p[256]; int64_t per_wave[256]; };
#define GR_MAGIC 0x47524146
#define ND_MAGIC 0x4e4f4445
#define EX_MAGIC 0x45584543

EXPORT CUresult cuGraphCreate(CUgraph *g, unsigned int flags)
{
    FAKE_COUNT(cuGraphCreate);
    NEED_INIT();
    if (!g || flags) return CUDA_ERROR_INVALID_VALUE;
    struct fgraph *x = calloc(1, sizeof *x);
    if (!x) return CUDA_ERROR_OUT_OF_MEMORY;
    x->magic = GR_MAGIC;
    *g = (CUgraph)x;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphDestroy(CUgraph g)
{
    FAKE_COUNT(cuGraphDestroy);
    NEED_INIT();
    struct fgraph *x = (struct fgraph *)g;
    if (!x || x->magic != GR_MAGIC) return CUDA_ERROR_INVALID_VALUE;
    for (int i = 0; i < x->n; i++) free(x->nodes[i]);
    x->magic = 0;
    free(x);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphAddKernelNode_v2(CUgraphNode *node, CUgraph g, const CUgraphNode *deps, size_t ndeps,
                                        const CUDA_KERNEL_NODE_PARAMS_v2 *p)
{
    FAKE_COUNT(cuGraphAddKernelNode_v2);
    (void)deps; (void)ndeps;
    NEED_INIT();
    struct fgraph *x = (struct fgraph *)g;
    if (!node || !p || !x || x->magic != GR_MAGIC || x->n == 256) return CUDA_ERROR_INVALID_VALUE;
    struct fnode *n = calloc(1, sizeof *n);
    if (!n) return CUDA_ERROR_OUT_OF_MEMORY;
    n->magic = ND_MAGIC;
    n->type = CU_GRAPH_NODE_TYPE_KERNEL;
    n->p = *p;
    const struct ffunc *fn = (const struct ffunc *)p->func;
    if (!fn || fn->magic != FN_MAGIC) {
        free(n);
        return CUDA_ERROR_INVALID_HANDLE;
    }
    n->per_wave = wave_ns(p->func, p->kernelParams); /* parameters are copied at node creation */
    x->nodes[x->n++] = n;
    *node = (CUgraphNode)n;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphGetNodes(CUgraph g, CUgraphNode *nodes, size_t *n)
{
    FAKE_COUNT(cuGraphGetNodes);
    NEED_INIT();
    struct fgraph *x = (struct fgraph *)g;
    if (!n || !x || x->magic != GR_MAGIC) return CUDA_ERROR_INVALID_VALUE;
    if (nodes) {
        size_t k = *n < (size_t)x->n ? *n : (size_t)x->n;
        for (size_t i = 0; i < k; i++) nodes[i] = (CUgraphNode)x->nodes[i];
    }
    *n = (size_t)x->n;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphNodeGetType(CUgraphNode node, CUgraphNodeType *type)
{
    FAKE_COUNT(cuGraphNodeGetType);
    NEED_INIT();
    struct fnode *n = (struct fnode *)node;
    if (!type || !n || n->magic != ND_MAGIC) return CUDA_ERROR_INVALID_VALUE;
    *type = n->type;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphKernelNodeGetParams_v2(CUgraphNode node, CUDA_KERNEL_NODE_PARAMS_v2 *p)
{
    FAKE_COUNT(cuGraphKernelNodeGetParams_v2);
    NEED_INIT();
    struct fnode *n = (struct fnode *)node;
    if (!p || !n || n->magic != ND_MAGIC) return CUDA_ERROR_INVALID_VALUE;
    *p = n->p;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphInstantiateWithFlags(CUgraphExec *e, CUgraph g, unsigned long long flags)
{
    FAKE_COUNT(cuGraphInstantiateWithFlags);
    (void)flags;
    NEED_CTX();
    struct fgraph *x = (struct fgraph *)g;
    if (!e || !x || x->magic != GR_MAGIC) return CUDA_ERROR_INVALID_VALUE;
    struct fexec *ex = calloc(1, sizeof *ex);
    if (!ex) return CUDA_ERROR_OUT_OF_MEMORY;
    ex->magic = EX_MAGIC;
    for (int i = 0; i < x->n; i++) {
        ex->per_wave[ex->n] = x->nodes[i]->per_wave;
        ex->p[ex->n++] = x->nodes[i]->p;
    }
    *e = (CUgraphExec)ex;
    return CUDA_SUCCESS;
}

/* params: CUDA_GRAPH_INSTANTIATE_PARAMS {u64 flags; CUstream upload; CUgraphNode err_out; int result_out} */
static CUresult instantiate_params(CUgraphExec *e, CUgraph g, CUDA_GRAPH_INSTANTIATE_PARAMS *params)
{
    if (!params) return CUDA_ERROR_INVALID_VALUE;
    CUresult r = cuGraphInstantiateWithFlags(e, g, *(unsigned long long *)params);
    *(int *)((char *)params + 24) = r == CUDA_SUCCESS ? 0 : 1;
    return r;
}

EXPORT CUresult cuGraphInstantiateWithParams(CUgraphExec *e, CUgraph g, CUDA_GRAPH_INSTANTIATE_PARAMS *params)
{
    FAKE_COUNT(cuGraphInstantiateWithParams);
    return instantiate_params(e, g, params);
}

EXPORT CUresult cuGraphInstantiateWithParams_ptsz(CUgraphExec *e, CUgraph g,
                                                 CUDA_GRAPH_INSTANTIATE_PARAMS *params)
{
    FAKE_COUNT(cuGraphInstantiateWithParams_ptsz);
    return instantiate_params(e, g, params);
}

EXPORT CUresult cuGraphExecDestroy(CUgraphExec e)
{
    FAKE_COUNT(cuGraphExecDestroy);
    NEED_INIT();
    struct fexec *ex = (struct fexec *)e;
    if (!ex || ex->magic != EX_MAGIC) return CUDA_ERROR_INVALID_VALUE;
    ex->magic = 0;
    free(ex);
    return CUDA_SUCCESS;
}

static CUresult graph_launch(CUgraphExec e)
{
    NEED_CTX();
    struct fexec *ex = (struct fexec *)e;
    if (!ex || ex->magic != EX_MAGIC) return CUDA_ERROR_INVALID_VALUE;
    int sdev = cur_sdev();
    int64_t total = 0;
    for (int i = 0; i < ex->n; i++) {
        total += kernel_ns(ex->per_wave[i], ex->p[i].gridDimX, ex->p[i].gridDimY, ex->p[i].gridDimZ, sdev);
    }
    fake_timeline_add(sdev, total);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphLaunch(CUgraphExec e, CUstream s) { FAKE_COUNT(cuGraphLaunch); (void)s; return graph_launch(e); }
EXPORT CUresult cuGraphLaunch_ptsz(CUgraphExec e, CUstream s) { FAKE_COUNT(cuGraphLaunch_ptsz); (void)s; return graph_launch(e); }

/* ---- cuGetProcAddress: (base name, first version, per-thread stream) -> entry point ----------- */
struct proc_row { const char *base; int since; int ptds; void *fn; };
#define R(b, v, f) { b, v, 0, (void *)(f) }
#define P(b, v, f) { b, v, 1, (void *)(f) }
EXPORT CUresult cuGetProcAddress(const char *sym, void **pfn, int ver, cuuint64_t flags);
EXPORT CUresult cuGetProcAddress_v2(const char *sym, void **pfn, int ver, cuuint64_t flags,
                                    CUdriverProcAddressQueryResult *status);
static const struct proc_row g_rows[] = {
    R("cuInit", 2000, cuInit), R("cuDriverGetVersion", 2020, cuDriverGetVersion),
    R("cuGetProcAddress", 11030, cuGetProcAddress), R("cuGetProcAddress", 12000, cuGetProcAddress_v2),
    R("cuGetExportTable", 3000, cuGetExportTable), R("cuGetErrorString", 6000, cuGetErrorString),
    R("cuGetErrorName", 6000, cuGetErrorName), R("cuDeviceGetCount", 2000, cuDeviceGetCount),
    R("cuDeviceGet", 2000, cuDeviceGet), R("cuDeviceGetName", 2000, cuDeviceGetName),
    R("cuDeviceGetUuid", 9020, cuDeviceGetUuid), R("cuDeviceGetUuid", 11040, cuDeviceGetUuid_v2),
    R("cuDeviceGetPCIBusId", 4010, cuDeviceGetPCIBusId), R("cuDeviceTotalMem", 3020, cuDeviceTotalMem_v2),
    R("cuDeviceGetAttribute", 2000, cuDeviceGetAttribute),
    R("cuDevicePrimaryCtxRetain", 7000, cuDevicePrimaryCtxRetain),
    R("cuDevicePrimaryCtxRelease", 11000, cuDevicePrimaryCtxRelease_v2),
    R("cuDevicePrimaryCtxSetFlags", 11000, cuDevicePrimaryCtxSetFlags_v2),
    R("cuDevicePrimaryCtxGetState", 7000, cuDevicePrimaryCtxGetState),
    R("cuDevicePrimaryCtxReset", 11000, cuDevicePrimaryCtxReset_v2),
    R("cuCtxCreate", 3020, cuCtxCreate_v2), R("cuCtxDestroy", 4000, cuCtxDestroy_v2),
    R("cuCtxGetCurrent", 4000, cuCtxGetCurrent), R("cuCtxSetCurrent", 4000, cuCtxSetCurrent),
    R("cuCtxPushCurrent", 4000, cuCtxPushCurrent_v2), R("cuCtxPopCurrent", 4000, cuCtxPopCurrent_v2),
    R("cuCtxGetDevice", 2000, cuCtxGetDevice), R("cuCtxGetDevice", 13000, cuCtxGetDevice_v2),
    R("cuCtxSynchronize", 2000, cuCtxSynchronize), R("cuCtxSynchronize", 13000, cuCtxSynchronize_v2),
    R("cuMemAlloc", 3020, cuMemAlloc_v2), R("cuMemFree", 3020, cuMemFree_v2),
    R("cuMemGetInfo", 3020, cuMemGetInfo_v2), R("cuMemAllocManaged", 6000, cuMemAllocManaged),
    R("cuMemAllocPitch", 3020, cuMemAllocPitch_v2), R("cuMemGetAddressRange", 3020, cuMemGetAddressRange_v2),
    R("cuMemAllocHost", 3020, cuMemAllocHost_v2), R("cuMemHostAlloc", 2020, cuMemHostAlloc),
    R("cuMemFreeHost", 2000, cuMemFreeHost), R("cuMemHostRegister", 6050, cuMemHostRegister_v2),
    R("cuMemHostUnregister", 4000, cuMemHostUnregister),
    R("cuMemcpy", 4000, cuMemcpy), P("cuMemcpy", 7000, cuMemcpy_ptds),
    R("cuMemsetD8", 3020, cuMemsetD8_v2), P("cuMemsetD8", 7000, cuMemsetD8_v2_ptds),
    R("cuMemAdvise", 8000, cuMemAdvise), R("cuMemAdvise", 12020, cuMemAdvise_v2),
    R("cuMemPrefetchAsync", 8000, cuMemPrefetchAsync), P("cuMemPrefetchAsync", 8000, cuMemPrefetchAsync_ptsz),
    R("cuMemPrefetchAsync", 12020, cuMemPrefetchAsync_v2), P("cuMemPrefetchAsync", 12020, cuMemPrefetchAsync_v2_ptsz),
    R("cuMemAllocAsync", 11020, cuMemAllocAsync), P("cuMemAllocAsync", 11020, cuMemAllocAsync_ptsz),
    R("cuMemFreeAsync", 11020, cuMemFreeAsync), P("cuMemFreeAsync", 11020, cuMemFreeAsync_ptsz),
    R("cuMemAllocFromPoolAsync", 11020, cuMemAllocFromPoolAsync),
    P("cuMemAllocFromPoolAsync", 11020, cuMemAllocFromPoolAsync_ptsz),
    R("cuDeviceGetDefaultMemPool", 11020, cuDeviceGetDefaultMemPool),
    R("cuDeviceGetMemPool", 11020, cuDeviceGetMemPool), R("cuDeviceSetMemPool", 11020, cuDeviceSetMemPool),
    R("cuMemPoolCreate", 11020, cuMemPoolCreate), R("cuMemPoolDestroy", 11020, cuMemPoolDestroy),
    R("cuMemPoolGetAttribute", 11020, cuMemPoolGetAttribute),
    R("cuMemPoolSetAttribute", 11020, cuMemPoolSetAttribute), R("cuMemPoolTrimTo", 11020, cuMemPoolTrimTo),
    R("cuMemGetAllocationGranularity", 10020, cuMemGetAllocationGranularity),
    R("cuMemCreate", 10020, cuMemCreate), R("cuMemRelease", 10020, cuMemRelease),
    R("cuMemAddressReserve", 10020, cuMemAddressReserve), R("cuMemAddressFree", 10020, cuMemAddressFree),
    R("cuMemMap", 10020, cuMemMap), R("cuMemUnmap", 10020, cuMemUnmap), R("cuMemSetAccess", 10020, cuMemSetAccess),
    R("cuArrayCreate", 3020, cuArrayCreate_v2), R("cuArray3DCreate", 3020, cuArray3DCreate_v2),
    R("cuArrayDestroy", 2000, cuArrayDestroy), R("cuMipmappedArrayCreate", 5000, cuMipmappedArrayCreate),
    R("cuMipmappedArrayDestroy", 5000, cuMipmappedArrayDestroy),
    R("cuArrayGetMemoryRequirements", 11060, cuArrayGetMemoryRequirements),
    R("cuMipmappedArrayGetMemoryRequirements", 11060, cuMipmappedArrayGetMemoryRequirements),
    R("cuModuleLoadData", 2000, cuModuleLoadData), R("cuModuleUnload", 2000, cuModuleUnload),
    R("cuModuleGetFunction", 2000, cuModuleGetFunction), R("cuStreamCreate", 2000, cuStreamCreate),
    R("cuStreamDestroy", 4000, cuStreamDestroy_v2),
    R("cuStreamSynchronize", 2000, cuStreamSynchronize), P("cuStreamSynchronize", 7000, cuStreamSynchronize_ptsz),
    R("cuLaunchKernel", 4000, cuLaunchKernel), P("cuLaunchKernel", 7000, cuLaunchKernel_ptsz),
    R("cuLaunchKernelEx", 11060, cuLaunchKernelEx), P("cuLaunchKernelEx", 11060, cuLaunchKernelEx_ptsz),
    R("cuLaunchCooperativeKernel", 9000, cuLaunchCooperativeKernel),
    P("cuLaunchCooperativeKernel", 9000, cuLaunchCooperativeKernel_ptsz),
    R("cuGraphCreate", 10000, cuGraphCreate), R("cuGraphDestroy", 10000, cuGraphDestroy),
    R("cuGraphAddKernelNode", 12000, cuGraphAddKernelNode_v2), R("cuGraphGetNodes", 10000, cuGraphGetNodes),
    R("cuGraphNodeGetType", 10000, cuGraphNodeGetType),
    R("cuGraphKernelNodeGetParams", 12000, cuGraphKernelNodeGetParams_v2),
    R("cuGraphInstantiateWithFlags", 11040, cuGraphInstantiateWithFlags),
    R("cuGraphInstantiateWithParams", 12000, cuGraphInstantiateWithParams),
    P("cuGraphInstantiateWithParams", 12000, cuGraphInstantiateWithParams_ptsz),
    R("cuGraphExecDestroy", 10000, cuGraphExecDestroy),
    R("cuGraphLaunch", 10000, cuGraphLaunch), P("cuGraphLaunch", 10000, cuGraphLaunch_ptsz),
};
#undef R
#undef P

static CUresult lookup(const char *sym, void **pfn, int ver, cuuint64_t flags, int *status)
{
    if (!sym || !pfn) return CUDA_ERROR_INVALID_VALUE;
    struct fake_view *v = fake_view();
    if (v && ver > v->st->driver_version) return CUDA_ERROR_INVALID_VALUE;
    const struct proc_row *best = NULL, *best_ptds = NULL;
    int known = 0;
    for (size_t i = 0; i < sizeof g_rows / sizeof g_rows[0]; i++) {
        const struct proc_row *r = &g_rows[i];
        if (strcmp(r->base, sym)) continue;
        known = 1;
        if (r->since > ver) continue;
        if (r->ptds) {
            if (!best_ptds || r->since > best_ptds->since) best_ptds = r;
        } else if (!best || r->since > best->since) {
            best = r;
        }
    }
    if ((flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) && best_ptds) best = best_ptds;
    *pfn = best ? best->fn : NULL;
    *status = best ? CU_GET_PROC_ADDRESS_SUCCESS
                   : known ? CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGetProcAddress(const char *sym, void **pfn, int ver, cuuint64_t flags)
{
    FAKE_COUNT(cuGetProcAddress);
    int status;
    return lookup(sym, pfn, ver, flags, &status);
}

EXPORT CUresult cuGetProcAddress_v2(const char *sym, void **pfn, int ver, cuuint64_t flags,
                                    CUdriverProcAddressQueryResult *status)
{
    FAKE_COUNT(cuGetProcAddress_v2);
    int st = 0;
    CUresult r = lookup(sym, pfn, ver, flags, &st);
    if (status) *status = st;
    return r;
}
