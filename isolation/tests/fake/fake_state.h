/* State shared by the fake libcuda.so.1, the fake libnvidia-ml.so.1 and the test tools.
 *
 * One mmap'd file ($TESSERA_FAKE_STATE) per simulated node holds the devices (from
 * $TESSERA_FAKE_GPUS), the bytes each process was granted, the device-wide virtual timeline that
 * launches append busy time to, and a call counter per fake entry point. A robust process-shared
 * mutex guards it, so a process killed inside the fake never blocks the others. */
#ifndef TESSERA_FAKE_STATE_H
#define TESSERA_FAKE_STATE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define FAKE_MAGIC 0x46414b45u /* "FAKE" */
#define FAKE_VERSION 2u
#define FAKE_MAX_DEV 16
#define FAKE_MAX_PROC 1024 /* a node's worth: 8 devices x 80 processes and more (the watchdog benchmark) */
#define FAKE_RING 4096

/* Every fake entry point, in one list: call counters are indexed by it. */
#define FAKE_CALLS(X) \
    X(cuInit) X(cuDriverGetVersion) X(cuGetProcAddress) X(cuGetProcAddress_v2) X(cuGetExportTable) \
    X(cuGetErrorString) X(cuGetErrorName) X(cuDeviceGetCount) X(cuDeviceGet) X(cuDeviceGetName) \
    X(cuDeviceGetUuid) X(cuDeviceGetUuid_v2) X(cuDeviceGetPCIBusId) X(cuDeviceTotalMem_v2) \
    X(cuDeviceGetAttribute) X(cuDevicePrimaryCtxRetain) X(cuDevicePrimaryCtxRelease_v2) \
    X(cuDevicePrimaryCtxSetFlags_v2) X(cuDevicePrimaryCtxGetState) X(cuDevicePrimaryCtxReset_v2) \
    X(cuCtxCreate_v2) X(cuCtxDestroy_v2) X(cuCtxGetCurrent) X(cuCtxSetCurrent) X(cuCtxPushCurrent_v2) \
    X(cuCtxPopCurrent_v2) X(cuCtxGetDevice) X(cuCtxGetDevice_v2) X(cuCtxSynchronize) X(cuCtxSynchronize_v2) \
    X(cuMemAlloc_v2) X(cuMemFree_v2) X(cuMemGetInfo_v2) X(cuMemAllocManaged) X(cuMemAllocPitch_v2) \
    X(cuMemGetAddressRange_v2) X(cuMemAllocHost_v2) X(cuMemHostAlloc) X(cuMemFreeHost) \
    X(cuMemHostRegister_v2) X(cuMemHostUnregister) X(cuMemcpy) X(cuMemcpy_ptds) X(cuMemsetD8_v2) \
    X(cuMemsetD8_v2_ptds) X(cuMemAdvise) X(cuMemAdvise_v2) X(cuMemPrefetchAsync) X(cuMemPrefetchAsync_ptsz) \
    X(cuMemPrefetchAsync_v2) X(cuMemPrefetchAsync_v2_ptsz) X(cuMemAllocAsync) X(cuMemAllocAsync_ptsz) \
    X(cuMemFreeAsync) X(cuMemFreeAsync_ptsz) X(cuMemAllocFromPoolAsync) X(cuMemAllocFromPoolAsync_ptsz) \
    X(cuDeviceGetDefaultMemPool) X(cuDeviceGetMemPool) X(cuDeviceSetMemPool) X(cuMemPoolCreate) \
    X(cuMemPoolDestroy) X(cuMemPoolGetAttribute) X(cuMemPoolSetAttribute) X(cuMemPoolTrimTo) \
    X(cuMemGetAllocationGranularity) X(cuMemCreate) X(cuMemRelease) X(cuMemAddressReserve) \
    X(cuMemAddressFree) X(cuMemMap) X(cuMemUnmap) X(cuMemSetAccess) X(cuArrayCreate_v2) \
    X(cuArray3DCreate_v2) X(cuArrayDestroy) X(cuMipmappedArrayCreate) X(cuMipmappedArrayDestroy) \
    X(cuArrayGetMemoryRequirements) X(cuMipmappedArrayGetMemoryRequirements) X(cuModuleLoadData) \
    X(cuModuleUnload) X(cuModuleGetFunction) X(cuStreamCreate) X(cuStreamDestroy_v2) \
    X(cuStreamSynchronize) X(cuStreamSynchronize_ptsz) X(cuLaunchKernel) X(cuLaunchKernel_ptsz) \
    X(cuLaunchKernelEx) X(cuLaunchKernelEx_ptsz) X(cuLaunchCooperativeKernel) \
    X(cuLaunchCooperativeKernel_ptsz) X(cuGraphCreate) X(cuGraphDestroy) X(cuGraphAddKernelNode_v2) \
    X(cuGraphGetNodes) X(cuGraphNodeGetType) X(cuGraphKernelNodeGetParams_v2) \
    X(cuGraphInstantiateWithFlags) X(cuGraphInstantiateWithParams) \
    X(cuGraphInstantiateWithParams_ptsz) X(cuGraphExecDestroy) X(cuGraphLaunch) X(cuGraphLaunch_ptsz) \
    X(nvmlInit) X(nvmlInit_v2) X(nvmlDeviceGetMemoryInfo) X(nvmlDeviceGetMemoryInfo_v2) \
    X(nvmlDeviceGetComputeRunningProcesses) X(nvmlDeviceGetGraphicsRunningProcesses) \
    X(nvmlDeviceGetProcessUtilization)

