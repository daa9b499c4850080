/* The direct route: entry points bound at link time (-lcuda), as NCCL or a C++ engine links them. */
#include "drv.h"

#define DECL(f, base, ver, exp, ptds, type) extern char DRV_SYM_##f[] __asm__(exp);
DRV_FUNCS(DECL)
#undef DECL

int drv_direct_fill(struct drv *d)
{
#define FILL(f, base, ver, exp, ptds, type) *(void **)&d->f = (void *)DRV_SYM_##f;
    DRV_FUNCS(FILL)
#undef FILL
    return 0;
}
