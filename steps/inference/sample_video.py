"""A short video of generated eye frames (steps.data.synthetic), to try predict on a video.

    python -m steps.inference.sample_video OUT.mp4 [--frames 24] [--fps 8] [--width 640 --height 400]

The frames are drawn from their own stream ("demo"), so none of them is a training frame.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2

from steps.data.synthetic import render_indexed_frame

DEMO_STREAM = "demo"


def write_generated_video(path: Path, frames: int = 24, fps: float = 8.0, size: tuple[int, int] | None = None,
                          seed: int = 0) -> Path:
    """An mp4v video of `frames` generated 640x400 frames (resized to `size` = (width, height))."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    for index in range(frames):
        image, _ = render_indexed_frame(seed, DEMO_STREAM, index, closed_fraction=0.0)
        if size is not None:
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        if writer is None:
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (image.shape[1], image.shape[0]))
        writer.write(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    if writer is not None:
        writer.release()
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m steps.inference.sample_video", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    size = (args.width, args.height) if args.width and args.height else None
    print(write_generated_video(args.out, args.frames, args.fps, size, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
