/* The container's usage region: creation and validation of the file, the robust lock, process
 * slots, and the charge that keeps every process of the container under one limit.
 *
 * Charges are made under a process-shared ROBUST mutex: the check and the reservation are one
 * step, so processes never overshoot together. Every process can write every byte of the file, so
 * nothing in it is taken on trust:
 *   - liveness is an OFD lock each process holds on its own slot (the kernel drops it when the
 *     process dies; writing memory cannot fake or remove it);
 *   - every slot and every device total carries a check value; a total that fails it is rebuilt
 *     from the slots, a live slot that fails it counts at VGPU_USED_INVALID (more than any limit);
 *   - each process keeps its own charges in private memory (vgpu.mine) and republishes its slot
 *     from there: at every charge, and from the tick thread when the slot was written over.
 * So damage only ever makes the limit stricter, until the honest processes have healed it. */
#include "vgpu.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef F_OFD_GETLK /* glibc < 2.20 headers (the manylinux2014 build); Linux >= 3.15 has them */
#define F_OFD_GETLK 36
#define F_OFD_SETLK 37
#endif

static int32_t g_hostpid; /* the truth behind our slot's hostpid */
static int32_t g_pid; /* ours, from registration (getpid is a system call) */

/* Under the region lock the lock orders everything: plain (relaxed) accesses on the hot path. */
#define STORE(p, v) atomic_store_explicit((p), (v), memory_order_relaxed)
#define LOAD(p) atomic_load_explicit((p), memory_order_relaxed)

/* The keyed parts of the check values, computed again when the salt or our slot's identity
 * changes; `sigma` is the weighted sum of vgpu.mine, kept up to date with each charge. All under
 * the region lock. */
static struct {
    uint64_t salt, total[VGPU_MAX_DEVICES], slot, sigma;
    int index;
    int32_t pid, hostpid;
    int valid;
} g_keys;

/* ---- check values ---- */
static uint64_t mix(uint64_t h, uint64_t w)
{
    h ^= w;
    h *= 0x9E3779B97F4A7C15ULL;
    return h ^ (h >> 29);
}

uint64_t vgpu_check(uint64_t salt, uint64_t tag, const uint64_t *words, int n)
{
    uint64_t h = mix(salt ^ 0x7465737365726121ULL, tag);
    for (int i = 0; i < n; i++) h = mix(h, words[i]);
    return h ? h : 1;
}

/* Checks are a keyed hash of what identifies the record plus a weighted sum of its byte counts, so
 * the hot path, with the keyed part cached (keys_locked), costs a multiply per figure. */
#define TOTAL_WEIGHT 0x9FB21C651E98DF25ULL
static uint64_t weight(int d) { return ((uint64_t)(2 * d + 1) * 0xD6E8FEB86659FD93ULL) | 1; }
static uint64_t nonzero(uint64_t c) { return c ? c : 1; }
static uint64_t total_key(uint64_t salt, int dev) { return vgpu_check(salt, (1ULL << 32) | (uint32_t)dev, NULL, 0); }

static uint64_t slot_key(uint64_t salt, int i, int32_t pid, int32_t hostpid)
{
    uint64_t id = (uint32_t)pid | ((uint64_t)(uint32_t)hostpid << 32);
    return vgpu_check(salt, (2ULL << 32) | (uint32_t)i, &id, 1);
}

uint64_t vgpu_total_check(uint64_t salt, int dev, uint64_t used)
{
    return nonzero(total_key(salt, dev) + used * TOTAL_WEIGHT);
}

static uint64_t slot_check(uint64_t salt, int i, int32_t pid, int32_t hostpid, const uint64_t *used)
{
    uint64_t c = slot_key(salt, i, pid, hostpid);
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) c += used[d] * weight(d);
    return nonzero(c);
}

static uint64_t sat_add(uint64_t a, uint64_t b) { return a + b < a ? UINT64_MAX : a + b; }

static void keys_locked(struct vgpu_region *r)
{
    uint64_t salt = LOAD(&r->salt);
    int index = vgpu.slot ? (int)(vgpu.slot - r->slot) : -1;
    if (g_keys.valid && g_keys.salt == salt && g_keys.index == index && g_keys.pid == g_pid &&
        g_keys.hostpid == g_hostpid)
        return;
    g_keys.salt = salt;
    g_keys.index = index;
    g_keys.pid = g_pid;
    g_keys.hostpid = g_hostpid;
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) g_keys.total[d] = total_key(salt, d);
    g_keys.slot = index >= 0 ? slot_key(salt, index, g_pid, g_hostpid) : 0;
    g_keys.sigma = 0;
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) g_keys.sigma += LOAD(&vgpu.mine[d]) * weight(d);
    g_keys.valid = 1;
}

