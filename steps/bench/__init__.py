"""Benchmarks: each figure is measured beside a reference path in the same run and shown as a ratio.

Each module here exposes `measure(quick: bool = False) -> list[BenchRow]`; `python -m steps.bench`
runs them all and prints one table (and writes it as JSON).
"""

from __future__ import annotations

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
