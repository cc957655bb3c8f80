"""Frames to predict on: one image, a folder (images and videos), a video file, or a saved split.

Every source yields `SourceFrame`s in a stable order. A frame that cannot be read inside a folder or
a video is yielded with its `error` set (reported and skipped by the caller, never fatal); a source
that cannot be opened at all (an unreadable single image, a video that will not open, a path that
is none of these) raises SourceError with one line naming it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from steps.data.geometry import MAX_FRAME_SIDE, check_frame_size
from steps.data.headers import HeaderError, png_size
from steps.inference.model_input import to_8bit, to_gray

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
SPLIT_MARKERS = ("state.json", "dataset_dict.json")  # datasets.save_to_disk folders
MAX_BAD_VIDEO_READS = 25  # consecutive failed reads that end a video (its end, or beyond repair)


class SourceError(ValueError):
    """The input cannot be read at all; the message's first line names it."""


@dataclass
class SourceFrame:
    name: str                       # relative path stem, <video>_f<index>, split row (made unique by unique_names)
    image: np.ndarray | None        # uint8 grayscale, 32-4096 px a side; None when unreadable
    error: str = ""
    fps: float | None = None        # frames per second of its video, if any
    enhanced: bool = False          # already has the model's gamma + CLAHE (a preprocessed split row)


