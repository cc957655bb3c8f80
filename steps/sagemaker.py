"""SageMaker's side of the contract: is this a SageMaker invocation, which step runs, on which hosts.

SageMaker (and both SDKs' local mode) starts the image with `train` (v2) or with no command at all
(v3's ModelTrainer), writes `input/config/hyperparameters.json` and `resourceconfig.json`, and on
a multi-instance job runs one container per host (`algo-1`, `algo-2`, ...). Here:

- `is_sagemaker_invocation`: the files or `SM_*` variables that only SageMaker provides;
- `select_step`: the `step` hyperparameter (or OPENEDS_STEP), in any encoding the SDKs send:
  plain `train-seg`, or `"\\"train-seg\\""` (json.dumps of a string, v2 with entry_point);
- `cluster_from` / `torchrun_command`: with more than one host, every host runs torchrun with the
  first host as rendezvous and its index as node rank; only global rank 0 writes outputs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts import ContractError, Layout, all_contracts
from contracts.base import STEP_SELECTOR_KEY, shorten
from steps.outputs import loads_json

DEFAULT_STEP = "train-seg"
# Variables only SageMaker (its toolkit, or the SDK's local mode) sets for a training container.
SAGEMAKER_VARIABLES = ("SM_HPS", "SM_HOSTS", "SM_CURRENT_HOST", "TRAINING_JOB_NAME", "TRAINING_JOB_ARN")
RENDEZVOUS_PORT = 29500


def is_sagemaker_invocation(root: Path, env: Mapping[str, str]) -> bool:
    """True when SageMaker started the container (its config files or environment are there)."""
    config = root / "input" / "config"
    return any((config / name).is_file() for name in ("hyperparameters.json", "resourceconfig.json")) \
        or any(env.get(name) for name in SAGEMAKER_VARIABLES)


def decode_string(value: Any) -> Any:
    """`"\\"abc\\""` -> `abc`: SageMaker SDK v2 json.dumps every value when entry_point is set."""
    if isinstance(value, str):
        try:
            decoded = loads_json(value)
        except ValueError:
            return value
        return decoded if isinstance(decoded, str) else value
    return value


def select_step(raw: Mapping[str, Any], env: Mapping[str, str]) -> str:
    """The step a SageMaker `train` runs; a ContractError names the allowed steps."""
    step = decode_string(env.get("OPENEDS_STEP") or raw.get(STEP_SELECTOR_KEY, DEFAULT_STEP))
    steps = all_contracts()
    if not isinstance(step, str) or step not in steps:
        raise ContractError(f"hyperparameter '{STEP_SELECTOR_KEY}': unknown step {shorten(repr(step))} "
                            f"(steps: {', '.join(steps)})")
    return step


@dataclass(frozen=True)
class Cluster:
    hosts: tuple[str, ...]
    current_host: str
    network_interface: str | None = None

    @property
    def node_rank(self) -> int:
        return self.hosts.index(self.current_host)


def _hosts_from_env(env: Mapping[str, str]) -> tuple[list[str], str] | None:
    if not env.get("SM_HOSTS"):
        return None
    try:
        hosts = loads_json(env["SM_HOSTS"])
    except ValueError as error:
        raise ContractError(f"SM_HOSTS: not a JSON list of host names ({env['SM_HOSTS']!r})") from error
    return hosts, env.get("SM_CURRENT_HOST", "")


def cluster_from(layout: Layout, env: Mapping[str, str]) -> Cluster:
    """resourceconfig.json (what SageMaker writes), else SM_HOSTS / SM_CURRENT_HOST, else one host."""
    path = layout.resource_config_file
    interface = None
    if path.is_file():
        try:
            config = loads_json(path.read_text(encoding="utf-8"))
            hosts, current, interface = config["hosts"], config["current_host"], config.get("network_interface_name")
        except (ValueError, KeyError, TypeError) as error:
            raise ContractError(f"resourceconfig.json: expected a JSON object with 'hosts' and 'current_host' "
                                f"in {path} ({error})") from error
    else:
        hosts, current = _hosts_from_env(env) or ([env.get("SM_CURRENT_HOST") or "localhost"], "")
        current = current or hosts[0]
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) and h for h in hosts):
        raise ContractError(f"SageMaker hosts: expected a non-empty list of host names, got {hosts!r}")
    if current not in hosts:
        raise ContractError(f"SageMaker current host {current!r} is not one of the hosts {hosts}")
    return Cluster(hosts=tuple(hosts), current_host=current, network_interface=interface)


def processes_per_host(env: Mapping[str, str]) -> int:
    """One process per GPU (SM_NUM_GPUS, else what torch sees), one on a CPU host."""
    if env.get("SM_NUM_GPUS", "").isdigit():
        return max(1, int(env["SM_NUM_GPUS"]))
    import torch

    return max(1, torch.cuda.device_count())


def torchrun_command(cluster: Cluster, env: Mapping[str, str], argv: Sequence[str]) -> list[str] | None:
    """The torchrun command this host runs for a multi-host job; None for one host or inside torchrun."""
    if len(cluster.hosts) < 2 or env.get("RANK") is not None:
        return None
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(len(cluster.hosts)),
            "--node_rank", str(cluster.node_rank), "--nproc_per_node", str(processes_per_host(env)),
            "--master_addr", cluster.hosts[0], "--master_port", str(env.get("OPENEDS_RENDEZVOUS_PORT", RENDEZVOUS_PORT)),
            "--max_restarts", "0", "-m", "steps", "train", *argv]


def torchrun_environment(cluster: Cluster, env: Mapping[str, str]) -> dict[str, str]:
    """gloo and NCCL talk over SageMaker's network interface (eth0), not whatever comes first; an
    interface this container lacks is ignored (SDK v3's local mode names `ethwe`, which is not there)."""
    extra = {}
    if cluster.network_interface and Path("/sys/class/net", cluster.network_interface).exists():
        extra = {"GLOO_SOCKET_IFNAME": cluster.network_interface, "NCCL_SOCKET_IFNAME": cluster.network_interface}
    return {**env, **{k: v for k, v in extra.items() if k not in env}}


def launch_distributed(layout: Layout, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
    """On a multi-host job, replace this process with torchrun (which runs `steps train` per rank)."""
    env = os.environ if env is None else env
    cluster = cluster_from(layout, env)
    command = torchrun_command(cluster, env, argv)
    if command is None:
        return
    print(f"SageMaker job on {len(cluster.hosts)} hosts: {cluster.current_host} is node "
          f"{cluster.node_rank}, rendezvous at {cluster.hosts[0]}", file=sys.stderr, flush=True)
    os.execvpe(command[0], command, torchrun_environment(cluster, env))