#define FAKE_ENUM(n) FAKE_CALL_##n,
enum { FAKE_CALLS(FAKE_ENUM) FAKE_NCALLS };
#undef FAKE_ENUM
extern const char *const fake_call_names[FAKE_NCALLS];

struct fake_interval {
    int64_t start, end; /* CLOCK_MONOTONIC ns */
    int32_t pid, pad;
};

struct fake_dev {
    char uuid[64];
    char name[64];
    uint64_t capacity; /* bytes */
    uint32_t sms, pad;
    uint64_t used; /* bytes granted, all processes */
    int64_t busy_until; /* end of the queued work on the timeline */
    int64_t busy_scheduled; /* total busy ns ever queued */
    uint64_t launches;
    uint32_t ring_head, ring_count;
    struct fake_interval ring[FAKE_RING];
};

struct fake_proc {
    int32_t pid, has_ctx; /* has_ctx: bitmask of devices with a context */
    uint64_t starttime;
    uint64_t granted[FAKE_MAX_DEV];
};

struct fake_state {
    uint32_t magic, version, ndev, period_ms;
    int32_t driver_version, max_queue_ms;
    union { pthread_mutex_t m; char pad[64]; } lock;
    _Atomic uint64_t calls[FAKE_NCALLS];
    struct fake_dev dev[FAKE_MAX_DEV];
    struct fake_proc proc[FAKE_MAX_PROC];
};

/* The process's view: state plus the visible devices (NVIDIA_VISIBLE_DEVICES) in ordinal order. */
struct fake_view {
    struct fake_state *st;
    int nvis;
    int vis[FAKE_MAX_DEV]; /* ordinal -> state device index */
};

/* Map (and on first use create) the state file; NULL with a message on stderr on failure. */
struct fake_state *fake_state_open(void);
/* The cached per-process view (opens the state once). */
struct fake_view *fake_view(void);
void fake_lock(struct fake_state *st);
void fake_unlock(struct fake_state *st);
int64_t fake_now_ns(void);
uint64_t fake_proc_starttime(int pid);
/* Slot of the calling process (created on demand; lock held). */
struct fake_proc *fake_self_locked(struct fake_state *st);
/* Free what dead processes were granted (lock held). */
void fake_reap_locked(struct fake_state *st);
/* Grant / return bytes on a state device for the calling process (lock taken inside). */
int fake_grant(int sdev, uint64_t bytes);
void fake_ungrant(int sdev, uint64_t bytes);
/* Append busy time to a device's timeline, blocking while the launch queue is full. */
void fake_timeline_add(int sdev, int64_t duration_ns);
/* Busy ns of the device (pid = 0) or of one pid within [from, to). */
int64_t fake_busy_between_locked(struct fake_dev *d, int pid, int64_t from, int64_t to);
/* Busy ns executed so far, all processes. */
int64_t fake_busy_done_locked(struct fake_dev *d, int64_t now);
/* Parse a size such as 143771MiB, 80GiB, 4096m, 1g or plain bytes; 0 if malformed. */
uint64_t fake_parse_size(const char *s);

#define FAKE_COUNT(name) \
    do { struct fake_view *v_ = fake_view(); \
         if (v_) atomic_fetch_add_explicit(&v_->st->calls[FAKE_CALL_##name], 1, memory_order_relaxed); } while (0)

#endif
