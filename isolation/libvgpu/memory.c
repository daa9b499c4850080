/* Per-process bookkeeping of what was charged: allocation tables (pointer, VMM handle, array,
 * graph exec -> device and bytes) and the stream-ordered pools, whose charge follows the memory
 * they hold reserved (CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT), not what the application uses. */
#include "vgpu.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ---- tables: open addressing, tombstones, grow at half load ---- */
#define EMPTY 0ULL
#define TOMB 1ULL
struct table { pthread_mutex_t mu; struct vgpu_entry *e; size_t cap, used; };
static struct table g_tab[TAB_COUNT] = {
    { PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0 }, { PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0 },
    { PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0 }, { PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0 } };

static size_t hash(uint64_t k, size_t cap) { return (size_t)((k * 0x9E3779B97F4A7C15ULL) >> 20) & (cap - 1); }

/* keys 0 and 1 are reserved markers: store key+2 */
static void put_locked(struct table *t, uint64_t key, int dev, int kind, uint64_t bytes);

static void grow_locked(struct table *t)
{
    size_t old = t->cap;
    struct vgpu_entry *oe = t->e;
    size_t cap = old ? old * 2 : 1024;
    struct vgpu_entry *ne = calloc(cap, sizeof *ne);
    if (!ne) return; /* keep the old table; put_locked copes with a full one by refusing */
    t->e = ne;
    t->cap = cap;
    t->used = 0;
    for (size_t i = 0; i < old; i++)
        if (oe[i].key > TOMB) put_locked(t, oe[i].key - 2, oe[i].dev, oe[i].kind, oe[i].bytes);
    free(oe);
}

static void put_locked(struct table *t, uint64_t key, int dev, int kind, uint64_t bytes)
{
    if ((t->used + 1) * 2 > t->cap) grow_locked(t);
    if (!t->cap || t->used + 1 >= t->cap) return;
    /* keys are unique (a live pointer, handle or array is never handed out twice): take the first
     * free cell, reusing tombstones so that alloc/free churn keeps probes short */
    uint64_t k = key + 2;
    size_t i = hash(k, t->cap);
    while (t->e[i].key > TOMB) i = (i + 1) & (t->cap - 1);
    if (t->e[i].key == EMPTY) t->used++;
    t->e[i] = (struct vgpu_entry){ k, dev, kind, bytes };
}

static struct vgpu_entry *find_locked(struct table *t, uint64_t key)
{
    if (!t->cap) return NULL;
    uint64_t k = key + 2;
    for (size_t i = hash(k, t->cap), n = 0; n < t->cap; i = (i + 1) & (t->cap - 1), n++) {
        if (t->e[i].key == k) return &t->e[i];
        if (t->e[i].key == EMPTY) return NULL;
    }
    return NULL;
}

void vgpu_tab_put(int tab, uint64_t key, int dev, int kind, uint64_t bytes)
{
    struct table *t = &g_tab[tab];
    pthread_mutex_lock(&t->mu);
    put_locked(t, key, dev, kind, bytes);
    pthread_mutex_unlock(&t->mu);
}

int vgpu_tab_take(int tab, uint64_t key, struct vgpu_entry *out)
{
    struct table *t = &g_tab[tab];
    pthread_mutex_lock(&t->mu);
    struct vgpu_entry *e = find_locked(t, key);
    if (e) {
        *out = *e;
        out->key = key;
        e->key = TOMB;
    }
    pthread_mutex_unlock(&t->mu);
    return e != NULL;
}

int vgpu_tab_get(int tab, uint64_t key, struct vgpu_entry *out)
{
    struct table *t = &g_tab[tab];
    pthread_mutex_lock(&t->mu);
    struct vgpu_entry *e = find_locked(t, key);
    if (e) {
        *out = *e;
        out->key = key;
    }
    pthread_mutex_unlock(&t->mu);
    return e != NULL;
}

/* ---- pools ---- */
struct pool_rec { CUmemoryPool pool; int dev; uint64_t charged; };
static struct pool_rec *g_pools;
static size_t g_npools, g_cappools;
static pthread_mutex_t g_pool_mu = PTHREAD_MUTEX_INITIALIZER;

void vgpu_tables_reset(void)
{
    for (int i = 0; i < TAB_COUNT; i++) {
        pthread_mutex_init(&g_tab[i].mu, NULL);
        free(g_tab[i].e);
        g_tab[i].e = NULL;
        g_tab[i].cap = g_tab[i].used = 0;
    }
    pthread_mutex_init(&g_pool_mu, NULL);
    free(g_pools);
    g_pools = NULL;
    g_npools = g_cappools = 0;
}

