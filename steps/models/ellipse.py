"""EllipseRegressionNet: normalized pupil ellipse (cx, cy, rx, ry) from a 400x640 frame.

The same stem and EfficientViT stages as TinyEfficientViTSeg, a small top-down neck to 1/8
resolution, and a pupil map (refined to 1/4) whose moments are the ellipse:

- the neck predicts, per cell, the fraction of the cell that is pupil (a sigmoid), trained against
  the label's own fraction (`steps.train.losses.pupil_fractions`: cross-entropy + Dice) besides the
  ellipse loss; cells are 8x8 pixels, refined to 4x4 from the stem's 1/4 skip (`LogitRefine`, as the
  segmentation model's logit); only cells within `window_px` of the pupil count (`pupil_window`);
- the centre is the map's centroid; the radii come from its second moments: a filled ellipse with
  semi-axes a >= b has covariance eigenvalues a^2/4 and b^2/4. rx, ry are the minor and major
  semi-axes, the dataset's order (cv2.fitEllipse returns width <= height);
- so centre and radii follow the pupil under scale and translation by construction: a pooled MLP
  head (the previous design) predicted 28.4 to 29.6 px while zooming moved the true radius from 27
  to 40 px;
- `angle_output` adds (cos 2t, sin 2t) of the major axis, from the same moments.

In training mode the model returns (ellipse, pupil-map logits), so the loss can supervise the map;
in eval mode (and in ONNX) only the ellipse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from steps.data.frames import IMAGE_HEIGHT, IMAGE_WIDTH, MAX_RADIUS
from steps.models.efficientvit import EfficientViTEncoder, EfficientViTEncoderConfig, LogitRefine
from steps.models.layers import ConvBN, SeparableConv, init_weights, upsample_to
from steps.models.registry import ELLIPSE_OUTPUTS, ModelSpec, make_config, register_model


@dataclass(frozen=True)
class EllipseRegressionConfig(EfficientViTEncoderConfig):
    embed_dim: tuple[int, int, int] = (12, 20, 28)
    num_heads: tuple[int, int, int] = (1, 2, 2)
    neck_dim: int = 16
    map_prior: float = 0.01     # initial pupil fraction of every cell
    map_floor: float = 0.05     # cell fractions below it carry no mass in the moments (map_moments)
    window_px: float = 120.0    # only cells this near the pupil count (pupil_window; 0: the whole map)
    map_refine_dim: int = 8     # refine the 1/8 map at 1/4 from the stem's 1/4 skip (LogitRefine; 0: off)
    angle_output: bool = True   # also return (cos 2t, sin 2t) of the major axis: (B, 6); False: the seed's (B, 4)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.map_prior < 1 or not 0 <= self.map_floor < 1:
            raise ValueError(f"map_prior/map_floor: expected fractions in (0, 1) and [0, 1), got "
                             f"{self.map_prior}, {self.map_floor}")


# The dataset's radii are cv2.fitEllipse on the mask's contour (boundary pixel centres): on 60 random
# ellipses (radii 12-55 px) they were 0.55 px smaller than the radii from the moments of the exact
# 1/8 cell fractions with the default map_floor (0.85 px with no floor); each within 0.6 px of the fit
# once this is subtracted.
CONTOUR_OFFSET_PX = 0.55
FLOOR_TRACE = 1e-4  # weight of the unfloored fractions in the moments (map_moments)


def cell_centres(fractions: torch.Tensor, frame_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates (pixel-centre convention, as cv2) of the map's cell centres: xs (w,), ys (h,)."""
    height, width = frame_size
    cell_h, cell_w = height / fractions.shape[-2], width / fractions.shape[-1]
    ys = (torch.arange(fractions.shape[-2], device=fractions.device, dtype=fractions.dtype) + 0.5) * cell_h - 0.5
    xs = (torch.arange(fractions.shape[-1], device=fractions.device, dtype=fractions.dtype) + 0.5) * cell_w - 0.5
    return xs, ys


