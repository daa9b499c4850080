/* Entry-point resolution. Three routes reach the driver; all three land on our wrappers:
 *   - direct calls to the versioned names (cuMemAlloc_v2, ...), which we export;
 *   - dlsym(handle, name): our exported dlsym asks the real one, then swaps a real driver pointer
 *     for its wrapper (identity, so any handle and any spelling works);
 *   - cuGetProcAddress(_v2): we call the real resolver with the same symbol, version and flags
 *     and swap the pointer it returns for the wrapper of exactly that variant (_v2/_v3, _ptsz,
 *     _ptds), so ABI versions and per-thread-stream semantics are the driver's own choice. */
#include "vgpu.h"

#include <dlfcn.h>
#include <pthread.h>
#include <string.h>

void *vgpu_real[H_COUNT];
void *vgpu_use[U_COUNT];

#define HOOK_NAME(n) #n,
static const char *const hook_names[H_COUNT] = { VGPU_HOOKS(HOOK_NAME) };
static const char *const use_names[U_COUNT] = { VGPU_CUDA_USES(HOOK_NAME) "", VGPU_NVML_USES(HOOK_NAME) };
#undef HOOK_NAME

/* our wrappers, in hook order */
#define HOOK_ADDR(n) (void *)&n,
static void *const wrappers[H_COUNT] = { VGPU_HOOKS(HOOK_ADDR) };

/* ---- the real dlsym ---- */
typedef void *(*dlsym_fn)(void *, const char *);
static _Atomic(dlsym_fn) g_real_dlsym;

static dlsym_fn real_dlsym_fn(void)
{
    dlsym_fn f = atomic_load_explicit(&g_real_dlsym, memory_order_acquire);
    if (f) return f;
    static const char *const versions[] = { "GLIBC_2.34", "GLIBC_2.2.5", "GLIBC_2.17", "GLIBC_2.0", NULL };
    for (int i = 0; versions[i] && !f; i++) f = (dlsym_fn)dlvsym(RTLD_NEXT, "dlsym", versions[i]);
    if (!f) {
        vgpu_log(LOG_ERROR, "cannot find the C library's dlsym: symbol lookups will fail");
        return NULL;
    }
    atomic_store_explicit(&g_real_dlsym, f, memory_order_release);
    return f;
}

void *vgpu_real_dlsym(void *h, const char *name)
{
    dlsym_fn f = real_dlsym_fn();
    return f ? f(h, name) : NULL;
}

/* ---- identity map: real pointer -> wrapper (open addressing, filled once per library) ---- */
#define MAP_SIZE 256 /* power of two, > 2 * H_COUNT */
static const void *g_map_key[MAP_SIZE];
static void *g_map_val[MAP_SIZE];
static pthread_mutex_t g_map_mu = PTHREAD_MUTEX_INITIALIZER;
_Static_assert(MAP_SIZE > 2 * H_COUNT, "identity map too small");

