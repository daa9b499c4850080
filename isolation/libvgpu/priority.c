/* Task priority and contention across containers, with nothing shared between tenants that a
 * tenant can write.
 *
 * The node directory (read-only in every sharing container) holds, per container, two files the
 * driver creates at prepare and removes at unprepare:
 *   <id>.meta  the driver's: the container's priority and device UUIDs ("tessera-node-meta 1");
 *   <id>.rec   the container's own record, bind-mounted read-write into that container only: per
 *              device (in its meta's order), until when (CLOCK_MONOTONIC) it counts as active.
 * A record's priority and devices come from its meta, never from the record. A record is believed
 * for at most ACTIVE_HOLD_NS ahead: a stale one expires within one hold period, one dated further
 * ahead is ignored, and a record that does not parse counts as idle. So a forged or stale record
 * never pauses another container for longer than one period, and only on its own devices.
 *
 * Others' records are read with pread through a descriptor opened for that read (never mapped: a
 * record truncated by its owner cannot fault this process; nothing of theirs stays open). A
 * container whose priority is lower (larger number) than an active one's pauses its launches;
 * under the default core policy a limit applies only while another container is active on the
 * device. The tick thread is the only caller. */
#include "vgpu.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define REC_MAGIC 0x43524e54u /* "TNRC" */
#define REC_VERSION 1u
#define ACTIVE_HOLD_NS 500000000LL /* a container counts as active this long after a launch */
#define SLACK_NS 50000000LL /* clock granularity between writer and reader */
#define REWRITE_NS 100000000LL /* refresh our record at most this often while active */
#define MAX_PEERS 64

struct node_rec { /* 144 bytes; isolation/limits.py describes it too */
    uint32_t magic, version, ndev, pad;
    int64_t until_ns[VGPU_MAX_DEVICES];
};

struct peer {
    char rec[700]; /* path of its record */
    int priority;
    int8_t ours[VGPU_MAX_DEVICES]; /* its device j -> our device index, -1 */
};

