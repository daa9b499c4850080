/* smi: a small nvidia-smi-like NVML client, linked against libnvidia-ml.so.1 as nvidia-smi is.
 * Prints, per device, the memory NVML reports, utilisation and the compute processes; with --json
 * one JSON object per device. Used by the tests (fake NVML) and the GPU check (real NVML). */
#include "../include/cuabi.h"

#include <stdio.h>
#include <string.h>

nvmlReturn_t nvmlInit_v2(void);
nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *);
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int, nvmlDevice_t *);
nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t, char *, unsigned int);
nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t, char *, unsigned int);
nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t, nvmlMemory_t *);
nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t, nvmlMemory_v2_t *);
nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t, nvmlUtilization_t *);
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t, unsigned int *, nvmlProcessInfo_t *);

int main(int argc, char **argv)
{
    int json = argc > 1 && !strcmp(argv[1], "--json");
    nvmlReturn_t r = nvmlInit_v2();
    unsigned n = 0;
    if (r || (r = nvmlDeviceGetCount_v2(&n))) {
        fprintf(stderr, "smi: NVML failed: %d\n", r);
        return 2;
    }
    for (unsigned i = 0; i < n; i++) {
        nvmlDevice_t d;
        char uuid[96] = "", name[96] = "";
        nvmlMemory_t m1 = { 0, 0, 0 };
        nvmlMemory_v2_t m2;
        memset(&m2, 0, sizeof m2);
        m2.version = nvmlMemory_v2;
        nvmlUtilization_t u = { 0, 0 };
        nvmlProcessInfo_t procs[64];
        unsigned np = 64;
        nvmlDeviceGetHandleByIndex_v2(i, &d);
        nvmlDeviceGetUUID(d, uuid, sizeof uuid);
        nvmlDeviceGetName(d, name, sizeof name);
        nvmlReturn_t r1 = nvmlDeviceGetMemoryInfo(d, &m1);
        nvmlReturn_t r2 = nvmlDeviceGetMemoryInfo_v2(d, &m2);
        nvmlDeviceGetUtilizationRates(d, &u);
        if (nvmlDeviceGetComputeRunningProcesses_v3(d, &np, procs) != NVML_SUCCESS) np = 0;
        if (json) {
            printf("{\"index\":%u,\"uuid\":\"%s\",\"name\":\"%s\",\"v1\":{\"result\":%d,\"total\":%llu,\"free\":%llu,"
                   "\"used\":%llu},\"v2\":{\"result\":%d,\"total\":%llu,\"free\":%llu,\"used\":%llu},\"util\":%u,"
                   "\"processes\":[",
                   i, uuid, name, r1, m1.total, m1.free, m1.used, r2, m2.total, m2.free, m2.used, u.gpu);
            for (unsigned k = 0; k < np; k++)
                printf("%s{\"pid\":%u,\"used\":%llu}", k ? "," : "", procs[k].pid, procs[k].usedGpuMemory);
            printf("]}\n");
        } else {
            printf("%u  %-40s %-20s %8lluMiB / %8lluMiB  %3u%%\n", i, uuid, name, m1.used >> 20, m1.total >> 20, u.gpu);
            for (unsigned k = 0; k < np; k++) printf("     pid %u  %llu MiB\n", procs[k].pid, procs[k].usedGpuMemory >> 20);
        }
    }
    return 0;
}
