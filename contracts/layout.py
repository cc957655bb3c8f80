"""The SageMaker-style `/opt/ml` layout of one step run, under a root that can move.

Every scheduler gives a step the same layout: a plain process and `docker run` use a root folder,
SageMaker sets `SAGEMAKER_BASE_DIR` and `SM_*` variables, and KFP passes one path per artifact.
Per-channel and per-output overrides carry the KFP case, so step code never knows who ran it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_ROOT = Path("/opt/ml")


@dataclass(frozen=True)
class Layout:
    """Resolved paths of one step run."""

    root: Path
    channel_overrides: Mapping[str, Path] = field(default_factory=dict)
    output_overrides: Mapping[str, Path] = field(default_factory=dict)
    checkpoint_override: Path | None = None

    @classmethod
    def resolve(
        cls,
        root: str | os.PathLike | None = None,
        channels: Mapping[str, str | os.PathLike] | None = None,
        outputs: Mapping[str, str | os.PathLike] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Layout:
        """Explicit arguments win over SageMaker's environment, which wins over `/opt/ml`."""
        env = os.environ if env is None else env
        base = Path(root) if root else Path(env.get("SAGEMAKER_BASE_DIR") or DEFAULT_ROOT)
        channel_paths = {
            key[len("SM_CHANNEL_"):].lower(): Path(value)
            for key, value in env.items()
            if key.startswith("SM_CHANNEL_") and value
        }
        channel_paths.update({k: Path(v) for k, v in (channels or {}).items()})
        output_paths = {k: Path(v) for k, v in (outputs or {}).items()}
        checkpoints = env.get("SM_CHECKPOINT_DIR") or env.get("OPENEDS_CHECKPOINT_DIR")
        return cls(
            root=base.absolute(),
            channel_overrides=channel_paths,
            output_overrides=output_paths,
            checkpoint_override=Path(checkpoints) if checkpoints else None,
        )

    # -- inputs --------------------------------------------------------------------------
    @property
    def config_dir(self) -> Path:
        return self.root / "input" / "config"

    @property
    def hyperparameters_file(self) -> Path:
        return self.config_dir / "hyperparameters.json"

    @property
    def resource_config_file(self) -> Path:
        return self.config_dir / "resourceconfig.json"

    @property
    def input_data_config_file(self) -> Path:
        return self.config_dir / "inputdataconfig.json"

    def channel(self, name: str) -> Path:
        return Path(self.channel_overrides.get(name, self.root / "input" / "data" / name))

    # -- outputs -------------------------------------------------------------------------
    def output(self, name: str, default_relative: str, env: Mapping[str, str] | None = None) -> Path:
        """Where output `name` goes: an override, SageMaker's SM_MODEL_DIR/SM_OUTPUT_DATA_DIR,
        or its default path under the root."""
        if name in self.output_overrides:
            return Path(self.output_overrides[name])
        env = os.environ if env is None else env
        if default_relative == "model" and env.get("SM_MODEL_DIR"):
            return Path(env["SM_MODEL_DIR"])
        prefix = "output/data/"
        if default_relative.startswith(prefix) and env.get("SM_OUTPUT_DATA_DIR"):
            return Path(env["SM_OUTPUT_DATA_DIR"]) / default_relative[len(prefix):]
        return self.root / default_relative

    @property
    def checkpoints(self) -> Path:
        return self.checkpoint_override or self.root / "checkpoints"

    @property
    def failure_file(self) -> Path:
        return self.root / "output" / "failure"

    @property
    def run_manifest_file(self) -> Path:
        """The step-level summary; each output folder also carries its own `_manifest.json`."""
        return self.root / "output" / "manifest.json"

    @property
    def lock_file(self) -> Path:
        """In the root itself: SageMaker packages model/ and output/ (model.tar.gz, output.tar.gz),
        never the root, and every run sharing the root (a bind mount) still sees the lock."""
        return self.root / ".step.lock"
