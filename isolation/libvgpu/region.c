/* The container's shared region: creation and validation of the file, the robust lock, process
 * slots, and the charge that keeps every process of the container under one limit.
 *
 * Charges are made under a process-shared ROBUST mutex: the check and the reservation are one
 * step, so processes never overshoot together. A holder that dies leaves EOWNERDEAD to the next
 * locker, which reclaims dead slots and recomputes the totals from the slots (the slots are the
 * truth; a half-written total is rebuilt). */
#include "vgpu.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

uint64_t vgpu_starttime(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return 0;
    int field = 2;
    for (; *p && field < 22; p++)
        if (*p == ' ') field++;
    return strtoull(p, NULL, 10);
}

int vgpu_pid_alive(int pid, uint64_t starttime)
{
    if (pid <= 0) return 0;
    if (kill(pid, 0) != 0 && errno == ESRCH) return 0;
    uint64_t st = vgpu_starttime(pid);
    return !(st && starttime && st != starttime); /* a reused PID is a different process */
}

static void recompute_totals_locked(struct vgpu_region *r)
{
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        uint64_t sum = 0;
        for (int i = 0; i < VGPU_MAX_SLOTS; i++)
            if (atomic_load(&r->slot[i].pid)) sum += atomic_load(&r->slot[i].used[d]);
        atomic_store(&r->dev[d].used, sum);
    }
}

void vgpu_region_reclaim_locked(struct vgpu_region *r)
{
    for (int i = 0; i < VGPU_MAX_SLOTS; i++) {
        struct vgpu_slot *s = &r->slot[i];
        int pid = atomic_load(&s->pid);
        if (!pid || vgpu_pid_alive(pid, s->starttime)) continue;
        for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
            uint64_t u = atomic_exchange(&s->used[d], 0);
            uint64_t cur = atomic_load(&r->dev[d].used);
            atomic_store(&r->dev[d].used, cur >= u ? cur - u : 0);
        }
        vgpu_log(LOG_INFO, "reclaimed the slot of exited process %d", pid);
        atomic_store(&s->hostpid, 0);
        atomic_store(&s->pid, 0);
    }
}

int vgpu_region_lock(struct vgpu_region *r)
{
    int rc = pthread_mutex_lock(&r->lock.m);
    if (rc == EOWNERDEAD) {
        vgpu_log(LOG_WARN, "a process died holding the region lock: recovering");
        vgpu_region_reclaim_locked(r);
        recompute_totals_locked(r);
        pthread_mutex_consistent(&r->lock.m);
        return 0;
    }
    if (rc) vgpu_log(LOG_ERROR, "region lock failed: %s", strerror(rc));
    return rc ? -1 : 0;
}

void vgpu_region_unlock(struct vgpu_region *r) { pthread_mutex_unlock(&r->lock.m); }

static void init_region(struct vgpu_region *r, const struct vgpu_config *cfg)
{
    memset(r, 0, sizeof *r);
    r->layout_version = VGPU_LAYOUT_VERSION;
    r->struct_size = sizeof *r;
    r->max_devices = VGPU_MAX_DEVICES;
    r->max_slots = VGPU_MAX_SLOTS;
    r->priority = cfg->priority;
    r->policy = (uint32_t)cfg->policy;
    uint64_t id = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (read(fd, &id, sizeof id) != (ssize_t)sizeof id) id = 0;
        close(fd);
    }
    r->container_id = id ? id : ((uint64_t)getpid() << 32 ^ (uint64_t)time(NULL));
    r->created_unix = time(NULL);
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        r->dev[d].limit = cfg->mem_limit[d];
        r->dev[d].sm_limit = cfg->sm_limit[d];
    }
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&r->lock.m, &a);
    pthread_mutexattr_destroy(&a);
    __atomic_store_n(&r->magic, VGPU_REGION_MAGIC, __ATOMIC_RELEASE);
}

/* Refuse with a message; the caller marks the process broken (CUDA calls fail cleanly). */
static const char *validate(const struct vgpu_region *r, size_t file_size)
{
    if (r->magic != VGPU_REGION_MAGIC) return "foreign file (not a libvgpu region; a HAMi-core cache?)";
    if (r->layout_version != VGPU_LAYOUT_VERSION) return "written by another libvgpu layout version";
    if (r->struct_size != sizeof *r || r->max_devices != VGPU_MAX_DEVICES || r->max_slots != VGPU_MAX_SLOTS)
        return "corrupt header (sizes do not match this library)";
    if (file_size < sizeof *r) return "truncated";
    if (atomic_load(&r->device_count) > VGPU_MAX_DEVICES || r->policy > POLICY_DISABLE) return "corrupt header";
    return NULL;
}