static size_t map_slot(const void *p) { return ((uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ULL >> 56 & (MAP_SIZE - 1); }

static void map_put(const void *real, void *wrapper)
{
    for (size_t i = map_slot(real);; i = (i + 1) & (MAP_SIZE - 1)) {
        const void *k = __atomic_load_n(&g_map_key[i], __ATOMIC_ACQUIRE);
        if (k == real) return;
        if (!k) {
            g_map_val[i] = wrapper;
            __atomic_store_n(&g_map_key[i], real, __ATOMIC_RELEASE);
            return;
        }
    }
}

void *vgpu_wrapper_for(const void *real)
{
    if (!real) return NULL;
    for (size_t i = map_slot(real);; i = (i + 1) & (MAP_SIZE - 1)) {
        const void *k = __atomic_load_n(&g_map_key[i], __ATOMIC_ACQUIRE);
        if (k == real) return g_map_val[i];
        if (!k) return NULL;
    }
}

static void load_table(const char *soname, int hook_from, int hook_to, int use_from, int use_to)
{
    void *h = dlopen(soname, RTLD_LAZY | RTLD_NODELETE);
    if (!h) {
        vgpu_log(LOG_INFO, "%s not loadable: %s", soname, dlerror());
        return;
    }
    pthread_mutex_lock(&g_map_mu);
    for (int i = hook_from; i < hook_to; i++) {
        void *p = vgpu_real_dlsym(h, hook_names[i]);
        if (p == wrappers[i]) p = NULL; /* never our own export */
        __atomic_store_n(&vgpu_real[i], p, __ATOMIC_RELEASE);
        if (p) map_put(p, wrappers[i]);
    }
    for (int i = use_from; i < use_to; i++) vgpu_use[i] = vgpu_real_dlsym(h, use_names[i]);
    pthread_mutex_unlock(&g_map_mu);
}

static pthread_once_t g_cuda_once = PTHREAD_ONCE_INIT, g_nvml_once = PTHREAD_ONCE_INIT;
static __thread int t_resolving; /* the driver's own constructors may call dlsym */

static void cuda_once(void) { load_table("libcuda.so.1", 0, H_CUDA_COUNT, 0, U_CUDA_COUNT_MARK); }
static void nvml_once(void) { load_table("libnvidia-ml.so.1", H_CUDA_COUNT, H_COUNT, U_CUDA_COUNT_MARK + 1, U_COUNT); }

void vgpu_resolve_cuda(void)
{
    t_resolving++;
    pthread_once(&g_cuda_once, cuda_once);
    t_resolving--;
}

void vgpu_resolve_nvml(void)
{
    t_resolving++;
    pthread_once(&g_nvml_once, nvml_once);
    t_resolving--;
}

static _Atomic int g_cuda_ready, g_nvml_ready;

/* Is the library that defines driver symbols already in the process? (never load it ourselves) */
static int loaded(const char *soname)
{
    void *h = dlopen(soname, RTLD_LAZY | RTLD_NOLOAD);
    if (!h) return 0;
    dlclose(h);
    return 1;
}

/* The dlsym every caller in the process reaches: we precede libc in the lookup scope, and an
 * unversioned definition satisfies references to either of glibc's versions (dlsym@GLIBC_2.2.5 of
 * binaries linked before glibc 2.34, dlsym@@GLIBC_2.34 after); tests/test_hooks.c checks both. */
VGPU_EXPORT void *dlsym(void *handle, const char *name)
{
    void *p = vgpu_real_dlsym(handle, name);
    if (!p || t_resolving || (name[0] != 'c' && name[0] != 'n')) return p;
    if (name[0] == 'c' && name[1] == 'u') {
        if (!atomic_load_explicit(&g_cuda_ready, memory_order_acquire)) {
            if (!loaded("libcuda.so.1")) return p;
            vgpu_resolve_cuda();
            atomic_store(&g_cuda_ready, 1);
        }
    } else if (!strncmp(name, "nvml", 4)) {
        if (!atomic_load_explicit(&g_nvml_ready, memory_order_acquire)) {
            if (!loaded("libnvidia-ml.so.1")) return p;
            vgpu_resolve_nvml();
            atomic_store(&g_nvml_ready, 1);
        }
    } else {
        return p;
    }
    void *w = vgpu_wrapper_for(p);
    return w ? w : p;
}

/* ---- cuGetProcAddress ---- */
static void swap_for_wrapper(void **pfn)
{
    if (!pfn || !*pfn) return;
    void *w = vgpu_wrapper_for(*pfn);
    if (w) *pfn = w;
}

VGPU_EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int version, unsigned long long flags)
{
    vgpu_resolve_cuda();
    if (!REAL(cuGetProcAddress)) return CUDA_ERROR_NOT_SUPPORTED;
    CUresult r = REAL(cuGetProcAddress)(symbol, pfn, version, flags);
    if (r == CUDA_SUCCESS) swap_for_wrapper(pfn);
    return r;
}

VGPU_EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version, unsigned long long flags,
                                         CUdriverProcAddressQueryResult *status)
{
    vgpu_resolve_cuda();
    if (!REAL(cuGetProcAddress_v2)) return CUDA_ERROR_NOT_SUPPORTED;
    CUresult r = REAL(cuGetProcAddress_v2)(symbol, pfn, version, flags, status);
    if (r == CUDA_SUCCESS) swap_for_wrapper(pfn);
    return r;
}
