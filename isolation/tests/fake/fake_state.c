/* Shared state of the fake driver: see fake_state.h. */
#define _GNU_SOURCE
#include "fake_state.h"

#include <ctype.h>
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

#define FAKE_NAME(n) #n,
const char *const fake_call_names[FAKE_NCALLS] = { FAKE_CALLS(FAKE_NAME) };
#undef FAKE_NAME

static const char *default_gpus = "GPU-00000000-0000-4000-8000-000000000001=143771MiB/132sm/NVIDIA H200";

int64_t fake_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

uint64_t fake_parse_size(const char *s)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return 0;
    uint64_t mult = 1;
    if (!strcasecmp(end, "") || !strcasecmp(end, "b")) mult = 1;
    else if (!strcasecmp(end, "k") || !strcasecmp(end, "kib")) mult = 1ULL << 10;
    else if (!strcasecmp(end, "m") || !strcasecmp(end, "mib")) mult = 1ULL << 20;
    else if (!strcasecmp(end, "g") || !strcasecmp(end, "gib")) mult = 1ULL << 30;
    else return 0;
    return (uint64_t)v * mult;
}

/* "<uuid>=<memory>[/<n>sm][/<name>]" entries separated by commas. */
static int parse_gpus(struct fake_state *st, const char *spec)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL;
    int n = 0;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*tok)) tok++;
        if (!*tok) continue;
        if (n >= FAKE_MAX_DEV) {
            fprintf(stderr, "fake-gpu: more than %d devices in TESSERA_FAKE_GPUS\n", FAKE_MAX_DEV);
            return -1;
        }
        char *eq = strchr(tok, '=');
        if (!eq) {
            fprintf(stderr, "fake-gpu: '%s' is not <uuid>=<memory>[/<n>sm][/<name>]\n", tok);
            return -1;
        }
        *eq = 0;
        struct fake_dev *d = &st->dev[n];
        snprintf(d->uuid, sizeof d->uuid, "%s", tok);
        char *rest = eq + 1, *part, *psave = NULL;
        d->sms = 132;
        snprintf(d->name, sizeof d->name, "NVIDIA Fake GPU");
        int field = 0;
        for (part = strtok_r(rest, "/", &psave); part; part = strtok_r(NULL, "/", &psave), field++) {
            size_t len = strlen(part);
            if (field == 0) {
                d->capacity = fake_parse_size(part);
                if (!d->capacity) {
                    fprintf(stderr, "fake-gpu: bad memory '%s' for %s\n", part, d->uuid);
                    return -1;
                }
            } else if (len > 2 && !strcasecmp(part + len - 2, "sm") && isdigit((unsigned char)part[0])) {
                d->sms = (uint32_t)strtoul(part, NULL, 10);
                if (!d->sms) d->sms = 1;
            } else {
                snprintf(d->name, sizeof d->name, "%s", part);
            }
        }
        n++;
    }
    st->ndev = (uint32_t)n;
    return 0;
}

static int env_int(const char *name, int dflt)
{
    const char *v = getenv(name);
    return v && *v ? atoi(v) : dflt;
}

struct fake_state *fake_state_open(void)
{
    const char *path = getenv("TESSERA_FAKE_STATE");
    if (!path || !*path) path = "/tmp/tessera-fake-gpu.state";
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) {
        fprintf(stderr, "fake-gpu: cannot open state %s: %s\n", path, strerror(errno));
        return NULL;
    }
    flock(fd, LOCK_EX);
    struct stat sb;
    if (fstat(fd, &sb) == 0 && (size_t)sb.st_size < sizeof(struct fake_state)) {
        if (ftruncate(fd, sizeof(struct fake_state)) != 0) {
            fprintf(stderr, "fake-gpu: cannot size state %s: %s\n", path, strerror(errno));
            flock(fd, LOCK_UN);
            close(fd);
            return NULL;
        }
    }
    struct fake_state *st = mmap(NULL, sizeof *st, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (st == MAP_FAILED) {
        flock(fd, LOCK_UN);
        close(fd);
        return NULL;
    }
    if (st->magic != FAKE_MAGIC || st->version != FAKE_VERSION) {
        memset(st, 0, sizeof *st);
        const char *gpus = getenv("TESSERA_FAKE_GPUS");
        if (parse_gpus(st, gpus && *gpus ? gpus : default_gpus) != 0) {
            munmap(st, sizeof *st);
            flock(fd, LOCK_UN);
            close(fd);
            return NULL;
        }
        st->period_ms = (uint32_t)env_int("TESSERA_FAKE_NVML_PERIOD_MS", 100);
        st->driver_version = env_int("TESSERA_FAKE_DRIVER_VERSION", 13000);
        st->max_queue_ms = env_int("TESSERA_FAKE_QUEUE_MS", 20);
        pthread_mutexattr_t a;
        pthread_mutexattr_init(&a);
        pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
        pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
        pthread_mutex_init(&st->lock.m, &a);
        pthread_mutexattr_destroy(&a);
        st->version = FAKE_VERSION;
        __atomic_store_n(&st->magic, FAKE_MAGIC, __ATOMIC_RELEASE);
    }
    flock(fd, LOCK_UN);
    close(fd);
    return st;
}

