"""The previous default segmentation architecture, as config overrides of `tiny_efficientvit`.

Until the latency redesign the default model had a conv stem of three stride-2 3x3 convs (8, 8, 16
channels at 1/2, 1/4, 1/8) and global attention in all three stages. The benchmarks build it beside
today's default in the same run, so the speed-up of the redesign is a measured ratio, not a figure
remembered from an older run.
"""

from __future__ import annotations

from typing import Any

PREVIOUS_NAME = "previous default (conv stem, attention at 1/16)"
PREVIOUS_DEFAULT: dict[str, Any] = {"stem": "conv", "stem_dims": (8, 8, 16),
                                    "mixers": ("attention", "attention", "attention")}
