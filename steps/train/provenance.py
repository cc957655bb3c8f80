"""What a model was trained on, for its model card: read from the train split's manifest.

preprocess records where its frames came from (`provenance.raw_source`: the Kaggle dataset, a local
archive, or generated frames) and the preprocessing it applied; train-seg and train-ellipse copy the
facts into model_card.json, export-onnx into the ONNX metadata, and the model card shows them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steps.outputs import loads_json, read_manifest, write_json_atomic

GENERATED_SOURCE = "synthetic"


def training_data(train_dir: Path | None, hf_repo: str | None = None, max_rows: int | None = None) -> dict[str, Any]:
    """{source, generated, dataset, layout, camera_frames, rows, preprocessing} of the train split ({} if
    unknown); camera_frames: the original layout, frame sizes and frame_policy when another camera's
    frames were mapped onto 640x400; rows: those trained on (`max_rows` of a larger split, whose size
    is then `rows_in_split`)."""
    if hf_repo:
        return {"source": "hf", "dataset": hf_repo, "generated": False}
    manifest = read_manifest(train_dir) if train_dir is not None else None
    if not manifest:
        return {}
    provenance = manifest.get("provenance") or {}
    raw = provenance.get("raw_source") or {}
    source = raw.get("source")
    rows = manifest.get("rows")
    capped = max_rows is not None and isinstance(rows, int) and rows > max_rows  # what trained, not what was there
    return {"source": source, "generated": source == GENERATED_SOURCE,
            **({"rows_in_split": rows} if capped else {}),
            "dataset": None if source == GENERATED_SOURCE else raw.get("dataset"),
            "layout": provenance.get("layout_description"), "camera_frames": provenance.get("camera_frames"),
            "rows": max_rows if capped else rows,
            "preprocessing": manifest.get("preprocessing") or {}}


def add_training_data(card_path: Path, facts: dict[str, Any]) -> dict[str, Any]:
    """model_card.json with `training_data` added (rewritten atomically); returns the card."""
    card = loads_json(card_path.read_text(encoding="utf-8"))
    card["training_data"] = facts
    write_json_atomic(card_path, card)
    return card