def centroid(weights: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, 1, h, w) cell weights -> their centroid in pixels (cx, cy) and total mass, each (B,)."""
    mass = weights.flatten(1).sum(dim=1).clamp_min(1e-6)
    cx = (weights.sum(dim=-2) * xs).flatten(1).sum(dim=1) / mass
    cy = (weights.sum(dim=-1) * ys).flatten(1).sum(dim=1) / mass
    return cx, cy, mass


def pupil_window(fractions: torch.Tensor, logits: torch.Tensor, frame_size: tuple[int, int],
                 radius_px: float, rounds: int = 2) -> torch.Tensor:
    """(B, 1, h, w) weights ~1 within `radius_px` of the pupil, ~0 beyond (a sigmoid edge of 8 px).

    The first centre is the soft-argmax of the logits (softmax over cells: the most confident
    cells); each round re-centres on the windowed fractions' centroid. A false-positive blob far
    from the pupil (dark lens border, a lash clump) then carries no mass into the moments.
    """
    xs, ys = cell_centres(fractions, frame_size)
    weights = logits.flatten(1).softmax(dim=1).unflatten(1, fractions.shape[-2:])
    window = torch.ones_like(fractions)
    for _ in range(rounds):
        cx, cy, _ = centroid(weights, xs, ys)
        distance = torch.sqrt((xs[None, None, None, :] - cx[:, None, None, None]) ** 2
                              + (ys[None, None, :, None] - cy[:, None, None, None]) ** 2 + 1e-6)
        window = torch.sigmoid((radius_px - distance) / 8.0)
        weights = fractions * window
    return window


Moments = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def map_moments(fractions: torch.Tensor, frame_size: tuple[int, int], floor: float = 0.0) -> Moments:
    """(B, 1, h, w) pupil fractions of the cells -> centroid (cx, cy) and covariance (sxx, syy, sxy) in
    pixels (pixel-centre coordinates, as cv2), each (B,); a cell's mass sits at its centre.

    Fractions below `floor` count as 0 (the rest rescaled to [0, 1]): a sigmoid map leaves every
    background cell a little mass, and 4,000 cells at 0.005 outweigh a 38-cell pupil; cross-entropy
    alone pushes them down only slowly (its gradient vanishes with the probability).
    """
    unfloored = fractions
    if floor:
        fractions = torch.relu(fractions - floor) / (1.0 - floor)
    xs, ys = cell_centres(fractions, frame_size)
    # The centroid adds a trace of the unfloored map: with no cell above the floor (a faint pupil
    # cut by the frame edge) it would fall to (0, 0), 650 px off; the trace then places it, radii 0.
    # Beside any floored cell the trace weighs nothing. The spread comes from the floored map alone.
    cx, cy, _ = centroid(fractions + FLOOR_TRACE * unfloored, xs, ys)
    mass = fractions.flatten(1).sum(dim=1).clamp_min(1e-6)
    rows, cols = fractions[:, 0].sum(dim=2), fractions[:, 0].sum(dim=1)  # (B, h), (B, w)
    dx, dy = xs[None, :] - cx[:, None], ys[None, :] - cy[:, None]  # (B, w), (B, h)
    sxx = (cols * dx * dx).sum(dim=1) / mass
    syy = (rows * dy * dy).sum(dim=1) / mass
    sxy = torch.einsum("bhw,bh,bw->b", fractions[:, 0], dy, dx) / mass
    return cx, cy, sxx, syy, sxy


def ellipse_from_moments(cx: torch.Tensor, cy: torch.Tensor, sxx: torch.Tensor, syy: torch.Tensor,
                         sxy: torch.Tensor, angle: bool = False) -> torch.Tensor:
    """Normalized (cx, cy, minor, major) [+ (cos 2t, sin 2t) of the major axis] from pixel moments."""
    half_sum, half_diff = (sxx + syy) / 2, (sxx - syy) / 2
    spread = torch.sqrt(half_diff * half_diff + sxy * sxy + 1e-12)
    minor = (2 * torch.sqrt((half_sum - spread).clamp_min(1e-6)) - CONTOUR_OFFSET_PX).clamp_min(0)
    major = (2 * torch.sqrt((half_sum + spread).clamp_min(1e-6)) - CONTOUR_OFFSET_PX).clamp_min(0)
    values = [cx / IMAGE_WIDTH, cy / IMAGE_HEIGHT, minor / MAX_RADIUS, major / MAX_RADIUS]
    if angle:
        # A near-circle has no orientation: below 1 px^2 of spread the vector shortens towards (0, 0)
        # instead of amplifying rounding (onnxruntime gave NaN for 0 / 0 where PyTorch gave 0).
        unit = spread.clamp_min(1.0)
        values += [half_diff / unit, sxy / unit]
    return torch.stack(values, dim=1)


class EllipseRegressionNet(nn.Module):
    """(B, in_chans, H, W) float -> (B, 4) normalized (cx, cy, rx, ry), (B, 6) with the angle."""

    def __init__(self, config: EllipseRegressionConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.neck_dim
        self.encoder = EfficientViTEncoder(config)
        self.stage_laterals = nn.ModuleList(ConvBN(c, dim) for c in config.embed_dim)
        self.fuse = SeparableConv(dim, dim)
        self.skip_lateral = ConvBN(config.stem_dims[-1], dim)
        self.refine = SeparableConv(dim, dim)
        self.pupil_map = nn.Conv2d(dim, 1, 1)
        self.map_refine = (LogitRefine(config.stem_dims[-2], config.map_refine_dim)
                           if config.map_refine_dim and len(config.stem_dims) > 1 else None)
        init_weights(self)
        nn.init.constant_(cast(torch.Tensor, self.pupil_map.bias), math.log(config.map_prior / (1 - config.map_prior)))

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Multi-scale features: the stem's skips, then the stages at 1/16, 1/32, 1/64."""
        return self.encoder(x)

    def forward_map(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Pupil-fraction logits per cell: at 1/8, refined to 1/4 where the stem has a 1/4 skip."""
        skip8, stages = features[-4], features[-3:]
        x = self.stage_laterals[2](stages[2])
        for lateral, stage in ((self.stage_laterals[1], stages[1]), (self.stage_laterals[0], stages[0])):
            x = upsample_to(x, stage) + lateral(stage)
        x = self.fuse(x)
        logits = self.pupil_map(self.refine(upsample_to(x, skip8) + self.skip_lateral(skip8)))
        return logits if self.map_refine is None else self.map_refine(logits, features[-5])

    def forward_head(self, map_logits: torch.Tensor, frame_size: tuple[int, int]) -> torch.Tensor:
        """The ellipse of the pupil map (no learned weights: moments only)."""
        fractions = torch.sigmoid(map_logits)
        if self.config.window_px:
            fractions = fractions * pupil_window(fractions, map_logits, frame_size, self.config.window_px)
        moments = map_moments(fractions, frame_size, self.config.map_floor)
        return ellipse_from_moments(*moments, angle=self.config.angle_output)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        logits = self.forward_map(self.forward_features(x))
        ellipse = self.forward_head(logits, (int(x.shape[-2]), int(x.shape[-1])))
        return (ellipse, logits) if self.training else ellipse


DEFAULT = register_model(ModelSpec(
    "ellipse_regression", "EllipseRegressionNet", "ellipse", build=EllipseRegressionNet,
    config=EllipseRegressionConfig(), checkpoint_stem="ellipse_model", parameter_limit=60_000,
    outputs=(*ELLIPSE_OUTPUTS, "cos_2theta", "sin_2theta")))
DEFAULT_CONFIG = DEFAULT.config


def ellipse_regression(**overrides: Any) -> EllipseRegressionNet:
    """EllipseRegressionNet: EfficientViT encoder + a 1/4 pupil map whose moments are the ellipse."""
    return EllipseRegressionNet(make_config(EllipseRegressionConfig, DEFAULT_CONFIG, overrides))
