/* The driver's limits file (isolation/limits.py writes it): a container's limits from a source the
 * container cannot write.
 *
 * Inside a Tessera container the file is a read-only bind mount at one fixed path,
 * VGPU_LIMITS_PATH. Whenever something is there, it is the only source of the limits: the
 * isolation env (CUDA_DEVICE_MEMORY_LIMIT*, CUDA_DEVICE_SM_LIMIT*, the region path, priority,
 * policy, oversubscription) is ignored, so `env -i`, `env -u`, `su -` or a larger value change
 * nothing. The file must be a regular file on a read-only mount (the driver's mount is; a file the
 * container wrote there is not), opened without following a symlink; anything else there, or a
 * file that does not parse, is refused and CUDA calls fail: never looser than the file.
 *
 * Only when nothing is at the fixed path (libvgpu run by hand, the local harness without mount
 * namespaces) does TESSERA_LIMITS_FILE name the file, or failing that the env contract apply: both
 * are the environment's word, which is all there is outside a container.
 *
 * Format, one "key value" per line, '#' comments, the first line the header:
 *   tessera-limits 1
 *   region <absolute path of the usage region>
 *   node-dir <absolute path>          (optional: priority across containers)
 *   node-record <name>                (with node-dir: this container's record, <name>.rec)
 *   priority <0..1000>
 *   core-policy default|force|disable
 *   oversubscribe true|false
 *   device <uuid> memory=<bytes, 0 none> sm=<percent, 0 or 100 none>   (1..16, in index order)
 * A node record's meta file ("tessera-node-meta 1") has only priority and "device <uuid>" lines. */
#include "vgpu.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define LIMITS_MAX_BYTES 8192

static int token_ok(const char *s, size_t max, int path)
{
    size_t n = strlen(s);
    if (!n || n >= max || (path && s[0] != '/')) return 0;
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || *s == 0x7f) return 0;
    return 1;
}

static int name_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (!n || n >= max || s[0] == '.') return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '.' ||
              *s == '_' || *s == '-'))
            return 0;
    return 1;
}

/* "<uuid>" (meta) or "<uuid> memory=<n> sm=<n>" (container) */
static const char *parse_device(char *val, int kind, struct vgpu_config *c)
{
    if (c->ndev >= VGPU_MAX_DEVICES) return "more than 16 devices";
    char *rest = strchr(val, ' ');
    if (rest) *rest++ = 0;
    if (!token_ok(val, sizeof c->uuid[0], 0)) return "bad device UUID";
    for (int i = 0; i < c->ndev; i++)
        if (!strcmp(c->uuid[i], val)) return "device listed twice";
    int d = c->ndev;
    snprintf(c->uuid[d], sizeof c->uuid[d], "%s", val);
    if (kind == LIMITS_NODE_META) {
        if (rest) return "a meta file's device line has only the UUID";
    } else {
        uint64_t mem, sm;
        char m[32], s[8];
        if (!rest || sscanf(rest, "memory=%31[0-9] sm=%7[0-9]", m, s) != 2) return "expected memory=<bytes> sm=<percent>";
        char canon[64];
        snprintf(canon, sizeof canon, "memory=%s sm=%s", m, s);
        if (strcmp(canon, rest)) return "expected memory=<bytes> sm=<percent>";
        if (vgpu_parse_uint(m, UINT64_MAX, &mem) || vgpu_parse_uint(s, 100, &sm)) return "bad memory or sm value";
        c->mem_limit[d] = mem;
        c->sm_limit[d] = sm >= 100 ? 0 : (uint32_t)sm; /* 100 % is no limit */
        if (mem || c->sm_limit[d]) c->any_limit = 1;
    }
    c->ndev++;
    return NULL;
}

