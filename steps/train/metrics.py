"""Training and validation metrics, accumulated on the compute device and read once per epoch.

- `ConfusionMatrix`: segmentation IoU over the whole epoch (a device tensor of counts), as in
  torchvision's segmentation reference: per-class IoU and mIoU come from the summed matrix, never
  from per-batch averages.
- `RunningMeans`: weighted sums of scalar tensors (losses and their components).
- ellipse metrics: center error and radius error in pixels, and the IoU of the two axis-aligned
  ellipses inside the 400x640 frame. `validate` imports these names.

Each accumulator has `reduce_()` (sum across DDP ranks), `state_dict()`/`load_state_dict()` (a
mid-epoch resume point keeps the partial epoch).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from steps.data.frames import IMAGE_HEIGHT, IMAGE_WIDTH, MAX_RADIUS
from steps.train.distributed import all_reduce_sum

# (cx, cy, rx, ry) are stored as fractions of these (preprocess's normalization).
ELLIPSE_SCALE = (float(IMAGE_WIDTH), float(IMAGE_HEIGHT), MAX_RADIUS, MAX_RADIUS)
# Grid points per axis over the union's bounding box when measuring ellipse IoU.
ELLIPSE_IOU_SAMPLES = 128


def predicted_classes(logits: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) logits -> (B, H, W) class map, as argmax (ties go to the lower class).

    For two classes a comparison gives the same map about 30x faster than argmax on CPU (argmax
    over a short, strided class dimension is slow there).
    """
    if logits.shape[1] == 2:
        return (logits[:, 1] > logits[:, 0]).to(torch.int64)
    return logits.argmax(dim=1)