/* ---- slots ---- */
static int slot_index(const struct vgpu_region *r, const struct vgpu_slot *s) { return (int)(s - r->slot); }

static void slot_read(struct vgpu_slot *s, int32_t *pid, int32_t *hostpid, uint64_t *used)
{
    *pid = atomic_load(&s->pid);
    *hostpid = atomic_load(&s->hostpid);
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) used[d] = atomic_load(&s->used[d]);
}

static void slot_write(struct vgpu_region *r, int i, int32_t pid, int32_t hostpid, const uint64_t *used)
{
    struct vgpu_slot *s = &r->slot[i];
    atomic_store(&s->pid, pid);
    atomic_store(&s->hostpid, hostpid);
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) atomic_store(&s->used[d], used[d]);
    atomic_store(&s->check, slot_check(atomic_load(&r->salt), i, pid, hostpid, used));
}

static void slot_free(struct vgpu_region *r, int i)
{
    static const uint64_t zero[VGPU_MAX_DEVICES];
    slot_write(r, i, 0, 0, zero);
}

/* 1: a free slot as written by slot_free; 0: in use or damaged */
static int slot_is_free(struct vgpu_region *r, int i, uint64_t salt)
{
    int32_t pid, hp;
    uint64_t used[VGPU_MAX_DEVICES];
    slot_read(&r->slot[i], &pid, &hp, used);
    if (pid || hp) return 0;
    for (int d = 0; d < VGPU_MAX_DEVICES; d++)
        if (used[d]) return 0;
    return atomic_load(&r->slot[i].check) == slot_check(salt, i, 0, 0, used);
}

static off_t slot_offset(int i) { return (off_t)(offsetof(struct vgpu_region, slot) + (size_t)i * sizeof(struct vgpu_slot)); }

static int slot_lock_op(int fd, int cmd, int i, short type, struct flock *fl)
{
    memset(fl, 0, sizeof *fl);
    fl->l_type = type;
    fl->l_whence = SEEK_SET;
    fl->l_start = slot_offset(i);
    fl->l_len = sizeof(struct vgpu_slot);
    return fcntl(fd, cmd, fl);
}

static int slot_take(int fd, int i)
{
    struct flock fl;
    if (slot_lock_op(fd, F_OFD_SETLK, i, F_WRLCK, &fl) == 0) return 1;
    if (errno != EAGAIN && errno != EACCES) {
        static int said;
        if (!said++) vgpu_log(LOG_ERROR, "cannot lock a slot of the usage region: %s (OFD locks need Linux 3.15)",
                              strerror(errno));
    }
    return 0;
}

/* Mark the slots in [a, b) that another open file holds a lock on (their owners live): each query
 * returns one conflicting lock, then the parts left and right of it are asked again, so k held
 * slots cost 2k+1 calls. Unknown (no descriptor, an error): everything counts as held. */
static void find_held(int fd, int a, int b, unsigned char *held)
{
    if (a >= b) return;
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = slot_offset(a),
                        .l_len = slot_offset(b) - slot_offset(a) };
    if (fd < 0 || fcntl(fd, F_OFD_GETLK, &fl) != 0) {
        memset(held + a, 1, (size_t)(b - a));
        return;
    }
    if (fl.l_type == F_UNLCK) return;
    off_t end = fl.l_len ? fl.l_start + fl.l_len : slot_offset(b);
    int first = fl.l_start <= slot_offset(a) ? a : (int)((fl.l_start - slot_offset(0)) / (off_t)sizeof(struct vgpu_slot));
    int last = end >= slot_offset(b) ? b : (int)((end - slot_offset(0) + (off_t)sizeof(struct vgpu_slot) - 1) /
                                                 (off_t)sizeof(struct vgpu_slot));
    if (first < a) first = a;
    if (last <= first) last = first + 1; /* never loop on an empty answer */
    memset(held + first, 1, (size_t)(last - first));
    find_held(fd, a, first, held);
    find_held(fd, last, b, held);
}

/* ---- our descriptor: it carries our lock, and an application may close it ---- */
static int fd_is_ours(int fd)
{
    struct stat sb;
    return fd >= 0 && fstat(fd, &sb) == 0 && (uint64_t)sb.st_dev == vgpu.region_dev &&
           (uint64_t)sb.st_ino == vgpu.region_ino;
}

