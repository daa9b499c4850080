/* Minimal test helpers: CHECK records a failure and goes on; main ends with report(). */
#ifndef TESSERA_CHECK_H
#define TESSERA_CHECK_H
#include <stdio.h>

static int g_pass, g_fail;
#define CHECK(cond, ...) \
    do { if (cond) g_pass++; else { g_fail++; fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
         fprintf(stderr, __VA_ARGS__); fprintf(stderr, "\n"); } } while (0)
static inline int report(const char *name)
{
    printf("%s: %d checks passed, %d failed\n", name, g_pass, g_fail);
    return g_fail ? 1 : 0;
}
#endif
