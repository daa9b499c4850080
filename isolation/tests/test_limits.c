/* The driver's limits file as libvgpu reads it: the format, every refusal, and where it is looked for
 * (the fixed path is absent on a test machine, so TESSERA_LIMITS_FILE names it; run_c_tests.sh and
 * tests/isolation cover the fixed path under a mount namespace). */
#include "../libvgpu/vgpu.h"
#include "check.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *GOOD =
    "tessera-limits 1\n"
    "# written by the driver\n"
    "region /var/lib/tessera/claims/u1/gpu.cache\n"
    "node-dir /var/lib/tessera/node\n"
    "node-record u1.gpu\n"
    "priority 0\n"
    "core-policy force\n"
    "oversubscribe true\n"
    "device GPU-00000000-0000-4000-8000-000000000001 memory=10737418240 sm=30\n"
    "device GPU-00000000-0000-4000-8000-000000000002 memory=0 sm=100\n";

static const char *parse(const char *text, int kind, struct vgpu_config *c)
{
    int line;
    return vgpu_limits_parse(text, kind, c, &line);
}

/* GOOD with one line replaced (or removed when `with` is NULL) */
static const char *variant(const char *key, const char *with, struct vgpu_config *c)
{
    static char buf[2048];
    buf[0] = 0;
    const char *p = GOOD;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = (size_t)(nl - p) + 1;
        if (!strncmp(p, key, strlen(key))) {
            if (with) {
                strcat(buf, with);
                strcat(buf, "\n");
            }
        } else {
            strncat(buf, p, n);
        }
        p += n;
    }
    return parse(buf, LIMITS_CONTAINER, c);
}

int main(void)
{
    struct vgpu_config c;
    CHECK(parse(GOOD, LIMITS_CONTAINER, &c) == NULL, "a driver-written file parses");
    CHECK(c.from_file && c.ndev == 2 && c.mem_limit[0] == 10ULL << 30 && c.sm_limit[0] == 30 && c.mem_limit[1] == 0 &&
          c.sm_limit[1] == 0, "limits per device (sm=100 is no limit)");
    CHECK(!strcmp(c.uuid[1], "GPU-00000000-0000-4000-8000-000000000002"), "UUIDs in order");
    CHECK(c.priority == 0 && c.policy == POLICY_FORCE && c.oversubscribe && c.any_limit, "priority, policy, oversub");
    CHECK(!strcmp(c.cache_path, "/var/lib/tessera/claims/u1/gpu.cache") && !strcmp(c.node_dir, "/var/lib/tessera/node") &&
          !strcmp(c.node_id, "u1.gpu"), "paths");

    struct { const char *key, *with; } bad[] = {
        { "tessera-limits", "tessera-limits 2" }, { "tessera-limits", "TESSERA_LIMITS 1" },
        { "region", NULL }, { "region", "region relative/path" }, { "region", "region /a b" },
        { "priority", NULL }, { "priority", "priority -1" }, { "priority", "priority 1001" },
        { "core-policy", "core-policy off" }, { "core-policy", NULL }, { "oversubscribe", "oversubscribe yes" },
        { "node-record", NULL }, { "node-record", "node-record ../x" }, { "node-record", "node-record .hidden" },
        { "device GPU-00000000-0000-4000-8000-000000000002", "device GPU-00000000-0000-4000-8000-000000000001 memory=1 sm=1" },
        { "device GPU-00000000-0000-4000-8000-000000000002", "device GPU-x memory=1g sm=1" },
        { "device GPU-00000000-0000-4000-8000-000000000002", "device GPU-x memory=1 sm=101" },
        { "device GPU-00000000-0000-4000-8000-000000000002", "device GPU-x memory=1 sm=1 extra" },
        { "device GPU-00000000-0000-4000-8000-000000000002", "device GPU-x memory=99999999999999999999 sm=1" },
        { "device GPU-00000000-0000-4000-8000-000000000002", "device GPU-x" },
        { "oversubscribe", "oversubscribe false\nunknown-key 1" },
        { "oversubscribe", "oversubscribe false\noversubscribe true" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(variant(bad[i].key, bad[i].with, &c) != NULL, "refused: %s -> %s", bad[i].key, bad[i].with ? bad[i].with : "(removed)");
    CHECK(variant("device", NULL, &c) != NULL, "no device refused");
    CHECK(parse("", LIMITS_CONTAINER, &c) != NULL, "empty refused");
    char many[4096] = "tessera-limits 1\nregion /r\npriority 1\ncore-policy default\noversubscribe false\n";
    for (int i = 0; i < 17; i++) snprintf(many + strlen(many), sizeof many - strlen(many), "device GPU-%d memory=1 sm=0\n", i);
    CHECK(parse(many, LIMITS_CONTAINER, &c) != NULL, "17 devices refused");

    CHECK(parse("tessera-node-meta 1\npriority 0\ndevice GPU-a\ndevice GPU-b\n", LIMITS_NODE_META, &c) == NULL &&
          c.ndev == 2 && c.priority == 0 && !strcmp(c.uuid[1], "GPU-b"), "a meta file parses");
    CHECK(parse("tessera-node-meta 1\npriority 0\ndevice GPU-a memory=1 sm=1\n", LIMITS_NODE_META, &c) != NULL,
          "a meta file carries no limits");
    CHECK(parse("tessera-node-meta 1\ndevice GPU-a\nregion /x\n", LIMITS_NODE_META, &c) != NULL, "meta: no other keys");
    CHECK(parse(GOOD, LIMITS_NODE_META, &c) != NULL && parse("tessera-node-meta 1\npriority 0\ndevice GPU-a\n",
          LIMITS_CONTAINER, &c) != NULL, "one kind is never taken for the other");

    /* where it is looked for (nothing at the fixed path on a test machine) */
    if (access(VGPU_LIMITS_PATH, F_OK) == 0) {
        printf("test_limits: %s exists here; the lookup checks are skipped\n", VGPU_LIMITS_PATH);
        return report("test_limits");
    }
    char path[] = "/tmp/vgpu-limits-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, GOOD, strlen(GOOD)) != (ssize_t)strlen(GOOD)) return 2;
    close(fd);
    unsetenv("TESSERA_LIMITS_FILE");
    CHECK(vgpu_limits_load(&c) == 0, "no file anywhere: the env applies");
    setenv("TESSERA_LIMITS_FILE", path, 1);
    CHECK(vgpu_limits_load(&c) == 1 && c.mem_limit[0] == 10ULL << 30, "TESSERA_LIMITS_FILE names it");
    setenv("TESSERA_LIMITS_FILE", "/nonexistent/limits", 1);
    CHECK(vgpu_limits_load(&c) == -1, "a named file that is missing is refused (never the env then)");
    fd = open(path, O_WRONLY | O_TRUNC);
    if (fd < 0 || write(fd, "tessera-limits 1\n", 17) != 17) return 2;
    close(fd);
    setenv("TESSERA_LIMITS_FILE", path, 1);
    CHECK(vgpu_limits_load(&c) == -1, "a file that does not parse is refused");
    unlink(path);
    return report("test_limits");
}