/* A new open file description of our region (its own locks), through `via`; -1 if `via` no longer
 * leads to it. /proc/self/fd/N is a link by design: `follow` for that one only. */
static int reopen(const char *via, int follow)
{
    int fd = open(via, O_RDWR | O_CLOEXEC | O_NONBLOCK | (follow ? 0 : O_NOFOLLOW));
    if (fd >= 0 && !fd_is_ours(fd)) { /* the path no longer leads to our region */
        close(fd);
        fd = -1;
    }
    return fd;
}

static void publish_own_locked(struct vgpu_region *r)
{
    uint64_t used[VGPU_MAX_DEVICES];
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) used[d] = atomic_load(&vgpu.mine[d]);
    slot_write(r, slot_index(r, vgpu.slot), g_pid, g_hostpid, used);
}

/* The application closed (and maybe reused) our descriptor, which dropped our slot's lock: open
 * the region again and take a slot. Until then our slot looked free to the others. */
static void ensure_own_lock_locked(struct vgpu_region *r)
{
    if (!vgpu.slot || fd_is_ours(vgpu.region_fd)) return;
    vgpu_log(LOG_WARN, "the application closed the usage region's descriptor: taking a slot again");
    vgpu.region_fd = reopen(vgpu.cfg.cache_path, 0); /* the old number may be the application's now */
    if (vgpu.region_fd < 0) return; /* others' slots then count as live: stricter */
    int own = slot_index(r, vgpu.slot);
    if (!slot_take(vgpu.region_fd, own)) {
        for (int i = 0; i < VGPU_MAX_SLOTS; i++)
            if (slot_take(vgpu.region_fd, i)) {
                vgpu.slot = &r->slot[i];
                break;
            }
    }
    publish_own_locked(r);
}

void vgpu_region_recompute_locked(struct vgpu_region *r)
{
    uint64_t salt = atomic_load(&r->salt), sum[VGPU_MAX_DEVICES] = { 0 };
    unsigned char held[VGPU_MAX_SLOTS] = { 0 };
    ensure_own_lock_locked(r);
    int own = vgpu.slot ? slot_index(r, vgpu.slot) : -1;
    if (own >= 0) publish_own_locked(r);
    find_held(vgpu.region_fd, 0, VGPU_MAX_SLOTS, held); /* the kernel's word, not the file's */
    for (int i = 0; i < VGPU_MAX_SLOTS; i++) {
        if (i == own) {
            for (int d = 0; d < VGPU_MAX_DEVICES; d++) sum[d] = sat_add(sum[d], atomic_load(&vgpu.mine[d]));
            continue;
        }
        if (!held[i]) { /* free, or its process is gone (the driver freed its memory) */
            if (slot_is_free(r, i, salt)) continue;
            int32_t pid = atomic_load(&r->slot[i].pid);
            if (pid) vgpu_log(LOG_INFO, "reclaimed the slot of exited process %d", pid);
            slot_free(r, i);
            continue;
        }
        int32_t pid, hp;
        uint64_t used[VGPU_MAX_DEVICES];
        slot_read(&r->slot[i], &pid, &hp, used);
        int valid = pid && atomic_load(&r->slot[i].check) == slot_check(salt, i, pid, hp, used);
        for (int d = 0; d < VGPU_MAX_DEVICES; d++) sum[d] = sat_add(sum[d], valid ? used[d] : VGPU_USED_INVALID);
        if (!valid) {
            static int said;
            if (!said++)
                vgpu_log(LOG_WARN, "slot %d of the usage region was written over: counted as exhausting every "
                         "device until its process republishes it", i);
        }
    }
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        atomic_store(&r->dev[d].used, sum[d]);
        atomic_store(&r->dev[d].used_check, vgpu_total_check(salt, d, sum[d]));
    }
}

/* A total that fails its check is rebuilt from the slots (never taken at its word). */
static uint64_t total_locked(struct vgpu_region *r, int i)
{
    keys_locked(r);
    uint64_t u = LOAD(&r->dev[i].used);
    if (LOAD(&r->dev[i].used_check) != nonzero(g_keys.total[i] + u * TOTAL_WEIGHT)) {
        static int said;
        if (!said++) vgpu_log(LOG_WARN, "the usage region's total of device %d was written over: rebuilt", i);
        vgpu_region_recompute_locked(r);
        keys_locked(r); /* our slot may have moved */
        u = atomic_load(&r->dev[i].used);
    }
    return u;
}

