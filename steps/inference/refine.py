"""Sub-pixel refinement of a segmentation's pupil ellipse against the image's own edge.

A tiny segmentation model finds the pupil reliably but places its border only to a pixel or two
(its logits are coarser than the frame). The pupil border itself is the strongest dark-to-bright
step around that first guess, so each point of the first ellipse is moved along the ellipse's
normal to where the lightly smoothed image rises fastest, and an ellipse is fitted to the moved
points, the way classical detectors fit edges, but started from the model's robust guess:
- angles where the model's mask says the inside of the ellipse is not pupil (a lid covers it) are
  skipped, so lid and lash edges never pull the fit;
- a point is dropped when its step is weak (noise, blur) or its profile on the frame holds a
  saturated glint;
- one refit after dropping points far from the first fit;
- the refined ellipse is kept only when enough points survive and it stays close to the first guess
  (centre within 5 px, radii within 20%): otherwise the first guess is returned unchanged.
The refined mask is the model's mask inside the refined ellipse, grown out to the ellipse by up to a
few pixels only at the angles where the border was measured or a glint hides it, and away from a
lid, so a pupil cut by a lid keeps the model's lid line (growing everywhere pushed that line 3 px
into the lid and cost occluded real frames 0.04 IoU), while the notch a glint cuts in the mask is
filled (the label counts the pupil under a glint).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import cv2
import numpy as np

from steps.data.transforms import Ellipse, ellipse_distance
from steps.inference.pupil import PupilFit, filled_ellipse


@dataclass(frozen=True)
class RefineParams:
    points: int = 72  # normals around the ellipse
    reach_px: float = 6.0  # how far along each normal the border is searched, both ways
    step_px: float = 0.25
    smooth_sigma: float = 1.0
    min_step: float = 3.0  # weakest accepted rise, grey levels per pixel of the smoothed image
    saturated: float = 240.0  # a profile reaching this holds a glint
    min_kept_fraction: float = 0.4  # of the points, after dropping weak and occluded ones
    max_center_shift_px: float = 5.0
    max_radius_change: float = 0.2  # relative
    grow_px: int = 3  # the model's mask is grown by this much before clipping the refined ellipse
    lid_margin_points: int = 8  # no growth within this many points of a lid (where the search may find its edge)


def _normals(ellipse: Ellipse, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Points on the ellipse (count, 2) and their outward unit normals (count, 2)."""
    t = np.linspace(0, 2 * np.pi, count, endpoint=False)
    a = math.radians(ellipse.angle)
    u, v = np.array([math.cos(a), math.sin(a)]), np.array([-math.sin(a), math.cos(a)])
    cos_t, sin_t = np.cos(t)[:, None], np.sin(t)[:, None]
    points = np.array([ellipse.cx, ellipse.cy]) + ellipse.rx * cos_t * u + ellipse.ry * sin_t * v
    normals = cos_t / ellipse.rx * u + sin_t / ellipse.ry * v
    return points, normals / np.linalg.norm(normals, axis=1, keepdims=True)


def _search_offsets(params: RefineParams) -> np.ndarray:
    """Where along a normal the border is looked for: -reach_px .. +reach_px in step_px steps."""
    return np.arange(-params.reach_px, params.reach_px + 1e-6, params.step_px, dtype=np.float32)


