"""OpenEDS-like near-eye infrared frames with exact labels, drawn with vectorized numpy/OpenCV.

A frame is a camera looking through a lens ring at one eye: skin with pores and an eyelid crease,
an almond-shaped lid opening holding sclera, a textured iris and a dark elliptical pupil, lids
that occlude iris and pupil (the label follows the occlusion), eyelashes, a ring of LED corneal
glints (bright in the image, still pupil/iris in the label, as in OpenEDS), concentric lens rings,
a dark border outside the lens, blur and sensor noise. A few frames are closed eyes (label all 0).

Every random choice comes from the frame's own generator, seeded from (seed, split, index), so a
frame never depends on how many frames are generated.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from steps.data.frames import IMAGE_HEIGHT, IMAGE_WIDTH
from steps.data.openeds import CHALLENGE_FOLDER, mask_from_label
from steps.data.transforms import ellipse_distance

H, W = IMAGE_HEIGHT, IMAGE_WIDTH
SPLITS = ("train", "validation", "test")
_YY, _XX = np.mgrid[0:H, 0:W].astype(np.float32)
# A camera further from the eye sees it smaller: the eye and face are drawn on a canvas 1/eye_scale
# times the frame, then shrunk to it; lens, blur and noise belong to the camera and come after.
MIN_EYE_SCALE = 0.4
# Pupil area in pixels: real OpenEDS pupils have about 2,400-2,600; vary from ~800 to ~8,000.
PUPIL_AREA_MEDIAN, PUPIL_AREA_RANGE = 2500.0, (800.0, 8000.0)


@dataclass
class EyeGeometry:
    """Where the eye is: lid opening, iris circle, pupil ellipse (pixels, radians)."""

    ex: float
    ey: float
    half_width: float
    upper: float
    lower: float
    tilt: float
    lid_power: float
    lid_skew: float
    iris: tuple[float, float, float]
    pupil: tuple[float, float, float, float, float]


def canvas_grids(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(yy, xx) pixel coordinates of a canvas; the frame's own are kept."""
    return (_YY, _XX) if shape == (H, W) else tuple(np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32))