/* After total_locked (which brings g_keys up to date). */
static void set_total_locked(struct vgpu_region *r, int i, uint64_t u)
{
    STORE(&r->dev[i].used, u);
    STORE(&r->dev[i].used_check, nonzero(g_keys.total[i] + u * TOTAL_WEIGHT));
}

int vgpu_region_lock(struct vgpu_region *r)
{
    int rc = pthread_mutex_lock(&r->lock.m);
    if (rc == EOWNERDEAD) {
        vgpu_log(LOG_WARN, "a process died holding the region lock: recovering");
        vgpu_region_recompute_locked(r);
        pthread_mutex_consistent(&r->lock.m);
        return 0;
    }
    if (rc) vgpu_log(LOG_ERROR, "region lock failed: %s", strerror(rc));
    return rc ? -1 : 0;
}

void vgpu_region_unlock(struct vgpu_region *r) { pthread_mutex_unlock(&r->lock.m); }

/* ---- the file ---- */
static void init_region(struct vgpu_region *r)
{
    memset(r, 0, sizeof *r);
    r->layout_version = VGPU_LAYOUT_VERSION;
    r->struct_size = sizeof *r;
    r->max_devices = VGPU_MAX_DEVICES;
    r->max_slots = VGPU_MAX_SLOTS;
    uint64_t salt = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (read(fd, &salt, sizeof salt) != (ssize_t)sizeof salt) salt = 0;
        close(fd);
    }
    atomic_store(&r->salt, salt ? salt : ((uint64_t)getpid() << 32 ^ (uint64_t)time(NULL)));
    r->created_unix = time(NULL);
    for (int i = 0; i < VGPU_MAX_SLOTS; i++) slot_free(r, i);
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) set_total_locked(r, d, 0);
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&r->lock.m, &a);
    pthread_mutexattr_destroy(&a);
    __atomic_store_n(&r->magic, VGPU_REGION_MAGIC, __ATOMIC_RELEASE);
}

static const char *validate(const struct vgpu_region *r)
{
    if (r->magic != VGPU_REGION_MAGIC) return "foreign file (not a libvgpu region; a HAMi-core cache?)";
    if (r->layout_version != VGPU_LAYOUT_VERSION) return "written by another libvgpu layout version";
    if (r->struct_size != sizeof *r || r->max_devices != VGPU_MAX_DEVICES || r->max_slots != VGPU_MAX_SLOTS)
        return "corrupt header (sizes do not match this library)";
    if (atomic_load(&r->device_count) > VGPU_MAX_DEVICES) return "corrupt header";
    return NULL;
}

/* Does any process hold a lock on the file (a live user of the region)? */
static int in_use(int fd)
{
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
    return fcntl(fd, F_OFD_GETLK, &fl) != 0 || fl.l_type != F_UNLCK;
}

static struct vgpu_region *map_new(int fd)
{
    if (ftruncate(fd, 0) != 0 || ftruncate(fd, sizeof(struct vgpu_region)) != 0) return NULL;
    void *m = mmap(NULL, sizeof(struct vgpu_region), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) return NULL;
    init_region(m);
    return m;
}

