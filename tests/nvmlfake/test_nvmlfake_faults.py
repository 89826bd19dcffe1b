"""Faults injected while the process runs, seen through the real pynvml.

Each test injects through FakeDriver (which rewrites the state file) and checks
what an NVML user gets: events once and only where registered, TIMEOUT when
nothing happened, a lost GPU, a hung call, NOT_SUPPORTED events, heal, a new MIG
layout, a failing init. Waits are bounded by events with timeouts, never sleeps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from gdp_hack.nvmlfake import FakeDriver

XID, ECC = 0x8, 0x2


def _code(pynvml: ModuleType, call: Callable[..., Any], *args: Any) -> int | None:
    try:
        call(*args)
    except pynvml.NVMLError as err:
        return int(err.value)
    return None


def _events(nv: ModuleType, event_set: Any, *, wait_ms: int = 2000) -> list[tuple[str, int, int]]:
    """Everything delivered to `event_set` until one wait times out: (uuid, type, data)."""
    got = []
    while True:
        try:
            data = nv.nvmlEventSetWait_v2(event_set, wait_ms)
        except nv.NVMLError_Timeout:
            return got
        got.append((nv.nvmlDeviceGetUUID(data.device), int(data.eventType), int(data.eventData)))
        wait_ms = 50  # the rest, if any, are already there


def _in_thread(call: Callable[[], Any]) -> tuple[threading.Event, list[Any]]:
    """Runs `call` in a thread; the event is set when it returned (result or exception in the list)."""
    done, out = threading.Event(), []

    def run() -> None:
        try:
            out.append(call())
        except Exception as err:
            out.append(err)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done, out


def test_an_event_reaches_each_set_registered_for_it_once(
    fake_driver: FakeDriver, fake_pynvml: ModuleType
) -> None:
    nv = fake_pynvml
    h0, h1 = nv.nvmlDeviceGetHandleByIndex(0), nv.nvmlDeviceGetHandleByIndex(1)
    uuid0, uuid1 = nv.nvmlDeviceGetUUID(h0), nv.nvmlDeviceGetUUID(h1)
    xid_on_0, mixed = nv.nvmlEventSetCreate(), nv.nvmlEventSetCreate()
    nv.nvmlDeviceRegisterEvents(h0, XID, xid_on_0)
    nv.nvmlDeviceRegisterEvents(h0, ECC, mixed)
    nv.nvmlDeviceRegisterEvents(h1, XID | ECC, mixed)

    fake_driver.inject_xid(0, 79)
    fake_driver.inject_ecc(0)
    fake_driver.inject_xid(1, 48)
    fake_driver.inject_xid(2, 31)  # nobody registered GPU 2

    assert _events(nv, xid_on_0) == [(uuid0, XID, 79)]
    assert _events(nv, mixed) == [(uuid0, ECC, 0), (uuid1, XID, 48)]
    # Delivered once: nothing is left for either set.
    assert _events(nv, xid_on_0, wait_ms=50) == []
    assert _events(nv, mixed, wait_ms=50) == []
    for s in (xid_on_0, mixed):
        nv.nvmlEventSetFree(s)


def test_events_before_registration_are_not_delivered(
    fake_driver: FakeDriver, fake_pynvml: ModuleType
) -> None:
    nv = fake_pynvml
    fake_driver.inject_xid(0, 79)
    event_set = nv.nvmlEventSetCreate()
    nv.nvmlDeviceRegisterEvents(nv.nvmlDeviceGetHandleByIndex(0), XID, event_set)
    assert _events(nv, event_set, wait_ms=50) == []
    fake_driver.inject_xid(0, 94)
    assert [e[2] for e in _events(nv, event_set)] == [94]
    nv.nvmlEventSetFree(event_set)


def test_a_wait_with_nothing_to_report_times_out_without_spinning(
    fake_driver: FakeDriver, fake_pynvml: ModuleType
) -> None:
    nv = fake_pynvml
    event_set = nv.nvmlEventSetCreate()
    nv.nvmlDeviceRegisterEvents(nv.nvmlDeviceGetHandleByIndex(0), XID, event_set)
    started = time.monotonic()
    cpu = time.thread_time()
    assert _code(nv, nv.nvmlEventSetWait_v2, event_set, 300) == nv.NVML_ERROR_TIMEOUT
    # The wait honoured its timeout, and slept through it: a spinning wait burns the full 0.3 s.
    assert time.monotonic() - started >= 0.3
    assert time.thread_time() - cpu < 0.15
    nv.nvmlEventSetFree(event_set)


def test_a_waiting_thread_sees_an_injection_and_others_keep_calling(
    fake_driver: FakeDriver, fake_pynvml: ModuleType
) -> None:
    nv = fake_pynvml
    h3 = nv.nvmlDeviceGetHandleByIndex(3)
    event_set = nv.nvmlEventSetCreate()
    nv.nvmlDeviceRegisterEvents(h3, XID, event_set)
    done, out = _in_thread(lambda: nv.nvmlEventSetWait_v2(event_set, 20_000))
    # While it waits, the library is not held: probes on other threads answer.
    probe_done, probe = _in_thread(lambda: nv.nvmlDeviceGetMemoryInfo(nv.nvmlDeviceGetHandleByIndex(0)).total)
    assert probe_done.wait(5)
    assert probe[0] > 0
    assert not done.is_set()
    fake_driver.inject_xid(3, 79)  # a state rewrite while the thread waits
    assert done.wait(5)
    assert (nv.nvmlDeviceGetUUID(out[0].device), out[0].eventData) == (nv.nvmlDeviceGetUUID(h3), 79)
    nv.nvmlEventSetFree(event_set)


def test_events_are_neither_lost_nor_repeated_across_rewrites(
    fake_driver: FakeDriver, fake_pynvml: ModuleType
) -> None:
    nv = fake_pynvml
    event_set = nv.nvmlEventSetCreate()
    for i in range(8):
        nv.nvmlDeviceRegisterEvents(nv.nvmlDeviceGetHandleByIndex(i), XID, event_set)
    received: list[int] = []
    finished = threading.Event()

    def drain() -> None:
        while len(received) < 40:
            try:
                received.append(int(nv.nvmlEventSetWait_v2(event_set, 10_000).eventData))
            except nv.NVMLError_Timeout:
                break
        finished.set()

    threading.Thread(target=drain, daemon=True).start()
    for code in range(1000, 1040):  # many rewrites, some faster than the library re-reads
        fake_driver.inject_xid(code % 8, code)
    assert finished.wait(20)
    assert received == list(range(1000, 1040))
    nv.nvmlEventSetFree(event_set)


def test_a_lost_gpu_answers_gpu_is_lost_until_healed(
    fake_driver: FakeDriver, fake_pynvml: ModuleType
) -> None:
    nv = fake_pynvml
    h2 = nv.nvmlDeviceGetHandleByIndex(2)
    uuid2 = nv.nvmlDeviceGetUUID(h2)
    fake_driver.lose(2)
    lost = nv.NVML_ERROR_GPU_IS_LOST
    for call, args in (
        (nv.nvmlDeviceGetUUID, (h2,)),
        (nv.nvmlDeviceGetMemoryInfo, (h2,)),
        (nv.nvmlDeviceGetPciInfo, (h2,)),
        (nv.nvmlDeviceGetHandleByIndex, (2,)),
        (nv.nvmlDeviceGetHandleByUUID, (uuid2,)),
        (nv.nvmlDeviceGetNvLinkState, (h2, 0)),
        (nv.nvmlDeviceGetTopologyCommonAncestor, (nv.nvmlDeviceGetHandleByIndex(0), h2)),
    ):
        assert _code(nv, call, *args) == lost, call.__name__
    with pytest.raises(nv.NVMLError_GpuIsLost, match=r"^GPU is lost$"):
        nv.nvmlDeviceGetUUID(h2)
    # The others are untouched.
    assert nv.nvmlDeviceGetMemoryInfo(nv.nvmlDeviceGetHandleByIndex(1)).total > 0
    fake_driver.heal(2)
    assert nv.nvmlDeviceGetUUID(h2) == uuid2


def test_a_hung_call_blocks_until_its_time_is_up(fake_driver: FakeDriver, fake_pynvml: ModuleType) -> None:
    nv = fake_pynvml
    h1 = nv.nvmlDeviceGetHandleByIndex(1)
    fake_driver.hang(1, 0.4, functions=["nvmlDeviceGetMemoryInfo"])
    # Other calls on that GPU, and the same call on other GPUs, do not hang.
    assert nv.nvmlDeviceGetUUID(h1)
    assert nv.nvmlDeviceGetMemoryInfo(nv.nvmlDeviceGetHandleByIndex(0)).total > 0
    started = time.monotonic()
    assert nv.nvmlDeviceGetMemoryInfo(h1).total > 0  # it answers, late
    assert time.monotonic() - started >= 0.4


def test_a_hang_ends_when_healed(fake_driver: FakeDriver, fake_pynvml: ModuleType) -> None:
    nv = fake_pynvml
    h1 = nv.nvmlDeviceGetHandleByIndex(1)
    fake_driver.hang(1, 600)
    done, out = _in_thread(lambda: nv.nvmlDeviceGetMemoryInfo(h1).total)
    assert not done.wait(0.3)  # blocked
    fake_driver.heal(1)
    assert done.wait(5)
    assert out[0] > 0


def test_a_hang_on_all_gpus_holds_system_calls_too(fake_driver: FakeDriver, fake_pynvml: ModuleType) -> None:
    nv = fake_pynvml
    fake_driver.hang(None, 600, functions=["nvmlDeviceGetCount"])
    done, out = _in_thread(nv.nvmlDeviceGetCount)
    assert not done.wait(0.3)
    assert nv.nvmlDeviceGetHandleByIndex(0)  # a different call goes through
    fake_driver.heal()
    assert done.wait(5)
    assert out == [8]


def test_events_not_supported(fake_driver: FakeDriver, fake_pynvml: ModuleType) -> None:
    nv = fake_pynvml
    h0 = nv.nvmlDeviceGetHandleByIndex(0)
    fake_driver.events_not_supported(0)
    event_set = nv.nvmlEventSetCreate()
    assert _code(nv, nv.nvmlDeviceGetSupportedEventTypes, h0) == nv.NVML_ERROR_NOT_SUPPORTED
    assert _code(nv, nv.nvmlDeviceRegisterEvents, h0, XID, event_set) == nv.NVML_ERROR_NOT_SUPPORTED
    # Other GPUs still register; healed, GPU 0 does again.
    nv.nvmlDeviceRegisterEvents(nv.nvmlDeviceGetHandleByIndex(1), XID, event_set)
    fake_driver.heal(0)
    assert nv.nvmlDeviceGetSupportedEventTypes(h0) & XID
    nv.nvmlDeviceRegisterEvents(h0, XID, event_set)
    nv.nvmlEventSetFree(event_set)


def test_registering_an_unsupported_type_registers_nothing(
    fake_driver: FakeDriver, fake_pynvml: ModuleType
) -> None:
    nv = fake_pynvml
    h0 = nv.nvmlDeviceGetHandleByIndex(0)
    event_set = nv.nvmlEventSetCreate()
    assert _code(nv, nv.nvmlDeviceRegisterEvents, h0, XID | 0x4000, event_set) == nv.NVML_ERROR_NOT_SUPPORTED
    fake_driver.inject_xid(0, 79)
    assert _events(nv, event_set, wait_ms=50) == []
    nv.nvmlEventSetFree(event_set)


@pytest.mark.parametrize("fake_driver", ["mig-a100"], indirect=True)
def test_a_new_mig_layout_shows_at_once(fake_driver: FakeDriver, fake_pynvml: ModuleType) -> None:
    nv = fake_pynvml
    h2 = nv.nvmlDeviceGetHandleByIndex(2)
    assert list(nv.nvmlDeviceGetMigMode(h2)) == [0, 0]
    fake_driver.set_mig_layout(2, [{"profile": "4g.40gb", "gi": 2}, {"profile": "3g.40gb", "gi": 1}])
    assert list(nv.nvmlDeviceGetMigMode(h2)) == [1, 1]
    names = [nv.nvmlDeviceGetName(nv.nvmlDeviceGetMigDeviceHandleByIndex(h2, m)) for m in range(2)]
    assert names == ["NVIDIA A100-SXM4-80GB MIG 4g.40gb", "NVIDIA A100-SXM4-80GB MIG 3g.40gb"]
    assert _code(nv, nv.nvmlDeviceGetMigDeviceHandleByIndex, h2, 2) == nv.NVML_ERROR_NOT_FOUND
    cap = fake_driver.root / "proc/driver/nvidia/capabilities/gpu2/mig/gi2/ci0/access"
    assert cap.read_text().splitlines()[0] == "DeviceFileMinor: 292"  # 3 + 2*135 + 2*9 + 1 + ci 0
    # MIG off again: the old handles are no longer valid, the GPU is whole.
    old = nv.nvmlDeviceGetMigDeviceHandleByIndex(h2, 0)
    fake_driver.set_mig_layout(2, [], current=False)
    assert list(nv.nvmlDeviceGetMigMode(h2)) == [0, 0]
    assert _code(nv, nv.nvmlDeviceGetUUID, old) == nv.NVML_ERROR_INVALID_ARGUMENT
    assert not cap.exists()


@pytest.mark.parametrize("fake_driver", ["mig-a100"], indirect=True)
def test_an_event_on_a_mig_device_names_it(fake_driver: FakeDriver, fake_pynvml: ModuleType) -> None:
    nv = fake_pynvml
    h1 = nv.nvmlDeviceGetHandleByIndex(1)
    event_set = nv.nvmlEventSetCreate()
    nv.nvmlDeviceRegisterEvents(h1, XID, event_set)
    fake_driver.inject_xid(1, 43, mig=1)
    data = nv.nvmlEventSetWait_v2(event_set, 2000)
    assert nv.nvmlDeviceGetUUID(data.device) == fake_driver.profile.mig_uuid(
        1, fake_driver.profile.devices[1].mig.instances[1]
    )
    assert (data.gpuInstanceId, data.computeInstanceId) == (5, 0)
    nv.nvmlEventSetFree(event_set)
