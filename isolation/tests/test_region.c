/* The shared region on its own: format checks, charges against a limit, dead-slot reclamation and
 * recovery from a holder killed inside the lock. */
#include "../libvgpu/vgpu.h"
#include "check.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

struct vgpu_state vgpu; /* normally init.c's */

static void write_file(const char *path, const void *data, size_t n)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, data, n) != (ssize_t)n) abort();
    close(fd);
}

int main(void)
{
    char dir[] = "/tmp/vgpu-region-XXXXXX";
    if (!mkdtemp(dir)) return 2;
    char path[256];
    snprintf(path, sizeof path, "%s/r.cache", dir);
    struct vgpu_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.mem_limit[0] = 100 << 20;
    cfg.priority = 1;

    struct vgpu_region *r = vgpu_region_open(path, &cfg);
    CHECK(r != NULL, "a new region is created");
    if (!r) return report("test_region");
    CHECK(r->magic == VGPU_REGION_MAGIC && r->struct_size == sizeof *r && r->dev[0].limit == 100 << 20, "header");
    struct vgpu_region *again = vgpu_region_open(path, &cfg);
    CHECK(again != NULL, "an existing region is accepted");
    if (again) munmap(again, sizeof *again);

    vgpu.region = r;
    vgpu.slot = vgpu_region_register(r);
    CHECK(vgpu.slot && vgpu.slot->pid == getpid(), "slot taken");
    CHECK(vgpu_charge(0, 60 << 20) == 0, "60 MiB fits");
    CHECK(vgpu_charge(0, 60 << 20) != 0, "another 60 MiB does not");
    CHECK(vgpu_used(0) == 60 << 20, "used is 60 MiB");
    CHECK(vgpu_charge(1, 1ULL << 40) == 0, "no limit on device 1");
    vgpu_uncharge(1, 1ULL << 40);
    vgpu_uncharge(0, 60 << 20);
    CHECK(vgpu_used(0) == 0, "uncharged");

    /* a process that dies holding memory: its bytes come back at the next failed check */
    pid_t c = fork();
    if (c == 0) {
        vgpu.slot = vgpu_region_register(r);
        _exit(vgpu_charge(0, 90 << 20) == 0 ? 0 : 1);
    }
    int st;
    waitpid(c, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child charged 90 MiB");
    CHECK(vgpu_used(0) == 90 << 20, "child's bytes still counted while its slot is there");
    CHECK(vgpu_charge(0, 50 << 20) == 0, "dead child's memory reclaimed on demand");
    CHECK(vgpu_used(0) == 50 << 20, "used is ours only: %llu", (unsigned long long)vgpu_used(0));

    /* a process killed while holding the lock: the next locker recovers at once */
    int pipefd[2];
    if (pipe(pipefd)) return 2;
    c = fork();
    if (c == 0) {
        vgpu.slot = vgpu_region_register(r);
        vgpu_charge(0, 10 << 20);
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
    CHECK(vgpu_used(0) == 50 << 20, "totals rebuilt from live slots: %llu", (unsigned long long)vgpu_used(0));
    CHECK(vgpu_charge(0, 50 << 20) == 0 && vgpu_charge(0, 1) != 0, "exactly the limit is usable");
    munmap(r, sizeof *r);

    /* refused files */
    static char junk[300000];
    memset(junk, 0x5a, sizeof junk);
    write_file(path, junk, sizeof junk);
    CHECK(vgpu_region_open(path, &cfg) == NULL, "foreign file refused");
    write_file(path, junk, 8);
    CHECK(vgpu_region_open(path, &cfg) == NULL, "tiny file refused");
    unlink(path);
    r = vgpu_region_open(path, &cfg);
    if (r) {
        r->layout_version = 99;
        munmap(r, sizeof *r);
    }
    CHECK(vgpu_region_open(path, &cfg) == NULL, "other layout version refused");
    unlink(path);
    r = vgpu_region_open(path, &cfg);
    if (r) munmap(r, sizeof *r);
    if (truncate(path, 4096) != 0) return 2;
    CHECK(vgpu_region_open(path, &cfg) == NULL, "truncated region refused");
    unlink(path);
    rmdir(dir);
    return report("test_region");
}