struct vgpu_region *vgpu_region_open(const char *path, int create, int reinit)
{
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | (create ? O_CREAT : 0), 0666);
    if (fd < 0) {
        vgpu_log(LOG_ERROR, "cannot open the usage region %s: %s; CUDA calls fail until it is there", path,
                 strerror(errno));
        return NULL;
    }
    struct stat sb;
    struct vgpu_region *r = NULL;
    const char *why = NULL;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        vgpu_log(LOG_ERROR, "refusing the usage region %s: not a regular file; CUDA calls fail", path);
        return NULL;
    }
    if (create && sb.st_size == 0) fchmod(fd, 0666); /* every user of the container shares it */
    flock(fd, LOCK_EX); /* one opener at a time initialises */
    if (fstat(fd, &sb) != 0) {
        why = strerror(errno);
    } else if (sb.st_size == 0 && in_use(fd)) {
        why = "emptied while processes use it";
    } else if (sb.st_size == 0) {
        if (!(r = map_new(fd))) why = strerror(errno);
    } else if ((size_t)sb.st_size != sizeof *r) {
        uint32_t magic = 0;
        why = pread(fd, &magic, sizeof magic, 0) == (ssize_t)sizeof magic && magic == VGPU_REGION_MAGIC
                  ? "truncated or of another size"
                  : "foreign file (not a libvgpu region)";
    } else {
        void *m = mmap(NULL, sizeof *r, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) why = strerror(errno);
        else if ((why = validate(m))) munmap(m, sizeof *r);
        else r = m;
    }
    if (why && reinit && !in_use(fd)) {
        /* damaged, and no live process charges against it: nothing it held is on the device */
        vgpu_log(LOG_WARN, "the usage region %s was damaged (%s) and no process uses it: initialised again", path,
                 why);
        why = (r = map_new(fd)) ? NULL : strerror(errno);
    }
    flock(fd, LOCK_UN);
    if (why) {
        close(fd);
        vgpu_log(LOG_ERROR, "refusing the usage region %s: %s. %s; CUDA calls fail until then", path, why,
                 reinit ? "It is initialised again once the container's CUDA processes have exited"
                        : "Remove the file (or fix CUDA_DEVICE_MEMORY_SHARED_CACHE) and restart");
        return NULL;
    }
    vgpu.region_fd = fd;
    vgpu.region_dev = (uint64_t)sb.st_dev;
    vgpu.region_ino = (uint64_t)sb.st_ino;
    return r;
}

struct vgpu_slot *vgpu_region_register(struct vgpu_region *r)
{
    if (vgpu_region_lock(r)) return NULL;
    struct vgpu_slot *mine = NULL;
    for (int i = 0; i < VGPU_MAX_SLOTS && !mine && vgpu.region_fd >= 0; i++)
        if (slot_take(vgpu.region_fd, i)) mine = &r->slot[i];
    if (mine) {
        for (int d = 0; d < VGPU_MAX_DEVICES; d++) atomic_store(&vgpu.mine[d], 0);
        g_keys.valid = 0;
        g_hostpid = 0;
        g_pid = getpid();
        vgpu.slot = mine;
        vgpu_region_recompute_locked(r); /* what the slot's last (dead) owner held goes */
    }
    vgpu_region_unlock(r);
    if (!mine) vgpu_log(LOG_ERROR, "the usage region has no free process slot (%d in use)", VGPU_MAX_SLOTS);
    return mine;
}

void vgpu_region_after_fork(void)
{
    /* the inherited descriptor shares the parent's lock: a descriptor of our own, then a slot */
    char self[64];
    snprintf(self, sizeof self, "/proc/self/fd/%d", vgpu.region_fd);
    int fd = reopen(self, 1);
    if (fd < 0) fd = reopen(vgpu.cfg.cache_path, 0);
    if (vgpu.region_fd >= 0) close(vgpu.region_fd);
    vgpu.region_fd = fd;
    vgpu.slot = NULL;
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) atomic_store(&vgpu.mine[d], 0);
    g_keys.valid = 0;
    if (fd >= 0) vgpu.slot = vgpu_region_register(vgpu.region);
}

/* Tick: our slot back if it was written over; totals rebuilt when a check fails, and every second. */
void vgpu_region_heal(void)
{
    struct vgpu_region *r = vgpu.region;
    struct vgpu_slot *s = vgpu.slot;
    if (!r || !s || vgpu_region_lock(r)) return;
    uint64_t salt = atomic_load(&r->salt), used[VGPU_MAX_DEVICES];
    int32_t pid, hp;
    slot_read(s, &pid, &hp, used);
    int bad = pid != g_pid || hp != g_hostpid ||
              atomic_load(&s->check) != slot_check(salt, slot_index(r, s), pid, hp, used);
    for (int d = 0; d < VGPU_MAX_DEVICES && !bad; d++) {
        uint64_t t = atomic_load(&r->dev[d].used);
        bad = used[d] != atomic_load(&vgpu.mine[d]) ||
              atomic_load(&r->dev[d].used_check) != vgpu_total_check(salt, d, t);
    }
    /* and once a second in any case: a total written over with a consistent value (an old copy of the
     * file put back) lasts at most that long */
    static int64_t last_full;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    if (bad || !fd_is_ours(vgpu.region_fd) || now - last_full >= 1000000000LL) {
        last_full = now;
        vgpu_region_recompute_locked(r); /* republishes our slot first */
    }
    vgpu_region_unlock(r);
}

void vgpu_region_set_hostpid(int32_t hostpid)
{
    struct vgpu_region *r = vgpu.region;
    if (!r || !vgpu.slot || vgpu_region_lock(r)) return;
    g_hostpid = hostpid;
    publish_own_locked(r);
    vgpu_region_unlock(r);
}

