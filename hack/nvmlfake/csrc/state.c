/*
 * state.c: finding and reading the fake's state file.
 *
 * The file is written by nvmlfake (Python) and replaced by an atomic rename, so
 * a reader sees the old file or the new one, never half of one. One record per
 * line, fields separated by tabs (text fields may hold spaces); the first field
 * names the record. See ../README.md for every record. This file must never
 * allocate per read: it parses into a static scratch copy and swaps.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fake_nvml.h"

#define STATE_ENV "FAKE_NVML_STATE"
#define STATE_NAME "fake-nvml.state"
#define STATE_MAGIC "fake-nvml-state"
#define MAX_FIELDS 24

pthread_mutex_t fake_lock = PTHREAD_MUTEX_INITIALIZER;
const struct fake_state *fake_current;

static struct fake_state states[2];
static char state_path[PATH_MAX];
static struct stat state_seen;

struct line {
    char *field[MAX_FIELDS];
    int count;
};

static void split(char *text, struct line *out)
{
    out->count = 0;
    char *rest = text;
    char *tok;
    while (out->count < MAX_FIELDS && (tok = strsep(&rest, "\t")) != NULL)
        out->field[out->count++] = tok;
}

/* A number field; 0x for hex. Sets *ok to 0 on junk. */
static unsigned long long num(const char *text, int *ok)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 0);
    if (errno || end == text || *end != '\0')
        *ok = 0;
    return v;
}

static long long snum(const char *text, int *ok)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 0);
    if (errno || end == text || *end != '\0')
        *ok = 0;
    return v;
}

static int copy(char *dst, size_t size, const char *src)
{
    size_t n = strlen(src);
    if (n >= size)
        return 0;
    memcpy(dst, src, n + 1);
    return 1;
}

/* The GPU a record names, or NULL when out of range. */
static struct fake_gpu *gpu_of(struct fake_state *s, const char *text, int *ok)
{
    unsigned long long i = num(text, ok);
    if (!*ok || i >= s->gpu_count) {
        *ok = 0;
        return NULL;
    }
    return &s->gpus[i];
}

static const char *parse_gpu(struct fake_state *s, struct line *l)
{
    int ok = 1;
    if (l->count != 19)
        return "gpu needs 18 fields";
    if (s->gpu_count >= FAKE_MAX_GPUS)
        return "too many GPUs";
    if (num(l->field[1], &ok) != s->gpu_count || !ok)
        return "gpu records must come in index order from 0";
    struct fake_gpu *g = &s->gpus[s->gpu_count];
    if (!copy(g->uuid, sizeof g->uuid, l->field[2]) || !copy(g->name, sizeof g->name, l->field[3]) ||
        !copy(g->bus_id, sizeof g->bus_id, l->field[6]))
        return "gpu text field too long";
    g->memory_total = num(l->field[4], &ok);
    g->memory_reserved = num(l->field[5], &ok);
    g->pci_device_id = (unsigned int)num(l->field[7], &ok);
    g->pci_subsystem_id = (unsigned int)num(l->field[8], &ok);
    g->minor = (unsigned int)num(l->field[9], &ok);
    g->numa_node = (int)snum(l->field[10], &ok);
    g->cc_major = (int)num(l->field[11], &ok);
    g->cc_minor = (int)num(l->field[12], &ok);
    g->events = num(l->field[13], &ok);
    g->mig_capable = (int)num(l->field[14], &ok);
    g->mig_current = (unsigned int)num(l->field[15], &ok);
    g->mig_pending = (unsigned int)num(l->field[16], &ok);
    g->mig_max = (unsigned int)num(l->field[17], &ok);
    g->nvlinks = (unsigned int)num(l->field[18], &ok);
    if (!ok)
        return "gpu: a number field is not a number";
    if (g->nvlinks > FAKE_MAX_LINKS || g->mig_max > FAKE_MAX_MIG)
        return "gpu: too many NVLinks or MIG devices";
    s->gpu_count++;
    return NULL;
}

