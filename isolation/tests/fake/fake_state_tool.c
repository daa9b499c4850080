/* fake-state: print the fake driver's state as JSON, or measure a device's busy fraction.
 *
 *   fake-state                     JSON: devices (capacity, used, busy), processes (granted bytes),
 *                                  call counters (non-zero ones)
 *   fake-state util DEV SECONDS [PID]   busy fraction of state device DEV (index or UUID) over a
 *                                  window, of all processes or of one
 *
 * It reads $TESSERA_FAKE_STATE directly and ignores NVIDIA_VISIBLE_DEVICES: it is the ground truth. */
#define _GNU_SOURCE
#include "fake_state.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int find_dev(struct fake_state *st, const char *s)
{
    for (uint32_t i = 0; i < st->ndev; i++)
        if (!strcmp(st->dev[i].uuid, s)) return (int)i;
    char *end;
    long i = strtol(s, &end, 10);
    return *end || i < 0 || i >= (long)st->ndev ? -1 : (int)i;
}

int main(int argc, char **argv)
{
    struct fake_state *st = fake_state_open();
    if (!st) return 2;
    if ((argc == 4 || argc == 5) && !strcmp(argv[1], "util")) {
        int d = find_dev(st, argv[2]);
        double secs = atof(argv[3]);
        int pid = argc == 5 ? atoi(argv[4]) : 0;
        if (d < 0 || secs <= 0) {
            fprintf(stderr, "usage: fake-state util DEV SECONDS [PID]\n");
            return 2;
        }
        fake_lock(st);
        int64_t t0 = fake_now_ns(), b0 = fake_busy_done_locked(&st->dev[d], t0);
        fake_unlock(st);
        struct timespec ts = { (time_t)secs, (long)((secs - (double)(time_t)secs) * 1e9) };
        nanosleep(&ts, NULL);
        fake_lock(st);
        int64_t t1 = fake_now_ns(), b1 = fake_busy_done_locked(&st->dev[d], t1);
        if (pid) { /* from the timeline's recent intervals */
            b0 = 0;
            b1 = fake_busy_between_locked(&st->dev[d], pid, t0, t1);
        }
        fake_unlock(st);
        printf("{\"device\":\"%s\",\"seconds\":%.3f,\"busy_fraction\":%.5f}\n", st->dev[d].uuid,
               (double)(t1 - t0) / 1e9, (double)(b1 - b0) / (double)(t1 - t0));
        return 0;
    }
    if (argc != 1) {
        fprintf(stderr, "usage: fake-state [util DEV SECONDS]\n");
        return 2;
    }
    fake_lock(st);
    fake_reap_locked(st);
    int64_t now = fake_now_ns();
    printf("{\"devices\":[");
    for (uint32_t i = 0; i < st->ndev; i++) {
        struct fake_dev *d = &st->dev[i];
        printf("%s{\"uuid\":\"%s\",\"name\":\"%s\",\"capacity\":%llu,\"used\":%llu,\"sms\":%u,"
               "\"busy_ns\":%lld,\"launches\":%llu}",
               i ? "," : "", d->uuid, d->name, (unsigned long long)d->capacity, (unsigned long long)d->used, d->sms,
               (long long)fake_busy_done_locked(d, now), (unsigned long long)d->launches);
    }
    printf("],\"processes\":[");
    int first = 1;
    for (int i = 0; i < FAKE_MAX_PROC; i++) {
        struct fake_proc *p = &st->proc[i];
        if (!p->pid) continue;
        printf("%s{\"pid\":%d,\"granted\":[", first ? "" : ",", p->pid);
        for (uint32_t d = 0; d < st->ndev; d++) printf("%s%llu", d ? "," : "", (unsigned long long)p->granted[d]);
        printf("]}");
        first = 0;
    }
    printf("],\"calls\":{");
    first = 1;
    for (int i = 0; i < FAKE_NCALLS; i++) {
        unsigned long long n = atomic_load(&st->calls[i]);
        if (!n) continue;
        printf("%s\"%s\":%llu", first ? "" : ",", fake_call_names[i], n);
        first = 0;
    }
    printf("}}\n");
    fake_unlock(st);
    return 0;
}
