/* The node-wide region ($TESSERA_NODE_DIR/tessera-node.region), shared by every container on the
 * node: per device (by UUID) the containers recently active there, with their priority. A
 * container whose task priority is lower (larger number) than an active one's pauses its
 * launches; under the default core policy a limit applies only while another container is active
 * on the device. Lock-free: containers live in different PID namespaces. */
#include "vgpu.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NODE_MAGIC 0x444f4e54u /* "TNOD" */
#define NODE_VERSION 1u
#define NODE_DEVS 64
#define NODE_RECS 16
#define ACTIVE_HOLD_NS 500000000LL /* a container counts as active this long after a launch */

struct node_rec { _Atomic uint64_t container; _Atomic int64_t until_ns; _Atomic int32_t priority; int32_t pad; };
struct node_dev { _Atomic uint32_t state; char uuid[60]; struct node_rec rec[NODE_RECS]; };
struct node_region { uint32_t magic, version, struct_size, ndevs; uint8_t pad[48]; struct node_dev dev[NODE_DEVS]; };

static struct node_region *g_node;
static int g_node_fd = -1;

int vgpu_node_open(const char *dir)
{
    char path[600];
    snprintf(path, sizeof path, "%s/tessera-node.region", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) {
        vgpu_log(LOG_WARN, "cannot open the node region %s: %s; task priority is not enforced", path, strerror(errno));
        return -1;
    }
    fchmod(fd, 0666);
    flock(fd, LOCK_EX);
    struct stat sb;
    const char *why = NULL;
    if (fstat(fd, &sb) != 0) why = strerror(errno);
    else if (sb.st_size == 0 && ftruncate(fd, sizeof(struct node_region)) != 0) why = strerror(errno);
    else if (sb.st_size != 0 && (size_t)sb.st_size != sizeof(struct node_region)) why = "wrong size (foreign or truncated)";
    struct node_region *n = NULL;
    if (!why) {
        n = mmap(NULL, sizeof *n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (n == MAP_FAILED) {
            n = NULL;
            why = strerror(errno);
        } else if (sb.st_size == 0) {
            n->version = NODE_VERSION;
            n->struct_size = sizeof *n;
            n->ndevs = NODE_DEVS;
            __atomic_store_n(&n->magic, NODE_MAGIC, __ATOMIC_RELEASE);
        } else if (n->magic != NODE_MAGIC || n->version != NODE_VERSION || n->struct_size != sizeof *n) {
            why = "foreign or other-version file";
            munmap(n, sizeof *n);
            n = NULL;
        }
    }
    flock(fd, LOCK_UN);
    if (why) {
        vgpu_log(LOG_WARN, "refusing the node region %s: %s; task priority is not enforced", path, why);
        close(fd);
        return -1;
    }
    g_node = n;
    g_node_fd = fd;
    return 0;
}

static struct node_dev *find_dev(const char *uuid)
{
    for (int i = 0; i < NODE_DEVS; i++)
        if (atomic_load(&g_node->dev[i].state) == 2 && !strncmp(g_node->dev[i].uuid, uuid, sizeof g_node->dev[i].uuid))
            return &g_node->dev[i];
    /* claim an entry, serialised across the node by the file lock */
    flock(g_node_fd, LOCK_EX);
    struct node_dev *found = NULL;
    for (int i = 0; i < NODE_DEVS && !found; i++)
        if (atomic_load(&g_node->dev[i].state) == 2 && !strncmp(g_node->dev[i].uuid, uuid, sizeof g_node->dev[i].uuid))
            found = &g_node->dev[i];
    for (int i = 0; i < NODE_DEVS && !found; i++)
        if (atomic_load(&g_node->dev[i].state) == 0) {
            found = &g_node->dev[i];
            snprintf(found->uuid, sizeof found->uuid, "%s", uuid);
            atomic_store(&found->state, 2);
        }
    flock(g_node_fd, LOCK_UN);
    return found;
}

void vgpu_node_update(const char *uuid, uint64_t container_id, int priority, int active, int *higher_active,
                      int *others_active)
{
    *higher_active = *others_active = 0;
    if (!g_node) return;
    struct node_dev *d = find_dev(uuid);
    if (!d) return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    if (active) {
        struct node_rec *mine = NULL;
        for (int i = 0; i < NODE_RECS && !mine; i++)
            if (atomic_load(&d->rec[i].container) == container_id) mine = &d->rec[i];
        for (int i = 0; i < NODE_RECS && !mine; i++) { /* take a free or long-expired record */
            uint64_t c = atomic_load(&d->rec[i].container);
            if ((c == 0 || atomic_load(&d->rec[i].until_ns) < now - 1000000000LL) &&
                atomic_compare_exchange_strong(&d->rec[i].container, &c, container_id))
                mine = &d->rec[i];
        }
        if (mine) {
            atomic_store(&mine->priority, priority);
            atomic_store(&mine->until_ns, now + ACTIVE_HOLD_NS);
        }
    }
    for (int i = 0; i < NODE_RECS; i++) {
        uint64_t c = atomic_load(&d->rec[i].container);
        if (!c || c == container_id || atomic_load(&d->rec[i].until_ns) <= now) continue;
        *others_active = 1;
        if (atomic_load(&d->rec[i].priority) < priority) *higher_active = 1;
    }
}