def _profiles(image: np.ndarray, points: np.ndarray, normals: np.ndarray, params: RefineParams) -> np.ndarray:
    """The image along each point's normal at `_search_offsets`: (points, samples)."""
    offsets = _search_offsets(params)
    coords = points[:, None, :] + offsets[None, :, None] * normals[:, None, :]
    return cv2.remap(image, coords[..., 0].astype(np.float32), coords[..., 1].astype(np.float32),
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _border_offsets(profiles: np.ndarray, glinted: np.ndarray, params: RefineParams) -> np.ndarray:
    """Per profile of the smoothed image, the signed offset of the steepest rise; NaN where it is weak
    or the profile holds a glint."""
    offsets = _search_offsets(params)
    rise = np.gradient(profiles, params.step_px, axis=1)
    best = rise[:, 1:-1].argmax(axis=1) + 1
    rows = np.arange(len(profiles))
    left, peak, right = rise[rows, best - 1], rise[rows, best], rise[rows, best + 1]
    curvature = left - 2 * peak + right
    sub = np.where(curvature < 0, 0.5 * (left - right) / np.where(curvature < 0, curvature, -1), 0.0)
    found = offsets[best] + np.clip(sub, -0.5, 0.5) * params.step_px
    return np.where((peak < params.min_step) | glinted, np.nan, found)


def _occluded(mask: np.ndarray, points: np.ndarray, normals: np.ndarray, reach_px: float) -> np.ndarray:
    """True where the model's mask is not pupil somewhere along the inner half of the search (a lid
    or the frame edge there would be taken for the border)."""
    height, width = mask.shape
    occluded = np.zeros(len(points), bool)
    for depth in np.arange(1.0, reach_px + 2.0, 1.5):
        inner = np.rint(points - depth * normals).astype(int)
        outside = (inner[:, 0] < 0) | (inner[:, 0] >= width) | (inner[:, 1] < 0) | (inner[:, 1] >= height)
        x, y = np.clip(inner[:, 0], 0, width - 1), np.clip(inner[:, 1], 0, height - 1)
        occluded |= outside | (mask[y, x] == 0)
    return occluded


def _beside_lid(covered: np.ndarray, margin: int) -> np.ndarray:
    """Points within `margin` of a run of at least three covered points: a lid covers a run of
    points, not one (a lone covered point is a ragged mask)."""
    core = covered & np.roll(covered, 1) & np.roll(covered, -1)
    lid = core.copy()
    for shift in range(1, margin + 1):
        lid |= np.roll(core, shift) | np.roll(core, -shift)
    return lid


def _fit(points: np.ndarray) -> Ellipse | None:
    if len(points) < 6:
        return None
    (cx, cy), (width, height), angle = cv2.fitEllipse(points.astype(np.float32))
    values = (cx, cy, width, height, angle)
    if not all(math.isfinite(v) for v in values) or min(width, height) <= 0:
        return None
    return Ellipse(float(cx), float(cy), width / 2.0, height / 2.0, float(angle), "refined")


def _plausible(refined: Ellipse | None, first: Ellipse, params: RefineParams) -> bool:
    """Close to the first guess: centre within reach, each radius (smaller, larger) within bounds."""
    if refined is None:
        return False
    shift = math.hypot(refined.cx - first.cx, refined.cy - first.cy)
    changes = [abs(r / f - 1) for r, f in zip(sorted((refined.rx, refined.ry)), sorted((first.rx, first.ry)))]
    return shift <= params.max_center_shift_px and max(changes) <= params.max_radius_change


@dataclass(frozen=True)
class Refinement:
    """The refined ellipse, the image border points it was fitted to, the guess's points the model's
    mask says are covered (a lid) and those on a glint (all empty when the guess is returned)."""

    ellipse: Ellipse
    border: np.ndarray  # (n, 2) x, y
    covered: np.ndarray  # (m, 2) x, y
    glints: np.ndarray  # (k, 2) x, y


def _refinement(image: np.ndarray, mask: np.ndarray, first: Ellipse, params: RefineParams) -> Refinement:
    """The border search, the fit and its checks (see the module docstring)."""
    unchanged = Refinement(first, np.empty((0, 2)), np.empty((0, 2)), np.empty((0, 2)))
    if min(first.rx, first.ry) < 2:
        return unchanged
    image = image.astype(np.float32)
    smoothed = cv2.GaussianBlur(image, (0, 0), params.smooth_sigma)
    points, normals = _normals(first, params.points)
    # Glints are found on the frame itself: smoothing spreads a small one below saturation.
    glinted = _profiles(image, points, normals, params).max(axis=1) >= params.saturated
    offsets = _border_offsets(_profiles(smoothed, points, normals, params), glinted, params)
    occluded = _occluded(mask, points, normals, params.reach_px)
    offsets[occluded] = np.nan
    keep = np.isfinite(offsets)
    if keep.sum() < params.min_kept_fraction * params.points:
        return unchanged
    moved = points[keep] + offsets[keep, None] * normals[keep]
    fitted = _fit(moved)
    if fitted is None:
        return unchanged
    residual = np.abs(ellipse_distance(moved[:, 0], moved[:, 1], fitted.cx, fitted.cy, fitted.rx, fitted.ry,
                                       math.radians(fitted.angle)))
    inliers = moved[residual <= max(1.0, 2.5 * float(np.median(residual)))]
    fitted = _fit(inliers)
    if fitted is None or not _plausible(fitted, first, params):
        return unchanged
    # A glint on the border cuts a notch in the model's mask, as a lid would: but the label counts
    # the pupil under a glint, so those points are not a lid.
    return Refinement(fitted, inliers, points[occluded & ~glinted], points[glinted])


def refine_ellipse(image: np.ndarray, mask: np.ndarray, first: Ellipse,
                   params: RefineParams = RefineParams()) -> Ellipse:
    """The pupil ellipse moved onto the image's border (uint8 or float (H, W) image the model saw,
    its 0/1 pupil mask); `first` unchanged (method kept) when the border cannot be trusted."""
    return _refinement(image, mask, first, params).ellipse


def _angle_bins(xs: np.ndarray, ys: np.ndarray, ellipse: Ellipse, count: int) -> np.ndarray:
    """Index of the nearest of `count` points around the ellipse (as `_normals` spaces them), by angle."""
    a = math.radians(ellipse.angle)
    dx, dy = xs - ellipse.cx, ys - ellipse.cy
    u = (dx * math.cos(a) + dy * math.sin(a)) / ellipse.rx
    v = (dy * math.cos(a) - dx * math.sin(a)) / ellipse.ry
    return np.rint(np.arctan2(v, u) % (2 * np.pi) * (count / (2 * np.pi))).astype(int) % count


def refined_mask(mask: np.ndarray, ellipse: Ellipse, params: RefineParams = RefineParams(),
                 border: np.ndarray | None = None, covered: np.ndarray | None = None,
                 glints: np.ndarray | None = None) -> np.ndarray:
    """uint8 0/1: the model's mask inside the refined ellipse, grown by up to `grow_px` out to the
    ellipse where the image's border was found or a glint hides it (`border`, `glints` points;
    everywhere when `border` is None) and not beside a lid (`covered` points). Elsewhere the model's
    own border stays."""
    mask = mask.astype(np.uint8)
    filled = filled_ellipse(ellipse, mask.shape)
    size = 2 * params.grow_px + 1
    growth = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))) & filled & (1 - mask)
    if border is not None:
        confirmed = np.zeros(params.points, bool)
        for points in (border, glints if glints is not None else np.empty((0, 2))):
            confirmed[_angle_bins(points[:, 0], points[:, 1], ellipse, params.points)] = True
        confirmed |= np.roll(confirmed, 1) | np.roll(confirmed, -1)  # a lone weak step
        if covered is not None and len(covered):
            lid = np.zeros(params.points, bool)
            lid[_angle_bins(covered[:, 0], covered[:, 1], ellipse, params.points)] = True
            confirmed &= ~_beside_lid(lid, params.lid_margin_points)
        ys, xs = np.nonzero(growth)
        unconfirmed = ~confirmed[_angle_bins(xs, ys, ellipse, params.points)]
        growth[ys[unconfirmed], xs[unconfirmed]] = 0
    return (filled & mask) | growth


def refine_pupil(image: np.ndarray, mask: np.ndarray, fit: PupilFit,
                 params: RefineParams = RefineParams()) -> tuple[np.ndarray, PupilFit]:
    """A model's 0/1 pupil mask and its one pupil (steps.inference.pupil.find_pupil), refined on
    `image` (what the model saw): the refined ellipse inside the grown mask, and the fit with the
    refined ellipse; both unchanged where there is no pupil or the border cannot be trusted."""
    if fit.ellipse is None:
        return mask, fit
    refinement = _refinement(image, mask, fit.ellipse, params)
    if refinement.ellipse is fit.ellipse:
        return mask, fit
    return (refined_mask(mask, refinement.ellipse, params, refinement.border, refinement.covered,
                         refinement.glints),
            dataclasses.replace(fit, ellipse=refinement.ellipse))
