/* The env contract (isolation/env.py): HAMi-core names and formats. It applies only where there is
 * no limits file (limits.c): libvgpu run by hand, outside a Tessera container.
 * Sizes: digits with an optional k/m/g suffix (x1024^n), no suffix = bytes; per device
 * NAME_<i> overrides NAME; 0 means no limit; anything malformed (1.5g, 12q, -1, overflow) is
 * logged and ignored, never fatal. */
#include "vgpu.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

int vgpu_parse_uint(const char *s, uint64_t max, uint64_t *out)
{
    if (!s) return -1;
    while (isspace((unsigned char)*s)) s++;
    if (!isdigit((unsigned char)*s)) return -1;
    uint64_t v = 0;
    for (; isdigit((unsigned char)*s); s++) {
        uint64_t d = (uint64_t)(*s - '0');
        if (v > (UINT64_MAX - d) / 10) return -1;
        v = v * 10 + d;
    }
    while (isspace((unsigned char)*s)) s++;
    if (*s || v > max) return -1;
    *out = v;
    return 0;
}

int vgpu_parse_size(const char *s, uint64_t *out)
{
    if (!s) return -1;
    char buf[64];
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) n--;
    if (!n || n >= sizeof buf) return -1;
    memcpy(buf, s, n);
    buf[n] = 0;
    unsigned shift = 0;
    switch (tolower((unsigned char)buf[n - 1])) {
    case 'k': shift = 10; break;
    case 'm': shift = 20; break;
    case 'g': shift = 30; break;
    default: break;
    }
    if (shift) {
        buf[n - 1] = 0;
        if (n < 2 || !isdigit((unsigned char)buf[n - 2])) return -1; /* "10 g", "g" */
    }
    uint64_t v;
    if (vgpu_parse_uint(buf, UINT64_MAX, &v) != 0) return -1;
    if (shift && v > (UINT64_MAX >> shift)) return -1;
    *out = v << shift;
    return 0;
}

static void load_sizes(const char *name, uint64_t *out, int percent)
{
    char key[96];
    const char *all = getenv(name);
    uint64_t v;
    uint64_t dflt = 0;
    if (all && *all) {
        int bad = percent ? vgpu_parse_uint(all, 100, &v) : vgpu_parse_size(all, &v);
        if (bad) vgpu_log(LOG_WARN, "%s=%s is malformed: ignored", name, all);
        else dflt = v;
    }
    for (int i = 0; i < VGPU_MAX_DEVICES; i++) {
        out[i] = dflt;
        snprintf(key, sizeof key, "%s_%d", name, i);
        const char *one = getenv(key);
        if (!one || !*one) continue;
        int bad = percent ? vgpu_parse_uint(one, 100, &v) : vgpu_parse_size(one, &v);
        if (bad) vgpu_log(LOG_WARN, "%s=%s is malformed: ignored", key, one);
        else out[i] = v;
    }
}

static int env_true(const char *name)
{
    const char *v = getenv(name);
    return v && (!strcasecmp(v, "true") || !strcmp(v, "1") || !strcasecmp(v, "yes"));
}

void vgpu_config_load(struct vgpu_config *c)
{
    memset(c, 0, sizeof *c);
    c->ndev = VGPU_MAX_DEVICES; /* by CUDA ordinal */
    load_sizes("CUDA_DEVICE_MEMORY_LIMIT", c->mem_limit, 0);
    uint64_t sm[VGPU_MAX_DEVICES];
    load_sizes("CUDA_DEVICE_SM_LIMIT", sm, 1);
    for (int i = 0; i < VGPU_MAX_DEVICES; i++) {
        c->sm_limit[i] = sm[i] >= 100 ? 0 : (uint32_t)sm[i]; /* 100 % is no limit */
        if (c->mem_limit[i] || c->sm_limit[i]) c->any_limit = 1;
    }
    c->priority = 1;
    const char *p = getenv("CUDA_TASK_PRIORITY");
    uint64_t v;
    if (p && *p) {
        if (vgpu_parse_uint(p, 1000, &v) == 0) c->priority = (int)v;
        else vgpu_log(LOG_WARN, "CUDA_TASK_PRIORITY=%s is malformed: ignored", p);
    }
    const char *pol = getenv("GPU_CORE_UTILIZATION_POLICY");
    c->policy = POLICY_DEFAULT;
    if (pol && !strcasecmp(pol, "force")) c->policy = POLICY_FORCE;
    else if (pol && !strcasecmp(pol, "disable")) c->policy = POLICY_DISABLE;
    else if (pol && *pol && strcasecmp(pol, "default"))
        vgpu_log(LOG_WARN, "GPU_CORE_UTILIZATION_POLICY=%s is unknown: using default", pol);
    c->oversubscribe = env_true("CUDA_OVERSUBSCRIBE");
    const char *cache = getenv("CUDA_DEVICE_MEMORY_SHARED_CACHE");
    if (cache && *cache) snprintf(c->cache_path, sizeof c->cache_path, "%s", cache);
    else if (c->any_limit) snprintf(c->cache_path, sizeof c->cache_path, "/tmp/libvgpu.%u.cache", (unsigned)getuid());
    c->period_ms = 100;
    const char *per = getenv("TESSERA_SM_PERIOD_MS");
    if (per && *per) {
        if (vgpu_parse_uint(per, 10000, &v) == 0 && v >= 10) c->period_ms = (int)v;
        else vgpu_log(LOG_WARN, "TESSERA_SM_PERIOD_MS=%s is malformed: ignored", per);
    }
}
