"""download-kaggle: fetch OpenEDS, check every frame, publish the `raw` output in the Kaggle layout.

Sources (`source` hyperparameter):
- `synthetic` (default): generated OpenEDS-like frames, written to a work folder and then taken
  through exactly the `local` path;
- `local`: the `source` channel, a folder (any recognised layout) or a .zip/.tar(.gz) archive,
  given directly or as the only archive in the channel folder; archives are extracted safely;
- `kaggle`: the Kaggle API (kagglesdk) into `cache_dir`; a complete cache is reused;
- `kagglehub`: `kagglehub.dataset_download`, cached under KAGGLEHUB_CACHE.

Every selected frame is read and checked before anything is published. A bad frame (corrupt PNG,
truncated .npy, wrong shape or dtype, label values outside 0..3, an image without its label)
FAILS the step with the file named: silently dropping frames would change the dataset under the
user. The one exception is the 2019 challenge's test split, whose labels were withheld: a
requested split with no labels at all in that layout is skipped with a warning.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from contracts.download_kaggle import DownloadKaggleHyperparameters
from steps.data.archive import ArchiveError, ArchiveLimits, extract_archive
from steps.data.kaggle import KaggleDownloadError, download_with_kaggle_api, download_with_kagglehub
from steps.data.openeds import FrameError, OpenEDSLayout, check_frames, find_openeds, frame_sizes, publish_frames, select_frames
from steps.data.synthetic import generate_openeds
from steps.runtime import StepError, StepHooks, StepIO

log = logging.getLogger(__name__)
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


def channels_optional(hp: DownloadKaggleHyperparameters) -> list[str]:
    """The `source` channel is read only by source=local (then `check_inputs` requires it)."""
    return ["source"]


def synthetic_counts(hp: DownloadKaggleHyperparameters) -> dict[str, int]:
    counts = {"train": hp.synthetic_train_frames, "validation": hp.synthetic_validation_frames,
              "test": hp.synthetic_test_frames}
    cap = hp.max_frames_per_split or max(counts.values())
    return {split: min(counts[split], cap) for split in hp.splits}


def check_inputs(hp: DownloadKaggleHyperparameters, io: StepIO) -> None:
    if hp.source == "local":
        io.require_channel("source")
    if hp.source == "synthetic":
        for split, count in synthetic_counts(hp).items():
            if count == 0:
                raise StepError(f"hyperparameter 'synthetic_{split}_frames': 0 frames, but split '{split}' is in "
                                f"'splits'; give it frames or drop it from splits")


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def archive_limits(hp: DownloadKaggleHyperparameters) -> ArchiveLimits:
    return ArchiveLimits(max_bytes=int(hp.max_extracted_gb * 1024**3), max_members=hp.max_archive_members,
                         max_ratio=hp.max_compression_ratio)


def local_dataset(source: Path, work: Path, limits: ArchiveLimits = ArchiveLimits()) -> Path:
    """The folder holding the dataset: the channel itself, or its one archive extracted into `work`."""
    if source.is_file():
        archive = source
    else:
        try:
            find_openeds(source)
            return source
        except FrameError:
            archives = sorted(p for p in source.iterdir() if is_archive(p))
            if len(archives) != 1:
                raise
            archive = archives[0]
    log.info("extracting %s", archive)
    extract_archive(archive, work / "extracted", limits)
    return work / "extracted"


def fetch(hp: DownloadKaggleHyperparameters, io: StepIO, work: Path) -> tuple[Path, dict[str, Any]]:
    """The folder to read frames from, and facts about where it came from."""
    if hp.source == "synthetic":
        counts = synthetic_counts(hp)
        log.info("generating synthetic OpenEDS-like frames (seed %d): %s", hp.seed, counts)
        root = generate_openeds(work / "synthetic", counts, seed=hp.seed, portrait=hp.synthetic_layout == "portrait2019",
                               min_eye_scale=hp.synthetic_min_eye_scale)
        return local_dataset(root, work, archive_limits(hp)), {"seed": hp.seed, "synthetic_layout": hp.synthetic_layout,
                                                               "synthetic_min_eye_scale": hp.synthetic_min_eye_scale}
    if hp.source == "local":
        channel = io.require_channel("source")
        return local_dataset(channel, work, archive_limits(hp)), {"channel": str(channel)}
    if hp.source == "kaggle":
        result = download_with_kaggle_api(hp.dataset, hp.dataset_version, Path(hp.cache_dir),
                                          limits=archive_limits(hp))
    else:
        result = download_with_kagglehub(hp.dataset, hp.dataset_version)
    return result.path, {"dataset": hp.dataset, "version": result.version, "cache_used": result.cache_used,
                         **result.facts}


def requested_splits(layout: OpenEDSLayout, splits: list[str]) -> tuple[list[str], list[str]]:
    """(splits to publish, splits skipped because the 2019 challenge withheld their labels)."""
    withheld = [s for s in splits if layout.kind == "challenge2019" and layout.splits.get(s)
                and all(f.label is None for f in layout.splits[s])]
    for split in withheld:
        log.warning("split '%s': no labels in the 2019 challenge release (withheld); skipped", split)
    kept = [s for s in splits if s not in withheld]
    if not kept:
        raise StepError(f"splits: none of {splits} has labels in {layout.describe()}")
    return kept, withheld


def without_work_folder(message: str, work: Path) -> str:
    """A message naming files by where the user can find them: the work folder (generated frames,
    an extracted archive) is deleted when the step ends, so its path would lead nowhere."""
    for folder, shown in ((work / "synthetic", "the generated frames"), (work / "extracted", "the extracted archive")):
        message = message.replace(f"{folder}{os.sep}", f"{shown}: ").replace(str(folder), shown)
    return message.replace(str(work), "the step's work folder")


def run(hp: DownloadKaggleHyperparameters, io: StepIO) -> dict[str, Any]:
    out = io.output("raw")
    work = Path(tempfile.mkdtemp(prefix=".download-kaggle-", dir=out.parent))
    try:
        source, facts = fetch(hp, io, work)
        layout = find_openeds(source)
        log.info("found %s at %s", layout.describe(), layout.base)
        splits, withheld = requested_splits(layout, list(hp.splits))
        selected = select_frames(layout, splits, hp.max_frames_per_split)
        total = sum(len(frames) for frames in selected.values())
        frames = [frame for frames in selected.values() for frame in frames]
        sizes = frame_sizes(frames)
        log.info("checking %d frames (image/label pairs, shapes, dtypes, label values 0..3); sizes %s, frame_policy %s",
                 total, sizes, hp.frame_policy)
        check_frames(frames, policy=hp.frame_policy)
        counts = publish_frames(selected, out, hp.frame_policy)
    except (FrameError, ArchiveError, KaggleDownloadError) as error:
        raise StepError(without_work_folder(str(error), work)) from error
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("published %s into %s", ", ".join(f"{s} {n}" for s, n in counts.items()), io.final_output("raw"))
    io.annotate("raw", rows=total, counts=counts, layout=layout.kind, layout_description=layout.describe(),
                source=hp.source, skipped_splits=withheld, frame_policy=hp.frame_policy, frame_sizes=sizes, **facts)
    return {"frames": counts, "layout": layout.kind, "source": hp.source}


HOOKS = StepHooks(run=run, check_inputs=check_inputs, channels_optional=channels_optional)
