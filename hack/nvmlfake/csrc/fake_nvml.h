/*
 * fake_nvml.h: the in-memory state of the NVML fake, shared by state.c (reading
 * the state file) and api.c (the NVML entry points).
 *
 * All of it is plain fixed-size data: a re-read parses into a scratch copy and
 * swaps, so nothing is allocated per read and nothing can leak. Device handles
 * are pointers into static arrays that never move, so a handle stays valid (and
 * distinct per device) for the life of the process, as with the real driver.
 */
#ifndef FAKE_NVML_H
#define FAKE_NVML_H

#include <pthread.h>

#include "nvml.h"

#define FAKE_MAX_GPUS 64
#define FAKE_MAX_MIG 8
#define FAKE_MAX_LINKS NVML_NVLINK_MAX_LINKS
#define FAKE_MAX_CPU_WORDS 64
#define FAKE_MAX_PROFILES NVML_GPU_INSTANCE_PROFILE_COUNT
#define FAKE_MAX_EVENTS 1024
#define FAKE_MAX_HANGS 32
#define FAKE_TEXT 96
#define FAKE_FUNCS 512

struct fake_link {
    int active;
    char remote_bus_id[NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE];
    unsigned int remote_pci_device_id;
    int remote_type; /* nvmlIntNvLinkDeviceType_t */
};

struct fake_mig {
    char uuid[FAKE_TEXT];
    unsigned int gi_id;
    unsigned int ci_id;
    int profile; /* index into fake_state.profiles (an NVML_GPU_INSTANCE_PROFILE_* value) */
};

struct fake_profile {
    int present;
    nvmlGpuInstanceProfileInfo_v2_t info;
};

struct fake_gpu {
    char uuid[FAKE_TEXT];
    char name[FAKE_TEXT];
    unsigned long long memory_total;
    unsigned long long memory_reserved;
    char bus_id[NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE];
    unsigned int pci_device_id;
    unsigned int pci_subsystem_id;
    unsigned int minor;
    int numa_node; /* < 0: NVML does not know it */
    int cc_major, cc_minor;
    unsigned long long events; /* supported event types */
    int mig_capable;
    unsigned int mig_current, mig_pending, mig_max;
    unsigned int nvlinks; /* links this GPU has (0: no NVLink) */
    struct fake_link links[FAKE_MAX_LINKS];
    unsigned int cpu_words;
    unsigned long cpu[FAKE_MAX_CPU_WORDS];
    unsigned int mig_count;
    struct fake_mig mig[FAKE_MAX_MIG];
    /* faults */
    int lost;
    int events_unsupported;
};

struct fake_hang {
    int gpu; /* -1: any GPU and the calls that name none */
    unsigned long long millis;
    char funcs[FAKE_FUNCS]; /* "*" or comma-separated base names */
};

struct fake_event {
    unsigned long long seq;
    int gpu;
    int mig; /* -1: the whole GPU */
    unsigned long long type;
    unsigned long long data;
};

struct fake_state {
    nvmlReturn_t init_error;
    char driver[FAKE_TEXT];
    char nvml[FAKE_TEXT];
    int cuda;
    unsigned int gpu_count;
    struct fake_gpu gpus[FAKE_MAX_GPUS];
    nvmlGpuTopologyLevel_t ancestor[FAKE_MAX_GPUS][FAKE_MAX_GPUS];
    struct fake_profile profiles[FAKE_MAX_PROFILES];
    unsigned int hang_count;
    struct fake_hang hangs[FAKE_MAX_HANGS];
    unsigned long long seq; /* the last sequence number the writer gave out */
    unsigned int event_count;
    struct fake_event events[FAKE_MAX_EVENTS];
};

/* The one lock: every entry point holds it while it reads the state. */
extern pthread_mutex_t fake_lock;
/* The state in force (never NULL once fake_state_open succeeded). */
extern const struct fake_state *fake_current;

/* Finds the state file (FAKE_NVML_STATE, else fake-nvml.state beside this library)
 * and reads it. Lock held. NVML_ERROR_DRIVER_NOT_LOADED when there is none. */
nvmlReturn_t fake_state_open(void);
/* Re-reads the state file when it changed since the last read (lock held). A file
 * that vanished or does not parse leaves the previous state in force. */
void fake_state_refresh(void);
/* The path found by the last fake_state_open ("" before it). */
const char *fake_state_path(void);

#endif
