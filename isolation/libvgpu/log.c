/* Messages go to stderr, prefixed "libvgpu:"; LIBCUDA_LOG_LEVEL (0-4, HAMi's name) is read once. */
#include "vgpu.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int g_level = LOG_WARN;

void vgpu_log_init(void)
{
    const char *v = getenv("LIBCUDA_LOG_LEVEL");
    uint64_t lv;
    if (v && vgpu_parse_uint(v, 4, &lv) == 0) g_level = (int)lv;
}

void vgpu_log(int level, const char *fmt, ...)
{
    if (level > g_level && level != LOG_ERROR) return;
    char buf[768];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    const char *tag = level == LOG_ERROR ? "error" : level == LOG_WARN ? "warning" : "info";
    fprintf(stderr, "libvgpu[%d] %s: %s\n", (int)getpid(), tag, buf);
}
