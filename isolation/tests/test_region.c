/* The usage region on its own: format checks, charges against a limit, dead-slot reclamation,
 * recovery from a holder killed inside the lock, and what a tenant can do to the file: every
 * scribble (a zeroed total, a zeroed or garbage slot, a new salt, a damaged header) makes the limit
 * stricter until the honest processes heal it, never looser. */
#include "../libvgpu/vgpu.h"
#include "check.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MIB (1ULL << 20)

struct vgpu_state vgpu; /* normally init.c's */

static void write_file(const char *path, const void *data, size_t n)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, data, n) != (ssize_t)n) abort();
    close(fd);
}

static void config(uint64_t limit0)
{
    memset(&vgpu, 0, sizeof vgpu);
    vgpu.region_fd = -1;
    vgpu.cfg.ndev = VGPU_MAX_DEVICES;
    vgpu.cfg.mem_limit[0] = limit0;
    vgpu.cfg.priority = 1;
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) vgpu.index[d] = d;
}

static struct vgpu_region *open_and_register(const char *path, int create, int reinit)
{
    struct vgpu_region *r = vgpu_region_open(path, create, reinit);
    vgpu.region = r;
    if (r) vgpu.slot = vgpu_region_register(r);
    return r;
}

/* A child process of the container: its own slot, `mib` charged, then it waits for a byte on `go`:
 * 'h' heals (republishes its slot), 'q' exits. It reports each step with a byte on `done`. */
static pid_t holder(uint64_t mib, int go, int done)
{
    pid_t c = fork();
    if (c) return c;
    vgpu_region_after_fork();
    char b = vgpu.slot && vgpu_charge(0, mib * MIB) == 0 ? 'k' : 'x';
    if (write(done, &b, 1) != 1) _exit(3);
    while (read(go, &b, 1) == 1 && b != 'q') {
        if (b == 'h') vgpu_region_heal();
        if (write(done, &b, 1) != 1) _exit(3);
    }
    _exit(0);
}

static char ask(int go, int done, char what)
{
    char b = 0;
    if (write(go, &what, 1) != 1 || read(done, &b, 1) != 1) return 0;
    return b;
}

static int charge_ok(uint64_t mib)
{
    if (vgpu_charge(0, mib * MIB) != 0) return 0;
    vgpu_uncharge(0, mib * MIB);
    return 1;
}

