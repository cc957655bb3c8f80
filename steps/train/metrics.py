"""Training and validation metrics, accumulated on the compute device and read once per epoch.

- `ConfusionMatrix`: segmentation IoU over the whole epoch (a device tensor of counts), as in
  torchvision's segmentation reference: per-class IoU and mIoU come from the summed matrix, never
  from per-batch averages.
- `RunningMeans`: weighted sums of scalar tensors (losses and their components).
- ellipse metrics: center error and radius error in pixels, and the IoU of the two axis-aligned
  ellipses rasterized on the 400x640 frame. `validate` imports these names.

Each accumulator has `reduce_()` (sum across DDP ranks), `state_dict()`/`load_state_dict()` (a
mid-epoch resume point keeps the partial epoch).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from steps.data.frames import IMAGE_HEIGHT, IMAGE_WIDTH, MAX_RADIUS
from steps.train.distributed import all_reduce_sum

# (cx, cy, rx, ry) are stored as fractions of these (preprocess's normalization).
ELLIPSE_SCALE = (float(IMAGE_WIDTH), float(IMAGE_HEIGHT), MAX_RADIUS, MAX_RADIUS)
# Rasterize this many ellipses at a time: bounds memory at about 16 x 400 x 640 floats.
ELLIPSE_CHUNK = 16


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

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        self.sums = {k: v.to(self.device) for k, v in state["sums"].items()}
        self.count = state["count"].to(self.device)


# -- ellipses -------------------------------------------------------------------------------------

def denormalize_ellipse(params: torch.Tensor) -> torch.Tensor:
    """(N, 4) normalized (cx, cy, rx, ry) -> pixels."""
    return params.to(torch.float32) * params.new_tensor(ELLIPSE_SCALE, dtype=torch.float32)


def rasterize_ellipses(pixels: torch.Tensor, height: int = IMAGE_HEIGHT, width: int = IMAGE_WIDTH) -> torch.Tensor:
    """(N, 4) pixel ellipses -> (N, H, W) bool masks; a pixel is inside when its center is."""
    ys = torch.arange(height, device=pixels.device, dtype=torch.float32).view(1, height, 1) + 0.5
    xs = torch.arange(width, device=pixels.device, dtype=torch.float32).view(1, 1, width) + 0.5
    cx, cy, rx, ry = (pixels[:, i].view(-1, 1, 1) for i in range(4))
    rx, ry = rx.clamp_min(1e-6), ry.clamp_min(1e-6)  # a negative or zero radius is an empty ellipse
    return ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1.0


def ellipse_iou(pred_pixels: torch.Tensor, target_pixels: torch.Tensor) -> torch.Tensor:
    """(N,) IoU of axis-aligned ellipses inside the frame (1.0 when both are empty)."""
    scores = []
    for start in range(0, pred_pixels.shape[0], ELLIPSE_CHUNK):
        pred = rasterize_ellipses(pred_pixels[start:start + ELLIPSE_CHUNK])
        target = rasterize_ellipses(target_pixels[start:start + ELLIPSE_CHUNK])
        inter = (pred & target).sum(dim=(1, 2)).to(torch.float32)
        union = (pred | target).sum(dim=(1, 2)).to(torch.float32)
        scores.append(torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union)))
    return torch.cat(scores) if scores else pred_pixels.new_zeros(0)


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