def smooth_noise(rng: np.random.Generator, cells: tuple[int, int], shape: tuple[int, int] = (H, W)) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a coarse random grid upsampled bicubically."""
    coarse = rng.standard_normal(cells).astype(np.float32)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def sample_geometry(rng: np.random.Generator, closed_eye: bool) -> EyeGeometry:
    ex, ey = rng.normal(320, 45), rng.normal(215, 28)
    half_width = rng.uniform(150, 215)
    upper, lower = rng.uniform(40, 85), rng.uniform(38, 70)
    if closed_eye:
        upper, lower = rng.uniform(-4, 2), rng.uniform(2, 6)
    iris_r = rng.uniform(78, 102)
    ix = ex + rng.uniform(-0.42, 0.42) * half_width
    iy = ey + rng.uniform(-0.35, 0.45) * (upper + lower) / 2
    if rng.random() < 0.04:  # now and then the pupil is cut by the image edge
        ix = rng.choice([rng.uniform(-10, 30), rng.uniform(W - 30, W + 10)])
        ex = ix - np.sign(ix - W / 2) * rng.uniform(0.1, 0.4) * half_width
    area = float(np.clip(PUPIL_AREA_MEDIAN * np.exp(rng.normal(0, 0.45)), *PUPIL_AREA_RANGE))
    ratio = rng.uniform(0.72, 1.0)
    major = min(np.sqrt(area / (np.pi * ratio)), 0.66 * iris_r)
    offset = rng.uniform(0, 0.12 * iris_r), rng.uniform(0, 2 * np.pi)
    pupil = (ix + offset[0] * np.cos(offset[1]), iy + offset[0] * np.sin(offset[1]),
             major, major * ratio, rng.uniform(0, np.pi))
    return EyeGeometry(float(ex), float(ey), half_width, upper, lower, rng.normal(0, 0.06),
                       rng.uniform(0.5, 0.85), rng.uniform(-0.2, 0.2), (float(ix), float(iy), iris_r),
                       (float(pupil[0]), float(pupil[1]), float(pupil[2]), float(pupil[3]), float(pupil[4])))


@dataclass
class EyeBox:
    """The part of the frame the eye can touch (lids, crease, lid bulge), in eye coordinates.

    Everything eye-shaped is computed only here: about half the frame, so twice as fast.
    """

    rows: slice
    cols: slice
    xx: np.ndarray
    yy: np.ndarray
    along: np.ndarray
    across: np.ndarray
    profile: np.ndarray
    canvas: tuple[int, int] = (H, W)  # (height, width) of what the eye is drawn on


def eye_box(geo: EyeGeometry, canvas: tuple[int, int] = (H, W)) -> EyeBox:
    reach = 1.4 * geo.half_width
    slant = reach * abs(math.sin(geo.tilt))
    height, width = canvas
    y0 = int(np.clip(geo.ey - geo.upper - 135 - slant, 0, height))
    y1 = int(np.clip(geo.ey + geo.lower + 95 + slant, y0, height))
    x0, x1 = int(np.clip(geo.ex - reach, 0, width)), int(np.clip(geo.ex + reach, 0, width))
    x1 = max(x1, x0)
    rows, cols = slice(y0, y1), slice(x0, x1)
    grid_y, grid_x = canvas_grids(canvas)
    xx, yy = grid_x[rows, cols], grid_y[rows, cols]
    cos_t, sin_t = math.cos(geo.tilt), math.sin(geo.tilt)
    dx, dy = xx - geo.ex, yy - geo.ey
    along = dx * cos_t + dy * sin_t
    across = dy * cos_t - dx * sin_t
    return EyeBox(rows, cols, xx, yy, along, across, lid_profile(geo, along), canvas)


def lid_profile(geo: EyeGeometry, along: np.ndarray) -> np.ndarray:
    """Lid opening height along the eye, 0 at and beyond the corners, peak skewed to one side."""
    u = np.clip(along / geo.half_width, -1, 1)
    return np.clip(1 - u * u, 0, None) ** geo.lid_power * (1 + geo.lid_skew * u)


def lower_lid(profile: np.ndarray) -> np.ndarray:
    """The lower lid is flatter than the arched upper lid."""
    return profile ** 0.6


def coverage(signed_distance: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance (1 inside, 0 outside, linear over a pixel)."""
    return np.clip(0.5 - signed_distance, 0, 1)


def gaussian_band(x: np.ndarray, width: float) -> np.ndarray:
    return np.exp(-(x * x) * (1.0 / (width * width)))