static void scribbles(const char *path)
{
    config(100 * MIB);
    unlink(path);
    struct vgpu_region *r = open_and_register(path, 1, 0);
    CHECK(r && vgpu.slot, "region for the scribble tests");
    if (!r || !vgpu.slot) return;
    static struct vgpu_region before; /* a copy of the file while nobody holds anything */
    memcpy(&before, r, sizeof before);
    int go[2], done[2];
    if (pipe(go) || pipe(done)) abort();
    pid_t c = holder(60, go[0], done[1]);
    char b = 0;
    CHECK(read(done[0], &b, 1) == 1 && b == 'k', "a second process holds 60 MiB");
    CHECK(charge_ok(40) && !charge_ok(41), "40 MiB left");

    /* the total: zeroed, then zeroed with its check, then a forged small value */
    atomic_store(&r->dev[0].used, 0);
    CHECK(!charge_ok(41) && vgpu_used_at(0) == 60 * MIB, "a zeroed total is rebuilt from the slots");
    atomic_store(&r->dev[0].used, 0);
    atomic_store(&r->dev[0].used_check, 0);
    CHECK(!charge_ok(41) && vgpu_used_at(0) == 60 * MIB, "a zeroed total and check are rebuilt too");
    atomic_store(&r->dev[0].used, 1);
    CHECK(!charge_ok(41), "a total without its check value is not believed");

    /* the other process's slot: zeroed, or garbage, while it lives */
    struct vgpu_slot *other = NULL;
    for (int i = 0; i < VGPU_MAX_SLOTS && !other; i++)
        if (atomic_load(&r->slot[i].pid) == c) other = &r->slot[i];
    CHECK(other != NULL, "the other process's slot is there");
    if (!other) return;
    memset(other, 0, sizeof *other);
    atomic_store(&r->dev[0].used_check, 0); /* and make the next charge rebuild */
    CHECK(!charge_ok(1), "a live process's zeroed slot counts as exhausting the device");
    CHECK(vgpu_used_at(0) >= VGPU_USED_INVALID, "counted at the maximum: %llu", (unsigned long long)vgpu_used_at(0));
    CHECK(ask(go[1], done[0], 'h') == 'h', "its process republishes it");
    CHECK(vgpu_used_at(0) == 60 * MIB && charge_ok(40) && !charge_ok(41), "healed: exactly the limit again");
    memset(other->used, 0x5a, sizeof other->used);
    atomic_store(&r->dev[0].used_check, 0);
    CHECK(!charge_ok(1), "a garbage slot counts as exhausting the device");
    ask(go[1], done[0], 'h');
    CHECK(charge_ok(40) && !charge_ok(41), "healed again");

    /* our own slot: the tick republishes it from private memory */
    memset(vgpu.slot->used, 0, sizeof vgpu.slot->used);
    atomic_store(&vgpu.slot->pid, 0);
    CHECK(vgpu_charge(0, 30 * MIB) == 0, "our own charge still works");
    vgpu_region_heal();
    CHECK(atomic_load(&vgpu.slot->pid) == getpid() && atomic_load(&vgpu.slot->used[0]) == 30 * MIB,
          "our slot is republished from private memory");
    CHECK(!charge_ok(11) && charge_ok(10), "and counted");
    vgpu_uncharge(0, 30 * MIB);

    /* a new salt: every check fails, every live slot is republished */
    atomic_store(&r->salt, atomic_load(&r->salt) ^ 0x1234);
    CHECK(!charge_ok(1), "a new salt: everything counts at the maximum");
    vgpu_region_heal();
    ask(go[1], done[0], 'h');
    CHECK(charge_ok(40) && !charge_ok(41), "healed after both processes republished");

    /* an old copy of the file put back: consistent, so believed until the holders' next tick */
    memcpy(r, &before, sizeof before);
    vgpu_region_heal();
    ask(go[1], done[0], 'h');
    CHECK(vgpu_used_at(0) == 60 * MIB && charge_ok(40) && !charge_ok(41), "a replayed old copy lasts one tick");

    /* a slot that looks used but whose process is gone (no lock): free */
    struct vgpu_slot *fake = &r->slot[VGPU_MAX_SLOTS - 1];
    atomic_store(&fake->pid, 424242);
    atomic_store(&fake->used[0], 90 * MIB);
    atomic_store(&r->dev[0].used_check, 0);
    CHECK(charge_ok(40), "a slot nobody holds counts nothing (its owner is dead)");

    /* the other process dies: its memory comes back */
    if (write(go[1], "q", 1) != 1) abort();
    int st;
    waitpid(c, &st, 0);
    CHECK(charge_ok(100) && !charge_ok(101), "a dead process's memory comes back");
    munmap(r, sizeof *r);
    close(vgpu.region_fd);
    close(go[0]);
    close(go[1]);
    close(done[0]);
    close(done[1]);
}

static void damaged_files(const char *path)
{
    static char junk[300000];
    memset(junk, 0x5a, sizeof junk);
    config(100 * MIB);
    /* the env's word (create, never reinitialise): refuse what is not ours */
    write_file(path, junk, sizeof junk);
    CHECK(vgpu_region_open(path, 1, 0) == NULL, "foreign file refused");
    write_file(path, junk, 8);
    CHECK(vgpu_region_open(path, 1, 0) == NULL, "tiny file refused");
    unlink(path);
    struct vgpu_region *r = vgpu_region_open(path, 1, 0);
    if (r) {
        r->layout_version = 99;
        munmap(r, sizeof *r);
        close(vgpu.region_fd);
    }
    CHECK(vgpu_region_open(path, 1, 0) == NULL, "other layout version refused");
    unlink(path);
    r = vgpu_region_open(path, 1, 0);
    if (r) {
        munmap(r, sizeof *r);
        close(vgpu.region_fd);
    }
    if (truncate(path, 4096) != 0) abort();
    CHECK(vgpu_region_open(path, 1, 0) == NULL, "truncated region refused");
    unlink(path);
    CHECK(mkfifo(path, 0666) == 0 && vgpu_region_open(path, 1, 0) == NULL, "a FIFO is refused without blocking");
    unlink(path);
    CHECK(vgpu_region_open(path, 0, 1) == NULL, "the driver's file missing: refused, not created");

    /* the driver's file (reinitialise when nobody uses it) */
    write_file(path, junk, sizeof junk);
    r = open_and_register(path, 0, 1);
    CHECK(r && vgpu.slot && charge_ok(100) && !charge_ok(101), "a damaged file nobody uses is initialised again");
    memset(r, 0, 64); /* the header, while we use it */
    struct vgpu_region *second = vgpu_region_open(path, 0, 1);
    CHECK(second == NULL, "a damaged file in use is refused (stricter: that process cannot allocate)");
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && sb.st_size == (off_t)sizeof *r, "and left alone");
    if (r) munmap(r, sizeof *r);
    if (truncate(path, 0) != 0) abort();
    CHECK(vgpu_region_open(path, 0, 1) == NULL, "a file emptied while in use is refused, not started afresh");
    close(vgpu.region_fd);
    r = vgpu_region_open(path, 0, 1);
    CHECK(r != NULL, "once its users are gone it is initialised again");
    if (r) {
        munmap(r, sizeof *r);
        close(vgpu.region_fd);
    }
    unlink(path);
}

