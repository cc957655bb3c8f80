"""Find and read OpenEDS frames on disk.

Layouts recognised (under the given root, `root/openEDS`, `root/openEDS/openEDS`, or the same one
wrapping folder deeper, as an archive often adds):

- `kaggle`: the Kaggle copy `soumicksarker/openeds-dataset`,
  `openEDS/openEDS/{train,validation,test}/{images/<stem>.png, labels/<stem>.npy, masks/<stem>.png}`.
- `challenge2019`: the 2019 OpenEDS challenge release,
  `Semantic_Segmentation_Dataset/{train,validation,test}/{images,labels}/` (no masks; the test
  split's labels were withheld), with frames either flat or in subject sub-folders
  (`images/<subject>/<stem>.png` or `<split>/<subject>/{images,labels}/`).
- `folder`: one split without split folders, `images/` and `labels/` side by side (the layout of
  the real sample frames); its frames are put in one split, `test` unless the caller says otherwise.

Frames are paired by stem: `images/<stem>.png` with `labels/<stem>.npy`; an image without its label
gets `label=None` (the checker reports it; preprocess never sees it). `select_frames`,
`check_frames` and `publish_frames` turn a found layout into download-kaggle's `raw` output.
"""

from __future__ import annotations

import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from steps.data.frames import IMAGE_SHAPE, RAW_CLASSES
from steps.data.geometry import check_frame_size, frame_to_model, label_to_model, plan_geometry
from steps.data.headers import HeaderError, npy_header, png_size

log = logging.getLogger(__name__)
SPLITS = ("train", "validation", "test")
KAGGLE_PREFIX = ("openEDS", "openEDS")
CHALLENGE_FOLDER = "Semantic_Segmentation_Dataset"
LayoutKind = Literal["kaggle", "challenge2019", "folder"]
KIND_NAMES = {"kaggle": "Kaggle copy", "challenge2019": "2019 OpenEDS challenge release",
              "folder": "single folder of images/labels"}
_IGNORED_NAMES = ("__MACOSX",)
# What happens to a frame that is not 640x400 (steps.data.geometry): refused, or mapped onto it.
FramePolicy = Literal["strict", "pad", "crop", "resize"]
FRAME_POLICIES: tuple[str, ...] = ("strict", "pad", "crop", "resize")


class FrameError(ValueError):
    """A frame or layout problem; the message starts with the offending path."""


@dataclass(frozen=True)
class Frame:
    split: str
    stem: str
    image: Path
    label: Path | None


@dataclass
class OpenEDSLayout:
    kind: LayoutKind
    base: Path
    splits: dict[str, list[Frame]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {split: len(frames) for split, frames in self.splits.items()}

    def unlabeled(self) -> list[Frame]:
        return [frame for frames in self.splits.values() for frame in frames if frame.label is None]

    def describe(self) -> str:
        """E.g. "Kaggle copy (openEDS/openEDS): train 160, validation 40, test 16"."""
        where = self.base.name if self.kind != "kaggle" else "/".join(KAGGLE_PREFIX)
        counts = ", ".join(f"{split} {count}" for split, count in self.counts().items())
        return f"{KIND_NAMES[self.kind]} ({where}): {counts}"


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and p.name not in _IGNORED_NAMES)


def _candidates(root: Path) -> list[Path]:
    """Folders that may hold the layout: root and one wrapping level, each with the known prefixes."""
    tops = [root] + (_visible_dirs(root) if root.is_dir() else [])
    found = []
    for top in tops:
        for suffix in ((), ("openEDS",), KAGGLE_PREFIX, (CHALLENGE_FOLDER,), ("openEDS", CHALLENGE_FOLDER)):
            candidate = top.joinpath(*suffix)
            if candidate.is_dir() and candidate not in found:
                found.append(candidate)
    return found


def _frames_in(images_dir: Path, split: str) -> list[Frame]:
    """Pair every PNG under `images_dir` (flat or in subject folders) with its label."""
    labels_dir = images_dir.parent / "labels"
    frames = []
    for image in sorted(images_dir.rglob("*.png")):
        relative = image.relative_to(images_dir).with_suffix("")
        label = labels_dir / relative.with_suffix(".npy")
        stem = "_".join(relative.parts)
        frames.append(Frame(split, stem, image, label if label.is_file() else None))
    return frames


