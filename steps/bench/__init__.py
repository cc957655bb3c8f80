"""Benchmarks: each figure is measured beside a reference path in the same run and shown as a ratio.

Each module here exposes `measure(quick: bool = False) -> list[BenchRow]`; `python -m steps.bench`
runs them all and prints one table (and writes it as JSON).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass


@dataclass
class BenchRow:
    area: str            # "preprocess", "loader", "train", "onnx"
    metric: str          # e.g. "images/s (TinyEfficientViT, batch 8)"
    project: float       # the project's path
    reference: float     # the reference path, measured in the same run
    reference_name: str  # what the reference is
    higher_is_better: bool = True
    note: str = ""

    @property
    def ratio(self) -> float:
        """How many times better the project's path is than the reference (>1 is better)."""
        if self.project == 0 or self.reference == 0:
            return float("nan")
        return self.project / self.reference if self.higher_is_better else self.reference / self.project

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


def format_table(rows: list[BenchRow]) -> str:
    header = f"{'area':10s} {'metric':44s} {'project':>11s} {'reference':>11s} {'ratio':>7s}  reference path"
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(f"{row.area:10s} {row.metric:44s} {row.project:11.2f} {row.reference:11.2f} "
                     f"{row.ratio:6.2f}x  {row.reference_name}{'  ' + row.note if row.note else ''}")
    return "\n".join(lines)


def area_main(module: str, doc: str | None, measure: Callable[..., list[BenchRow]], quick_help: str,
              size_option: tuple[str, str] | None = None, argv: Sequence[str] | None = None) -> int:
    """`python -m steps.bench.<area> [--quick] [--<size> N]`: one area's rows as a table.

    `size_option` is (name, help) of an optional integer passed to `measure` under that name."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=(doc or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    if size_option is not None:
        parser.add_argument(f"--{size_option[0]}", type=int, default=None, help=size_option[1])
    args = vars(parser.parse_args(argv))
    print(f"cores: {os.cpu_count()}")
    print(format_table(measure(**args)))
    return 0