void vgpu_region_release(void)
{
    struct vgpu_region *r = vgpu.region;
    struct vgpu_slot *s = vgpu.slot;
    /* a child forked without our atfork handler (raw clone) still points at its parent's slot */
    if (!r || !s || atomic_load(&s->pid) != getpid() || vgpu_region_lock(r)) return;
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        uint64_t u = atomic_exchange(&vgpu.mine[d], 0), cur = total_locked(r, d);
        set_total_locked(r, d, cur >= u ? cur - u : 0);
    }
    slot_free(r, slot_index(r, s));
    vgpu.slot = NULL;
    g_keys.valid = 0;
    vgpu_region_unlock(r);
    struct flock fl;
    if (fd_is_ours(vgpu.region_fd)) slot_lock_op(vgpu.region_fd, F_OFD_SETLK, slot_index(r, s), F_UNLCK, &fl);
}

/* ---- charges ---- */
uint64_t vgpu_limit_at(int idx) { return idx >= 0 && idx < vgpu.cfg.ndev ? vgpu.cfg.mem_limit[idx] : 0; }

uint64_t vgpu_used_at(int idx)
{
    struct vgpu_region *r = vgpu.region;
    if (!r || idx < 0 || idx >= VGPU_MAX_DEVICES || vgpu_region_lock(r)) return 0;
    uint64_t u = total_locked(r, idx);
    vgpu_region_unlock(r);
    return u;
}

/* Our slot's device word and check, from private memory (the rest of the slot is as we wrote it;
 * if someone wrote over it, the check fails and the tick republishes all of it). */
/* After total_locked (which brings g_keys up to date). */
static void note_own_locked(struct vgpu_region *r, int i, uint64_t mine)
{
    (void)r;
    g_keys.sigma += (mine - LOAD(&vgpu.mine[i])) * weight(i); /* modulo 2^64, as the check */
    STORE(&vgpu.mine[i], mine);
    STORE(&vgpu.slot->used[i], mine);
    STORE(&vgpu.slot->check, nonzero(g_keys.slot + g_keys.sigma));
}

/* -1: refuse (the file's limits do not cover the device, or we have no slot); 1: not tracked */
static int target(int dev, int *idx)
{
    *idx = vgpu_index(dev);
    if (!vgpu.region) return 1;
    if (*idx < 0) return vgpu.cfg.from_file ? -1 : 1;
    return vgpu.slot ? 0 : -1;
}

int vgpu_charge(int dev, uint64_t bytes)
{
    struct vgpu_region *r = vgpu.region;
    int i, t = target(dev, &i);
    if (t || !bytes) return t < 0 && bytes ? -1 : 0;
    if (vgpu_region_lock(r)) return -1;
    uint64_t lim = vgpu.cfg.mem_limit[i], used = total_locked(r, i);
    if (lim && (bytes > lim || used > lim - bytes)) {
        vgpu_region_recompute_locked(r); /* a dead process's memory is free again */
        keys_locked(r);
        used = atomic_load(&r->dev[i].used);
        if (bytes > lim || used > lim - bytes) {
            vgpu_region_unlock(r);
            return -1;
        }
    }
    note_own_locked(r, i, LOAD(&vgpu.mine[i]) + bytes);
    set_total_locked(r, i, sat_add(used, bytes));
    vgpu_region_unlock(r);
    return 0;
}

void vgpu_charge_force(int dev, uint64_t bytes)
{
    struct vgpu_region *r = vgpu.region;
    int i;
    if (target(dev, &i) || !bytes || vgpu_region_lock(r)) return;
    uint64_t used = total_locked(r, i);
    note_own_locked(r, i, LOAD(&vgpu.mine[i]) + bytes);
    set_total_locked(r, i, sat_add(used, bytes));
    vgpu_region_unlock(r);
}

void vgpu_uncharge(int dev, uint64_t bytes)
{
    struct vgpu_region *r = vgpu.region;
    int i;
    if (target(dev, &i) || !bytes || vgpu_region_lock(r)) return;
    uint64_t tot = total_locked(r, i), mine = LOAD(&vgpu.mine[i]);
    if (bytes > mine) bytes = mine; /* never more than this process charged */
    note_own_locked(r, i, mine - bytes);
    set_total_locked(r, i, tot >= bytes ? tot - bytes : 0);
    vgpu_region_unlock(r);
}