static struct peer g_peers[MAX_PEERS];
static int g_npeers;
static char g_dir[512], g_own[700];
static struct timespec g_dir_mtime;
static int g_open;
static int64_t g_written_until[VGPU_MAX_DEVICES];

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Open a file of the node directory that must be a regular file; -1 otherwise. */
static int open_regular(const char *path, int flags)
{
    int fd = open(path, flags | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    struct stat sb;
    if (fd >= 0 && (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static int read_rec(const char *path, struct node_rec *rec)
{
    int fd = open_regular(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = pread(fd, rec, sizeof *rec, 0);
    close(fd);
    return n == (ssize_t)sizeof *rec && rec->magic == REC_MAGIC && rec->version == REC_VERSION ? 0 : -1;
}

/* Active until `until`, read at `now`: believed only within one hold period ahead. */
static int active(int64_t until, int64_t now) { return until > now && until <= now + ACTIVE_HOLD_NS + SLACK_NS; }

static void add_peer(const char *name)
{
    char path[700], text[4097];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    int fd = open_regular(path, O_RDONLY);
    if (fd < 0) return;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0) return;
    text[n] = 0;
    struct vgpu_config meta;
    int line;
    if (vgpu_limits_parse(text, LIMITS_NODE_META, &meta, &line)) return; /* not one of the driver's */
    struct peer *p = &g_peers[g_npeers];
    int any = 0;
    for (int j = 0; j < VGPU_MAX_DEVICES; j++) {
        p->ours[j] = -1;
        for (int i = 0; j < meta.ndev && i < vgpu.cfg.ndev; i++)
            if (!strcmp(meta.uuid[j], vgpu.cfg.uuid[i])) p->ours[j] = (int8_t)i;
        any |= p->ours[j] >= 0;
    }
    if (!any) return; /* not on our devices */
    p->priority = meta.priority;
    size_t len = strlen(path);
    snprintf(p->rec, sizeof p->rec, "%.*s.rec", (int)(len - strlen(".meta")), path);
    g_npeers++;
}

/* The containers on our devices, read again whenever the directory changed (prepare, unprepare). */
static void rescan(void)
{
    struct stat sb;
    if (stat(g_dir, &sb) != 0) {
        g_npeers = 0;
        return;
    }
    if (sb.st_mtim.tv_sec == g_dir_mtime.tv_sec && sb.st_mtim.tv_nsec == g_dir_mtime.tv_nsec) return;
    g_dir_mtime = sb.st_mtim;
    g_npeers = 0;
    DIR *d = opendir(g_dir);
    if (!d) return;
    size_t own_len = strlen(vgpu.cfg.node_id);
    for (struct dirent *e; (e = readdir(d)) && g_npeers < MAX_PEERS;) {
        size_t n = strlen(e->d_name);
        if (n <= 5 || strcmp(e->d_name + n - 5, ".meta") || e->d_name[0] == '.') continue;
        if (n - 5 == own_len && !strncmp(e->d_name, vgpu.cfg.node_id, own_len)) continue;
        add_peer(e->d_name);
    }
    closedir(d);
}

int vgpu_node_open(const struct vgpu_config *c)
{
    if (!c->node_dir[0] || !c->node_id[0]) return -1;
    snprintf(g_dir, sizeof g_dir, "%s", c->node_dir);
    snprintf(g_own, sizeof g_own, "%s/%s.rec", c->node_dir, c->node_id);
    int fd = open_regular(g_own, O_WRONLY);
    if (fd < 0) {
        vgpu_log(LOG_WARN, "cannot open this container's node record %s: %s; other containers do not see its "
                 "activity", g_own, strerror(errno));
    } else {
        close(fd);
    }
    g_open = 1;
    return 0;
}

/* Merge our devices' activity into our record (the container's processes share it). */
static void publish(const int64_t *until, int64_t now)
{
    int grew = 0;
    for (int i = 0; i < VGPU_MAX_DEVICES; i++) grew |= until[i] > g_written_until[i] + REWRITE_NS;
    if (!grew) return;
    int fd = open_regular(g_own, O_RDWR);
    if (fd < 0) return;
    struct node_rec rec;
    if (pread(fd, &rec, sizeof rec, 0) != (ssize_t)sizeof rec || rec.magic != REC_MAGIC || rec.version != REC_VERSION)
        memset(&rec, 0, sizeof rec);
    rec.magic = REC_MAGIC;
    rec.version = REC_VERSION;
    rec.ndev = (uint32_t)vgpu.cfg.ndev;
    for (int i = 0; i < VGPU_MAX_DEVICES; i++) {
        if (!active(rec.until_ns[i], now)) rec.until_ns[i] = 0;
        if (until[i] > rec.until_ns[i]) rec.until_ns[i] = until[i];
    }
    if (pwrite(fd, &rec, sizeof rec, 0) == (ssize_t)sizeof rec) memcpy(g_written_until, until, sizeof g_written_until);
    close(fd);
}

void vgpu_node_update(const int *launched, int *higher_active, int *others_active)
{
    static int64_t until[VGPU_MAX_DEVICES], last_read;
    static int higher[VGPU_MAX_DEVICES], others[VGPU_MAX_DEVICES];
    if (g_open) {
        int64_t now = mono_ns();
        int busy = 0;
        for (int i = 0; i < VGPU_MAX_DEVICES; i++) {
            if (launched[i]) until[i] = now + ACTIVE_HOLD_NS;
            busy |= until[i] > now;
        }
        publish(until, now);
        /* others matter while we launch; idle, a look every 200 ms keeps the view warm */
        if (busy || now - last_read >= 200000000LL) {
            last_read = now;
            rescan();
            memset(higher, 0, sizeof higher);
            memset(others, 0, sizeof others);
            for (int k = 0; k < g_npeers; k++) {
                struct node_rec rec;
                if (read_rec(g_peers[k].rec, &rec)) continue;
                for (int j = 0; j < VGPU_MAX_DEVICES; j++) {
                    int i = g_peers[k].ours[j];
                    if (i < 0 || !active(rec.until_ns[j], now)) continue;
                    others[i] = 1;
                    if (g_peers[k].priority < vgpu.cfg.priority) higher[i] = 1;
                }
            }
        }
    }
    memcpy(higher_active, higher, sizeof higher);
    memcpy(others_active, others, sizeof others);
}