static struct pool_rec *pool_find_locked(CUmemoryPool pool)
{
    for (size_t i = 0; i < g_npools; i++)
        if (g_pools[i].pool == pool) return &g_pools[i];
    return NULL;
}

static struct pool_rec *pool_add_locked(CUmemoryPool pool, int dev)
{
    struct pool_rec *p = pool_find_locked(pool);
    if (p) return p;
    if (g_npools == g_cappools) {
        size_t cap = g_cappools ? g_cappools * 2 : 16;
        struct pool_rec *n = realloc(g_pools, cap * sizeof *n);
        if (!n) return NULL;
        g_pools = n;
        g_cappools = cap;
    }
    g_pools[g_npools] = (struct pool_rec){ pool, dev, 0 };
    return &g_pools[g_npools++];
}

void vgpu_pool_track(CUmemoryPool pool, int dev)
{
    pthread_mutex_lock(&g_pool_mu);
    pool_add_locked(pool, dev);
    pthread_mutex_unlock(&g_pool_mu);
}

int vgpu_pool_device(CUmemoryPool pool)
{
    pthread_mutex_lock(&g_pool_mu);
    struct pool_rec *p = pool_find_locked(pool);
    int dev = p ? p->dev : -1;
    pthread_mutex_unlock(&g_pool_mu);
    if (dev >= 0) return dev;
    /* a device's default or current pool handed to cuMemAllocFromPoolAsync */
    for (int d = 0; d < vgpu.ndev; d++) {
        CUmemoryPool a = NULL, b = NULL;
        CALL(cuDeviceGetDefaultMemPool, &a, d);
        CALL(cuDeviceGetMemPool, &b, d);
        if (pool == a || pool == b) {
            vgpu_pool_track(pool, d);
            return d;
        }
    }
    return vgpu_current_device();
}

static uint64_t pool_attr(CUmemoryPool pool, int attr)
{
    uint64_t v = 0;
    return CALL(cuMemPoolGetAttribute, pool, attr, &v) == CUDA_SUCCESS ? v : 0;
}

uint64_t vgpu_pool_reserved(CUmemoryPool pool) { return pool_attr(pool, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT); }
uint64_t vgpu_pool_used(CUmemoryPool pool) { return pool_attr(pool, CU_MEMPOOL_ATTR_USED_MEM_CURRENT); }

/* g_pool_mu held: move the pool's charge to what it holds reserved now; returns the delta */
static int64_t pool_sync_locked(struct pool_rec *p)
{
    uint64_t now = vgpu_pool_reserved(p->pool);
    int64_t delta = (int64_t)now - (int64_t)p->charged;
    p->charged = now;
    return delta;
}

void vgpu_pools_refresh(void)
{
    pthread_mutex_lock(&g_pool_mu);
    for (size_t i = 0; i < g_npools; i++) {
        int64_t delta = pool_sync_locked(&g_pools[i]);
        if (delta > 0) vgpu_charge_force(g_pools[i].dev, (uint64_t)delta);
        else if (delta < 0) vgpu_uncharge(g_pools[i].dev, (uint64_t)-delta);
    }
    pthread_mutex_unlock(&g_pool_mu);
}

uint64_t vgpu_pool_settle(CUmemoryPool pool, int dev, uint64_t tentative)
{
    pthread_mutex_lock(&g_pool_mu);
    struct pool_rec *p = pool_add_locked(pool, dev);
    int64_t delta = p ? pool_sync_locked(p) : 0;
    pthread_mutex_unlock(&g_pool_mu);
    int64_t extra = delta - (int64_t)tentative;
    if (extra < 0) {
        vgpu_uncharge(dev, (uint64_t)-extra);
        return 0;
    }
    if (extra > 0 && vgpu_charge(dev, (uint64_t)extra) != 0) {
        vgpu_charge_force(dev, (uint64_t)extra); /* the memory is held: account for it truthfully */
        return (uint64_t)extra;
    }
    return 0;
}

void vgpu_pool_forget(CUmemoryPool pool)
{
    pthread_mutex_lock(&g_pool_mu);
    struct pool_rec *p = pool_find_locked(pool);
    if (p) {
        vgpu_uncharge(p->dev, p->charged);
        *p = g_pools[--g_npools];
    }
    pthread_mutex_unlock(&g_pool_mu);
}
