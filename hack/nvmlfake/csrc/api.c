/*
 * api.c: the NVML entry points the fake implements, with the signatures,
 * structures and return codes of NVIDIA's nvml.h (compiled against it).
 *
 * Every call takes the one lock, re-reads the state file if it changed, then
 * answers from the state. Two faults need the lock released: a hung call and an
 * event wait, which sleep in short steps (POLL_NS) and re-read the state between
 * steps, so an injection is seen within about a millisecond and no core spins.
 * Never keep a pointer into the state across an unlock: a re-read swaps it.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fake_nvml.h"

#define EXPORT __attribute__((visibility("default")))
#define POLL_NS 1000000L
#define NO_INSTANCE 0xFFFFFFFFu

struct nvmlDevice_st {
    int gpu;
    int mig; /* -1: the whole GPU */
};

/* A GPU instance: the GPU, the first MIG device slot on it, and that slot's GI id when handed out. */
struct nvmlGpuInstance_st {
    int gpu;
    int slot;
    unsigned int gi_id;
};

struct nvmlEventSet_st {
    unsigned long long mask[FAKE_MAX_GPUS];  /* registered event types per GPU */
    unsigned long long since[FAKE_MAX_GPUS]; /* only events after this sequence number */
    unsigned long long delivered;            /* the last sequence number handed out */
};

/* Handles point here: one slot per GPU and per MIG device, never moved. */
static struct nvmlDevice_st gpu_handles[FAKE_MAX_GPUS];
static struct nvmlDevice_st mig_handles[FAKE_MAX_GPUS][FAKE_MAX_MIG];
static struct nvmlGpuInstance_st gi_handles[FAKE_MAX_GPUS][FAKE_MAX_MIG];
static unsigned int refcount;

