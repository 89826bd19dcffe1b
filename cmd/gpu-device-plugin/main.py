"""Command-line entry point (click).

Every `serve` flag can also come from an environment variable (GPU_DP_<FLAG>,
shown in --help) or from a YAML file given with --config; precedence is
flag > environment > file > default, which click's default_map gives us.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import click
import yaml
from click.core import ParameterSource

from gpu_device_plugin import __version__
from gpu_device_plugin.allocator import AllocateOptions, DeviceIdStrategy, DeviceListStrategy
from gpu_device_plugin.allocator.shared_policy import SharedPolicy
from gpu_device_plugin.backends.config import MAX_FAKE_DEVICES, DiscoveryConfig, DiscoveryKind
from gpu_device_plugin.cli import exitcodes
from gpu_device_plugin.cli.config import ServeConfig
from gpu_device_plugin.cli.layers import FlagLayers, effective_line, file_key_errors
from gpu_device_plugin.cli.nvidia_file import effective_config, file_sharing, load_config_file
from gpu_device_plugin.cli.oneline import (
    CONFIG_FILE,
    BoundedInt,
    FiniteFloat,
    OneLineErrors,
    bad_configuration,
    field_name,
    one_line,
    remember_config_file,
)
from gpu_device_plugin.cluster.config import ClusterConfig
from gpu_device_plugin.cluster.feature_labels import DEFAULT_LABEL_PREFIX
from gpu_device_plugin.errors import ConfigError, DiscoveryError
from gpu_device_plugin.health.config import (
    MAX_PROBE_INTERVAL_S,
    MAX_QUIET_PERIOD_S,
    HealthChecks,
    HealthConfig,
)
from gpu_device_plugin.health.tracker import Recovery, RecoveryPolicy
from gpu_device_plugin.health.xid import DEFAULT_IGNORED_XIDS, IgnoredXids
from gpu_device_plugin.live.config import DEFAULT_NODE_LABEL, DEFAULT_REDISCOVERY_INTERVAL_S, LiveConfig
from gpu_device_plugin.mps.root import DEFAULT_MPS_ROOT, MpsRoot
from gpu_device_plugin.resources.names import DEFAULT_RESOURCE_NAME, check_resource_name
from gpu_device_plugin.resources.settings import MigStrategy, Sharing
from gpu_device_plugin.server.sockets import DEFAULT_PLUGIN_DIR
from gpu_device_plugin.telemetry.logs import LogFormat, configure_logging

ENV_PREFIX = "GPU_DP_"
F = TypeVar("F", bound=Callable[..., Any])


def env_option(*decls: str, **kwargs: Any) -> Callable[[F], F]:
    """A click option that also reads GPU_DP_<NAME> and shows it in --help."""
    # "--pass-device-specs/--no-pass-device-specs" reads GPU_DP_PASS_DEVICE_SPECS.
    flag = next(d for d in decls if d.startswith("--")).split("/")[0]
    name = flag.lstrip("-").replace("-", "_").upper()
    return click.option(*decls, envvar=ENV_PREFIX + name, show_envvar=True, show_default=True, **kwargs)


def _load_config_file(ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path | None:
    if value is None:
        return None
    try:
        data = yaml.safe_load(value.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise click.BadParameter(f"cannot load {value}: {err}") from err
    if not isinstance(data, dict):
        raise click.BadParameter(f"{value} must be a mapping of flag names to values")
    keys = {str(k).replace("-", "_"): str(k) for k in data}
    values = {str(k).replace("-", "_"): v for k, v in data.items()}
    # A misspelt key would otherwise be ignored without a word.
    known = {p.name for p in ctx.command.params if p.expose_value}
    unknown = sorted(k.replace("_", "-") for k in values if k not in known)
    if unknown:
        raise click.BadParameter(f"{value}: unknown keys {', '.join(unknown)}")
    ctx.default_map = values
    # A bad value from the file is then reported as the file's key, not as the env var.
    remember_config_file(ctx, value, keys)
    return value


def nvidia_config_file_option(help_text: str) -> Callable[[F], F]:
    """--config-file, for serve and mps-control alike: both plan from the same file."""
    return env_option(
        "--config-file",
        type=click.Path(path_type=Path, dir_okay=False, exists=True),
        is_eager=True,
        expose_value=False,
        callback=load_config_file,
        help=help_text,
    )


def resource_name_option(func: F) -> F:
    """--resource-name, for serve and mps-control alike: both must name the same resources."""
    return env_option(
        "--resource-name", default=DEFAULT_RESOURCE_NAME, help="Extended resource, <domain>/<name>."
    )(func)


def mps_root_option(func: F) -> F:
    """--mps-root, for serve and mps-control alike: both must name the same folder."""
    return env_option(
        "--mps-root",
        type=click.Path(path_type=Path, file_okay=False),
        default=str(DEFAULT_MPS_ROOT),
        help="With sharing.mps: the host folder of the MPS control daemons' pipes, logs and ready "
        "files (NVIDIA's flags.mpsRoot); the same path in the plugin's and mps-control's containers.",
    )(func)


def mps_root(path: Path) -> MpsRoot:
    if not path.is_absolute():
        raise ConfigError("mps-root", f"{path} must be an absolute path")
    return MpsRoot(PurePosixPath(path))


def fail(code: int, message: str) -> None:
    click.echo(f"gpu-device-plugin: {one_line(message)}", err=True)
    sys.exit(code)


def run_or_exit(body: Callable[[], None]) -> None:
    """Exit codes for our errors, in one place: bad configuration is 2."""
    try:
        body()
    except ConfigError as err:
        where = field_name(click.get_current_context(silent=True), err.field)
        fail(exitcodes.BAD_CONFIG, bad_configuration(where, err.reason))
    except DiscoveryError as err:
        fail(exitcodes.FAILURE, str(err))


def discovery_options(func: F) -> F:
    for decorator in reversed(
        [
            env_option(
                "--discovery",
                type=click.Choice([k.value for k in DiscoveryKind]),
                default=DiscoveryKind.NVML.value,
                help="Where devices come from.",
            ),
            env_option(
                "--fake-config",
                type=click.Path(path_type=Path, dir_okay=False),
                help="Fake backend: YAML file of devices, edits take effect live (implies --discovery fake).",
            ),
            env_option(
                "--fake-devices",
                type=BoundedInt(0, MAX_FAKE_DEVICES),
                help="Fake backend: N identical healthy GPUs (implies --discovery fake).",
            ),
            env_option(
                "--fail-on-init-error/--no-fail-on-init-error",
                default=True,
                help="Exit when NVML cannot start; off: serve zero devices.",
            ),
            env_option(
                "--driver-root",
                type=click.Path(path_type=Path),
                default="/",
                help="Folder under which libnvidia-ml and the /dev/nvidia* nodes are found "
                "(a driver container's: /run/nvidia/driver); mount it at the same path in a pod.",
            ),
        ]
    ):
        func = decorator(func)
    return func


def discovery_config(
    discovery: str,
    fake_config: Path | None,
    fake_devices: int | None,
    fail_on_init_error: bool,
    driver_root: Path = Path("/"),
) -> DiscoveryConfig:
    kind = DiscoveryKind(discovery)
    ctx = click.get_current_context(silent=True)
    chosen = ctx is not None and ctx.get_parameter_source("discovery") is not ParameterSource.DEFAULT
    # A fake option alone means the fake backend; a --discovery nvml given with one is refused
    # by DiscoveryConfig as a contradiction.
    if not chosen and (fake_config is not None or fake_devices is not None):
        kind = DiscoveryKind.FAKE
    return DiscoveryConfig(
        kind=kind,
        fake_config=fake_config,
        fake_devices=fake_devices,
        fail_on_init_error=fail_on_init_error,
        driver_root=driver_root,
    )


def health_config(flags: dict[str, Any]) -> HealthConfig:
    try:
        xids = IgnoredXids.parse(flags["health_ignore_xids"])
    except ValueError as err:
        raise ConfigError("health-ignore-xids", str(err)) from err
    return HealthConfig(
        checks=HealthChecks(flags["health_checks"].lower()),
        ignored_xids=xids,
        recovery=RecoveryPolicy(
            mode=Recovery(flags["health_recovery"]), quiet_period_s=flags["health_quiet_period"]
        ),
        probe_interval_s=flags["health_probe_interval"],
    )


def cluster_options(func: F) -> F:
    """`serve`'s flags for what it tells the cluster: node labels and health Events."""
    for decorator in reversed(
        [
            env_option(
                "--node-labels/--no-node-labels",
                default=False,
                help="Label this node with what discovery found (product, count, memory, ...).",
            ),
            env_option(
                "--node-events/--no-node-events",
                default=False,
                help="Post a Kubernetes Event on this node for every device health transition.",
            ),
            env_option(
                "--label-prefix",
                default=DEFAULT_LABEL_PREFIX,
                help="Start of every feature label key; only labels under it are changed.",
            ),
            env_option(
                "--kubeconfig",
                type=click.Path(path_type=Path, dir_okay=False),
                help="Credentials for the API server when not in a pod; default: the pod's service account.",
            ),
            env_option(
                "--node-name",
                # The downward API's usual variable, read when nothing else names the node.
                default=lambda: os.environ.get("NODE_NAME"),
                help="This node's name; default: $NODE_NAME (in a pod: the downward API's spec.nodeName).",
            ),
        ]
    ):
        func = decorator(func)
    return func