static const char *parse_record(struct fake_state *s, struct line *l)
{
    const char *kind = l->field[0];
    int ok = 1;
    if (strcmp(kind, "init") == 0 && l->count == 2) {
        s->init_error = (nvmlReturn_t)num(l->field[1], &ok);
    } else if (strcmp(kind, "system") == 0 && l->count == 4) {
        if (!copy(s->driver, sizeof s->driver, l->field[1]) || !copy(s->nvml, sizeof s->nvml, l->field[3]))
            return "system: version too long";
        s->cuda = (int)num(l->field[2], &ok);
    } else if (strcmp(kind, "gpu") == 0) {
        return parse_gpu(s, l);
    } else if (strcmp(kind, "cpus") == 0 && l->count >= 2) {
        struct fake_gpu *g = gpu_of(s, l->field[1], &ok);
        if (!ok || l->count - 2 > FAKE_MAX_CPU_WORDS)
            return "cpus: bad GPU or too many words";
        g->cpu_words = (unsigned int)(l->count - 2);
        for (int i = 2; i < l->count; i++)
            g->cpu[i - 2] = (unsigned long)num(l->field[i], &ok);
    } else if (strcmp(kind, "link") == 0 && l->count == 6) {
        struct fake_gpu *g = gpu_of(s, l->field[1], &ok);
        unsigned long long n = ok ? num(l->field[2], &ok) : 0;
        if (!ok || n >= g->nvlinks)
            return "link: bad GPU or link number";
        struct fake_link *k = &g->links[n];
        k->active = 1;
        if (!copy(k->remote_bus_id, sizeof k->remote_bus_id, l->field[3]))
            return "link: bus id too long";
        k->remote_pci_device_id = (unsigned int)num(l->field[4], &ok);
        k->remote_type = (int)num(l->field[5], &ok);
    } else if (strcmp(kind, "ancestor") == 0 && l->count == 4) {
        unsigned long long a = num(l->field[1], &ok), b = num(l->field[2], &ok);
        if (!ok || a >= s->gpu_count || b >= s->gpu_count)
            return "ancestor: bad GPU";
        s->ancestor[a][b] = s->ancestor[b][a] = (nvmlGpuTopologyLevel_t)num(l->field[3], &ok);
    } else if (strcmp(kind, "profile") == 0 && l->count == 14) {
        unsigned long long i = num(l->field[1], &ok);
        if (!ok || i >= FAKE_MAX_PROFILES)
            return "profile: bad profile index";
        struct fake_profile *p = &s->profiles[i];
        nvmlGpuInstanceProfileInfo_v2_t *v = &p->info;
        p->present = 1;
        v->version = nvmlGpuInstanceProfileInfo_v2;
        v->id = (unsigned int)num(l->field[2], &ok);
        v->isP2pSupported = (unsigned int)num(l->field[3], &ok);
        v->sliceCount = (unsigned int)num(l->field[4], &ok);
        v->instanceCount = (unsigned int)num(l->field[5], &ok);
        v->multiprocessorCount = (unsigned int)num(l->field[6], &ok);
        v->copyEngineCount = (unsigned int)num(l->field[7], &ok);
        v->decoderCount = (unsigned int)num(l->field[8], &ok);
        v->encoderCount = (unsigned int)num(l->field[9], &ok);
        v->jpegCount = (unsigned int)num(l->field[10], &ok);
        v->ofaCount = (unsigned int)num(l->field[11], &ok);
        v->memorySizeMB = num(l->field[12], &ok);
        if (!copy(v->name, sizeof v->name, l->field[13]))
            return "profile: name too long";
    } else if (strcmp(kind, "mig") == 0 && l->count == 6) {
        struct fake_gpu *g = gpu_of(s, l->field[1], &ok);
        if (!ok || g->mig_count >= FAKE_MAX_MIG || g->mig_count >= g->mig_max)
            return "mig: bad GPU or more MIG devices than it can hold";
        struct fake_mig *m = &g->mig[g->mig_count];
        if (!copy(m->uuid, sizeof m->uuid, l->field[2]))
            return "mig: uuid too long";
        m->gi_id = (unsigned int)num(l->field[3], &ok);
        m->ci_id = (unsigned int)num(l->field[4], &ok);
        unsigned long long p = num(l->field[5], &ok);
        if (!ok || p >= FAKE_MAX_PROFILES || !s->profiles[p].present)
            return "mig: unknown profile (profile records must come first)";
        m->profile = (int)p;
        g->mig_count++;
    } else if (strcmp(kind, "lost") == 0 && l->count == 2) {
        struct fake_gpu *g = gpu_of(s, l->field[1], &ok);
        if (g)
            g->lost = 1;
    } else if (strcmp(kind, "events-unsupported") == 0 && l->count == 2) {
        struct fake_gpu *g = gpu_of(s, l->field[1], &ok);
        if (g)
            g->events_unsupported = 1;
    } else if (strcmp(kind, "hang") == 0 && l->count == 4) {
        if (s->hang_count >= FAKE_MAX_HANGS)
            return "too many hangs";
        struct fake_hang *h = &s->hangs[s->hang_count];
        h->gpu = (int)snum(l->field[1], &ok);
        h->millis = num(l->field[2], &ok);
        if (h->gpu < -1 || h->gpu >= (int)s->gpu_count)
            ok = 0;
        if (!copy(h->funcs, sizeof h->funcs, l->field[3]))
            return "hang: function list too long";
        s->hang_count++;
    } else if (strcmp(kind, "seq") == 0 && l->count == 2) {
        s->seq = num(l->field[1], &ok);
    } else if (strcmp(kind, "event") == 0 && l->count == 6) {
        if (s->event_count >= FAKE_MAX_EVENTS)
            return "too many events";
        struct fake_event *e = &s->events[s->event_count];
        e->seq = num(l->field[1], &ok);
        e->gpu = (int)num(l->field[2], &ok);
        e->mig = (int)snum(l->field[3], &ok);
        e->type = num(l->field[4], &ok);
        e->data = num(l->field[5], &ok);
        if (e->gpu >= (int)s->gpu_count)
            ok = 0;
        if (s->event_count > 0 && e->seq <= s->events[s->event_count - 1].seq)
            return "event: sequence numbers must increase";
        s->event_count++;
    } else {
        return "unknown record or wrong number of fields";
    }
    return ok ? NULL : "a field is out of range or not a number";
}