def header_size(path: Path) -> tuple[int, int]:
    """(width, height) as the file's header claims it, reading the header only: a PNG's IHDR (what a
    decoder would allocate, checksum or not), any other format's through Pillow."""
    try:
        return png_size(path)
    except HeaderError:
        pass  # not a PNG
    except OSError as error:  # unreadable (permissions, gone since listed): this file, not the run
        raise SourceError(f"{path}: cannot be read ({error.strerror or type(error).__name__})") from None
    try:
        with warnings.catch_warnings(), Image.open(path) as header:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our bound is far lower
            width, height = header.size
    except Image.DecompressionBombError:  # Pillow's own limit, far above ours
        raise SourceError(f"{path}: its header claims more pixels than Pillow will open, expected at most "
                          f"{MAX_FRAME_SIDE} pixels a side") from None
    except (OSError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SourceError(f"{path}: not a readable image ({reason})") from None
    return width, height


def check_size(width: int, height: int, origin: str) -> None:
    """SourceError naming `origin` unless the frame size is within the frame bounds."""
    try:
        check_frame_size(width, height)
    except ValueError as error:
        raise SourceError(f"{origin}: {error}") from None


def checked_frame(image: np.ndarray, origin: str, input_bits: int = 8) -> np.ndarray:
    """The uint8 grayscale frame of an image within the frame bounds (16-bit ones with `input_bits`,
    see model_input.to_8bit); SourceError naming it."""
    try:
        gray = to_gray(to_8bit(image, input_bits))
    except ValueError as error:
        raise SourceError(f"{origin}: {error}") from None
    check_size(gray.shape[1], gray.shape[0], origin)
    return gray


# EXIF orientation (tag 0x0112) -> how the stored pixels turn into the picture viewers show (and
# `cv2.imread(path, 0)` returns): PIL's exif_transpose table, in NumPy.
EXIF_ORIENTATION = 0x0112
ORIENTED = {
    2: np.fliplr, 3: lambda image: np.rot90(image, 2), 4: np.flipud,
    5: lambda image: np.swapaxes(image, 0, 1), 6: lambda image: np.rot90(image, -1),
    7: lambda image: np.rot90(np.swapaxes(image, 0, 1), 2), 8: lambda image: np.rot90(image, 1),
}


def exif_orientation(path: Path) -> int:
    """The file's EXIF orientation (1: as stored; 1 too when it has none or Pillow cannot say)."""
    try:
        with Image.open(path) as header:
            value = header.getexif().get(EXIF_ORIENTATION, 1)
    except (OSError, ValueError, SyntaxError):
        return 1
    return value if value in ORIENTED else 1


def read_image_file(path: Path, input_bits: int = 8) -> np.ndarray:
    """A uint8 grayscale image of MIN_FRAME_SIDE..MAX_FRAME_SIDE pixels a side, turned as its EXIF
    orientation says (so ellipses are in the picture's pixels, as viewers and OpenCV show it);
    SourceError naming the file."""
    width, height = header_size(path)
    check_size(width, height, str(path))  # before anything is decoded
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # unchanged: keeps 16 bits, ignores EXIF
    if image is None:
        raise SourceError(f"{path}: not a readable image (corrupt, truncated or not an image file)")
    if image.shape[:2] != (height, width):
        raise SourceError(f"{path}: decoded {image.shape[1]}x{image.shape[0]}, but its header says {width}x{height}")
    orientation = exif_orientation(path)
    if orientation != 1:
        image = np.ascontiguousarray(ORIENTED[orientation](image))
    return checked_frame(image, str(path), input_bits)


def video_frames(path: Path, prefix: str | None = None) -> Iterator[SourceFrame]:
    """Every frame of a video (OpenCV); a frame that fails to decode is yielded as an error."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise SourceError(f"{path}: video will not open (OpenCV cannot decode it)")
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if width and height:  # refused before a frame is decoded
        try:
            check_size(width, height, str(path))
        except SourceError:
            capture.release()
            raise
    stem = prefix or path.stem
    fps = capture.get(cv2.CAP_PROP_FPS) or None
    expected = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    index, failures = 0, 0
    try:
        while failures < MAX_BAD_VIDEO_READS and (expected <= 0 or index < expected):
            ok, frame = capture.read()
            name = f"{stem}_f{index:06d}"
            index += 1
            if not ok or frame is None:
                if expected <= 0:
                    break  # no frame count: a failed read is the end
                failures += 1
                yield SourceFrame(name, None, f"{path}: frame {index - 1} could not be decoded", fps)
                continue
            failures = 0
            try:
                gray = checked_frame(frame, f"{path}: frame {index - 1}")
            except SourceError as error:
                yield SourceFrame(name, None, str(error), fps)
                continue
            yield SourceFrame(name, gray, fps=fps)
    finally:
        capture.release()
    if index == 0 or (failures and failures == index):
        raise SourceError(f"{path}: video has no decodable frame")


def image_frames(files: list[Path], base: Path, input_bits: int = 8) -> Iterator[SourceFrame]:
    for file in files:
        name = "_".join(file.relative_to(base).with_suffix("").parts)
        try:
            yield SourceFrame(name, read_image_file(file, input_bits))
        except SourceError as error:
            yield SourceFrame(name, None, str(error))


def folder_frames(folder: Path, input_bits: int = 8) -> Iterator[SourceFrame]:
    """Images (recursively, by path) then videos of a folder."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
    if not images and not videos:
        raise SourceError(f"{folder}: no image ({', '.join(IMAGE_SUFFIXES)}) or video file in the folder")
    yield from image_frames(images, folder, input_bits)
    for video in videos:
        try:
            yield from video_frames(video, "_".join(video.relative_to(folder).with_suffix("").parts))
        except SourceError as error:  # one bad video in a folder is one more bad input, not the end
            yield SourceFrame(video.stem, None, str(error))


def split_frames(folder: Path, input_mode: str) -> Iterator[SourceFrame]:
    """Rows of a saved split (preprocess's output) as the model needs them. A preprocessed row's
    `image` already had gamma + CLAHE (`enhanced`: not enhanced again); a raw-frame model reads
    `raw_image`, or the `image` of rows stored without preprocessing, and refuses enhanced ones."""
    import datasets

    try:
        dataset = datasets.load_from_disk(str(folder))
    except (FileNotFoundError, ValueError, IndexError) as error:
        raise SourceError(f"{folder}: not a loadable saved split ({error})") from None
    if isinstance(dataset, datasets.DatasetDict):
        raise SourceError(f"{folder}: a dataset with splits {', '.join(dataset)}; give one split's folder")
    columns = set(dataset.column_names)
    column = "raw_image" if input_mode == "raw" and "raw_image" in columns else "image"
    if column not in columns:
        raise SourceError(f"{folder}: the split has no 'image' column")
    stored = dataset["preprocessed"] if "preprocessed" in columns else [False] * len(dataset)
    enhanced = [bool(flag) and column == "image" for flag in stored]
    if input_mode == "raw" and any(enhanced):
        raise SourceError(f"{folder}: the model takes raw frames, but this split stores gamma+CLAHE images "
                          f"and has no 'raw_image' column")
    names = dataset["filename"] if "filename" in columns else [f"row{k:06d}" for k in range(len(dataset))]
    for k, row in enumerate(dataset.with_format("numpy").select_columns([column])):
        name = Path(str(names[k])).stem
        try:
            image = checked_frame(np.ascontiguousarray(row[column], dtype=np.uint8), f"{folder}: row {k} ({name})")
        except SourceError as error:  # a hand-built split: one bad row is skipped, not the end
            yield SourceFrame(name, None, str(error))
            continue
        yield SourceFrame(name, image, enhanced=enhanced[k])


RENAMES_LOGGED = 3  # then one line with the count: a second video of the same name renames every frame


def unique_names(frames: Iterable[SourceFrame]) -> Iterator[SourceFrame]:
    """The frames, each named differently: a name an earlier frame took (`a.png` beside `a.bmp`,
    `x/y.png` beside `x_y.png`, two split rows of one file name) gets `~2`, `~3`, ... so no frame's
    mask or row overwrites another's; the first renamings are logged, then their count."""
    taken: set[str] = set()
    next_suffix: dict[str, int] = {}
    renamed = 0
    for frame in frames:
        name = frame.name
        while name in taken:
            next_suffix[frame.name] = next_suffix.get(frame.name, 1) + 1
            name = f"{frame.name}~{next_suffix[frame.name]}"
        if name != frame.name:
            renamed += 1
            if renamed <= RENAMES_LOGGED:
                log.warning("frame name %r is taken by an earlier frame: this one is named %r", frame.name, name)
            frame = replace(frame, name=name)
        taken.add(name)
        yield frame
    if renamed > RENAMES_LOGGED:
        log.warning("%d more frames renamed the same way (their names were taken by earlier frames)",
                    renamed - RENAMES_LOGGED)


def is_saved_split(path: Path) -> bool:
    return path.is_dir() and any((path / marker).is_file() for marker in SPLIT_MARKERS)


def open_source(path: Path, input_mode: str, input_bits: int = 8) -> tuple[str, Iterator[SourceFrame]]:
    """(kind, frames) for an image, a video, a folder or a saved split; SourceError for anything else.
    A single image is read here, so an unreadable one fails at once. `input_bits`: the significant
    bits of 16-bit image files (videos and splits are 8-bit)."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: input not found")
    if is_saved_split(path):
        return "split", unique_names(split_frames(path, input_mode))
    if path.is_dir():
        return "folder", unique_names(folder_frames(path, input_bits))
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image", iter([SourceFrame(path.stem, read_image_file(path, input_bits))])
    if suffix in VIDEO_SUFFIXES or cv2.VideoCapture(str(path)).isOpened():
        return "video", video_frames(path)
    raise SourceError(f"{path}: not an image ({', '.join(IMAGE_SUFFIXES)}), a video, a folder or a saved split")
