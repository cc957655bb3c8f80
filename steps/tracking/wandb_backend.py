"""Weights & Biases (optional extra, `wandb=true`): metrics, the full config, prediction images.

The mode comes from WANDB_MODE ("offline" logs into `<output_dir>/wandb/offline-run-*` with no
network; `wandb sync` uploads it later). Online without credentials or network fails at start
with a clear message instead of retrying for minutes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from steps.errors import StepError

log = logging.getLogger(__name__)

INIT_TIMEOUT_S = 60


class WandbBackend:
    name = "wandb"

    def __init__(self, *, project: str, entity: str | None, run_name: str, tags: dict[str, str], output_dir: Path):
        try:
            import wandb
        except ImportError as error:
            raise StepError("wandb: the wandb package is not installed\n"
                            "Install the extra (pip install 'openeds-steps[wandb]') or set wandb=false.") from error
        self._wandb = wandb
        mode = cast(Literal["online", "offline", "disabled", "shared"] | None, os.environ.get("WANDB_MODE") or None)
        output_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.run = wandb.init(project=project, entity=entity, name=run_name, dir=str(output_dir),
                                  tags=sorted(set(tags.values())), mode=mode, reinit="create_new",
                                  settings=wandb.Settings(init_timeout=INIT_TIMEOUT_S, silent=True))
        except Exception as error:  # wandb raises its own errors (auth, comm, timeouts)
            raise StepError(f"wandb: cannot start a W&B run in project '{project}' ({type(error).__name__}: "
                            f"{str(error).splitlines()[0] if str(error) else 'no details'})\n"
                            "Set WANDB_API_KEY for online logging, WANDB_MODE=offline to log without "
                            "network, or wandb=false.") from error
        self.run.config.update({"tags": tags}, allow_val_change=True)
        log.info("W&B run %s (%s mode) in %s", self.run.id, mode or "online", self.run.dir)

    @property
    def run_dir(self) -> Path:
        return Path(self.run.dir).parent  # .../wandb/<offline-run-...>/files -> the run folder

    def log_params(self, params: dict[str, Any]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.run.config.update({"tags": tags}, allow_val_change=True)
        self.run.tags = tuple(sorted(set(self.run.tags or ()) | set(tags.values())))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(dict(metrics), step=step)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_file():
            self.run.save(str(path), base_path=str(path.parent), policy="now")

    def log_images(self, images: dict[str, np.ndarray], step: int) -> None:
        self.run.log({key: self._wandb.Image(image, caption=key) for key, image in images.items()}, step=step)

    def finish(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "FINISHED" else 1)
