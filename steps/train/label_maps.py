"""Spatial weights and signed distance maps of a batch of labels, computed where the batch is.

A compact training row stores only the uint8 image, the uint8 label and the ellipse (0.51 MB
instead of the spec row's 3.58 MB); so does any row whose label a geometric augmentation moved (the
stored maps no longer match it). The segmentation loss still needs the spec's maps, so they are
derived per batch after the copy to the device:

- on the CPU: `steps.data.transforms` row by row (OpenCV's exact EDT and Gaussian): the very values
  preprocess would have stored, bit for bit;
- on other devices: `torch_label_maps`, the same definitions in torch ops on the whole batch. The
  distance transform is exact (separable: nearest feature per column by a running max of indices,
  then the exact minimum of g(y') + (y - y')^2 over every row y', in chunks that bound memory);
  the Gaussian differs from OpenCV's only by float summation order. Tests hold it to the OpenCV
  values within 1e-4 on CPU tensors.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from steps.data import transforms
from steps.data.frames import IMAGE_DIAGONAL

# Elements of the (lines, H, H) candidate tensor per EDT chunk: ~256 MB of float32.
_EDT_CHUNK_ELEMENTS = 64 * 1024 * 1024


def label_maps(label: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """0/1 labels (B, H, W) -> (spatial weights (B, H, W), distance maps (B, 2, H, W)), float32, on
    the labels' device. Raises transforms.SampleError for a label that is all pupil."""
    if label.device.type == "cpu":
        return opencv_label_maps(label, sigma)
    return torch_label_maps(label, sigma)


def opencv_label_maps(label: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    masks = label.to(torch.uint8).contiguous().numpy()
    weights = np.empty(masks.shape, np.float32)
    distances = np.empty((masks.shape[0], transforms.DIST_CLASSES, *masks.shape[1:]), np.float32)
    for k, mask in enumerate(masks):
        weights[k] = transforms.spatial_weights(mask, sigma)
        distances[k] = transforms.signed_distance_maps(mask)
    return torch.from_numpy(weights), torch.from_numpy(distances)


def _column_distance_squared(features: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool -> squared distance along each column to its nearest feature (inf: none)."""
    height = features.shape[1]
    rows = torch.arange(height, device=features.device, dtype=torch.float32).view(1, -1, 1)
    far = float(4 * height)  # farther than any real feature; squared it stays exact in float32
    above = torch.where(features, rows, -far).cummax(dim=1).values
    below = torch.where(features, rows, far).flip(1).cummin(dim=1).values.flip(1)
    nearest = torch.minimum(rows - above, below - rows)
    return torch.where(nearest >= far / 2, torch.inf, nearest.square())


def exact_edt(features: torch.Tensor) -> torch.Tensor:
    """Euclidean distance from every pixel to the nearest True pixel of `features` (B, H, W), exact
    (squared distances are integers, exact in float32); inf where a frame has no feature."""
    along_rows = _column_distance_squared(features.transpose(1, 2)).transpose(1, 2)  # nearest in the row
    batch, height, width = along_rows.shape
    lines = along_rows.transpose(1, 2).reshape(batch * width, height)  # one column of the frame each
    offsets = torch.arange(height, device=features.device, dtype=torch.float32)
    squared_offsets = (offsets.view(-1, 1) - offsets.view(1, -1)).square()  # [y, y']
    out = torch.empty_like(lines)
    chunk = max(1, _EDT_CHUNK_ELEMENTS // (height * height))
    for start in range(0, lines.shape[0], chunk):
        part = lines[start:start + chunk]
        out[start:start + chunk] = (part.unsqueeze(1) + squared_offsets).amin(dim=2)  # min over y'
    return out.view(batch, width, height).transpose(1, 2).sqrt()


def _gaussian_kernel(sigma: float, device: torch.device) -> torch.Tensor:
    size = transforms.gaussian_ksize(sigma)
    kernel = cv2.getGaussianKernel(size, sigma, cv2.CV_32F).reshape(-1)
    return torch.from_numpy(np.ascontiguousarray(kernel)).to(device)


def _symmetric_pad(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """OpenCV's BORDER_REFLECT ("cba|abc"), which torch's pad modes lack."""
    first, last = x.narrow(dim, 0, radius).flip(dim), x.narrow(dim, x.shape[dim] - radius, radius).flip(dim)
    return torch.cat([first, x, last], dim=dim)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian of (B, H, W) with OpenCV's kernel and reflect border."""
    kernel = _gaussian_kernel(sigma, x.device)
    radius = kernel.numel() // 2
    rows = F.conv2d(_symmetric_pad(x.unsqueeze(1), radius, 3), kernel.view(1, 1, 1, -1))
    return F.conv2d(_symmetric_pad(rows, radius, 2), kernel.view(1, 1, -1, 1)).squeeze(1)


def _cross_extreme(mask: torch.Tensor, largest: bool) -> torch.Tensor:
    """Dilation (largest) or erosion of a (B, H, W) float mask by the 3x3 cross, zero outside."""
    padded = F.pad(mask, (1, 1, 1, 1))
    neighbours = torch.stack([padded[:, 1:-1, 1:-1], padded[:, :-2, 1:-1], padded[:, 2:, 1:-1],
                              padded[:, 1:-1, :-2], padded[:, 1:-1, 2:]])
    return neighbours.amax(0) if largest else neighbours.amin(0)


def torch_label_maps(label: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`label_maps` in torch ops on the whole batch (any device)."""
    pupil = label != 0
    if bool(pupil.flatten(1).all(dim=1).any()):
        raise transforms.SampleError("pupil mask covers the whole frame: its outside distance is undefined")
    mask = pupil.float()
    gradient = _cross_extreme(mask, largest=True) - _cross_extreme(mask, largest=False)
    weights = _gaussian_blur(gradient, sigma)
    # Outside the pupil: distance to the nearest pupil pixel; inside: minus the distance to the
    # nearest background pixel. A frame without pupil has no outside distance: zero, like no boundary.
    outside = torch.nan_to_num(exact_edt(pupil), posinf=0.0)
    inside = exact_edt(~pupil)
    pupil_channel = torch.where(pupil, -inside, outside) * float(np.float32(1.0 / IMAGE_DIAGONAL))
    return weights, torch.stack([-pupil_channel, pupil_channel], dim=1)