def cluster_config(flags: dict[str, Any]) -> ClusterConfig:
    return ClusterConfig(
        node_labels=flags["node_labels"],
        node_events=flags["node_events"],
        label_prefix=flags["label_prefix"],
        kubeconfig=flags["kubeconfig"],
        node_name=flags["node_name"] or None,
    )


def live_options(func: F) -> F:
    """`serve`'s flags for the per-node config, chosen by a Node label and applied live."""
    for decorator in reversed(
        [
            env_option(
                "--config-dir",
                type=click.Path(path_type=Path, file_okay=False, exists=True),
                help="Folder of NVIDIA config files, one per name (a mounted ConfigMap); the Node "
                "label --node-config-label picks one, applied live. Not with --config-file.",
            ),
            env_option(
                "--node-config-label",
                default=DEFAULT_NODE_LABEL,
                help="The Node label whose value names the config (with --config-dir).",
            ),
            env_option(
                "--default-config",
                help="The config while the label is unset; default: the one named 'default', "
                "else the only one, else the flags alone.",
            ),
            env_option(
                "--rediscovery-interval",
                type=FiniteFloat(0, MAX_PROBE_INTERVAL_S),
                default=DEFAULT_REDISCOVERY_INTERVAL_S,
                help="Seconds between re-discoveries of the devices (a MIG layout changed under "
                "us), also done on each config change; 0: never.",
            ),
        ]
    ):
        func = decorator(func)
    return func