static struct fake_view g_view;
static pthread_once_t g_view_once = PTHREAD_ONCE_INIT;

static void view_init(void)
{
    struct fake_state *st = fake_state_open();
    if (!st) return;
    const char *vis = getenv("NVIDIA_VISIBLE_DEVICES");
    int n = 0;
    if (!vis || !*vis || !strcmp(vis, "all")) {
        for (uint32_t i = 0; i < st->ndev; i++) g_view.vis[n++] = (int)i;
    } else if (strcmp(vis, "none") && strcmp(vis, "void")) {
        /* The container toolkit exposes the listed devices; CUDA numbers them in host order. */
        int chosen[FAKE_MAX_DEV] = {0};
        char buf[2048];
        snprintf(buf, sizeof buf, "%s", vis);
        char *save = NULL;
        for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            while (isspace((unsigned char)*tok)) tok++;
            for (uint32_t i = 0; i < st->ndev; i++) {
                char *end = NULL;
                long idx = strtol(tok, &end, 10);
                if (!strcmp(st->dev[i].uuid, tok) || (end != tok && !*end && idx == (long)i))
                    chosen[i] = 1;
            }
        }
        for (uint32_t i = 0; i < st->ndev; i++)
            if (chosen[i]) g_view.vis[n++] = (int)i;
    }
    g_view.nvis = n;
    g_view.st = st;
}

struct fake_view *fake_view(void)
{
    pthread_once(&g_view_once, view_init);
    return g_view.st ? &g_view : NULL;
}

void fake_lock(struct fake_state *st)
{
    int rc = pthread_mutex_lock(&st->lock.m);
    if (rc == EOWNERDEAD) {
        /* The holder died inside the fake: its half-done update is only counters, reap it. */
        pthread_mutex_consistent(&st->lock.m);
        fake_reap_locked(st);
    }
}

void fake_unlock(struct fake_state *st) { pthread_mutex_unlock(&st->lock.m); }

uint64_t fake_proc_starttime(int pid)
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
    /* fields after ")": state is field 3; starttime is field 22 */
    int field = 2;
    for (; *p && field < 22; p++)
        if (*p == ' ') field++;
    return strtoull(p, NULL, 10);
}

static int proc_dead(const struct fake_proc *p)
{
    if (kill(p->pid, 0) != 0 && errno == ESRCH) return 1;
    uint64_t st = fake_proc_starttime(p->pid);
    return st != 0 && p->starttime != 0 && st != p->starttime;
}

void fake_reap_locked(struct fake_state *st)
{
    for (int i = 0; i < FAKE_MAX_PROC; i++) {
        struct fake_proc *p = &st->proc[i];
        if (!p->pid || !proc_dead(p)) continue;
        for (uint32_t d = 0; d < st->ndev; d++) {
            uint64_t g = p->granted[d];
            st->dev[d].used = st->dev[d].used >= g ? st->dev[d].used - g : 0;
        }
        memset(p, 0, sizeof *p);
    }
}

static __thread int t_self_pid;
static __thread struct fake_proc *t_self;