__attribute__((constructor)) static void setup_handles(void)
{
    for (int g = 0; g < FAKE_MAX_GPUS; g++) {
        gpu_handles[g] = (struct nvmlDevice_st){g, -1};
        for (int m = 0; m < FAKE_MAX_MIG; m++) {
            mig_handles[g][m] = (struct nvmlDevice_st){g, m};
            gi_handles[g][m] = (struct nvmlGpuInstance_st){g, m, 0};
        }
    }
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* Sleeps one poll step, or less when the deadline is nearer. Lock not held. */
static void nap(double deadline_ms)
{
    double left = deadline_ms - now_ms();
    long ns = left * 1e6 < POLL_NS ? (long)(left * 1e6) : POLL_NS;
    if (ns <= 0)
        return;
    struct timespec t = {0, ns};
    nanosleep(&t, NULL);
}

static nvmlReturn_t done(nvmlReturn_t rc)
{
    pthread_mutex_unlock(&fake_lock);
    return rc;
}

/* "nvmlDeviceGetMemoryInfo_v2" and "nvmlDeviceGetMemoryInfo" are one function to a fault. */
static size_t base_len(const char *name, size_t len)
{
    size_t i = len;
    while (i > 0 && name[i - 1] >= '0' && name[i - 1] <= '9')
        i--;
    if (i < len && i >= 2 && name[i - 1] == 'v' && name[i - 2] == '_')
        return i - 2;
    return len;
}

static int names_function(const char *list, const char *fn)
{
    if (strcmp(list, "*") == 0)
        return 1;
    size_t fn_len = base_len(fn, strlen(fn));
    for (const char *p = list; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        size_t blen = base_len(p, len);
        if (blen == fn_len && strncmp(p, fn, fn_len) == 0)
            return 1;
        p += len + (end ? 1 : 0);
    }
    return 0;
}

/* The hang that applies to `fn` on `gpu`, or NULL. Every call passes here once with
 * gpu -1 (a hang for any GPU and for calls naming none), and a call on a GPU once
 * more with its index, so no call hangs twice for one fault. */
static const struct fake_hang *hang_for(const char *fn, int gpu)
{
    for (unsigned int i = 0; i < fake_current->hang_count; i++) {
        const struct fake_hang *h = &fake_current->hangs[i];
        if (h->gpu == gpu && names_function(h->funcs, fn))
            return h;
    }
    return NULL;
}

/* Blocks while a hang fault holds `fn`: its time, or until it is healed. Lock held
 * on entry and exit (released meanwhile). */
static void maybe_hang(const char *fn, int gpu)
{
    const struct fake_hang *h = hang_for(fn, gpu);
    if (!h)
        return;
    double deadline = now_ms() + (double)h->millis;
    while (now_ms() < deadline) {
        pthread_mutex_unlock(&fake_lock);
        nap(deadline);
        pthread_mutex_lock(&fake_lock);
        fake_state_refresh();
        if (!hang_for(fn, gpu))
            break;
    }
}

/* Takes the lock for a call; on success the caller must return through done(). */
static nvmlReturn_t begin(const char *fn)
{
    pthread_mutex_lock(&fake_lock);
    if (refcount == 0)
        return done(NVML_ERROR_UNINITIALIZED);
    fake_state_refresh();
    maybe_hang(fn, -1);
    return NVML_SUCCESS;
}

/* A call on one GPU: lost GPUs answer GPU_IS_LOST, hung ones block first. */
static nvmlReturn_t enter_gpu(const char *fn, int gpu)
{
    if (gpu < 0 || (unsigned int)gpu >= fake_current->gpu_count)
        return NVML_ERROR_INVALID_ARGUMENT;
    maybe_hang(fn, gpu);
    if ((unsigned int)gpu >= fake_current->gpu_count)
        return NVML_ERROR_INVALID_ARGUMENT;
    return fake_current->gpus[gpu].lost ? NVML_ERROR_GPU_IS_LOST : NVML_SUCCESS;
}

/* Which GPU (and MIG device) a handle names; 0 when it is not one of ours now. */
static int resolve(nvmlDevice_t device, int *gpu, int *mig)
{
    uintptr_t p = (uintptr_t)device;
    uintptr_t g0 = (uintptr_t)gpu_handles, g1 = g0 + sizeof gpu_handles;
    uintptr_t m0 = (uintptr_t)mig_handles, m1 = m0 + sizeof mig_handles;
    if (p >= g0 && p < g1 && (p - g0) % sizeof(struct nvmlDevice_st) == 0) {
        *gpu = device->gpu;
        *mig = -1;
    } else if (p >= m0 && p < m1 && (p - m0) % sizeof(struct nvmlDevice_st) == 0) {
        *gpu = device->gpu;
        *mig = device->mig;
    } else {
        return 0;
    }
    if ((unsigned int)*gpu >= fake_current->gpu_count)
        return 0;
    return *mig < 0 || (unsigned int)*mig < fake_current->gpus[*gpu].mig_count;
}

static nvmlReturn_t begin_device(const char *fn, nvmlDevice_t device, int *gpu, int *mig)
{
    nvmlReturn_t rc = begin(fn);
    if (rc != NVML_SUCCESS)
        return rc;
    if (!resolve(device, gpu, mig))
        return done(NVML_ERROR_INVALID_ARGUMENT);
    rc = enter_gpu(fn, *gpu);
    /* A hang may have spanned a re-read that removed the MIG device. */
    if (rc == NVML_SUCCESS && !resolve(device, gpu, mig))
        rc = NVML_ERROR_INVALID_ARGUMENT;
    return rc == NVML_SUCCESS ? rc : done(rc);
}

/* Opens a device call: declares `gpu`, `mig` and `g` (the GPU's state), or returns. */
#define DEVICE_CALL(device)                                                                                  \
    int gpu, mig;                                                                                            \
    {                                                                                                        \
        nvmlReturn_t rc_ = begin_device(__func__, (device), &gpu, &mig);                                     \
        if (rc_ != NVML_SUCCESS)                                                                             \
            return rc_;                                                                                      \
    }                                                                                                        \
    const struct fake_gpu *g = &fake_current->gpus[gpu];                                                     \
    (void)mig;                                                                                               \
    (void)g

#define SYSTEM_CALL()                                                                                        \
    {                                                                                                        \
        nvmlReturn_t rc_ = begin(__func__);                                                                  \
        if (rc_ != NVML_SUCCESS)                                                                             \
            return rc_;                                                                                      \
    }

static nvmlReturn_t put_text(char *dst, unsigned int length, const char *src)
{
    if (!dst)
        return NVML_ERROR_INVALID_ARGUMENT;
    size_t n = strlen(src);
    if (n + 1 > length)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(dst, src, n + 1);
    return NVML_SUCCESS;
}

static void fill_pci(nvmlPciInfo_t *pci, const char *bus_id, unsigned int device_id, unsigned int subsystem)
{
    unsigned int domain = 0, bus = 0, dev = 0, fn = 0;
    sscanf(bus_id, "%x:%x:%x.%x", &domain, &bus, &dev, &fn);
    memset(pci, 0, sizeof *pci);
    pci->domain = domain;
    pci->bus = bus;
    pci->device = dev;
    pci->pciDeviceId = device_id;
    pci->pciSubSystemId = subsystem;
    snprintf(pci->busId, sizeof pci->busId, NVML_DEVICE_PCI_BUS_ID_FMT, domain, bus, dev);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, NVML_DEVICE_PCI_BUS_ID_LEGACY_FMT, domain, bus, dev);
}