/* Parses `path` into `s`; 0 on success, else -1 after saying why on stderr. */
static int parse(const char *path, struct fake_state *s)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    memset(s, 0, sizeof *s);
    for (int a = 0; a < FAKE_MAX_GPUS; a++)
        for (int b = 0; b < FAKE_MAX_GPUS; b++)
            s->ancestor[a][b] = a == b ? NVML_TOPOLOGY_INTERNAL : NVML_TOPOLOGY_SYSTEM;
    char buf[4096];
    int lineno = 0, seen_magic = 0;
    const char *why = NULL;
    while (!why && fgets(buf, sizeof buf, f)) {
        lineno++;
        size_t n = strlen(buf);
        if (n && buf[n - 1] == '\n')
            buf[--n] = '\0';
        else if (!feof(f)) {
            why = "line too long";
            break;
        }
        if (n == 0 || buf[0] == '#')
            continue;
        struct line l;
        split(buf, &l);
        if (!seen_magic) {
            seen_magic = strcmp(l.field[0], STATE_MAGIC) == 0 && l.count == 2 && strcmp(l.field[1], "1") == 0;
            why = seen_magic ? NULL : "not a fake-nvml state file of format 1";
        } else {
            why = parse_record(s, &l);
        }
    }
    fclose(f);
    if (!why && !seen_magic)
        why = "empty file";
    if (why) {
        fprintf(stderr, "fake-nvml: %s:%d: %s\n", path, lineno, why);
        return -1;
    }
    return 0;
}

static int same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

static int load(void)
{
    struct stat now;
    if (stat(state_path, &now) != 0)
        return -1;
    /* Remember the file as it was before the read: a writer replacing it while
     * we read makes the next stat differ, so that version is read too; a file
     * that does not parse is reported once, not on every call. */
    state_seen = now;
    struct fake_state *next = fake_current == &states[0] ? &states[1] : &states[0];
    if (parse(state_path, next) != 0)
        return -1;
    fake_current = next;
    return 0;
}

static void locate(void)
{
    const char *env = getenv(STATE_ENV);
    if (env && *env) {
        snprintf(state_path, sizeof state_path, "%s", env);
        return;
    }
    /* Beside this library, so a mounted driver root needs no environment. */
    Dl_info info;
    if (dladdr((void *)&fake_state_open, &info) && info.dli_fname) {
        const char *slash = strrchr(info.dli_fname, '/');
        int dir = slash ? (int)(slash - info.dli_fname) : 1;
        snprintf(state_path, sizeof state_path, "%.*s/%s", dir, slash ? info.dli_fname : ".", STATE_NAME);
        return;
    }
    snprintf(state_path, sizeof state_path, "%s", STATE_NAME);
}

nvmlReturn_t fake_state_open(void)
{
    locate();
    fake_current = NULL;
    memset(&state_seen, 0, sizeof state_seen);
    if (load() != 0)
        return NVML_ERROR_DRIVER_NOT_LOADED;
    return NVML_SUCCESS;
}

const char *fake_state_path(void)
{
    return state_path;
}

void fake_state_refresh(void)
{
    struct stat now;
    if (stat(state_path, &now) == 0 && !same_file(&now, &state_seen))
        load();
}