def _split_layout(base: Path) -> dict[str, list[Frame]]:
    """Frames per split for `base/{split}/images` or `base/{split}/<subject>/images`."""
    splits: dict[str, list[Frame]] = {}
    for split in SPLITS:
        split_dir = base / split
        if not split_dir.is_dir():
            continue
        if (split_dir / "images").is_dir():
            splits[split] = _frames_in(split_dir / "images", split)
            continue
        subjects = [d for d in _visible_dirs(split_dir) if (d / "images").is_dir()]
        if subjects:
            splits[split] = [Frame(split, f"{d.name}_{f.stem}", f.image, f.label)
                             for d in subjects for f in _frames_in(d / "images", split)]
    return splits


def _kind_of(base: Path, splits: dict[str, list[Frame]]) -> LayoutKind:
    """The Kaggle copy ships masks/ beside labels/ and lives in openEDS/openEDS; the 2019 release does not."""
    if base.name == CHALLENGE_FOLDER:
        return "challenge2019"
    if base.parts[-2:] == KAGGLE_PREFIX or any((base / s / "masks").is_dir() for s in splits):
        return "kaggle"
    return "challenge2019"


def find_openeds(root: Path, single_split: str = "test") -> OpenEDSLayout:
    """Find the OpenEDS layout under `root`; raise FrameError naming root when there is none."""
    root = Path(root)
    if not root.is_dir():
        raise FrameError(f"{root}: not a folder (expected an OpenEDS dataset folder)")
    for candidate in _candidates(root):
        splits = _split_layout(candidate)
        if splits:
            return OpenEDSLayout(_kind_of(candidate, splits), candidate, splits)
    for candidate in _candidates(root):
        if (candidate / "images").is_dir() and (candidate / "labels").is_dir():
            return OpenEDSLayout("folder", candidate, {single_split: _frames_in(candidate / "images", single_split)})
    entries = ", ".join(sorted(p.name for p in root.iterdir())[:12]) or "(empty)"
    raise FrameError(
        f"{root}: no OpenEDS layout found (looked for openEDS/openEDS/{{train,validation,test}}/images "
        f"(Kaggle copy), {CHALLENGE_FOLDER}/{{train,validation,test}}/images (2019 challenge), or "
        f"images/ + labels/ (one folder)); top-level entries: {entries}")


def read_image(path: Path, any_size: bool = False) -> np.ndarray:
    """An 8-bit grayscale PNG of shape (400, 640), or of MIN_FRAME_SIDE..MAX_FRAME_SIDE pixels a side with
    `any_size`; FrameError naming the file otherwise."""
    if not path.is_file():
        raise FrameError(f"{path}: image file is missing")
    try:
        width, height = png_size(path)
    except HeaderError as error:
        raise FrameError(f"{path}: not a readable image ({error})") from None
    except OSError as error:  # permissions, or gone since listed
        raise FrameError(f"{path}: cannot be read ({error.strerror or type(error).__name__})") from None
    # Checked before decoding: a header can claim any size.
    if any_size:
        try:
            check_frame_size(width, height)
        except ValueError as error:
            raise FrameError(f"{path}: {error}") from None
    if not any_size and (height, width) != IMAGE_SHAPE:
        raise FrameError(f"{path}: image shape {(height, width)}, expected {IMAGE_SHAPE} (640 wide x 400 tall; "
                         "frame_policy pad, crop or resize accepts other sizes)")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FrameError(f"{path}: not a readable image (corrupt or truncated PNG?)")
    if image.dtype != np.uint8:
        raise FrameError(f"{path}: image dtype {image.dtype}, expected uint8 (8-bit grayscale)")
    if image.ndim == 3:  # a grayscale frame saved as colour: keep it only if the channels agree
        if not (image[..., :1] == image[..., 1:3]).all():
            raise FrameError(f"{path}: colour image, expected 8-bit grayscale")
        image = np.ascontiguousarray(image[..., 0])
    if image.shape != (height, width):
        raise FrameError(f"{path}: image shape {image.shape}, but its header says {(height, width)}")
    return image


