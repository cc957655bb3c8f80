"""EllipseRegressionNet: normalized pupil ellipse (cx, cy, rx, ry) from a 400x640 frame.

The original network ran its first dense block at full resolution (0.5 training images/s, 77 ms per
frame on CPU). This one downsamples first: the same conv stem and EfficientViT stages as
TinyEfficientViTSeg (stride 2 from the first layer), a small top-down neck to 1/8 resolution, and a
pooled head:

- centre: a one-channel heatmap at 1/8 resolution, softmax over positions, and the expected position
  (soft-argmax). cx, cy are in [0, 1] by construction and keep the spatial precision that global
  average pooling throws away (a pooled vector does not know where things are);
- radii: features pooled with the same softmax weights (what the network sees at the pupil) plus
  the globally pooled deepest stage, through a small MLP; a sigmoid mapped to [radius_min,
  radius_scale] keeps them positive (even when the sigmoid saturates) and small (normalized by half
  the image diagonal, as the dataset's rx, ry).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from steps.models.efficientvit import EfficientViTEncoder, EfficientViTEncoderConfig
from steps.models.layers import ConvBN, SeparableConv, init_weights, upsample_to
from steps.models.registry import ModelSpec, make_config, register_model


@dataclass(frozen=True)
class EllipseRegressionConfig(EfficientViTEncoderConfig):
    embed_dim: tuple[int, int, int] = (12, 20, 28)
    num_heads: tuple[int, int, int] = (1, 2, 2)
    neck_dim: int = 16
    radius_hidden: int = 32
    radius_min: float = 0.002   # radii in [radius_min, radius_scale] of half the diagonal: ~0.75 to ~189 px
    radius_scale: float = 0.5
    radius_prior: float = 0.1   # initial radius prediction (~38 px), a typical pupil

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.radius_min < self.radius_prior < self.radius_scale:
            raise ValueError(f"radius_prior: expected radius_min ({self.radius_min}) < radius_prior < radius_scale "
                             f"({self.radius_scale}), got {self.radius_prior}")


def soft_argmax(heatmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, 1, H, W) logits -> (weights (B, H*W), x (B,), y (B,)) with x, y in [0, 1] (cell centres)."""
    height, width = heatmap.shape[-2:]
    weights = heatmap.flatten(1).softmax(dim=1)
    grid = weights.unflatten(1, (height, width))
    xs = (torch.arange(width, device=heatmap.device, dtype=heatmap.dtype) + 0.5) / width
    ys = (torch.arange(height, device=heatmap.device, dtype=heatmap.dtype) + 0.5) / height
    return weights, (grid.sum(dim=1) * xs).sum(dim=1), (grid.sum(dim=2) * ys).sum(dim=1)


class EllipseRegressionNet(nn.Module):
    """(B, in_chans, H, W) float -> (B, 4) normalized (cx, cy, rx, ry)."""

    def __init__(self, config: EllipseRegressionConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.neck_dim
        self.encoder = EfficientViTEncoder(config)
        self.stage_laterals = nn.ModuleList(ConvBN(c, dim) for c in config.embed_dim)
        self.fuse = SeparableConv(dim, dim)
        self.skip_lateral = ConvBN(config.stem_dims[2], dim)
        self.refine = SeparableConv(dim, dim)
        self.heatmap = nn.Conv2d(dim, 1, 1)
        # No BatchNorm1d here: a last training batch of one row would make it raise.
        self.radius_head = nn.Sequential(nn.Linear(dim + config.embed_dim[2], config.radius_hidden), nn.ReLU(),
                                         nn.Linear(config.radius_hidden, 2))
        init_weights(self)
        nn.init.zeros_(self.heatmap.weight)  # start from a uniform heatmap: the centre predicts (0.5, 0.5)
        prior = (config.radius_prior - config.radius_min) / (config.radius_scale - config.radius_min)
        nn.init.constant_(cast(nn.Linear, self.radius_head[-1]).bias, _logit(prior))

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Multi-scale features: stem skips at 1/2, 1/4, 1/8 and the stages at 1/16, 1/32, 1/64."""
        return self.encoder(x)

    def forward_head(self, features: list[torch.Tensor]) -> torch.Tensor:
        skip8, stages = features[2], features[3:]
        x = self.stage_laterals[2](stages[2])
        for lateral, stage in ((self.stage_laterals[1], stages[1]), (self.stage_laterals[0], stages[0])):
            x = upsample_to(x, stage) + lateral(stage)
        x = self.fuse(x)
        x = self.refine(upsample_to(x, skip8) + self.skip_lateral(skip8))  # (B, dim, H/8, W/8)
        weights, cx, cy = soft_argmax(self.heatmap(x))
        at_pupil = (x.flatten(2) @ weights.unsqueeze(2)).squeeze(2)  # (B, dim): features where the centre is
        context = stages[2].mean(dim=(2, 3))
        low, high = self.config.radius_min, self.config.radius_scale
        radii = low + (high - low) * torch.sigmoid(self.radius_head(torch.cat([at_pupil, context], dim=1)))
        return torch.cat([cx[:, None], cy[:, None], radii], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


DEFAULT = register_model(ModelSpec(
    "ellipse_regression", "EllipseRegressionNet", "ellipse", build=EllipseRegressionNet,
    config=EllipseRegressionConfig(), checkpoint_stem="ellipse_model", parameter_limit=60_000))
DEFAULT_CONFIG = DEFAULT.config


def ellipse_regression(**overrides: Any) -> EllipseRegressionNet:
    """EllipseRegressionNet: downsampling EfficientViT encoder + soft-argmax centre and pooled radius head."""
    return EllipseRegressionNet(make_config(EllipseRegressionConfig, DEFAULT_CONFIG, overrides))
