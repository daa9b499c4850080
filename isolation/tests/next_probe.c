/* A library loaded after libvgpu that looks itself up with RTLD_NEXT, as allocator and profiler
 * interposers do: the answer must be the next definition after it (none here), never itself. */
#define _GNU_SOURCE
#include <dlfcn.h>

__attribute__((visibility("default"))) void *tessera_next_probe(void);
void *tessera_next_probe(void)
{
    void *p = dlsym(RTLD_NEXT, "tessera_next_probe");
    __asm__ volatile("" ::: "memory"); /* no tail call: the caller of dlsym must be this library */
    return p;
}