static const struct fake_profile *mig_profile(const struct fake_gpu *g, int mig)
{
    return &fake_current->profiles[g->mig[mig].profile];
}

/* Not NVML: the state file this library reads ("" before the first nvmlInit). For tests and
 * debugging: it tells a process which fake it loaded and where that fake looks. */
EXPORT const char *fake_nvml_state_path(void)
{
    pthread_mutex_lock(&fake_lock);
    const char *path = fake_state_path();
    pthread_mutex_unlock(&fake_lock);
    return path;
}

/* ---- init, shutdown, errors ------------------------------------------------------------------------ */

EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags)
{
    (void)flags;
    pthread_mutex_lock(&fake_lock);
    if (refcount == 0) {
        nvmlReturn_t rc = fake_state_open();
        if (rc != NVML_SUCCESS)
            return done(rc);
        if (fake_current->init_error != NVML_SUCCESS)
            return done(fake_current->init_error);
        maybe_hang("nvmlInit", -1);
    }
    refcount++;
    return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlInit_v2(void)
{
    return nvmlInitWithFlags(0);
}

EXPORT nvmlReturn_t nvmlInit(void)
{
    return nvmlInitWithFlags(0);
}

EXPORT nvmlReturn_t nvmlShutdown(void)
{
    pthread_mutex_lock(&fake_lock);
    if (refcount == 0)
        return done(NVML_ERROR_UNINITIALIZED);
    refcount--;
    return done(NVML_SUCCESS);
}

EXPORT const char *nvmlErrorString(nvmlReturn_t result)
{
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_ALREADY_INITIALIZED: return "Already Initialized";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_INSUFFICIENT_POWER: return "Insufficient External Power";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_IRQ_ISSUE: return "Interrupt Request Issue";
    case NVML_ERROR_LIBRARY_NOT_FOUND: return "NVML Shared Library Not Found";
    case NVML_ERROR_FUNCTION_NOT_FOUND: return "Function Not Found";
    case NVML_ERROR_CORRUPTED_INFOROM: return "Corrupted infoROM";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_RESET_REQUIRED: return "GPU requires restart";
    case NVML_ERROR_OPERATING_SYSTEM: return "The operating system has blocked the request.";
    case NVML_ERROR_LIB_RM_VERSION_MISMATCH: return "RM has detected an NVML/RM version mismatch.";
    case NVML_ERROR_IN_USE: return "In use by another client";
    case NVML_ERROR_MEMORY: return "Insufficient Memory";
    case NVML_ERROR_NO_DATA: return "No data";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument version mismatch";
    case NVML_ERROR_DEPRECATED: return "Deprecated";
    case NVML_ERROR_NOT_READY: return "Not ready";
    case NVML_ERROR_GPU_NOT_FOUND: return "GPU not found";
    case NVML_ERROR_INVALID_STATE: return "Invalid state";
    default: return "Unknown Error";
    }
}

/* ---- system ---------------------------------------------------------------------------------------- */

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
    SYSTEM_CALL();
    return done(put_text(version, length, fake_current->driver));
}

EXPORT nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length)
{
    SYSTEM_CALL();
    return done(put_text(version, length, fake_current->nvml));
}

EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *cudaDriverVersion)
{
    SYSTEM_CALL();
    if (!cudaDriverVersion)
        return done(NVML_ERROR_INVALID_ARGUMENT);
    *cudaDriverVersion = fake_current->cuda;
    return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *cudaDriverVersion)
{
    return nvmlSystemGetCudaDriverVersion(cudaDriverVersion);
}

/* ---- finding devices ------------------------------------------------------------------------------- */

EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount)
{
    SYSTEM_CALL();
    if (!deviceCount)
        return done(NVML_ERROR_INVALID_ARGUMENT);
    *deviceCount = fake_current->gpu_count;
    return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetCount(unsigned int *deviceCount)
{
    return nvmlDeviceGetCount_v2(deviceCount);
}

/* Hands out a handle once the GPU it belongs to answers (lost: GPU_IS_LOST). */
static nvmlReturn_t hand_out(const char *fn, int gpu, int mig, nvmlDevice_t *device)
{
    nvmlReturn_t rc = enter_gpu(fn, gpu);
    if (rc == NVML_SUCCESS)
        *device = mig < 0 ? &gpu_handles[gpu] : &mig_handles[gpu][mig];
    return done(rc);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device)
{
    SYSTEM_CALL();
    if (!device || index >= fake_current->gpu_count)
        return done(NVML_ERROR_INVALID_ARGUMENT);
    return hand_out(__func__, (int)index, -1, device);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device)
{
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device)
{
    SYSTEM_CALL();
    if (!uuid || !device)
        return done(NVML_ERROR_INVALID_ARGUMENT);
    for (unsigned int i = 0; i < fake_current->gpu_count; i++) {
        const struct fake_gpu *g = &fake_current->gpus[i];
        if (strcmp(g->uuid, uuid) == 0)
            return hand_out(__func__, (int)i, -1, device);
        for (unsigned int m = 0; m < g->mig_count; m++)
            if (strcmp(g->mig[m].uuid, uuid) == 0)
                return hand_out(__func__, (int)i, (int)m, device);
    }
    return done(NVML_ERROR_NOT_FOUND);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *pciBusId, nvmlDevice_t *device)
{
    SYSTEM_CALL();
    unsigned int d, b, s, f = 0, d2, b2, s2, f2 = 0;
    if (!pciBusId || !device || sscanf(pciBusId, "%x:%x:%x.%x", &d, &b, &s, &f) < 3)
        return done(NVML_ERROR_INVALID_ARGUMENT);
    for (unsigned int i = 0; i < fake_current->gpu_count; i++) {
        f2 = 0;
        if (sscanf(fake_current->gpus[i].bus_id, "%x:%x:%x.%x", &d2, &b2, &s2, &f2) >= 3 && d == d2 &&
            b == b2 && s == s2 && f == f2)
            return hand_out(__func__, (int)i, -1, device);
    }
    return done(NVML_ERROR_NOT_FOUND);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByPciBusId(const char *pciBusId, nvmlDevice_t *device)
{
    return nvmlDeviceGetHandleByPciBusId_v2(pciBusId, device);
}

/* ---- what a device is ------------------------------------------------------------------------------ */

EXPORT nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index)
{
    DEVICE_CALL(device);
    if (!index || mig >= 0)
        return done(NVML_ERROR_INVALID_ARGUMENT);
    *index = (unsigned int)gpu;
    return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length)
{
    DEVICE_CALL(device);
    return done(put_text(uuid, length, mig < 0 ? g->uuid : g->mig[mig].uuid));
}

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length)
{
    DEVICE_CALL(device);
    if (mig < 0)
        return done(put_text(name, length, g->name));
    /* The driver names a MIG device after its GPU and profile. */
    char text[FAKE_TEXT * 2];
    snprintf(text, sizeof text, "%s MIG %s", g->name, mig_profile(g, mig)->info.name);
    return done(put_text(name, length, text));
}

EXPORT nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t device, unsigned int *minorNumber)
{
    DEVICE_CALL(device);
    if (!minorNumber)
        return done(NVML_ERROR_INVALID_ARGUMENT);
    if (mig >= 0)
        return done(NVML_ERROR_NOT_SUPPORTED);
    *minorNumber = g->minor;
    return done(NVML_SUCCESS);
}