def live_config(flags: dict[str, Any]) -> LiveConfig | None:
    if flags["config_dir"] is None:
        return None
    return LiveConfig(
        config_dir=flags["config_dir"],
        node_label=flags["node_config_label"],
        default_config=flags["default_config"] or None,
    )


@click.group(
    cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}
)
@click.version_option(__version__, prog_name="gpu-device-plugin")
def main() -> None:
    """Kubernetes device plugin for NVIDIA GPUs."""


@main.command()
@click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    is_eager=True,
    expose_value=False,
    callback=_load_config_file,
    help="YAML file of flag values (keys are flag names); flags and env vars win over it.",
)
@nvidia_config_file_option(
    "NVIDIA k8s-device-plugin's config file (version: v1), unchanged; flags and env vars win over it."
)
@discovery_options
@resource_name_option
@env_option(
    "--mig-strategy",
    type=click.Choice([s.value for s in MigStrategy]),
    default=MigStrategy.NONE.value,
    help="none: whole GPUs; single: every GPU's MIG devices (one profile) under --resource-name; "
    "mixed: one resource per MIG profile, <domain>/mig-<profile>.",
)
@env_option(
    "--device-plugin-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=str(DEFAULT_PLUGIN_DIR),
    help="The kubelet's device-plugins folder.",
)
@env_option(
    "--device-id-strategy",
    type=click.Choice([s.value for s in DeviceIdStrategy]),
    default=DeviceIdStrategy.UUID.value,
    help="Name devices in NVIDIA_VISIBLE_DEVICES by UUID or index.",
)
@env_option(
    "--device-list-strategy",
    type=click.Choice([s.value for s in DeviceListStrategy]),
    default=DeviceListStrategy.ENVVAR.value,
    help="envvar: NVIDIA_VISIBLE_DEVICES; cdi-cri: CDI device names in the CRI request.",
)
@env_option("--cdi-kind", default="nvidia.com/gpu", help="CDI kind for cdi-cri names.")
@env_option(
    "--shared-devices-allocation-policy",
    type=click.Choice([p.value for p in SharedPolicy]),
    default=SharedPolicy.DISTRIBUTED.value,
    help="Preferred allocation of shared replicas: spread over the least-shared GPUs, "
    "or fill a GPU before the next.",
)
@mps_root_option
@env_option(
    "--pass-device-specs/--no-pass-device-specs",
    default=False,
    help="Also hand the /dev/nvidia* nodes to the container.",
)
@env_option(
    "--health-checks",
    type=click.Choice([c.value for c in HealthChecks], case_sensitive=False),
    default=HealthChecks.ALL.value,
    help="all: NVML events + probes (nvml) or file edits (fake); none/disabled: off.",
)
@env_option(
    "--health-ignore-xids",
    default=",".join(str(x) for x in sorted(DEFAULT_IGNORED_XIDS)),
    help="XIDs caused by applications: they leave a device healthy. Empty: none.",
)
@env_option(
    "--health-recovery",
    type=click.Choice([r.value for r in Recovery]),
    default=Recovery.AUTO.value,
    help="auto: an unhealthy device returns after a quiet period; never: until restart.",
)
@env_option(
    "--health-quiet-period",
    type=FiniteFloat(0, MAX_QUIET_PERIOD_S),
    default=60.0,
    help="Seconds a device must answer correctly, with no new fault, before it recovers.",
)
@env_option(
    "--health-probe-interval",
    type=FiniteFloat(0, MAX_PROBE_INTERVAL_S, min_open=True),
    default=10.0,
    help="Seconds between device probes.",
)
@env_option(
    "--log-format", type=click.Choice([f.value for f in LogFormat]), default="text", help="Log line format."
)
@env_option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    help="Least severe level logged.",
)
@env_option(
    "--metrics-address",
    metavar="HOST:PORT",
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (port 0: any free port). Off if unset.",
)
@cluster_options
@live_options
def serve(**flags: Any) -> None:
    """Discover devices, register with the kubelet and serve them."""
    from gpu_device_plugin.cli.serve import serve as run_serve
    from gpu_device_plugin.telemetry.otlp_metrics import configure_otlp_metrics
    from gpu_device_plugin.telemetry.tracing import configure_tracing

    def body() -> None:
        load_config = None
        config_line = None
        if flags["config_dir"] is not None:
            ctx = click.get_current_context()
            if CONFIG_FILE in ctx.meta:
                path, _ = ctx.meta[CONFIG_FILE]
                raise click.UsageError(
                    f"--config-dir and a config file ({path}) both given: give one "
                    "(the folder's configs are the config files)",
                    ctx,
                )
            load_config = config_loader(FlagLayers.of(ctx))
            # Flags alone until the Node's label has chosen a file (serve reads it first).
            config = load_config(None).full
        else:
            config = serve_config(flags, file_sharing())
            config_line = effective_config(flags)
        configure_logging(json_format=config.log_format is LogFormat.JSON, level=config.log_level)
        otlp_metrics = configure_otlp_metrics()
        tracing = configure_tracing()
        try:
            asyncio.run(
                run_serve(
                    config,
                    tracing,
                    otlp_metrics=otlp_metrics,
                    config_line=config_line,
                    load_config=load_config,
                )
            )
        finally:
            # The queued spans' last export, then the metrics': each bounded by its exporter's
            # timeout (OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]TIMEOUT, 10 s by default), within
            # the pod's 30 s grace period together.
            try:
                tracing.shutdown()
            finally:
                if otlp_metrics is not None:
                    otlp_metrics.shutdown()

    run_or_exit(body)