const char *vgpu_limits_parse(const char *text, int kind, struct vgpu_config *c, int *line)
{
    memset(c, 0, sizeof *c);
    c->from_file = 1;
    c->priority = 1;
    c->period_ms = 100;
    const char *header = kind == LIMITS_NODE_META ? "tessera-node-meta 1" : "tessera-limits 1";
    int seen_priority = 0, seen_policy = 0, seen_over = 0, seen_region = 0, seen_node = 0, seen_rec = 0;
    char buf[700];
    *line = 0;
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        ++*line;
        if (n >= sizeof buf) return "line too long";
        memcpy(buf, p, n);
        buf[n] = 0;
        p += nl ? n + 1 : n;
        if (*line == 1) {
            if (strcmp(buf, header)) return "not a Tessera limits file of version 1 (header)";
            continue;
        }
        if (!buf[0] || buf[0] == '#') continue;
        char *val = strchr(buf, ' ');
        if (!val) return "expected '<key> <value>'";
        *val++ = 0;
        uint64_t v;
        const char *why = NULL;
        if (!strcmp(buf, "device")) {
            why = parse_device(val, kind, c);
        } else if (!strcmp(buf, "priority")) {
            if (seen_priority++ || vgpu_parse_uint(val, 1000, &v)) why = "bad or repeated priority";
            else c->priority = (int)v;
        } else if (kind == LIMITS_NODE_META) {
            why = "unknown key";
        } else if (!strcmp(buf, "region")) {
            if (seen_region++ || !token_ok(val, sizeof c->cache_path, 1)) why = "bad or repeated region path";
            else snprintf(c->cache_path, sizeof c->cache_path, "%s", val);
        } else if (!strcmp(buf, "node-dir")) {
            if (seen_node++ || !token_ok(val, sizeof c->node_dir, 1)) why = "bad or repeated node-dir";
            else snprintf(c->node_dir, sizeof c->node_dir, "%s", val);
        } else if (!strcmp(buf, "node-record")) {
            if (seen_rec++ || !name_ok(val, sizeof c->node_id - 8)) why = "bad or repeated node-record name";
            else snprintf(c->node_id, sizeof c->node_id, "%s", val);
        } else if (!strcmp(buf, "core-policy")) {
            c->policy = !strcmp(val, "default") ? POLICY_DEFAULT : !strcmp(val, "force") ? POLICY_FORCE
                      : !strcmp(val, "disable") ? POLICY_DISABLE : -1;
            if (seen_policy++ || c->policy < 0) why = "bad or repeated core-policy";
        } else if (!strcmp(buf, "oversubscribe")) {
            c->oversubscribe = !strcmp(val, "true") ? 1 : !strcmp(val, "false") ? 0 : -1;
            if (seen_over++ || c->oversubscribe < 0) why = "bad or repeated oversubscribe";
        } else {
            why = "unknown key";
        }
        if (why) return why;
    }
    if (*line == 0) return "empty";
    if (!c->ndev) return "no device";
    if (!seen_priority) return "no priority";
    if (kind == LIMITS_CONTAINER) {
        if (!seen_region || !seen_policy || !seen_over) return "region, core-policy and oversubscribe are required";
        if (seen_rec != seen_node) return "node-dir and node-record go together";
    }
    return NULL;
}

static const char *read_text(int fd, int fixed, char **out)
{
    struct stat sb;
    struct statvfs vfs;
    if (fstat(fd, &sb) != 0) return strerror(errno);
    if (!S_ISREG(sb.st_mode)) return "not a regular file";
    if (sb.st_size > LIMITS_MAX_BYTES) return "larger than a limits file can be";
    if (fixed && (fstatvfs(fd, &vfs) != 0 || !(vfs.f_flag & ST_RDONLY)))
        return "not on a read-only mount: the driver mounts its file read-only, so this one was written "
               "by someone else";
    char *buf = calloc(1, LIMITS_MAX_BYTES + 1);
    if (!buf) return "out of memory";
    size_t n = 0;
    for (;;) {
        ssize_t k = read(fd, buf + n, LIMITS_MAX_BYTES - n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            free(buf);
            return strerror(errno);
        }
        if (k == 0 || (n += (size_t)k) == LIMITS_MAX_BYTES) break;
    }
    if (memchr(buf, 0, n)) {
        free(buf);
        return "binary content";
    }
    *out = buf;
    return NULL;
}

int vgpu_limits_load(struct vgpu_config *c)
{
    const char *path = VGPU_LIMITS_PATH;
    int fixed = 1, flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK;
    int fd = open(path, flags);
    if (fd < 0 && (errno == ENOENT || errno == ENOTDIR)) {
        const char *named = getenv("TESSERA_LIMITS_FILE");
        if (!named || !*named) return 0;
        path = named;
        fixed = 0;
        fd = open(path, flags);
    }
    if (fd < 0) {
        vgpu_log(LOG_ERROR, "cannot open the limits file %s: %s; CUDA calls fail (the container's limits are "
                 "unknown)", path, strerror(errno));
        return -1;
    }
    char *text = NULL;
    int line = 0;
    const char *why = read_text(fd, fixed, &text);
    close(fd);
    if (!why) why = vgpu_limits_parse(text, LIMITS_CONTAINER, c, &line);
    free(text);
    if (why) {
        vgpu_log(LOG_ERROR, "refusing the limits file %s%s%.0d: %s. CUDA calls fail: the DRA driver writes this "
                 "file at prepare; re-create the pod", path, line ? ", line " : "", line, why);
        return -1;
    }
    vgpu_log(LOG_INFO, "limits from %s; the isolation env is ignored", path);
    return 1;
}
