/* gpa-replay: replay cuGetProcAddress_v2 look-ups, one "name version flags" per stdin line, the
 * way the CUDA runtime does (dlopen + one dlsym + look-ups). Prints per line:
 *   name version flags result status library symbol
 * where library/symbol name the object and export the returned pointer belongs to ("-" for NULL).
 * tests/isolation compares a plain and a preloaded run: same variants, wrappers where we wrap. */
#define _GNU_SOURCE
#include "../include/cuabi.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

typedef CUresult (*gpa_t)(const char *, void **, int, unsigned long long, CUdriverProcAddressQueryResult *);

int main(void)
{
    void *h = dlopen("libcuda.so.1", RTLD_NOW);
    gpa_t gpa = h ? (gpa_t)dlsym(h, "cuGetProcAddress_v2") : NULL;
    if (!gpa) {
        fprintf(stderr, "gpa-replay: no cuGetProcAddress_v2\n");
        return 2;
    }
    char name[128];
    int ver;
    unsigned long long flags;
    while (scanf("%127s %d %llu", name, &ver, &flags) == 3) {
        void *p = NULL;
        CUdriverProcAddressQueryResult st = -1;
        const char *sym = strcmp(name, "-") ? name : "";
        CUresult r = gpa(sym, &p, ver, flags, &st);
        Dl_info info;
        const char *lib = "-", *s = "-";
        if (p && dladdr(p, &info)) {
            lib = info.dli_fname ? strrchr(info.dli_fname, '/') ? strrchr(info.dli_fname, '/') + 1 : info.dli_fname : "?";
            s = info.dli_sname ? info.dli_sname : "?";
        }
        printf("%s %d %llu %d %d %s %s\n", name, ver, flags, r, (int)st, lib, s);
    }
    return 0;
}
