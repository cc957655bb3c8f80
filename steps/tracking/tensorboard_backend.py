"""TensorBoard (optional extra, `tensorboard=true`): scalars and images per epoch, params as text.

Event files go to `<output_dir>/tensorboard/`; view them with `tensorboard --logdir <that folder>`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from steps.errors import StepError

log = logging.getLogger(__name__)


class TensorBoardBackend:
    name = "tensorboard"

    def __init__(self, *, output_dir: Path, run_name: str, tags: dict[str, str]):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise StepError("tensorboard: the tensorboard package is not installed\nInstall the extra "
                            "(pip install 'openeds-steps[tensorboard]') or set tensorboard=false.") from error

        self.log_dir = Path(output_dir) / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self.writer.add_text("run", f"{run_name}: " + json.dumps(tags, sort_keys=True), 0)
        log.info("TensorBoard events in %s", self.log_dir)

    def log_params(self, params: dict[str, Any]) -> None:
        table = "\n".join(f"| {key} | {value} |" for key, value in sorted(params.items()))
        self.writer.add_text("params", "| param | value |\n|---|---|\n" + table, 0)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.writer.add_text("tags", json.dumps(tags, sort_keys=True), 0)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, float(value), step)
        self.writer.flush()

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        pass  # TensorBoard has no artifact store; the files stay in the step's outputs

    def log_images(self, images: dict[str, np.ndarray], step: int) -> None:
        for key, image in images.items():
            self.writer.add_image(key, np.asarray(image), step, dataformats="HWC")
        self.writer.flush()

    def finish(self, status: str) -> None:
        self.writer.add_text("status", status, 0)
        self.writer.close()