def draw_skin(rng: np.random.Generator, geo: EyeGeometry, box: EyeBox) -> np.ndarray:
    """Skin with shading, pores and bright speckles; the eyelid crease and lower-lid bulge."""
    height, width = box.canvas
    skin = rng.uniform(74, 110) + 8 * smooth_noise(rng, (5, 8), box.canvas) + 3 * smooth_noise(rng, (40, 64), box.canvas)
    pores = rng.standard_normal((height // 2, width // 2), dtype=np.float32)
    skin += 3.0 * cv2.resize(pores, (width, height), interpolation=cv2.INTER_LINEAR)
    speckles = rng.random((height, width), dtype=np.float32) > 0.998
    skin[speckles] += rng.uniform(20, 50)
    outside = np.clip(np.abs(box.along) * (1 / geo.half_width) - 0.9, 0, None)
    extent = np.exp(-outside * outside * 25)  # fades past the eye corners
    crease = -geo.upper * box.profile ** 0.6 - rng.uniform(28, 60)
    local = skin[box.rows, box.cols]
    local -= rng.uniform(10, 24) * extent * gaussian_band(box.across - crease, rng.uniform(6, 14))
    local += rng.uniform(4, 12) * extent * gaussian_band(box.across - crease + 18, 14)
    local += 8 * extent * gaussian_band(box.across - geo.lower * lower_lid(box.profile) - 30, 18)
    return skin


def iris_texture(rng: np.random.Generator, geo: EyeGeometry, box: EyeBox) -> np.ndarray:
    """Radial streaks, crypts, a collarette and a dark limbal ring, computed in the iris square only."""
    ix, iy, r = geo.iris
    texture = np.zeros(box.xx.shape, np.float32)
    height, width = box.xx.shape[0], box.xx.shape[-1]  # the eye box is 2-D
    y0, y1 = int(max(iy - r - 3 - box.rows.start, 0)), int(min(iy + r + 4 - box.rows.start, height))
    x0, x1 = int(max(ix - r - 3 - box.cols.start, 0)), int(min(ix + r + 4 - box.cols.start, width))
    if y0 >= y1 or x0 >= x1:
        return texture
    dx, dy = box.xx[y0:y1, x0:x1] - ix, box.yy[y0:y1, x0:x1] - iy
    radius = np.sqrt(dx * dx + dy * dy) / r
    bins = 256
    angle_bin = ((np.arctan2(dy, dx) + np.pi) * (bins / (2 * np.pi))).astype(np.int32) % bins
    streaks = np.convolve(rng.standard_normal(bins + 4), np.ones(3) / 3, "valid")[:bins].astype(np.float32)
    fine = rng.standard_normal((y1 - y0, x1 - x0), dtype=np.float32)
    crypts = smooth_noise(rng, (9, 9), (y1 - y0, x1 - x0))
    collarette = 0.25 + rng.uniform(0, 0.15)
    texture[y0:y1, x0:x1] = (3 * streaks[angle_bin] * (0.4 + radius) + 5 * crypts
                             + 3 * cv2.GaussianBlur(fine, (0, 0), 1.2)
                             + 7 * gaussian_band(radius - collarette, 0.06)
                             - 14 * np.clip((radius - 0.82) / 0.18, 0, 1))
    return texture


def draw_eye(rng: np.random.Generator, geo: EyeGeometry, skin: np.ndarray,
             box: EyeBox) -> tuple[np.ndarray, np.ndarray]:
    """Composite sclera, iris, pupil inside the lid opening; return (image, label)."""
    top, bottom = -geo.upper * box.profile, geo.lower * lower_lid(box.profile)
    opening_sd = np.maximum(top - box.across, box.across - bottom)
    lid = box.profile > 0
    opening_sd[~lid] = 1e3
    ix, iy, r = geo.iris
    iris_sd = ellipse_distance(box.xx, box.yy, ix, iy, r, r * rng.uniform(0.95, 1.0), 0.0)
    pupil_sd = ellipse_distance(box.xx, box.yy, *geo.pupil)
    corner = np.clip(np.abs(box.along) * (1 / geo.half_width), 0, 1)
    shape = box.xx.shape
    iris_level = rng.uniform(46, 62)  # real frames: iris ~55, sclera ~65-72, pupil ~34
    sclera = (iris_level + rng.uniform(14, 36)) * (1 - 0.2 * corner * corner) + 3 * smooth_noise(rng, (8, 12), shape)
    iris = iris_level + iris_texture(rng, geo, box)
    pupil = rng.uniform(24, 36) + 2.5 * smooth_noise(rng, (20, 32), shape)
    inside = sclera + coverage(iris_sd) * (iris - sclera)
    inside += coverage(pupil_sd) * (pupil - inside)
    inside *= 1 - rng.uniform(0.15, 0.35) * np.exp(-np.clip(box.across - top, 0, None) / rng.uniform(6, 14))
    image = skin.copy()
    local = image[box.rows, box.cols]
    local += coverage(opening_sd) * (inside - local)
    # Dark lash line along the upper lid margin; wet, bright lower lid margin.
    local -= rng.uniform(20, 40) * gaussian_band(box.across - top + 2, 3.5) * lid
    local += rng.uniform(6, 18) * gaussian_band(box.across - bottom - 3, 2.5) * lid
    label = np.zeros(box.canvas, np.uint8)
    if geo.upper + geo.lower > 8:
        open_mask = opening_sd <= 0
        local_label = label[box.rows, box.cols]
        local_label[open_mask] = 1
        local_label[open_mask & (iris_sd <= 0)] = 2
        local_label[open_mask & (pupil_sd <= 0)] = 3
    return image, label


def draw_lashes(rng: np.random.Generator, geo: EyeGeometry, image: np.ndarray) -> np.ndarray:
    """Dark curved strokes from the lid margins, curling outward, drawn in a few polylines calls."""
    cos_t, sin_t = math.cos(geo.tilt), math.sin(geo.tilt)
    mask = np.zeros(image.shape, np.float32)
    t = np.linspace(0, 1, 8)[None, :]
    for sign, count, length, thickness in ((-1, rng.integers(40, 90), (18, 60), 1),
                                           (-1, rng.integers(10, 30), (18, 50), 2),
                                           (1, rng.integers(15, 45), (6, 22), 1)):
        u = geo.half_width * np.clip(rng.normal(0.15, 0.45, count), -0.95, 0.97) * (1 if sign < 0 else 0.85)
        lid = geo.upper if sign < 0 else geo.lower
        profile = lid_profile(geo, u)
        v = sign * lid * (profile if sign < 0 else lower_lid(profile))
        lengths = rng.uniform(*length, count)
        outward = 0.5 * u / geo.half_width + rng.normal(0, 0.2, count)
        curl = rng.uniform(0.2, 0.8, count)
        pu = u[:, None] + (outward * lengths)[:, None] * (t + curl[:, None] * t * t)
        pv = v[:, None] + sign * lengths[:, None] * (t - 0.5 * curl[:, None] * t * t)
        px = geo.ex + pu * cos_t - pv * sin_t
        py = geo.ey + pu * sin_t + pv * cos_t
        lines = [np.stack([x, y], 1).round().astype(np.int32) for x, y in zip(px, py)]
        cv2.polylines(mask, lines, False, 1.0, int(thickness), cv2.LINE_AA)
    return image * (1 - rng.uniform(0.45, 0.7) * np.clip(mask, 0, 1))


def draw_glints(rng: np.random.Generator, geo: EyeGeometry, label: np.ndarray, image: np.ndarray) -> np.ndarray:
    """LED reflections on the cornea: a ring of small saturated spots, some on the pupil border."""
    if not (label > 0).any():
        return image
    ix, iy, r = geo.iris
    count = int(rng.integers(4, 9))
    angles = np.linspace(0, 2 * np.pi, count, endpoint=False) + rng.uniform(0, 2 * np.pi) + rng.normal(0, 0.15, count)
    ring = r * rng.uniform(0.45, 0.8)
    points = np.stack([ix + ring * np.cos(angles), iy + 0.85 * ring * np.sin(angles)], 1)
    if rng.random() < 0.6:  # one glint on the pupil border
        px, py, a, b, theta = geo.pupil
        phi = rng.uniform(0, 2 * np.pi)
        u, v = a * np.cos(phi), b * np.sin(phi)
        points[0] = (px + u * np.cos(theta) - v * np.sin(theta), py + u * np.sin(theta) + v * np.cos(theta))
    spots = np.zeros(label.shape, np.float32)
    for x, y in points:
        xi, yi = int(round(x)), int(round(y))
        if 0 <= xi < label.shape[1] and 0 <= yi < label.shape[0] and label[yi, xi] > 0:
            cv2.circle(spots, (xi, yi), int(rng.integers(2, 5)), 1.0, -1, cv2.LINE_AA)
    return image + 320 * cv2.GaussianBlur(spots, (0, 0), 1.0)


def apply_lens(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Concentric lens rings, vignetting, and the dark area outside the lens."""
    lx, ly = rng.normal(300, 20), rng.normal(185, 15)
    radius = rng.uniform(330, 390)
    distance = cv2.magnitude(_XX - np.float32(lx), _YY - np.float32(ly))
    rel = distance * np.float32(1 / radius)
    rings = rng.uniform(0.03, 0.07) * np.sin(distance * (2 * np.pi / rng.uniform(6.5, 9.5))) * (0.3 + rel)
    image = image * (1 + rings) * (1 - rng.uniform(0.2, 0.4) * rel * rel)
    outside = rng.uniform(12, 22) + 3 * smooth_noise(rng, (4, 6))
    inside = np.clip((radius - distance) / 2.5, 0, 1)
    return outside + inside * (image - outside)


def moved(geo: EyeGeometry, dx: float, dy: float) -> EyeGeometry:
    """The same eye `dx`, `dy` pixels further right and down."""
    ix, iy, r = geo.iris
    px, py, a, b, theta = geo.pupil
    return dataclasses.replace(geo, ex=geo.ex + dx, ey=geo.ey + dy, iris=(ix + dx, iy + dy, r),
                               pupil=(px + dx, py + dy, a, b, theta))


def shrink_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Each frame pixel takes the class covering most of it on the larger canvas."""
    shares = [cv2.resize((label == k).astype(np.float32), size, interpolation=cv2.INTER_AREA) for k in range(4)]
    return np.argmax(np.stack(shares), axis=0).astype(np.uint8)


def render_frame(rng: np.random.Generator, closed_eye: bool = False,
                 eye_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """One frame: uint8 image (400, 640) and uint8 label (400, 640) with 0 bg, 1 sclera, 2 iris, 3 pupil.

    `eye_scale` < 1: a camera further away, the eye and face that much smaller (and more face in view)."""
    canvas = (round(H / eye_scale), round(W / eye_scale))
    geo = moved(sample_geometry(rng, closed_eye), (canvas[1] - W) / 2, (canvas[0] - H) / 2)
    box = eye_box(geo, canvas)
    skin = draw_skin(rng, geo, box)
    image, label = draw_eye(rng, geo, skin, box)
    image = draw_lashes(rng, geo, image)
    image = draw_glints(rng, geo, label, image)
    if canvas != (H, W):
        image, label = cv2.resize(image, (W, H), interpolation=cv2.INTER_AREA), shrink_label(label, (W, H))
    image = apply_lens(rng, image) * rng.uniform(0.85, 1.15)
    sigma = rng.uniform(2.5, 4.0) if rng.random() < 0.08 else rng.uniform(0.5, 1.5)
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigma).astype(np.float32)
    image = image + np.float32(rng.uniform(1.5, 4.0)) * rng.standard_normal((H, W), dtype=np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label


def frame_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The frame's own generator: depends only on (seed, split, index)."""
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def eye_scale_of(seed: int, split: str, index: int, min_eye_scale: float) -> float:
    """The frame's eye scale, log-uniform in [min_eye_scale, 1], from a stream of its own (so frames
    at 1 are drawn exactly as without it)."""
    if min_eye_scale >= 1:
        return 1.0
    if min_eye_scale < MIN_EYE_SCALE:
        raise ValueError(f"min_eye_scale {min_eye_scale}: expected {MIN_EYE_SCALE} to 1")
    u = np.random.default_rng([seed, zlib.crc32(split.encode()), index, 1]).random()
    return float(np.exp(u * np.log(min_eye_scale)))


def render_indexed_frame(seed: int, split: str, index: int, closed_fraction: float,
                         min_eye_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = frame_rng(seed, split, index)
    closed = bool(rng.random() < closed_fraction)
    return render_frame(rng, closed_eye=closed, eye_scale=eye_scale_of(seed, split, index, min_eye_scale))


def generate_openeds(root: Path, frames: dict[str, int], seed: int = 0, closed_fraction: float = 0.05,
                     portrait: bool = False, min_eye_scale: float = 1.0) -> Path:
    """Write `root/openEDS/openEDS/{split}/{images,labels,masks}/<stem>` for each split; return root.

    Stems are numbered across splits in the order train, validation, test (unique, like the Kaggle
    copy); a frame's content depends only on (seed, split, index). `portrait`: the 2019 challenge
    release's layout instead (`root/Semantic_Segmentation_Dataset/{split}/{images,labels}`, no
    masks) with its 400 wide x 640 tall frames (each frame turned a quarter). `min_eye_scale` < 1: each
    frame's eye drawn smaller, by a factor log-uniform in [min_eye_scale, 1] (cameras further away).
    """
    root = Path(root)
    unknown = set(frames) - set(SPLITS)
    if unknown:
        raise ValueError(f"frames: unknown split(s) {sorted(unknown)} (expected {list(SPLITS)})")
    stem_number = 0
    for split in (s for s in SPLITS if s in frames):
        base = root / CHALLENGE_FOLDER if portrait else root / "openEDS" / "openEDS"
        folders = {kind: base / split / kind for kind in ("images", "labels", *(() if portrait else ("masks",)))}
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        for index in range(frames[split]):
            image, label = render_indexed_frame(seed, split, index, closed_fraction, min_eye_scale)
            if portrait:
                image, label = np.ascontiguousarray(np.rot90(image)), np.ascontiguousarray(np.rot90(label))
            stem = f"{stem_number:06d}"
            cv2.imwrite(str(folders["images"] / f"{stem}.png"), image)
            np.save(folders["labels"] / f"{stem}.npy", label)
            if "masks" in folders:
                cv2.imwrite(str(folders["masks"] / f"{stem}.png"), mask_from_label(label))
            stem_number += 1
    return root