int main(void)
{
    char dir[] = "/tmp/vgpu-region-XXXXXX";
    if (!mkdtemp(dir)) return 2;
    char path[256];
    snprintf(path, sizeof path, "%s/r.cache", dir);
    config(100 * MIB);

    struct vgpu_region *r = open_and_register(path, 1, 0);
    CHECK(r != NULL && vgpu.slot != NULL, "a new region is created and a slot taken");
    if (!r || !vgpu.slot) return report("test_region");
    CHECK(r->magic == VGPU_REGION_MAGIC && r->struct_size == sizeof *r, "header");
    CHECK(vgpu_charge(0, 60 * MIB) == 0, "60 MiB fits");
    CHECK(vgpu_charge(0, 60 * MIB) != 0, "another 60 MiB does not");
    CHECK(vgpu_used_at(0) == 60 * MIB, "used is 60 MiB");
    CHECK(vgpu_charge(1, 1ULL << 40) == 0, "no limit on device 1");
    vgpu_uncharge(1, 1ULL << 40);
    vgpu_uncharge(0, 60 * MIB);
    CHECK(vgpu_used_at(0) == 0, "uncharged");
    vgpu_uncharge(0, 1 * MIB);
    CHECK(vgpu_used_at(0) == 0, "never uncharges more than this process charged");

    /* a process that dies holding memory: its bytes come back at the next failed check */
    int st, pipefd[2];
    pid_t c = fork();
    if (c == 0) {
        vgpu_region_after_fork();
        _exit(vgpu.slot && vgpu_charge(0, 90 * MIB) == 0 ? 0 : 1);
    }
    waitpid(c, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child charged 90 MiB");
    CHECK(vgpu_used_at(0) == 90 * MIB, "child's bytes still counted while its slot is there");
    CHECK(vgpu_charge(0, 50 * MIB) == 0, "dead child's memory reclaimed on demand");
    CHECK(vgpu_used_at(0) == 50 * MIB, "used is ours only: %llu", (unsigned long long)vgpu_used_at(0));

    /* a process killed while holding the lock: the next locker recovers at once */
    if (pipe(pipefd)) return 2;
    c = fork();
    if (c == 0) {
        vgpu_region_after_fork();
        vgpu_charge(0, 10 * MIB);
        vgpu_region_lock(r);
        atomic_store(&r->dev[0].used, 999); /* a half-written total */
        if (write(pipefd[1], "x", 1) != 1) _exit(3);
        pause();
        _exit(0);
    }
    char b;
    if (read(pipefd[0], &b, 1) != 1) return 2;
    kill(c, SIGKILL);
    waitpid(c, &st, 0);
    CHECK(vgpu_region_lock(r) == 0, "lock recovered from the dead holder");
    vgpu_region_unlock(r);
    CHECK(vgpu_used_at(0) == 50 * MIB, "totals rebuilt from live slots: %llu", (unsigned long long)vgpu_used_at(0));
    CHECK(vgpu_charge(0, 50 * MIB) == 0 && vgpu_charge(0, 1) != 0, "exactly the limit is usable");
    vgpu_region_release();
    CHECK(vgpu.slot == NULL && vgpu_used_at(0) == 0, "release gives everything back");
    munmap(r, sizeof *r);
    close(vgpu.region_fd);
    close(pipefd[0]);
    close(pipefd[1]);

    scribbles(path);
    damaged_files(path);
    unlink(path);
    rmdir(dir);
    return report("test_region");
}