def read_label(path: Path, shape: tuple[int, int] = IMAGE_SHAPE) -> np.ndarray:
    """A uint8 .npy of `shape` (its image's) with values 0..3; FrameError naming the file otherwise."""
    check_label_header(path, shape)
    try:
        label = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FrameError(f"{path}: label file is missing") from None
    except (ValueError, OSError, EOFError) as error:
        raise FrameError(f"{path}: unreadable .npy label (truncated or not an array): {error}") from None
    if not isinstance(label, np.ndarray):
        raise FrameError(f"{path}: .npy holds {type(label).__name__}, expected one array")
    if label.shape != shape:
        raise FrameError(f"{path}: label shape {label.shape}, expected {shape}")
    if label.dtype != np.uint8:
        raise FrameError(f"{path}: label dtype {label.dtype}, expected uint8")
    if label.max(initial=0) >= len(RAW_CLASSES):
        bad = sorted(int(v) for v in np.unique(label[label >= len(RAW_CLASSES)])[:5])
        raise FrameError(f"{path}: label values {bad} outside 0..{len(RAW_CLASSES) - 1} "
                         f"({', '.join(RAW_CLASSES)})")
    return label


def check_label_header(path: Path, expected: tuple[int, int] = IMAGE_SHAPE) -> None:
    """Shape and dtype from the .npy header, before numpy allocates what the header claims."""
    try:
        shape, dtype = npy_header(path)
    except FileNotFoundError:
        raise FrameError(f"{path}: label file is missing") from None
    except (HeaderError, OSError) as error:
        raise FrameError(f"{path}: unreadable .npy label (truncated or not an array): {error}") from None
    if dtype.hasobject:
        raise FrameError(f"{path}: unreadable .npy label (it holds pickled objects, which are never loaded)")
    if shape != expected:
        raise FrameError(f"{path}: label shape {shape}, expected {expected}")
    if dtype != np.uint8:
        raise FrameError(f"{path}: label dtype {dtype}, expected uint8")


def read_frame(frame: Frame, policy: FramePolicy = "strict") -> tuple[np.ndarray, np.ndarray | None]:
    """(image uint8 (400, 640), label uint8 (400, 640) or None when the frame has no label).

    A frame of another size is refused under policy "strict"; else it goes onto 640x400 by
    `steps.data.geometry` (pad, crop or resize), its label through the same map (nearest)."""
    image = read_image(frame.image, any_size=policy != "strict")
    label = read_label(frame.label, image.shape) if frame.label is not None else None
    if image.shape == IMAGE_SHAPE:
        return image, label
    geometry = plan_geometry(image.shape[1], image.shape[0], policy)
    return frame_to_model(image, geometry), (label_to_model(label, geometry) if label is not None else None)


def frame_size(frame: Frame) -> str:
    """'WIDTHxHEIGHT' of the frame's image, from its PNG header ('unreadable' when it has none)."""
    try:
        width, height = png_size(frame.image)
    except (HeaderError, OSError):
        return "unreadable"
    return f"{width}x{height}"


def select_frames(layout: OpenEDSLayout, splits: list[str], max_per_split: int | None = None) -> dict[str, list[Frame]]:
    """The requested splits (first `max_per_split` frames by stem); FrameError for a missing or empty split."""
    selected = {}
    for split in splits:
        if split not in layout.splits:
            raise FrameError(f"{layout.base}: split '{split}' not found in {layout.describe()}")
        frames = sorted(layout.splits[split], key=lambda f: f.stem)[:max_per_split]
        if not frames:
            raise FrameError(f"{layout.base / split}: split '{split}' has no frames (no images/*.png)")
        selected[split] = frames
    return selected