struct fake_proc *fake_self_locked(struct fake_state *st)
{
    int pid = getpid();
    if (t_self && t_self_pid == pid && t_self->pid == pid) return t_self;
    uint64_t start = fake_proc_starttime(pid);
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < FAKE_MAX_PROC; i++)
            if (st->proc[i].pid == pid && st->proc[i].starttime == start) {
                t_self = &st->proc[i];
                t_self_pid = pid;
                return t_self;
            }
        for (int i = 0; i < FAKE_MAX_PROC; i++)
            if (st->proc[i].pid == 0) {
                memset(&st->proc[i], 0, sizeof st->proc[i]);
                st->proc[i].pid = pid;
                st->proc[i].starttime = start;
                t_self = &st->proc[i];
                t_self_pid = pid;
                return t_self;
            }
        fake_reap_locked(st);
    }
    return NULL;
}

int fake_grant(int sdev, uint64_t bytes)
{
    struct fake_view *v = fake_view();
    if (!v) return -1;
    struct fake_state *st = v->st;
    fake_lock(st);
    struct fake_dev *d = &st->dev[sdev];
    if (d->used + bytes > d->capacity) {
        fake_reap_locked(st);
        if (d->used + bytes > d->capacity) {
            fake_unlock(st);
            return -1;
        }
    }
    struct fake_proc *p = fake_self_locked(st);
    if (!p) {
        fake_unlock(st);
        return -1;
    }
    d->used += bytes;
    p->granted[sdev] += bytes;
    fake_unlock(st);
    return 0;
}

void fake_ungrant(int sdev, uint64_t bytes)
{
    struct fake_view *v = fake_view();
    if (!v) return;
    struct fake_state *st = v->st;
    fake_lock(st);
    struct fake_dev *d = &st->dev[sdev];
    struct fake_proc *p = fake_self_locked(st);
    d->used = d->used >= bytes ? d->used - bytes : 0;
    if (p) p->granted[sdev] = p->granted[sdev] >= bytes ? p->granted[sdev] - bytes : 0;
    fake_unlock(st);
}

void fake_timeline_add(int sdev, int64_t duration_ns)
{
    struct fake_view *v = fake_view();
    if (!v || duration_ns <= 0) return;
    struct fake_state *st = v->st;
    int pid = getpid();
    fake_lock(st);
    struct fake_dev *d = &st->dev[sdev];
    int64_t now = fake_now_ns();
    int64_t start = d->busy_until > now ? d->busy_until : now;
    int64_t end = start + duration_ns;
    struct fake_interval *last = d->ring_count ? &d->ring[(d->ring_head + FAKE_RING - 1) % FAKE_RING] : NULL;
    if (last && last->pid == pid && last->end == start) {
        last->end = end;
    } else {
        struct fake_interval *slot = &d->ring[d->ring_head];
        slot->start = start;
        slot->end = end;
        slot->pid = pid;
        d->ring_head = (d->ring_head + 1) % FAKE_RING;
        if (d->ring_count < FAKE_RING) d->ring_count++;
    }
    d->busy_until = end;
    d->busy_scheduled += duration_ns;
    d->launches++;
    int64_t queue_ns = (int64_t)st->max_queue_ms * 1000000LL;
    fake_unlock(st);
    /* A full launch queue blocks the launching thread, as on a real GPU. */
    int64_t ahead = end - now - queue_ns;
    if (ahead > 0) {
        struct timespec ts = { (time_t)(ahead / 1000000000LL), (long)(ahead % 1000000000LL) };
        nanosleep(&ts, NULL);
    }
}

int64_t fake_busy_between_locked(struct fake_dev *d, int pid, int64_t from, int64_t to)
{
    int64_t sum = 0;
    for (uint32_t k = 0; k < d->ring_count; k++) {
        struct fake_interval *iv = &d->ring[(d->ring_head + FAKE_RING - 1 - k) % FAKE_RING];
        if (iv->end <= from) break; /* older intervals end earlier still */
        if (pid && iv->pid != pid) continue;
        int64_t s = iv->start > from ? iv->start : from;
        int64_t e = iv->end < to ? iv->end : to;
        if (e > s) sum += e - s;
    }
    return sum;
}

int64_t fake_busy_done_locked(struct fake_dev *d, int64_t now)
{
    int64_t pending = d->busy_until > now ? d->busy_until - now : 0;
    return d->busy_scheduled - pending;
}