static unsigned long long memory_total(const struct fake_gpu *g, int mig)
{
    return mig < 0 ? g->memory_total : mig_profile(g, mig)->info.memorySizeMB * 1024ULL * 1024ULL;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory)
{
    DEVICE_CALL(device);
    if (!memory)
        return done(NVML_ERROR_INVALID_ARGUMENT);
    unsigned long long reserved = mig < 0 ? g->memory_reserved : 0;
    memory->total = memory_total(g, mig);
    memory->used = reserved;
    memory->free = memory->total - reserved;
    return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory)
{
    DEVICE_CALL(device);
    if (!memory)
        return done(NVML_ERROR_INVALID_ARGUMENT);
    if (memory->version != nvmlMemory_v2)
        return done(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    memory->total = memory_total(g, mig);
    memory->reserved = mig < 0 ? g->memory_reserved : 0;
    memory->used = 0;
    memory->free = memory->total - memory->reserved;
    return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    DEVICE_CALL(device);
    if (!pci)
        return done(NVML_ERROR_INVALID_ARGUMENT);
    fill_pci(pci, g->bus_id, g->pci_device_id, g->pci_subsystem_id); /* a MIG device: its GPU's */
    return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    return nvmlDeviceGetPciInfo_v3(device, pci);
}

EXPORT nvmlReturn_t nvmlDeviceGetPciInfo(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    return nvmlDeviceGetPciInfo_v3(device, pci);
}

EXPORT nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int *major, int *minor)
{
    DEVICE_CALL(device);
    if (!major || !minor)
        return done(NVML_ERROR_INVALID_ARGUMENT);
    *major = g->cc_major;
    *minor = g->cc_minor;
    return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetNumaNodeId(nvmlDevice_t device, unsigned int *node)
{
    DEVICE_CALL(device);
    if (!node)
        return done(NVML_ERROR_INVALID_ARGUMENT);
    if (g->numa_node < 0)
        return done(NVML_ERROR_NOT_SUPPORTED);
    *node = (unsigned int)g->numa_node;
    return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetCpuAffinity(nvmlDevice_t device, unsigned int cpuSetSize, unsigned long *cpuSet)
{
    DEVICE_CALL(device);
    if (!cpuSet || cpuSetSize == 0)
        return done(NVML_ERROR_INVALID_ARGUMENT);
    for (unsigned int i = 0; i < cpuSetSize; i++)
        cpuSet[i] = i < g->cpu_words ? g->cpu[i] : 0;
    return done(NVML_SUCCESS);
}

/* ---- MIG ------------------------------------------------------------------------------------------- */

EXPORT nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *currentMode, unsigned int *pendingMode)
{
    DEVICE_CALL(device);
    if (!currentMode || !pendingMode || mig >= 0)
        return done(NVML_ERROR_INVALID_ARGUMENT);
    if (!g->mig_capable)
        return done(NVML_ERROR_NOT_SUPPORTED);
    *currentMode = g->mig_current;
    *pendingMode = g->mig_pending;
    return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned int *count)
{
    DEVICE_CALL(device);
    if (!count || mig >= 0)
        return done(NVML_ERROR_INVALID_ARGUMENT);
    if (!g->mig_capable)
        return done(NVML_ERROR_NOT_SUPPORTED);
    *count = g->mig_max;
    return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned int index,
                                                        nvmlDevice_t *migDevice)
{
    DEVICE_CALL(device);
    if (!migDevice || mig >= 0)
        return done(NVML_ERROR_INVALID_ARGUMENT);
    if (!g->mig_capable)
        return done(NVML_ERROR_NOT_SUPPORTED);
    if (index >= g->mig_max)
        return done(NVML_ERROR_INVALID_ARGUMENT);
    if (index >= g->mig_count)
        return done(NVML_ERROR_NOT_FOUND);
    *migDevice = &mig_handles[gpu][index];
    return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(nvmlDevice_t migDevice, nvmlDevice_t *device)
{
    DEVICE_CALL(migDevice);
    if (!device || mig < 0)
        return done(NVML_ERROR_INVALID_ARGUMENT);
    *device = &gpu_handles[gpu];
    return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t device, unsigned int *isMigDevice)
{
    DEVICE_CALL(device);
    if (!isMigDevice)
        return done(NVML_ERROR_INVALID_ARGUMENT);
    *isMigDevice = mig >= 0;
    return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t device, unsigned int *id)
{
    DEVICE_CALL(device);
    if (!id)
        return done(NVML_ERROR_INVALID_ARGUMENT);
    if (mig < 0)
        return done(NVML_ERROR_NOT_SUPPORTED);
    *id = g->mig[mig].gi_id;
    return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t device, unsigned int *id)
{
    DEVICE_CALL(device);
    if (!id)
        return done(NVML_ERROR_INVALID_ARGUMENT);
    if (mig < 0)
        return done(NVML_ERROR_NOT_SUPPORTED);
    *id = g->mig[mig].ci_id;
    return done(NVML_SUCCESS);
}

/* The profile a GPU with MIG on offers at `profile`, or an error code. */
static nvmlReturn_t find_profile(const struct fake_gpu *g, int mig, unsigned int profile,
                                 const struct fake_profile **out)
{
    if (mig >= 0 || profile >= FAKE_MAX_PROFILES)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!g->mig_capable || !g->mig_current || !fake_current->profiles[profile].present)
        return NVML_ERROR_NOT_SUPPORTED;
    *out = &fake_current->profiles[profile];
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceProfileInfo(nvmlDevice_t device, unsigned int profile,
                                                        nvmlGpuInstanceProfileInfo_t *info)
{
    DEVICE_CALL(device);
    const struct fake_profile *p = NULL;
    nvmlReturn_t rc = info ? find_profile(g, mig, profile, &p) : NVML_ERROR_INVALID_ARGUMENT;
    if (rc != NVML_SUCCESS)
        return done(rc);
    const nvmlGpuInstanceProfileInfo_v2_t *v = &p->info;
    *info = (nvmlGpuInstanceProfileInfo_t){
        .id = v->id,
        .isP2pSupported = v->isP2pSupported,
        .sliceCount = v->sliceCount,
        .instanceCount = v->instanceCount,
        .multiprocessorCount = v->multiprocessorCount,
        .copyEngineCount = v->copyEngineCount,
        .decoderCount = v->decoderCount,
        .encoderCount = v->encoderCount,
        .jpegCount = v->jpegCount,
        .ofaCount = v->ofaCount,
        .memorySizeMB = v->memorySizeMB,
    };
    return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceProfileInfoV(nvmlDevice_t device, unsigned int profile,
                                                         nvmlGpuInstanceProfileInfo_v2_t *info)
{
    DEVICE_CALL(device);
    if (!info)
        return done(NVML_ERROR_INVALID_ARGUMENT);
    if (info->version != nvmlGpuInstanceProfileInfo_v2)
        return done(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    const struct fake_profile *p = NULL;
    nvmlReturn_t rc = find_profile(g, mig, profile, &p);
    if (rc == NVML_SUCCESS)
        *info = p->info;
    return done(rc);
}

/* The GPU instance `id` of a GPU with MIG on: the slot of its first MIG device (the fake
 * creates a GPU instance with its first compute instance, so every GI has a MIG device). */
EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceById(nvmlDevice_t device, unsigned int id, nvmlGpuInstance_t *gpuInstance)
{
    DEVICE_CALL(device);
    if (!gpuInstance || mig >= 0)
        return done(NVML_ERROR_INVALID_ARGUMENT);
    if (!g->mig_capable || !g->mig_current)
        return done(NVML_ERROR_NOT_SUPPORTED);
    for (unsigned int m = 0; m < g->mig_count; m++) {
        if (g->mig[m].gi_id == id) {
            gi_handles[gpu][m].gi_id = id;
            *gpuInstance = &gi_handles[gpu][m];
            return done(NVML_SUCCESS);
        }
    }
    return done(NVML_ERROR_NOT_FOUND);
}

/* Which GPU and MIG slot a GPU instance handle names; 0 when the layout no longer has it. */
static int resolve_gi(nvmlGpuInstance_t gi, int *gpu, int *slot)
{
    uintptr_t p = (uintptr_t)gi, h0 = (uintptr_t)gi_handles, h1 = h0 + sizeof gi_handles;
    if (p < h0 || p >= h1 || (p - h0) % sizeof(struct nvmlGpuInstance_st) != 0)
        return 0;
    *gpu = gi->gpu;
    *slot = gi->slot;
    if ((unsigned int)*gpu >= fake_current->gpu_count)
        return 0;
    const struct fake_gpu *g = &fake_current->gpus[*gpu];
    return (unsigned int)*slot < g->mig_count && g->mig[*slot].gi_id == gi->gi_id;
}

EXPORT nvmlReturn_t nvmlGpuInstanceGetInfo(nvmlGpuInstance_t gpuInstance, nvmlGpuInstanceInfo_t *info)
{
    nvmlReturn_t rc = begin(__func__);
    if (rc != NVML_SUCCESS)
        return rc;
    int gpu, slot;
    if (!info || !resolve_gi(gpuInstance, &gpu, &slot))
        return done(NVML_ERROR_INVALID_ARGUMENT);
    rc = enter_gpu(__func__, gpu);
    if (rc == NVML_SUCCESS && !resolve_gi(gpuInstance, &gpu, &slot))
        rc = NVML_ERROR_INVALID_ARGUMENT;
    if (rc != NVML_SUCCESS)
        return done(rc);
    const struct fake_gpu *g = &fake_current->gpus[gpu];
    const struct fake_profile *p = mig_profile(g, slot);
    memset(info, 0, sizeof *info);
    info->device = &gpu_handles[gpu];
    info->id = g->mig[slot].gi_id;
    info->profileId = p->info.id;
    info->placement.start = 0;
    info->placement.size = p->info.sliceCount;
    return done(NVML_SUCCESS);
}

/* A MIG device's attributes: its GPU instance profile's, with one compute instance
 * over the whole GPU instance (the only kind the fake creates). */
EXPORT nvmlReturn_t nvmlDeviceGetAttributes_v2(nvmlDevice_t device, nvmlDeviceAttributes_t *attributes)
{
    DEVICE_CALL(device);
    if (!attributes)
        return done(NVML_ERROR_INVALID_ARGUMENT);
    if (mig < 0)
        return done(NVML_ERROR_NOT_SUPPORTED);
    const nvmlGpuInstanceProfileInfo_v2_t *v = &mig_profile(g, mig)->info;
    *attributes = (nvmlDeviceAttributes_t){
        .multiprocessorCount = v->multiprocessorCount,
        .sharedCopyEngineCount = v->copyEngineCount,
        .sharedDecoderCount = v->decoderCount,
        .sharedEncoderCount = v->encoderCount,
        .sharedJpegCount = v->jpegCount,
        .sharedOfaCount = v->ofaCount,
        .gpuInstanceSliceCount = v->sliceCount,
        .computeInstanceSliceCount = v->sliceCount,
        .memorySizeMB = v->memorySizeMB,
    };
    return done(NVML_SUCCESS);
}

/* ---- topology -------------------------------------------------------------------------------------- */

EXPORT nvmlReturn_t nvmlDeviceGetTopologyCommonAncestor(nvmlDevice_t device1, nvmlDevice_t device2,
                                                        nvmlGpuTopologyLevel_t *pathInfo)
{
    DEVICE_CALL(device1);
    int gpu2, mig2;
    if (!pathInfo || !resolve(device2, &gpu2, &mig2))
        return done(NVML_ERROR_INVALID_ARGUMENT);
    nvmlReturn_t rc = enter_gpu(__func__, gpu2);
    if (rc == NVML_SUCCESS && fake_current->gpus[gpu].lost)
        rc = NVML_ERROR_GPU_IS_LOST; /* the hang on gpu2 may have spanned a re-read */
    if (rc == NVML_SUCCESS)
        *pathInfo = fake_current->ancestor[gpu][gpu2];
    return done(rc);
}

/* The link `link` of a GPU, or an error code: no NVLink at all, or no such link. */
static nvmlReturn_t find_link(const struct fake_gpu *g, int mig, unsigned int link, const struct fake_link **out)
{
    if (mig >= 0 || g->nvlinks == 0)
        return NVML_ERROR_NOT_SUPPORTED;
    if (link >= g->nvlinks)
        return NVML_ERROR_INVALID_ARGUMENT;
    *out = &g->links[link];
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkState(nvmlDevice_t device, unsigned int link, nvmlEnableState_t *isActive)
{
    DEVICE_CALL(device);
    const struct fake_link *k = NULL;
    nvmlReturn_t rc = isActive ? find_link(g, mig, link, &k) : NVML_ERROR_INVALID_ARGUMENT;
    if (rc == NVML_SUCCESS)
        *isActive = k->active ? NVML_FEATURE_ENABLED : NVML_FEATURE_DISABLED;
    return done(rc);
}

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkCapability(nvmlDevice_t device, unsigned int link,
                                                  nvmlNvLinkCapability_t capability, unsigned int *capResult)
{
    DEVICE_CALL(device);
    const struct fake_link *k = NULL;
    nvmlReturn_t rc = capResult && capability < NVML_NVLINK_CAP_COUNT ? find_link(g, mig, link, &k)
                                                                       : NVML_ERROR_INVALID_ARGUMENT;
    if (rc != NVML_SUCCESS)
        return done(rc);
    switch (capability) {
    case NVML_NVLINK_CAP_VALID: *capResult = 1; break;
    /* A GPU-to-GPU or switch link: peer access and atomics, no system memory. */
    case NVML_NVLINK_CAP_P2P_SUPPORTED:
    case NVML_NVLINK_CAP_P2P_ATOMICS: *capResult = (unsigned int)k->active; break;
    case NVML_NVLINK_CAP_SYSMEM_ACCESS:
    case NVML_NVLINK_CAP_SYSMEM_ATOMICS:
        *capResult = (unsigned int)(k->active && k->remote_type == NVML_NVLINK_DEVICE_TYPE_IBMNPU);
        break;
    default: *capResult = 0; break;
    }
    return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkRemotePciInfo_v2(nvmlDevice_t device, unsigned int link, nvmlPciInfo_t *pci)
{
    DEVICE_CALL(device);
    const struct fake_link *k = NULL;
    nvmlReturn_t rc = pci ? find_link(g, mig, link, &k) : NVML_ERROR_INVALID_ARGUMENT;
    if (rc == NVML_SUCCESS && !k->active)
        rc = NVML_ERROR_NOT_SUPPORTED;
    if (rc == NVML_SUCCESS)
        fill_pci(pci, k->remote_bus_id, k->remote_pci_device_id, 0);
    return done(rc);
}

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkRemotePciInfo(nvmlDevice_t device, unsigned int link, nvmlPciInfo_t *pci)
{
    return nvmlDeviceGetNvLinkRemotePciInfo_v2(device, link, pci);
}

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkRemoteDeviceType(nvmlDevice_t device, unsigned int link,
                                                        nvmlIntNvLinkDeviceType_t *pNvLinkDeviceType)
{
    DEVICE_CALL(device);
    const struct fake_link *k = NULL;
    nvmlReturn_t rc = pNvLinkDeviceType ? find_link(g, mig, link, &k) : NVML_ERROR_INVALID_ARGUMENT;
    if (rc == NVML_SUCCESS && !k->active)
        rc = NVML_ERROR_NOT_SUPPORTED;
    if (rc == NVML_SUCCESS)
        *pNvLinkDeviceType = (nvmlIntNvLinkDeviceType_t)k->remote_type;
    return done(rc);
}

/* ---- events ---------------------------------------------------------------------------------------- */

EXPORT nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t device, unsigned long long *eventTypes)
{
    DEVICE_CALL(device);
    if (!eventTypes)
        return done(NVML_ERROR_INVALID_ARGUMENT);
    if (g->events_unsupported)
        return done(NVML_ERROR_NOT_SUPPORTED);
    *eventTypes = g->events;
    return done(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set)
{
    SYSTEM_CALL();
    if (!set)
        return done(NVML_ERROR_INVALID_ARGUMENT);
    *set = calloc(1, sizeof **set);
    return done(*set ? NVML_SUCCESS : NVML_ERROR_MEMORY);
}

EXPORT nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t device, unsigned long long eventTypes, nvmlEventSet_t set)
{
    DEVICE_CALL(device);
    if (!set || eventTypes == 0)
        return done(NVML_ERROR_INVALID_ARGUMENT);
    /* As documented: when any type is unsupported, none is registered. */
    if (g->events_unsupported || (eventTypes & ~g->events))
        return done(NVML_ERROR_NOT_SUPPORTED);
    /* Events already injected are history: a new registration sees only later ones. */
    if (set->mask[gpu] == 0)
        set->since[gpu] = fake_current->seq;
    set->mask[gpu] |= eventTypes;
    return done(NVML_SUCCESS);
}

/* The next event for `set` (the lowest sequence number not yet handed to it). */
static const struct fake_event *next_event(const nvmlEventSet_t set)
{
    for (unsigned int i = 0; i < fake_current->event_count; i++) {
        const struct fake_event *e = &fake_current->events[i];
        if (e->seq > set->delivered && e->seq > set->since[e->gpu] && (set->mask[e->gpu] & e->type))
            return e;
    }
    return NULL;
}

EXPORT nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeoutms)
{
    SYSTEM_CALL();
    if (!set || !data)
        return done(NVML_ERROR_INVALID_ARGUMENT);
    double deadline = now_ms() + timeoutms;
    for (;;) {
        const struct fake_event *e = next_event(set);
        if (e) {
            const struct fake_gpu *g = &fake_current->gpus[e->gpu];
            int mig = e->mig >= 0 && (unsigned int)e->mig < g->mig_count ? e->mig : -1;
            set->delivered = e->seq;
            data->device = mig < 0 ? &gpu_handles[e->gpu] : &mig_handles[e->gpu][mig];
            data->eventType = e->type;
            data->eventData = e->data;
            data->gpuInstanceId = mig < 0 ? NO_INSTANCE : g->mig[mig].gi_id;
            data->computeInstanceId = mig < 0 ? NO_INSTANCE : g->mig[mig].ci_id;
            return done(NVML_SUCCESS);
        }
        if (now_ms() >= deadline)
            return done(NVML_ERROR_TIMEOUT);
        pthread_mutex_unlock(&fake_lock);
        nap(deadline);
        pthread_mutex_lock(&fake_lock);
        if (refcount == 0)
            return done(NVML_ERROR_UNINITIALIZED);
        fake_state_refresh();
    }
}

EXPORT nvmlReturn_t nvmlEventSetWait(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeoutms)
{
    return nvmlEventSetWait_v2(set, data, timeoutms);
}

EXPORT nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set)
{
    /* Freed even after shutdown, so a late free never leaks; the code says whether NVML was up. */
    pthread_mutex_lock(&fake_lock);
    if (!set)
        return done(NVML_ERROR_INVALID_ARGUMENT);
    free(set);
    return done(refcount ? NVML_SUCCESS : NVML_ERROR_UNINITIALIZED);
}