def config_loader(layers: FlagLayers) -> Callable[[Path | None], Any]:
    """--config-dir's loader: a named config file (None: none) -> its LoadedConfig, through the
    same flag > env > file > default layering at start and at every reload."""
    from gpu_device_plugin.live.reconciler import LoadedConfig

    def load(path: Path | None) -> LoadedConfig:
        resolved = layers.resolve(path)
        config: ServeConfig = file_key_errors(resolved, lambda f: serve_config(f, resolved.file.sharing))
        rest = {f.name: getattr(config, f.name) for f in fields(config) if f.name not in LIVE_FIELDS}
        return LoadedConfig(config.resources, rest, full=config, line=effective_line(resolved, path))

    return load


# The ServeConfig fields a per-node config changes live (ServeConfig.resources).
LIVE_FIELDS = frozenset({"resource_name", "allocate", "mig_strategy", "sharing", "shared_policy", "mps_root"})


def serve_config(flags: dict[str, Any], sharing: Sharing | None = None) -> ServeConfig:
    """The daemon's config from every serve flag's value (however it was set), and the
    sharing section of NVIDIA's file (which no flag sets)."""
    return ServeConfig(
        discovery=discovery_config(
            flags["discovery"],
            flags["fake_config"],
            flags["fake_devices"],
            flags["fail_on_init_error"],
            flags["driver_root"],
        ),
        resource_name=flags["resource_name"],
        device_plugin_dir=flags["device_plugin_dir"],
        allocate=AllocateOptions(
            id_strategy=DeviceIdStrategy(flags["device_id_strategy"]),
            list_strategy=DeviceListStrategy(flags["device_list_strategy"]),
            pass_device_specs=flags["pass_device_specs"],
            cdi_kind=flags["cdi_kind"],
        ),
        health=health_config(flags),
        log_format=LogFormat(flags["log_format"]),
        log_level=flags["log_level"],
        metrics_address=flags["metrics_address"],
        cluster=cluster_config(flags),
        mig_strategy=MigStrategy(flags["mig_strategy"]),
        # From NVIDIA's file only (--config-file, or a --config-dir file): no flag has it.
        sharing=sharing,
        shared_policy=SharedPolicy(flags["shared_devices_allocation_policy"]),
        mps_root=mps_root(flags["mps_root"]),
        live=live_config(flags),
        rediscovery_interval_s=flags["rediscovery_interval"],
    )