def check_frame(frame: Frame, policy: FramePolicy = "strict") -> Frame:
    """Read and check one frame; an image without its label is an error here."""
    if frame.label is None:
        raise FrameError(f"{frame.image}: image without its label (expected "
                         f"{frame.image.parent.parent / 'labels' / (frame.image.stem + '.npy')})")
    read_frame(frame, policy)
    return frame


def check_frames(frames: list[Frame], workers: int | None = None, progress_every: int = 2000,
                 policy: FramePolicy = "strict") -> None:
    """Check every frame (threads: OpenCV and file reads release the GIL); raise at the first bad one."""
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, _ in enumerate(pool.map(lambda frame: check_frame(frame, policy), frames), start=1):
            if done % progress_every == 0:
                log.info("checked %d/%d frames", done, len(frames))


def write_mapped(frame: Frame, folders: dict[str, Path], policy: FramePolicy) -> None:
    """A frame of another size, mapped onto 640x400, written as a Kaggle-layout frame."""
    image, label = read_frame(frame, policy)
    if label is None:
        raise FrameError(f"{frame.image}: image without its label")
    cv2.imwrite(str(folders["images"] / f"{frame.stem}.png"), image)
    np.save(folders["labels"] / f"{frame.stem}.npy", label)
    cv2.imwrite(str(folders["masks"] / f"{frame.stem}.png"), mask_from_label(label))


def describe_sizes(sizes: dict[str, int]) -> str:
    """'3 of 400x640, 1 of 320x240' from frame_sizes' counts (for reports and model cards)."""
    return ", ".join(f"{count} of {size}" for size, count in sizes.items())


def frame_sizes(frames: list[Frame]) -> dict[str, int]:
    """How many frames of each 'WIDTHxHEIGHT' (for manifests and logs)."""
    sizes: dict[str, int] = {}
    for frame in frames:
        size = frame_size(frame)
        sizes[size] = sizes.get(size, 0) + 1
    return sizes


def mask_from_label(label: np.ndarray) -> np.ndarray:
    """The Kaggle copy's masks/*.png: 8-bit grayscale, 1 on iris and pupil, 0 elsewhere."""
    return (label >= 2).astype(np.uint8)


def mask_path(frame: Frame) -> Path:
    """Where the Kaggle copy keeps the frame's mask (masks/ beside images/)."""
    return frame.image.parent.parent / "masks" / frame.image.name


def link_or_copy(source: Path, target: Path) -> None:
    """Hard link when source and target share a file system and linking is allowed, else copy; a
    symbolic link (a DVC or git-annex dataset, a split on another disk) is published as the file it
    leads to, never as a link, which would dangle or lead outside the published folder."""
    source = source.resolve()
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def publish_frames(selected: dict[str, list[Frame]], out: Path, policy: FramePolicy = "strict") -> dict[str, int]:
    """Write `out/openEDS/openEDS/{split}/{images,labels,masks}/<stem>`; returns counts per split.

    Masks are taken from the source when it has them (the Kaggle copy), else drawn from the label
    the way the Kaggle copy draws them (1 on iris and pupil). A frame of another size is written
    mapped onto 640x400 under `policy` (image, label and mask through the same map).
    """
    counts = {}
    for split, frames in selected.items():
        folders = {kind: out.joinpath(*KAGGLE_PREFIX, split, kind) for kind in ("images", "labels", "masks")}
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        for frame in frames:
            if frame.label is None:  # check_frame refused it before anything was published
                raise FrameError(f"{frame.image}: image without its label")
            if frame_size(frame) != f"{IMAGE_SHAPE[1]}x{IMAGE_SHAPE[0]}":
                write_mapped(frame, folders, policy)
                continue
            link_or_copy(frame.image, folders["images"] / f"{frame.stem}.png")
            link_or_copy(frame.label, folders["labels"] / f"{frame.stem}.npy")
            mask = mask_path(frame)
            if mask.is_file():
                link_or_copy(mask, folders["masks"] / f"{frame.stem}.png")
            else:
                cv2.imwrite(str(folders["masks"] / f"{frame.stem}.png"), mask_from_label(read_label(frame.label)))
        counts[split] = len(frames)
    return counts
