/* The env contract as libvgpu reads it: sizes, percentages, per-device overrides, malformed input. */
#include "../libvgpu/vgpu.h"
#include "check.h"

#include <stdlib.h>
#include <string.h>

int main(void)
{
    struct { const char *in; int ok; uint64_t want; } sizes[] = {
        { "1g", 1, 1ULL << 30 }, { "1G", 1, 1ULL << 30 }, { "1024m", 1, 1ULL << 30 }, { "1048576k", 1, 1ULL << 30 },
        { "1073741824", 1, 1ULL << 30 }, { "0", 1, 0 }, { "4096m", 1, 4ULL << 30 }, { " 12m ", 1, 12ULL << 20 },
        { "18446744073709551615", 1, UINT64_MAX }, { "abc", 0, 0 }, { "1.5g", 0, 0 }, { "-1", 0, 0 },
        { "", 0, 0 }, { "m", 0, 0 }, { "0x10", 0, 0 }, { "12q", 0, 0 }, { "10 g", 0, 0 },
        { "18446744073709551616", 0, 0 }, { "17179869184g", 0, 0 }, { "99999999999999999999999m", 0, 0 },
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        uint64_t v = 12345;
        int rc = vgpu_parse_size(sizes[i].in, &v);
        CHECK((rc == 0) == sizes[i].ok, "parse_size(\"%s\") rc=%d", sizes[i].in, rc);
        if (sizes[i].ok) CHECK(v == sizes[i].want, "parse_size(\"%s\") = %llu", sizes[i].in, (unsigned long long)v);
    }
    uint64_t p;
    CHECK(vgpu_parse_uint("30", 100, &p) == 0 && p == 30, "percent 30");
    CHECK(vgpu_parse_uint("101", 100, &p) != 0, "percent 101 refused");
    CHECK(vgpu_parse_uint("5%", 100, &p) != 0, "percent with sign refused");

    setenv("CUDA_DEVICE_MEMORY_LIMIT", "1g", 1);
    setenv("CUDA_DEVICE_MEMORY_LIMIT_1", "2048m", 1);
    setenv("CUDA_DEVICE_MEMORY_LIMIT_2", "bogus", 1);
    setenv("CUDA_DEVICE_MEMORY_LIMIT_3", "0", 1);
    setenv("CUDA_DEVICE_SM_LIMIT", "50", 1);
    setenv("CUDA_DEVICE_SM_LIMIT_1", "100", 1);
    setenv("CUDA_DEVICE_SM_LIMIT_2", "150", 1);
    setenv("CUDA_DEVICE_SM_LIMIT_3", "0", 1);
    setenv("CUDA_TASK_PRIORITY", "0", 1);
    setenv("GPU_CORE_UTILIZATION_POLICY", "FORCE", 1);
    setenv("CUDA_OVERSUBSCRIBE", "true", 1);
    setenv("CUDA_DEVICE_MEMORY_SHARED_CACHE", "/tmp/x.cache", 1);
    setenv("TESSERA_NODE_DIR", "/tmp/node", 1);
    struct vgpu_config c;
    vgpu_config_load(&c);
    CHECK(c.mem_limit[0] == 1ULL << 30, "global limit applies to device 0");
    CHECK(c.mem_limit[1] == 2ULL << 30, "_1 overrides");
    CHECK(c.mem_limit[2] == 1ULL << 30, "malformed _2 ignored, global kept");
    CHECK(c.mem_limit[3] == 0, "_3=0 means no limit");
    CHECK(c.mem_limit[15] == 1ULL << 30, "global reaches device 15");
    CHECK(c.sm_limit[0] == 50 && c.sm_limit[1] == 0 && c.sm_limit[2] == 50 && c.sm_limit[3] == 0, "sm limits %u %u %u %u",
          c.sm_limit[0], c.sm_limit[1], c.sm_limit[2], c.sm_limit[3]);
    CHECK(c.priority == 0 && c.policy == POLICY_FORCE && c.oversubscribe, "priority/policy/oversubscribe");
    CHECK(!strcmp(c.cache_path, "/tmp/x.cache"), "region path");
    CHECK(!c.node_dir[0] && !c.from_file && c.ndev == VGPU_MAX_DEVICES, "no node records under the env (by hand)");

    setenv("CUDA_TASK_PRIORITY", "high", 1);
    setenv("GPU_CORE_UTILIZATION_POLICY", "disable", 1);
    setenv("CUDA_DEVICE_MEMORY_LIMIT", "1.5g", 1);
    unsetenv("CUDA_DEVICE_MEMORY_SHARED_CACHE");
    vgpu_config_load(&c);
    CHECK(c.priority == 1, "malformed priority keeps the default (1, low)");
    CHECK(c.policy == POLICY_DISABLE, "disable policy");
    CHECK(c.mem_limit[0] == 0 && c.mem_limit[1] == 2ULL << 30, "malformed global ignored");
    CHECK(c.cache_path[0] == '/', "a limit without a cache path gets a default region path");
    for (int i = 0; i < 16; i++) {
        char k[64];
        snprintf(k, sizeof k, "CUDA_DEVICE_MEMORY_LIMIT_%d", i);
        unsetenv(k);
        snprintf(k, sizeof k, "CUDA_DEVICE_SM_LIMIT_%d", i);
        unsetenv(k);
    }
    unsetenv("CUDA_DEVICE_MEMORY_LIMIT");
    unsetenv("CUDA_DEVICE_SM_LIMIT");
    vgpu_config_load(&c);
    CHECK(!c.any_limit && !c.cache_path[0], "nothing set: no limit, no region");
    return report("test_env");
}