@main.command("mps-control")
@nvidia_config_file_option(
    "NVIDIA k8s-device-plugin's config file, the one serve reads: its sharing.mps says what to run."
)
@discovery_options
@resource_name_option
@mps_root_option
@env_option(
    "--mps-control-bin",
    default="nvidia-cuda-mps-control",
    help="The MPS control daemon's binary: a path, or a name looked up on PATH.",
)
@env_option(
    "--log-format", type=click.Choice([f.value for f in LogFormat]), default="text", help="Log line format."
)
@env_option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    help="Least severe level logged.",
)
def mps_control(**flags: Any) -> None:
    """Run and supervise an MPS control daemon per resource shared with MPS (a sidecar of serve)."""
    from gpu_device_plugin.cli.mps_control import find_binary, run_mps_control
    from gpu_device_plugin.resources.settings import ResourceSettings

    def body() -> None:
        discovery = discovery_config(
            flags["discovery"],
            flags["fake_config"],
            flags["fake_devices"],
            flags["fail_on_init_error"],
            flags["driver_root"],
        )
        settings = ResourceSettings(
            check_resource_name(flags["resource_name"]),
            sharing=file_sharing(),
            mps_root=mps_root(flags["mps_root"]),
        )
        binary = find_binary(flags["mps_control_bin"])
        configure_logging(json_format=flags["log_format"] == LogFormat.JSON.value, level=flags["log_level"])
        asyncio.run(run_mps_control(settings, discovery, binary, config_line=effective_config(flags)))

    run_or_exit(body)


@main.command()
@discovery_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--topology",
    "show_topology",
    is_flag=True,
    help="Show how the GPUs are linked, as `nvidia-smi topo -m` does (with --json: add a topology key).",
)
def discover(as_json: bool, show_topology: bool, **flags: Any) -> None:
    """Show the devices this node has."""
    from gpu_device_plugin.backends.registry import make_backend
    from gpu_device_plugin.cli.render import inventory_json, inventory_table
    from gpu_device_plugin.cli.render_topology import topology_json, topology_matrix

    def body() -> None:
        backend = make_backend(discovery_config(**flags))
        inventory = backend.discover()
        if as_json:
            data = inventory_json(inventory)
            if show_topology:
                data["topology"] = topology_json(inventory)
            click.echo(json.dumps(data, indent=2))
        else:
            click.echo(topology_matrix(inventory) if show_topology else inventory_table(inventory))

    run_or_exit(body)


