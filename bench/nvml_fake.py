"""The C NVML fake's own figures (issue 13): how fast an injected event arrives.

1. inject -> delivered: FakeDriver.inject_xid in this thread (it rewrites the state
   file by rename) until nvmlEventSetWait_v2, blocked in another thread through the
   real pynvml, returns the event. 100 injections, one at a time.
2. the cost of one injection (the writer's side alone: lock, record, render, two renames).
3. state renamed -> delivered: the library's own part, the new state file prepared
   beforehand and renamed into place at the start of the clock.
4. the CPU an idle event wait burns: thread CPU time over a 1 s wait that times out.

Usage: python -m gdp_bench.nvml_fake [--out FILE] [--n N]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import tempfile
import threading
import time
from pathlib import Path

from gdp_bench.common import emit, percentiles
from gdp_hack.nvmlfake import LIBRARY, FakeDriver, build
from gdp_hack.nvmlfake.state import Event, render


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    parser.add_argument("--n", type=int, default=100)
    args = parser.parse_args()

    lib_folder = build()
    ctypes.CDLL(str(lib_folder / LIBRARY))  # pynvml's CDLL("libnvidia-ml.so.1") finds it by soname
    import pynvml

    with tempfile.TemporaryDirectory() as tmp:
        driver = FakeDriver(Path(tmp) / "root", "dgx-a100", library=lib_folder)
        os.environ["FAKE_NVML_STATE"] = str(driver.state_path)
        pynvml.nvmlInit()
        event_set = pynvml.nvmlEventSetCreate()
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            pynvml.nvmlDeviceRegisterEvents(handle, pynvml.nvmlEventTypeXidCriticalError, event_set)

        arrived: list[float] = []
        got = threading.Event()

        def wait() -> None:
            while len(arrived) < args.n:
                try:
                    pynvml.nvmlEventSetWait_v2(event_set, 5000)
                except pynvml.NVMLError_Timeout:
                    return
                arrived.append(time.perf_counter())
                got.set()

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        latencies, writes = [], []
        for i in range(args.n):
            got.clear()
            start = time.perf_counter()
            driver.inject_xid(i % 8, 79)
            writes.append(time.perf_counter() - start)
            if not got.wait(5):
                raise SystemExit(f"injection {i} was not delivered within 5 s")
            latencies.append(arrived[-1] - start)
        waiter.join(5)

        # The library alone: the next state is written aside first, the clock starts at the rename.
        arrived.clear()
        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        profile, faults = driver.profile, driver.faults
        renames = []
        for i in range(args.n):
            faults.seq += 1
            faults.events.append(Event(seq=faults.seq, gpu=i % 8, type=0x8, data=79))
            aside = driver.state_path.with_name("next.state")
            aside.write_text(render(profile, faults))
            got.clear()
            start = time.perf_counter()
            os.replace(aside, driver.state_path)
            if not got.wait(5):
                raise SystemExit(f"rename {i} was not delivered within 5 s")
            renames.append(arrived[-1] - start)
        waiter.join(5)

        cpu_start, wall_start = time.thread_time(), time.perf_counter()
        with contextlib.suppress(pynvml.NVMLError_Timeout):
            pynvml.nvmlEventSetWait_v2(event_set, 1000)
        idle = {
            "wall_s": round(time.perf_counter() - wall_start, 4),
            "cpu_s": round(time.thread_time() - cpu_start, 4),
        }
        pynvml.nvmlEventSetFree(event_set)
        pynvml.nvmlShutdown()

    emit(
        {
            "what": "C NVML fake: XID injected by FakeDriver -> returned by nvmlEventSetWait_v2 via pynvml",
            "inject_to_delivered": percentiles(latencies),
            "inject_call": percentiles(writes),
            "state_rename_to_delivered": percentiles(renames),
            "idle_wait_1s": idle,
            "poll_interval_ms": 1,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
