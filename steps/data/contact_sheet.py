"""A contact sheet of generated frames beside real ones, with the pupil label outlined.

    python -m steps.data.contact_sheet --output docs/contact_sheet.png [--real DIR] [--frames 10]

Generated frames come from steps.data.synthetic (seed 0, train split); real frames (evaluation only)
from any folder steps.data.openeds recognises, e.g. ../shared/fixtures/openeds-sample.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from steps.data.openeds import find_openeds, read_frame
from steps.data.synthetic import render_indexed_frame

TILE = (192, 120)  # width, height: 640x400 frames at 0.3
COLUMNS = 5
GREEN, WHITE = (60, 220, 60), (255, 255, 255)


def tile(image: np.ndarray, label: np.ndarray, caption: str) -> np.ndarray:
    view = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    contours, _ = cv2.findContours((label == 3).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(view, contours, -1, GREEN, 2)
    view = cv2.resize(view, TILE, interpolation=cv2.INTER_AREA)
    cv2.putText(view, caption, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.38, WHITE, 1, cv2.LINE_AA)
    return view


def grid(tiles: list[np.ndarray]) -> np.ndarray:
    blank = np.zeros_like(tiles[0])
    tiles = tiles + [blank] * (-len(tiles) % COLUMNS)
    return np.vstack([np.hstack(tiles[k:k + COLUMNS]) for k in range(0, len(tiles), COLUMNS)])


def real_tiles(folder: Path, limit: int) -> list[np.ndarray]:
    frames = [f for split in find_openeds(folder).splits.values() for f in split if f.label is not None][:limit]
    tiles = []
    for frame in frames:
        image, label = read_frame(frame)
        if label is not None:  # the frames were chosen for having one
            tiles.append(tile(image, label, f"real {frame.image.stem}"))
    return tiles


def contact_sheet(frames: int, real: Path | None) -> np.ndarray:
    """Generated frames (pupil outlined), then a row of real frames when `real` is given."""
    sheet = grid([tile(*render_indexed_frame(0, "train", k, 0.05), f"generated {k}") for k in range(frames)])
    if real is not None:
        band = np.full((6, sheet.shape[1], 3), 255, np.uint8)
        sheet = np.vstack([sheet, band, grid(real_tiles(real, COLUMNS))])
    return sheet


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--real", type=Path, default=None, help="labelled real frames to show below")
    parser.add_argument("--frames", type=int, default=10)
    args = parser.parse_args(argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    # A 256-colour palette keeps the README's PNG small (noise makes full-colour PNGs large).
    sheet = Image.fromarray(cv2.cvtColor(contact_sheet(args.frames, args.real), cv2.COLOR_BGR2RGB))
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(args.output, optimize=True)


if __name__ == "__main__":
    main()