class ConfusionMatrix:
    """Rows: target class, columns: predicted class; counts kept as an int64 tensor on `device`."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu"):
        self.num_classes = num_classes
        self.matrix = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of predicted and target class maps (same shape, integer classes)."""
        n = self.num_classes
        index = target.reshape(-1).to(torch.int64) * n + pred.reshape(-1).to(torch.int64)
        self.matrix += torch.bincount(index, minlength=n * n).reshape(n, n)

    def reset(self) -> None:
        self.matrix.zero_()

    def reduce_(self) -> None:
        all_reduce_sum(self.matrix)

    def compute(self) -> dict[str, float | list[float]]:
        """mIoU (over classes present in target or prediction), per-class IoU, pixel accuracy."""
        counts = self.matrix.double().cpu()
        true_positive = counts.diag()
        union = counts.sum(0) + counts.sum(1) - true_positive
        iou = true_positive / union  # nan for a class absent from both target and prediction
        present = ~torch.isnan(iou)
        total = counts.sum()
        return {
            "miou": float(iou[present].mean()) if present.any() else float("nan"),
            "iou_per_class": [float(v) for v in iou],
            "pixel_acc": float(true_positive.sum() / total) if total > 0 else float("nan"),
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"matrix": self.matrix.cpu()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.matrix.copy_(state["matrix"])


class RunningMeans:
    """Weighted means of named scalar tensors; the sums stay on the device until `compute`."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.sums: dict[str, torch.Tensor] = {}
        self.count = torch.zeros((), dtype=torch.float64, device=self.device)

    def add_sums(self, sums: Mapping[str, torch.Tensor], count: int) -> None:
        """Add per-name sums over `count` samples."""
        for name, value in sums.items():
            term = value.detach().to(torch.float64).sum()
            self.sums[name] = self.sums[name] + term if name in self.sums else term
        self.count += count

    def add_means(self, means: Mapping[str, torch.Tensor], count: int) -> None:
        """Add per-name means over a batch of `count` samples (e.g. a batch's losses)."""
        self.add_sums({name: value.detach().to(torch.float64) * count for name, value in means.items()}, count)

    def reduce_(self) -> None:
        """Sum across ranks in one collective (names sorted, so every rank packs the same order)."""
        names = sorted(self.sums)
        packed = torch.stack([self.sums[n] for n in names] + [self.count])
        all_reduce_sum(packed)
        self.sums = dict(zip(names, packed[:-1]))
        self.count = packed[-1]

    def compute(self) -> dict[str, float]:
        names = sorted(self.sums)
        if not names:
            return {}
        host = torch.stack([self.sums[n] for n in names] + [self.count]).cpu()  # one copy
        count = float(host[-1])
        return {n: float(v) / count if count else float("nan") for n, v in zip(names, host[:-1])}

    def state_dict(self) -> dict[str, object]:
        return {"sums": {k: v.cpu() for k, v in self.sums.items()}, "count": self.count.cpu()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sums = {k: v.to(self.device) for k, v in state["sums"].items()}
        self.count = state["count"].to(self.device)


# -- ellipses -------------------------------------------------------------------------------------

def denormalize_ellipse(params: torch.Tensor) -> torch.Tensor:
    """(N, 4) normalized (cx, cy, rx, ry) -> pixels."""
    return params.to(torch.float32) * params.new_tensor(ELLIPSE_SCALE, dtype=torch.float32)


def ellipse_iou(pred_pixels: torch.Tensor, target_pixels: torch.Tensor,
                samples: int = ELLIPSE_IOU_SAMPLES) -> torch.Tensor:
    """(N,) IoU of pairs of axis-aligned (cx, cy, rx, ry) pixel ellipses, the parts inside the frame.

    Both ellipses are sampled on one `samples` x `samples` grid over the bounding box of their union
    (clipped to the frame): finer than the pixel grid for small pupils and about 16x fewer points
    than rasterizing the whole 400x640 frame, vectorized over N with no host sync. An ellipse with
    a radius <= 0 is empty; two empty ellipses have IoU 1.
    """
    if pred_pixels.shape[0] == 0:
        return pred_pixels.new_zeros(0)
    pred_pixels, target_pixels = pred_pixels.to(torch.float32), target_pixels.to(torch.float32)
    frame = pred_pixels.new_tensor([IMAGE_WIDTH, IMAGE_HEIGHT])
    both = torch.stack([pred_pixels, target_pixels])  # (2, N, 4)
    centers, radii = both[..., :2], both[..., 2:].clamp_min(0)
    low = torch.minimum(*(centers - radii)).clamp(min=0).minimum(frame)
    high = torch.maximum(*(centers + radii)).clamp(min=0).minimum(frame)
    steps = (torch.arange(samples, device=both.device, dtype=torch.float32) + 0.5) / samples
    points = low.unsqueeze(-1) + (high - low).unsqueeze(-1) * steps  # (N, 2, samples): x row, y row
    xs, ys = points[:, None, 0, None, :], points[:, None, 1, :, None]  # (N, 1, 1, S), (N, 1, S, 1)
    cx, cy, rx, ry = (both.permute(1, 0, 2)[..., i, None, None] for i in range(4))  # (N, 2, 1, 1)
    inside = (((xs - cx) / rx.clamp_min(1e-6)) ** 2 + ((ys - cy) / ry.clamp_min(1e-6)) ** 2 <= 1.0) \
        & (rx > 0) & (ry > 0)  # (N, 2, S, S)
    inter = (inside[:, 0] & inside[:, 1]).sum(dim=(1, 2)).to(torch.float32)
    union = (inside[:, 0] | inside[:, 1]).sum(dim=(1, 2)).to(torch.float32)
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def ellipse_errors(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample (N,) tensors: center distance (px), mean absolute radius error (px), ellipse IoU."""
    pred_px, target_px = denormalize_ellipse(pred.detach()), denormalize_ellipse(target.detach())
    return {
        "center_error_px": torch.linalg.vector_norm(pred_px[:, :2] - target_px[:, :2], dim=1),
        "radius_error_px": (pred_px[:, 2:] - target_px[:, 2:]).abs().mean(dim=1),
        "ellipse_iou": ellipse_iou(pred_px, target_px),
    }


def ellipse_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Means over N normalized ellipses: center_error_px, radius_error_px, ellipse_iou."""
    if pred.shape != target.shape or pred.dim() != 2 or pred.shape[1] != 4:
        raise ValueError(f"ellipse_metrics: expected two (N, 4) tensors, got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    if pred.shape[0] == 0:
        return {"center_error_px": math.nan, "radius_error_px": math.nan, "ellipse_iou": math.nan}
    return {name: float(values.mean()) for name, values in ellipse_errors(pred, target).items()}


class EllipseMetrics:
    """Epoch accumulator of the ellipse metrics (sums on the device)."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.means = RunningMeans(device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.means.add_sums(ellipse_errors(pred, target), pred.shape[0])

    def reduce_(self) -> None:
        self.means.reduce_()

    def compute(self) -> dict[str, float]:
        return self.means.compute()

    def state_dict(self) -> dict[str, object]:
        return self.means.state_dict()

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        self.means.load_state_dict(state)