struct vgpu_region *vgpu_region_open(const char *path, const struct vgpu_config *cfg)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) {
        vgpu_log(LOG_ERROR, "cannot open the shared region %s: %s", path, strerror(errno));
        return NULL;
    }
    fchmod(fd, 0666); /* every user of the container shares it */
    flock(fd, LOCK_EX);
    struct stat sb;
    struct vgpu_region *r = NULL;
    const char *why = NULL;
    if (fstat(fd, &sb) != 0) {
        why = strerror(errno);
        goto out;
    }
    size_t size = (size_t)sb.st_size;
    if (size == 0) {
        if (ftruncate(fd, sizeof *r) != 0) {
            why = strerror(errno);
            goto out;
        }
    } else if (size < sizeof(uint32_t) * 3) {
        why = "truncated";
        goto out;
    }
    size_t map_size = size && size < sizeof *r ? size : sizeof *r;
    void *m = mmap(NULL, map_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        why = strerror(errno);
        goto out;
    }
    if (size == 0) {
        init_region(m, cfg);
        r = m;
        goto out;
    }
    if (map_size < sizeof *r) {
        const uint32_t *hdr = m;
        why = hdr[0] == VGPU_REGION_MAGIC ? "truncated" : "foreign file (not a libvgpu region)";
        munmap(m, map_size);
        goto out;
    }
    why = validate(m, size);
    if (why) {
        munmap(m, map_size);
        goto out;
    }
    r = m;
    for (int d = 0; d < VGPU_MAX_DEVICES; d++)
        if (r->dev[d].limit != cfg->mem_limit[d] || r->dev[d].sm_limit != cfg->sm_limit[d]) {
            vgpu_log(LOG_WARN, "device %d: the region holds limits %llu bytes / %u %% that differ from this "
                     "process's env; the region's win (one limit per container)",
                     d, (unsigned long long)r->dev[d].limit, r->dev[d].sm_limit);
            break;
        }
out:
    flock(fd, LOCK_UN);
    close(fd);
    if (why)
        vgpu_log(LOG_ERROR, "refusing the shared region %s: %s. Remove the file (or fix "
                 "CUDA_DEVICE_MEMORY_SHARED_CACHE) and restart; CUDA calls fail until then", path, why);
    return r;
}

struct vgpu_slot *vgpu_region_register(struct vgpu_region *r)
{
    int pid = getpid();
    uint64_t start = vgpu_starttime(pid);
    if (vgpu_region_lock(r)) return NULL;
    vgpu_region_reclaim_locked(r);
    struct vgpu_slot *mine = NULL;
    for (int i = 0; i < VGPU_MAX_SLOTS && !mine; i++)
        if (atomic_load(&r->slot[i].pid) == pid) mine = &r->slot[i];
    if (mine && mine->starttime != start) { /* a previous process with our PID: its slot is stale */
        for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
            uint64_t u = atomic_exchange(&mine->used[d], 0);
            uint64_t cur = atomic_load(&r->dev[d].used);
            atomic_store(&r->dev[d].used, cur >= u ? cur - u : 0);
        }
    }
    for (int i = 0; i < VGPU_MAX_SLOTS && !mine; i++)
        if (!atomic_load(&r->slot[i].pid)) mine = &r->slot[i];
    if (mine) {
        mine->starttime = start;
        atomic_store(&mine->hostpid, 0);
        atomic_store(&mine->pid, pid);
    }
    vgpu_region_unlock(r);
    if (!mine) vgpu_log(LOG_ERROR, "the shared region has no free process slot (%d in use)", VGPU_MAX_SLOTS);
    return mine;
}

uint64_t vgpu_limit(int dev)
{
    return vgpu.region && dev >= 0 && dev < VGPU_MAX_DEVICES ? vgpu.region->dev[dev].limit : 0;
}

uint64_t vgpu_used(int dev)
{
    return vgpu.region && dev >= 0 && dev < VGPU_MAX_DEVICES ? atomic_load(&vgpu.region->dev[dev].used) : 0;
}

int vgpu_charge(int dev, uint64_t bytes)
{
    struct vgpu_region *r = vgpu.region;
    if (!r || !vgpu.slot || dev < 0 || dev >= VGPU_MAX_DEVICES || !bytes) return 0;
    if (vgpu_region_lock(r)) return -1;
    uint64_t lim = r->dev[dev].limit, used = atomic_load(&r->dev[dev].used);
    if (lim && (bytes > lim || used > lim - bytes)) {
        vgpu_region_reclaim_locked(r); /* a dead process's memory is free again */
        used = atomic_load(&r->dev[dev].used);
        if (bytes > lim || used > lim - bytes) {
            vgpu_region_unlock(r);
            return -1;
        }
    }
    atomic_store(&r->dev[dev].used, used + bytes);
    atomic_fetch_add(&vgpu.slot->used[dev], bytes);
    vgpu_region_unlock(r);
    return 0;
}

void vgpu_charge_force(int dev, uint64_t bytes)
{
    struct vgpu_region *r = vgpu.region;
    if (!r || !vgpu.slot || dev < 0 || dev >= VGPU_MAX_DEVICES || !bytes) return;
    if (vgpu_region_lock(r)) return;
    atomic_fetch_add(&r->dev[dev].used, bytes);
    atomic_fetch_add(&vgpu.slot->used[dev], bytes);
    vgpu_region_unlock(r);
}

void vgpu_uncharge(int dev, uint64_t bytes)
{
    struct vgpu_region *r = vgpu.region;
    if (!r || !vgpu.slot || dev < 0 || dev >= VGPU_MAX_DEVICES || !bytes) return;
    if (vgpu_region_lock(r)) return;
    uint64_t mine = atomic_load(&vgpu.slot->used[dev]), tot = atomic_load(&r->dev[dev].used);
    atomic_store(&vgpu.slot->used[dev], mine >= bytes ? mine - bytes : 0);
    atomic_store(&r->dev[dev].used, tot >= bytes ? tot - bytes : 0);
    vgpu_region_unlock(r);
}
