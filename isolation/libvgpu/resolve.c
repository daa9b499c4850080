/* Entry-point resolution. Three routes reach the driver; all three land on our wrappers:
 *   - direct calls to the versioned names (cuMemAlloc_v2, ...), which we export;
 *   - dlsym(handle, name): our exported dlsym asks the real one, then swaps a real driver pointer
 *     for its wrapper (identity, so any handle and any spelling works);
 *   - cuGetProcAddress(_v2): we call the real resolver with the same symbol, version and flags
 *     and swap the pointer it returns for the wrapper of exactly that variant (_v2/_v3, _ptsz,
 *     _ptds), so ABI versions and per-thread-stream semantics are the driver's own choice. */
#include "vgpu.h"

#include <dlfcn.h>
#include <link.h>
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
__attribute__((visibility("hidden"))) dlsym_fn vgpu_real_dlsym_ptr; /* read by the trampoline below */

/* The dlsym path may run before a sanitizer runtime preloaded ahead of us has set itself up (it
 * resolves its interceptors through dlsym): keep it uninstrumented. */
#define EARLY __attribute__((no_sanitize_address, no_sanitize_undefined))

EARLY static dlsym_fn real_dlsym_fn(void)
{
    dlsym_fn f = __atomic_load_n(&vgpu_real_dlsym_ptr, __ATOMIC_ACQUIRE);
    if (f) return f;
    static const char *const versions[] = { "GLIBC_2.34", "GLIBC_2.2.5", "GLIBC_2.17", "GLIBC_2.0", NULL };
    for (int i = 0; versions[i] && !f; i++) f = (dlsym_fn)dlvsym(RTLD_NEXT, "dlsym", versions[i]);
    if (!f) {
        vgpu_log(LOG_ERROR, "cannot find the C library's dlsym: symbol lookups will fail");
        return NULL;
    }
    __atomic_store_n(&vgpu_real_dlsym_ptr, f, __ATOMIC_RELEASE);
    return f;
}

__attribute__((visibility("hidden"))) void *vgpu_dlsym_init(void);
EARLY void *vgpu_dlsym_init(void) { return (void *)real_dlsym_fn(); }

EARLY void *vgpu_real_dlsym(void *h, const char *name)
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
/* RTLD_NEXT means "after the caller", and the real dlsym would take us for the caller: walk the
 * objects that follow the caller ourselves, keeping the first that defines the name. */
static void *next_after(const void *caller, const char *name)
{
    Dl_info info;
    struct link_map *lm = NULL;
    if (!dladdr1(caller, &info, (void **)&lm, RTLD_DL_LINKMAP) || !lm) return vgpu_real_dlsym(RTLD_NEXT, name);
    for (struct link_map *l = lm->l_next; l; l = l->l_next) {
        if (!l->l_name || !l->l_name[0]) continue;
        void *h = dlopen(l->l_name, RTLD_LAZY | RTLD_NOLOAD); /* not the vDSO, only real objects */
        if (!h) continue;
        void *p = vgpu_real_dlsym(h, name);
        dlclose(h);
        struct link_map *def = NULL;
        if (p && dladdr1(p, &info, (void **)&def, RTLD_DL_LINKMAP) && def == l) return p;
    }
    return NULL;
}

#if defined(__x86_64__)
/* dlsym(RTLD_NEXT, ...) is answered relative to the caller's object, found by glibc from its
 * return address: jump (not call) into the real dlsym so that the return address is our caller's.
 * Any other handle goes to vgpu_dlsym_c. The pointer is filled on first use (before, the
 * trampoline calls vgpu_dlsym_init, keeping the arguments and the stack alignment). */
__asm__(".text\n"
        ".globl dlsym\n"
        ".type dlsym,@function\n"
        "dlsym:\n"
        "  cmpq $-1, %rdi\n"
        "  jne vgpu_dlsym_c\n"
        "  movq vgpu_real_dlsym_ptr(%rip), %rax\n"
        "  testq %rax, %rax\n"
        "  jz 1f\n"
        "  jmp *%rax\n"
        "1:\n"
        "  pushq %rdi\n"
        "  pushq %rsi\n"
        "  subq $8, %rsp\n"
        "  call vgpu_dlsym_init\n"
        "  addq $8, %rsp\n"
        "  popq %rsi\n"
        "  popq %rdi\n"
        "  testq %rax, %rax\n"
        "  jz 2f\n"
        "  jmp *%rax\n"
        "2:\n"
        "  xorl %eax, %eax\n"
        "  ret\n"
        ".size dlsym, .-dlsym\n");
__attribute__((visibility("hidden"))) void *vgpu_dlsym_c(void *handle, const char *name);
EARLY void *vgpu_dlsym_c(void *handle, const char *name)
#else
VGPU_EXPORT void *dlsym(void *handle, const char *name)
#endif
{
    void *p = handle == RTLD_NEXT ? next_after(__builtin_return_address(0), name) : vgpu_real_dlsym(handle, name);
    /* plain character tests first: no TLS, no libc call (a sanitizer may still be starting) */
    int cuda = name[0] == 'c' && name[1] == 'u';
    int nvml = name[0] == 'n' && name[1] == 'v' && name[2] == 'm' && name[3] == 'l';
    if (!p || (!cuda && !nvml) || t_resolving) return p;
    if (cuda) {
        if (!atomic_load_explicit(&g_cuda_ready, memory_order_acquire)) {
            if (!loaded("libcuda.so.1")) return p;
            vgpu_resolve_cuda();
            atomic_store(&g_cuda_ready, 1);
        }
    } else {
        if (!atomic_load_explicit(&g_nvml_ready, memory_order_acquire)) {
            if (!loaded("libnvidia-ml.so.1")) return p;
            vgpu_resolve_nvml();
            atomic_store(&g_nvml_ready, 1);
        }
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

VGPU_EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int version, cuuint64_t flags)
{
    vgpu_resolve_cuda();
    if (!REAL(cuGetProcAddress)) return CUDA_ERROR_NOT_SUPPORTED;
    CUresult r = REAL(cuGetProcAddress)(symbol, pfn, version, flags);
    if (r == CUDA_SUCCESS) swap_for_wrapper(pfn);
    return r;
}

VGPU_EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version, cuuint64_t flags,
                                         CUdriverProcAddressQueryResult *status)
{
    vgpu_resolve_cuda();
    if (!REAL(cuGetProcAddress_v2)) return CUDA_ERROR_NOT_SUPPORTED;
    CUresult r = REAL(cuGetProcAddress_v2)(symbol, pfn, version, flags, status);
    if (r == CUDA_SUCCESS) swap_for_wrapper(pfn);
    return r;
}
