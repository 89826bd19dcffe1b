"""Wiring for `serve`: build each layer from the config and run them together."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from gpu_device_plugin.allocator import in_order_policy
from gpu_device_plugin.config import ServeConfig
from gpu_device_plugin.daemon import run_root_tasks
from gpu_device_plugin.discovery.factory import initial_inventory, make_backend
from gpu_device_plugin.discovery.fake import FakeBackend
from gpu_device_plugin.health.fakefile import follow_fake_file
from gpu_device_plugin.inventory import SnapshotCell
from gpu_device_plugin.server.service import DevicePluginService
from gpu_device_plugin.server.supervisor import PluginSupervisor
from gpu_device_plugin.telemetry.tracing import Tracing


async def serve(config: ServeConfig, tracing: Tracing, stop: asyncio.Event | None = None) -> None:
    backend = make_backend(config.discovery)
    inventory = initial_inventory(backend, fail_on_init_error=config.discovery.fail_on_init_error)
    cell = SnapshotCell(inventory)
    service = DevicePluginService(
        resource_name=config.resource_name,
        cell=cell,
        allocate_options=config.allocate,
        preferred_policy=in_order_policy,
    )
    supervisor = PluginSupervisor(
        service=service,
        plugin_dir=config.device_plugin_dir,
        tracer=tracing.tracer,
        interceptors=tracing.interceptors,
    )
    tasks: dict[str, Coroutine[Any, Any, None]] = {"plugin-server": supervisor.run()}
    if isinstance(backend, FakeBackend) and backend.config_path is not None:
        tasks["health-fake-file"] = follow_fake_file(backend, cell)
    await run_root_tasks(tasks, stop=stop)
