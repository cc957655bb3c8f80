"""What the Colab notebooks (training/*.ipynb) call: GPU facts, the dataset with an offline
fallback, ONNX export and the download. The notebooks hold no training code of their own; they
call steps.train.fit.train like train-seg and train-ellipse do.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from steps.export.onnx_export import Exporter

log = logging.getLogger(__name__)


def in_colab() -> bool:
    return "google.colab" in sys.modules


def gpu_report() -> str:
    """The GPU's name and memory, or why there is none (and what to do in Colab)."""
    import torch

    if not torch.cuda.is_available():
        return ("no GPU: training runs on the CPU (in Colab: Runtime > Change runtime type > GPU)")
    props = torch.cuda.get_device_properties(0)
    return f"GPU: {props.name}, {props.total_memory / 2**30:.1f} GiB"


def generated_splits(work: Path, frames: dict[str, int]) -> dict[str, Path]:
    """Generated OpenEDS-like frames through the real download-kaggle and preprocess steps."""
    from contracts import Layout
    from steps.runtime import run_step

    raw = {"source": "synthetic", "synthetic_train_frames": frames["train"],
           "synthetic_validation_frames": frames["validation"], "synthetic_test_frames": 0,
           "splits": ["train", "validation"]}
    if run_step("download-kaggle", Layout.resolve(work / "download"), raw) != 0:
        raise RuntimeError(f"generating frames failed: see {work / 'download' / 'output' / 'failure'}")
    channels = {"raw": work / "download" / "output" / "data" / "raw"}
    if run_step("preprocess", Layout.resolve(work / "preprocess", channels=channels), {"workers": 1}) != 0:
        raise RuntimeError(f"preprocessing failed: see {work / 'preprocess' / 'output' / 'failure'}")
    return {split: work / "preprocess" / "output" / "data" / split for split in ("train", "validation")}


def load_splits(hf_repo: str, work: Path, offline_frames: dict[str, int] | None = None,
                data_dir: str = "~/.cache/openeds") -> tuple[Any, Any, str]:
    """(train, validation, where they came from): the HF Hub dataset, or, when it cannot be reached,
    generated frames (said loudly: a model trained on them has never seen a real eye)."""
    from steps.data.loading import load_split

    try:
        return (load_split(None, hf_repo=hf_repo, split="train", data_dir=data_dir),
                load_split(None, hf_repo=hf_repo, split="validation", data_dir=data_dir), f"HF Hub {hf_repo}")
    except Exception as error:  # noqa: BLE001 - offline, no token, repo gone: all mean the same here
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        print(f"HF Hub dataset {hf_repo} not available ({reason})\n"
              f"FALLBACK: generated OpenEDS-like frames (not real eyes)")
    paths = generated_splits(work / "generated", offline_frames or {"train": 64, "validation": 16})
    return (load_split(paths["train"], hf_repo=None, split="train", data_dir=data_dir),
            load_split(paths["validation"], hf_repo=None, split="validation", data_dir=data_dir),
            "generated frames (offline fallback)")


def export_onnx(model_dir: Path, out_dir: Path, task: str, exporter: Exporter = "dynamo") -> tuple[Path, float]:
    """The trained model folder as a checked ONNX file (export-onnx's library); (path, size in KB)."""
    from steps.export.onnx_export import export_checked, load_source_model

    out_dir.mkdir(parents=True, exist_ok=True)
    result = export_checked(load_source_model(model_dir, task), out_dir, exporter=exporter)
    return out_dir / result.file, result.size_kb


def download(path: Path) -> str:
    """Colab: start the browser download; elsewhere: say where the file is."""
    if in_colab():
        from google.colab import files

        files.download(str(path))
        return f"downloading {path.name}"
    return f"not in Colab: the file is at {path.resolve()}"
