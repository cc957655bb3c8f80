"""Where predictions go: ellipses.csv and ellipses.jsonl, masks/<frame>.png, skipped.jsonl, and on
request an annotated video (annotated.mp4) or a contact sheet (contact_sheet.png)."""

from __future__ import annotations

import csv
import json
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal

import cv2

from steps.inference.annotate import VideoSink, annotate, contact_sheet, tile
from steps.inference.runner import FramePrediction
from steps.inference.sources import SourceFrame

Annotation = Literal["auto", "none", "video", "sheet", "both"]
CSV_NAME, JSONL_NAME, SKIPPED_NAME = "ellipses.csv", "ellipses.jsonl", "skipped.jsonl"
VIDEO_NAME, SHEET_NAME = "annotated.mp4", "contact_sheet.png"
COLUMNS = ("frame", "width", "height", "pupil", "cx", "cy", "rx", "ry", "angle", "confidence",
           "mask_area_px", "components", "reason", "mask")


def resolve_annotation(annotation: Annotation, kind: str) -> set[str]:
    """`auto`: a video for a video input, a contact sheet for everything else."""
    if annotation == "auto":
        return {"video" if kind == "video" else "sheet"}
    return {"video", "sheet"} if annotation == "both" else set() if annotation == "none" else {annotation}


def label(prediction: FramePrediction) -> str:
    fit = prediction.fit
    return f"{prediction.source.name}  conf {fit.confidence:.2f}" if fit.ellipse is not None else \
        f"{prediction.source.name}  no pupil"


class PredictionWriter:
    """Writes every prediction as it comes (nothing but the sheet's tiles is kept in memory)."""

    def __init__(self, out: Path, *, masks: bool = True, annotations: Collection[str] = frozenset(),
                 sheet_frames: int = 12):
        self.out, self.masks, self.sheet_frames = out, masks, sheet_frames
        if masks:
            (out / "masks").mkdir(parents=True, exist_ok=True)
        self._csv_file = open(out / CSV_NAME, "w", newline="", encoding="utf-8")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=COLUMNS)
        self._csv.writeheader()
        self._jsonl = open(out / JSONL_NAME, "w", encoding="utf-8")
        self._skipped: list[dict[str, str]] = []
        self.video = VideoSink(out / VIDEO_NAME) if "video" in annotations else None
        self.tiles: list[Any] | None = [] if "sheet" in annotations else None

    def add(self, prediction: FramePrediction) -> None:
        row = prediction.row()
        if self.masks:
            row["mask"] = f"masks/{prediction.source.name}.png"
            if not cv2.imwrite(str(self.out / row["mask"]), prediction.mask * 255):
                raise OSError(f"{self.out / row['mask']}: could not write the mask")
        self._csv.writerow({key: "" if value is None else value for key, value in row.items()})
        self._jsonl.write(json.dumps(row) + "\n")
        wants_tile = self.tiles is not None and len(self.tiles) < self.sheet_frames
        if self.video is not None or wants_tile:
            if prediction.source.image is None:
                raise ValueError(f"{prediction.source.name}: a prediction without its frame's image")
            picture = annotate(prediction.source.image, prediction.mask, prediction.ellipse, label(prediction))
            if self.video is not None:
                self.video.add(picture, prediction.source.fps)
            if wants_tile and self.tiles is not None:
                self.tiles.append(tile(picture))

    def skip(self, frame: SourceFrame) -> None:
        self._skipped.append({"frame": frame.name, "error": frame.error})

    def close(self) -> dict[str, Any]:
        """Finish every file; returns what was written (relative paths) and the skipped frames."""
        self._csv_file.close()
        self._jsonl.close()
        written = [CSV_NAME, JSONL_NAME]
        if self._skipped:
            (self.out / SKIPPED_NAME).write_text("".join(json.dumps(s) + "\n" for s in self._skipped), encoding="utf-8")
            written.append(SKIPPED_NAME)
        if self.video is not None:
            self.video.close()
            written += [VIDEO_NAME] if self.video.frames else []
        if self.tiles:
            written.append(contact_sheet(self.tiles, self.out / SHEET_NAME).name)
        return {"files": written, "skipped": self._skipped}