@main.command()
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The plugin's socket; default: the newest answering one in --device-plugin-dir.",
)
@env_option(
    "--device-plugin-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=str(DEFAULT_PLUGIN_DIR),
    help="Where to look for the plugin's socket.",
)
@env_option("--resource-name", default=DEFAULT_RESOURCE_NAME, help="Whose socket to look for.")
@click.option(
    "--preferred",
    # As many as the fake backend may have: more than any real node.
    type=BoundedInt(1, MAX_FAKE_DEVICES),
    help="Also ask for a preferred allocation of N devices.",
)
@click.option(
    "--timeout",
    type=FiniteFloat(0, 600, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds per call.",
)
@click.option(
    "--serving-only",
    is_flag=True,
    help="Exit 0 when the plugin answers, whatever its devices' health (a liveness probe: "
    "restarting the plugin does not heal a GPU).",
)
def probe(
    socket_path: Path | None,
    device_plugin_dir: Path,
    resource_name: str,
    preferred: int | None,
    timeout: float,
    serving_only: bool,
) -> None:
    """Act as the kubelet against a running plugin; exit 0 only if all devices are healthy
    and health checking runs."""
    from gpu_device_plugin.cli.probe import run_probe

    def body() -> None:
        check_resource_name(resource_name)
        ok = asyncio.run(
            run_probe(
                socket_path, device_plugin_dir, resource_name, preferred, timeout, serving_only=serving_only
            )
        )
        sys.exit(exitcodes.OK if ok else exitcodes.FAILURE)

    run_or_exit(body)


@main.command()
@click.option("--devices", type=int, default=8, show_default=True, help="Number of fake GPUs.")
def demo(devices: int) -> None:
    """Run the plugin on fake GPUs against a stand-in kubelet and narrate what happens."""
    from gpu_device_plugin.cli.demo import run_demo

    if not 2 <= devices <= 64:
        fail(exitcodes.BAD_CONFIG, bad_configuration("devices", "must be between 2 and 64"))
    asyncio.run(run_demo(devices, echo=click.echo))


@main.command()
@click.option(
    "--kubeconfig",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Kubeconfig to use; default: $KUBECONFIG, else ~/.kube/config (as kubectl).",
)
@click.option("--context", help="Kubeconfig context; default: the current one.")
@env_option("--resource-name", default=DEFAULT_RESOURCE_NAME, help="The plugin's extended resource.")
@click.option(
    "--selector",
    default="app.kubernetes.io/name=gpu-device-plugin",
    show_default=True,
    help="Label selector of the plugin's pods (any namespace).",
)
@env_option("--label-prefix", default=DEFAULT_LABEL_PREFIX, help="Start of the feature label keys shown.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--page-size",
    type=BoundedInt(1, 10_000),
    default=500,
    show_default=True,
    help="Objects per list page.",
)
def report(
    kubeconfig: Path | None,
    context: str | None,
    resource_name: str,
    selector: str,
    label_prefix: str,
    as_json: bool,
    page_size: int,
) -> None:
    """Per node: capacity, allocatable, unhealthy, the plugin pod, pods holding GPUs, feature labels.

    Exit 0 when every plugin pod is ready and every device healthy, 1 otherwise
    or when the cluster cannot be read, 2 on a usage error.
    """
    from gpu_device_plugin.cli.report import run_report
    from gpu_device_plugin.cluster.feature_labels import check_label_prefix
    from gpu_device_plugin.cluster.selector import LabelSelector

    def body() -> None:
        check_resource_name(resource_name)
        try:
            check_label_prefix(label_prefix)
        except ValueError as err:
            raise ConfigError("label-prefix", str(err)) from err
        try:
            parsed = LabelSelector.parse(selector)
        except ValueError as err:
            raise ConfigError("selector", str(err)) from err
        ok = run_report(
            kubeconfig=kubeconfig,
            context=context,
            resource=resource_name,
            selector=parsed,
            label_prefix=label_prefix,
            as_json=as_json,
            page_size=page_size,
        )
        sys.exit(exitcodes.OK if ok else exitcodes.FAILURE)

    run_or_exit(body)
